"""Rewards score a batch of terminal states; `log_rewards` checks what they return."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from distgfn.config import RewardConfig


class RewardError(ValueError):
    """A reward returned something a GFlowNet cannot train on (NaN, inf, R <= 0)."""


class Reward(Protocol):
    def __call__(self, states: np.ndarray) -> np.ndarray:
        """(n,) raw rewards R(x) > 0 for n terminal states."""


def log_rewards(reward: Reward, states: np.ndarray, keys, beta: float = 1.0) -> np.ndarray:
    """beta * log R(x), after checking every R(x) is finite and positive.

    `keys(states)` names the offending object in the error, so a bad reward is traceable.
    """
    raw = np.asarray(reward(states), dtype=np.float64)
    if raw.shape != (len(states),):
        raise RewardError(f"reward returned shape {raw.shape} for {len(states)} objects")
    bad = ~np.isfinite(raw) | (raw <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        what = "not finite" if not np.isfinite(raw[i]) else "not positive"
        raise RewardError(
            f"reward is {what} for {bad.sum()} of {len(raw)} objects; "
            f"first: x={keys(states[i : i + 1])[0]} R={raw[i]!r}"
        )
    return beta * np.log(raw)


def make_reward(cfg: RewardConfig, env) -> Reward:
    if cfg.name == "hypergrid":
        from distgfn.rewards.hypergrid import HyperGridReward

        reward = HyperGridReward(env.height, cfg.r0, cfg.r1, cfg.r2)
    else:
        raise ValueError(f"unknown reward.name {cfg.name!r}")
    return Delayed(reward, cfg.latency_ms / 1000) if cfg.latency_ms > 0 else reward


class Delayed:
    """A reward that takes `seconds` longer per call: a stand-in for a remote oracle's latency.

    It waits rather than computes, like a process waiting on a docking server."""

    def __init__(self, reward: Reward, seconds: float):
        self.reward, self.seconds = reward, seconds

    def __call__(self, states: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return self.reward(states)
