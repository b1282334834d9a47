"""Rewards score a batch of terminal states; `score_objects` checks what they return.

A reward returns either an array of R(x) (HyperGrid), or `Scores` when its oracle can fail on
some objects (a molecule that docking cannot prepare): those carry an error message, are
recorded and left out of training, and the others train as usual. A NaN, infinite or
non-positive R(x) without an error message is a bug in the reward and stops the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from distgfn.config import Config


class RewardError(ValueError):
    """A reward returned something a GFlowNet cannot train on (NaN, inf, R <= 0)."""


@dataclass
class Scores:
    reward: np.ndarray  # (n,) R(x) > 0; NaN where the oracle failed
    raw: np.ndarray  # (n,) the oracle's own output (the proxy value, a docking score)
    errors: list  # why each failed object failed; None where it scored

    @property
    def failed(self) -> np.ndarray:
        return np.array([e is not None for e in self.errors], dtype=bool)


class Reward(Protocol):
    def __call__(self, states: np.ndarray) -> np.ndarray | Scores:
        """R(x) > 0 for n terminal states, as an (n,) array or as Scores."""


def score_objects(reward: Reward, states: np.ndarray, keys, beta: float = 1.0) -> tuple[np.ndarray, Scores]:
    """(beta * log R(x), the scores): NaN log rewards where the oracle reported a failure.

    Every other R(x) must be finite and positive; `keys(states)` names the offending object in
    the error, so a bad reward is traceable."""
    out = reward(states)
    if not isinstance(out, Scores):
        raw = np.asarray(out, dtype=np.float64)
        out = Scores(raw, raw, [None] * len(raw))
    value = np.asarray(out.reward, dtype=np.float64)
    if value.shape != (len(states),) or len(out.errors) != len(states):
        raise RewardError(f"reward returned shape {value.shape} for {len(states)} objects")
    failed = out.failed
    bad = (~np.isfinite(value) | (value <= 0)) & ~failed
    if bad.any():
        i = int(np.argmax(bad))
        what = "not finite" if not np.isfinite(value[i]) else "not positive"
        raise RewardError(
            f"reward is {what} for {bad.sum()} of {len(value)} objects; "
            f"first: x={keys(states[i : i + 1])[0]} R={value[i]!r}"
        )
    with np.errstate(invalid="ignore"):
        log_r = np.where(failed, np.nan, beta * np.log(np.where(failed, 1.0, value)))
    return log_r, out


def log_rewards(reward: Reward, states: np.ndarray, keys, beta: float = 1.0) -> np.ndarray:
    """beta * log R(x) for rewards that never fail an object (HyperGrid); see score_objects."""
    log_r, scores = score_objects(reward, states, keys, beta)
    if scores.failed.any():
        i = int(np.argmax(scores.failed))
        raise RewardError(f"reward failed for x={keys(states[i : i + 1])[0]}: {scores.errors[i]}")
    return log_r


def make_reward(cfg: Config, env) -> Reward:
    r = cfg.reward
    if r.name == "hypergrid":
        from distgfn.rewards.hypergrid import HyperGridReward

        reward = HyperGridReward(env.height, r.r0, r.r1, r.r2)
    else:
        from distgfn.rewards.molecules import make_molecule_reward

        reward = make_molecule_reward(cfg, env)
    return Delayed(reward, r.latency_ms / 1000) if r.latency_ms > 0 else reward


class Delayed:
    """A reward that takes `seconds` longer per call: a stand-in for a remote oracle's latency.

    It waits rather than computes, like a process waiting on a docking server."""

    def __init__(self, reward: Reward, seconds: float):
        self.reward, self.seconds = reward, seconds

    def __call__(self, states: np.ndarray) -> np.ndarray | Scores:
        time.sleep(self.seconds)
        return self.reward(states)
