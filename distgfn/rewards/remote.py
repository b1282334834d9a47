"""Rewards from oracles: an oracle scores objects by key, a transform turns its output into R(x).

    reward = OracleReward(env, oracle, transform)   # oracle.score(keys) -> (raw, errors)
    scores = reward(states)                           # R = transform(raw), per object

With reward.mode remote the oracle is an `OracleClient` calling `distgfn serve-reward`
servers (distgfn.oracle) and the transform stays with the trainer:

    hypergrid   R = the oracle's output   keys "x1,x2,..."; serve-reward --reward hypergrid
    custom      R = the oracle's output   a user's oracle: serve-reward --reward package.module:NAME
    molecules   see rewards.molecules     keys are canonical SMILES
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from distgfn.config import Config, load_config
from distgfn.rewards import Scores


class OracleReward:
    """Scores terminal states through their keys (canonical SMILES for molecules).

    A remote call past its deadline fails every object in it; one whose oracle raised is
    raised as ObjectsRaised, so `rewards.call_reward` scores the batch again object by object
    and only the objects that raise fail."""

    def __init__(self, env, oracle, transform: Callable[[np.ndarray], np.ndarray]):
        self.env, self.oracle, self.transform = env, oracle, transform

    def __call__(self, states: np.ndarray) -> Scores:
        from distgfn.oracle import OracleDeadline, OracleRaised

        keys = self.env.keys(states)
        try:
            return score_keys(self.oracle, self.transform, keys)
        except OracleDeadline as e:
            return Scores.all_failed(len(keys), str(e))
        except OracleRaised as e:
            raise ObjectsRaised(str(e)) from None


class ObjectsRaised(RuntimeError):
    """The oracle raised on a batch: some object in it, not the service, is at fault."""


def score_keys(oracle, transform, keys: list[str]) -> Scores:
    raw, errors = oracle.score(keys)
    raw = np.asarray(raw, dtype=np.float64)
    failed = np.array([e is not None for e in errors], dtype=bool)
    with np.errstate(invalid="ignore"):
        reward = np.where(failed, np.nan, transform(np.where(failed, 0.0, raw)))
    return Scores(reward, raw, list(errors))


def transform_for(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name in ("hypergrid", "custom"):
        return lambda r: r
    from distgfn.rewards.molecules import make_transform

    return make_transform(name)


def remote_reward(cfg: Config, env) -> OracleReward:
    return OracleReward(env, remote_oracle(cfg), transform_for(cfg.reward.name))


def remote_oracle(cfg: Config):
    """An OracleClient for `distgfn serve-reward` servers at reward.addresses."""
    from distgfn.oracle import OracleClient

    r = cfg.reward
    token = os.environ.get(r.token_env) if r.token_env else None
    if r.token_env and token is None:
        raise ValueError(f"reward.token_env names {r.token_env}, which is not set")
    addresses = [a.strip() for a in r.addresses.split(",") if a.strip()]
    return OracleClient(addresses, deadline_s=r.deadline_s, token=token, tls_ca=r.tls_ca)


def served_oracle(name: str, overrides: list[str]):
    """The oracle `distgfn serve-reward --reward NAME` serves: a built-in reward's, or a user's
    ("package.module:NAME": an object with score(keys) -> (raw, errors), or a callable taking no
    arguments that returns one; its raw outputs are R(x), trained on with reward.name custom).
    reward.latency_ms adds a wait per call."""
    if ":" in name:
        cfg = load_config(None, overrides)
        oracle = import_oracle(name)
    elif name == "hypergrid":
        from distgfn.rewards.hypergrid import HyperGridOracle

        cfg = load_config(None, overrides)
        oracle = HyperGridOracle(cfg.env.height, cfg.reward.r0, cfg.reward.r1, cfg.reward.r2)
    else:
        from distgfn.rewards.molecules import make_oracle

        cfg = load_config(None, ["env.name=fragments", f"reward.name={name}", *overrides])
        oracle, _ = make_oracle(cfg)
    return SlowOracle(oracle, cfg.reward.latency_ms / 1000) if cfg.reward.latency_ms > 0 else oracle


def import_oracle(path: str):
    import importlib

    from distgfn.config import ConfigError

    module_name, _, attr = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"--reward {path}: cannot import it ({type(e).__name__}: {e})") from None
    oracle = found() if isinstance(found, type) or not hasattr(found, "score") else found
    if not callable(getattr(oracle, "score", None)):
        raise ConfigError(f"--reward {path}: {type(oracle).__name__} has no score(keys) method")
    return oracle


class SlowOracle:
    """An oracle that takes `seconds` longer per call: a stand-in for a slow remote one (it
    waits rather than computes, like a process waiting on a docking server)."""

    def __init__(self, oracle, seconds: float):
        self.oracle, self.seconds = oracle, seconds

    def score(self, keys: list[str]):
        time.sleep(self.seconds)
        return self.oracle.score(keys)
