"""Molecule rewards: an oracle scores SMILES, and R(x) is a positive transform of its output.

    seh_proxy   R = clip(proxy / 8, 1e-4, 100)        the paper's sEH binding proxy
    vina_seh    R = docking.reward_from_score(score)  Vina docking against sEH (PDB 4JNC)
    qed         R = max(QED, 1e-4)                    drug-likeness, in (0, 1]
    sa          R = max((10 - SA) / 9, 1e-4)          synthetic accessibility, SA 1 (easy) .. 10

The policy is trained towards R(x) ** reward.beta. An oracle scores canonical SMILES (the
fragment env's keys) and reports a molecule it cannot score (docking preparation failed,
say) with an error: the molecule is recorded and left out of training, never scored as zero.
`rewards.remote.OracleReward` turns an oracle and its transform into a reward, whether the
oracle runs here or behind `distgfn serve-reward` (reward.mode remote).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from distgfn.config import Config

MIN_REWARD = 1e-4


def make_oracle(cfg: Config):
    """(oracle, transform) for reward.name; the oracle has score(smiles) -> (raw, errors)."""
    from distgfn import data

    name = cfg.reward.name
    if name == "seh_proxy":
        from distgfn.chem.proxy import ProxyScorer

        return ProxyScorer(data.data_dir("seh", cfg.data.dir)), make_transform(name)
    if name == "vina_seh":
        from distgfn.chem.docking import VinaDocker

        docker = VinaDocker(data.data_dir("seh", cfg.data.dir), exhaustiveness=cfg.reward.exhaustiveness,
                            max_evals=cfg.reward.max_evals, seed=cfg.seed)
        return docker, make_transform(name)
    if name == "qed":
        from distgfn.chem.scores import QEDScorer

        return QEDScorer(), make_transform(name)
    if name == "sa":
        from distgfn.chem.scores import SAScorer

        return SAScorer(), make_transform(name)
    raise ValueError(f"unknown molecule reward {name!r}")


def make_transform(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """raw oracle output -> R(x) > 0, for reward.name (see the table at the top)."""
    if name == "seh_proxy":
        return proxy_reward
    if name == "vina_seh":
        from distgfn.chem.docking import reward_from_score

        return reward_from_score
    if name == "qed":
        return lambda qed: np.maximum(qed, MIN_REWARD)
    if name == "sa":
        from distgfn.chem.scores import sa_reward

        return lambda sa: np.maximum(sa_reward(sa), MIN_REWARD)
    raise ValueError(f"unknown molecule reward {name!r}")


def proxy_reward(proxy: np.ndarray) -> np.ndarray:
    return np.clip(proxy / 8.0, MIN_REWARD, 100.0)
