"""Molecule rewards: an oracle scores SMILES, and R(x) is a positive transform of its output.

    seh_proxy   R = clip(proxy / 8, 1e-4, 100)        the paper's sEH binding proxy
    vina_seh    R = docking.reward_from_score(score)  Vina docking against sEH (PDB 4JNC)
    qed         R = max(QED, 1e-4)                    drug-likeness, in (0, 1]
    sa          R = max((10 - SA) / 9, 1e-4)          synthetic accessibility, SA 1 (easy) .. 10
    custom      R = the oracle's output                a user's oracle, served (reward.mode remote)

The policy is trained towards R(x) ** reward.beta. With reward.mode remote the oracle runs in
`distgfn serve-reward` processes (distgfn.oracle) and each rollout actor calls them over gRPC;
the transform stays here. An oracle reports a molecule it cannot
score (docking preparation failed, say) with an error: the molecule is recorded and left out
of training, never scored as zero.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from distgfn.config import Config
from distgfn.rewards import Scores

MIN_REWARD = 1e-4


class MoleculeReward:
    """Scores terminal fragment states through their canonical SMILES."""

    def __init__(self, env, oracle, transform: Callable[[np.ndarray], np.ndarray]):
        self.env, self.oracle, self.transform = env, oracle, transform

    def __call__(self, states: np.ndarray) -> Scores:
        return score_smiles(self.oracle, self.transform, self.env.smiles(states))


def score_smiles(oracle, transform, smiles: list[str]) -> Scores:
    raw, errors = oracle.score(smiles)
    raw = np.asarray(raw, dtype=np.float64)
    failed = np.array([e is not None for e in errors], dtype=bool)
    with np.errstate(invalid="ignore"):
        reward = np.where(failed, np.nan, transform(np.where(failed, 0.0, raw)))
    return Scores(reward, raw, list(errors))


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
    if name == "custom":  # a user's served oracle outputs R(x) itself
        return lambda r: r
    raise ValueError(f"unknown molecule reward {name!r}")


class SlowOracle:
    """An oracle that takes `seconds` longer per call: a stand-in for a slow remote one (it
    waits rather than computes, like a process waiting on a docking server)."""

    def __init__(self, oracle, seconds: float):
        self.oracle, self.seconds = oracle, seconds

    def score(self, keys: list[str]):
        time.sleep(self.seconds)
        return self.oracle.score(keys)


def remote_oracle(cfg: Config):
    """An OracleClient for `distgfn serve-reward` servers at reward.addresses."""
    import os

    from distgfn.oracle import OracleClient

    r = cfg.reward
    token = os.environ.get(r.token_env) if r.token_env else None
    if r.token_env and token is None:
        raise ValueError(f"reward.token_env names {r.token_env}, which is not set")
    addresses = [a.strip() for a in r.addresses.split(",") if a.strip()]
    return OracleClient(addresses, deadline_s=r.deadline_s, token=token, tls_ca=r.tls_ca)


def proxy_reward(proxy: np.ndarray) -> np.ndarray:
    return np.clip(proxy / 8.0, MIN_REWARD, 100.0)


def make_molecule_reward(cfg: Config, env) -> MoleculeReward:
    if cfg.reward.mode == "remote":
        return MoleculeReward(env, remote_oracle(cfg), make_transform(cfg.reward.name))
    oracle, transform = make_oracle(cfg)
    return MoleculeReward(env, oracle, transform)
