"""Rewards from oracles: an oracle scores objects by key, a transform turns its output into R(x).

    reward = OracleReward(env, oracle, transform)   # oracle.score(keys) -> (raw, errors)
    scores = reward(states)                           # R = transform(raw), per object

The oracle is the reward object itself (reward.mode inline, and in each pool worker), or an
`OracleClient` calling `distgfn serve-reward` servers (reward.mode remote, distgfn.oracle);
the transform is the reward's declared `to_reward` and stays with the trainer.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from distgfn.config import Config, load_config, oracle_addresses
from distgfn.oracle import OracleClient
from distgfn.rewards import Scores
from distgfn.rewards.errors import BadAnswer, ObjectsRaised, OracleDeadline, OracleRaised  # noqa: F401 (re-exported)


class OracleReward:
    """Scores terminal states through their keys (canonical SMILES for molecules).

    A remote call past its deadline fails every object in it; one whose oracle raised is
    raised as ObjectsRaised, so `rewards.call_reward` scores the batch again object by object
    and only the objects that raise fail."""

    def __init__(self, env, oracle, transform: Callable[[np.ndarray], np.ndarray]):
        self.env, self.oracle, self.transform = env, oracle, transform

    def __call__(self, states: np.ndarray) -> Scores:
        keys = self.env.keys(states)
        try:
            scores = score_keys(self.oracle, self.transform, keys)
            scores.keys = keys
            return scores
        except OracleDeadline as e:
            return Scores.all_failed(len(keys), str(e))
        except OracleRaised as e:
            raise ObjectsRaised(str(e)) from None


def score_keys(oracle, transform, keys: list[str]) -> Scores:
    raw, errors = oracle.score(keys)
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape != (len(keys),) or len(errors) != len(keys):
        raise BadAnswer(f"score() returned {raw.shape[0] if raw.ndim else 'a scalar'} values and {len(errors)} errors "
                        f"for {len(keys)} keys")
    failed = np.array([e is not None for e in errors], dtype=bool)
    with np.errstate(invalid="ignore"):
        reward = np.where(failed, np.nan, transform(np.where(failed, 0.0, raw)))
    return Scores(reward, raw, [None if e is None else str(e) for e in errors])


def remote_oracle(cfg: Config):
    """An OracleClient for `distgfn serve-reward` servers at reward.addresses."""
    r = cfg.reward
    token = os.environ.get(r.token_env) if r.token_env else None
    if r.token_env and token is None:
        raise ValueError(f"reward.token_env names {r.token_env}, which is not set")
    addresses = oracle_addresses(cfg)
    return OracleClient(addresses, deadline_s=r.deadline_s, token=token, tls_ca=r.tls_ca)


def served_oracle(name: str, overrides: list[str]):
    """The reward object `distgfn serve-reward --reward NAME` serves: a built-in reward or a
    user's (package.module:NAME), built with reward.options (and the env set by env.*, when
    it asks for one). reward.latency_ms adds a wait per call."""
    return oracle_for(load_config(None, [f"reward.name={name}", *overrides]))


def oracle_for(cfg: Config):
    """The reward object of cfg, as served_oracle builds it."""
    from distgfn import tasks

    env = tasks.make_env(cfg) if tasks.wants(tasks.reward_factory(cfg), "env") else None
    oracle = tasks.make_oracle(cfg, env)
    return SlowOracle(oracle, cfg.reward.latency_ms / 1000) if cfg.reward.latency_ms > 0 else oracle


class RemoteOnly:
    """`custom`: R(x) is the raw output of a remote oracle that is not importable here."""

    def __init__(self):
        raise ValueError("reward.name custom stands for a remote oracle's raw output; it needs reward.mode remote "
                         "(or name the reward by its import path, package.module:NAME)")


class SlowOracle:
    """An oracle that takes `seconds` longer per call: a stand-in for a slow remote one (it
    waits rather than computes, like a process waiting on a docking server)."""

    def __init__(self, oracle, seconds: float):
        self.oracle, self.seconds = oracle, seconds

    def score(self, keys: list[str]):
        time.sleep(self.seconds)
        return self.oracle.score(keys)
