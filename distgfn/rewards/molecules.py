"""Molecule rewards: an oracle scores SMILES, and R(x) is a positive transform of its output.

    seh_proxy   R = clip(proxy / 8, 1e-4, 100)        the paper's sEH binding proxy
    vina_seh    R = docking.reward_from_score(score)  Vina docking against sEH (PDB 4JNC)
    qed         R = max(QED, 1e-4)                    drug-likeness, in (0, 1]
    sa          R = max((10 - SA) / 9, 1e-4)          synthetic accessibility, SA 1 (easy) .. 10

The policy is trained towards R(x) ** reward.beta. An oracle scores canonical SMILES (the
fragment env's keys) and reports a molecule it cannot score (docking preparation failed,
say) with an error: the molecule is recorded and left out of training, never scored as zero.
Each is a reward object (distgfn.core.Reward) found through distgfn.tasks.REWARDS; the same
object runs inline, in the reward pool, or behind `distgfn serve-reward` (reward.mode remote).
"""

from __future__ import annotations

import numpy as np

from distgfn import data
from distgfn.chem.proxy import ProxyScorer
from distgfn.chem.scores import QEDScorer, SAScorer, sa_reward

MIN_REWARD = 1e-4


class SEHProxy(ProxyScorer):
    """`seh_proxy`: the paper's sEH binding proxy."""

    scores_env = "fragments"
    cache_size = 100_000

    def __init__(self, data_dir: str | None = None):
        super().__init__(data.data_dir("seh", data_dir))

    @staticmethod
    def to_reward(raw: np.ndarray) -> np.ndarray:
        return np.clip(raw / 8.0, MIN_REWARD, 100.0)


class QED(QEDScorer):
    """`qed`: drug-likeness."""

    scores_env = "fragments"
    cache_size = 100_000

    @staticmethod
    def to_reward(raw: np.ndarray) -> np.ndarray:
        return np.maximum(raw, MIN_REWARD)


class SA(SAScorer):
    """`sa`: synthetic accessibility."""

    scores_env = "fragments"
    cache_size = 100_000

    @staticmethod
    def to_reward(raw: np.ndarray) -> np.ndarray:
        return np.maximum(sa_reward(raw), MIN_REWARD)
