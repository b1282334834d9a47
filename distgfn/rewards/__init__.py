"""Rewards score a batch of terminal states; `score_objects` checks what they return.

`make_reward` wraps the configured reward object (`distgfn.core.Reward`, scoring by key) or
its remote oracle into a `RewardFn` on states, which returns `Scores`: R(x), the oracle's own
output and an error per object (a molecule that docking cannot prepare). An object fails when the oracle says
so, when its R(x) is NaN, infinite or not positive, or when the reward raises on it (a batch
that raises is scored again object by object to find which). Failed objects are recorded with
their key and the reason, counted, and left out of training, never given a made-up reward;
`FailureWindow` stops the run when too many of the recent ones fail. A `RewardServiceError`
(a remote oracle that cannot be reached) is not about any object and propagates.
"""

from __future__ import annotations

import time
import sys
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from distgfn.config import Config
from distgfn.rewards.errors import RewardError, RewardServiceError, RewardUnavailable  # noqa: F401 (re-exported)


@dataclass
class Scores:
    reward: np.ndarray  # (n,) R(x) > 0; NaN where the oracle failed
    raw: np.ndarray  # (n,) the oracle's own output (the proxy value, a docking score)
    errors: list  # why each failed object failed; None where it scored
    # The objects' env.keys when the reward computed them (the driver then need not again).
    keys: list | None = None

    @classmethod
    def all_failed(cls, n: int, error: str) -> "Scores":
        """n objects that all failed for the same reason."""
        return cls(np.full(n, np.nan), np.full(n, np.nan), [error] * n)

    @property
    def failed(self) -> np.ndarray:
        return np.array([e is not None for e in self.errors], dtype=bool)


class RewardFn(Protocol):
    """What rollout workers call: the reward of terminal states (wrappers add a cache, a pool,
    waiting out an unavailable service)."""

    def __call__(self, states: np.ndarray) -> np.ndarray | Scores:
        """R(x) > 0 for n terminal states, as an (n,) array or as Scores."""


def score_objects(reward: RewardFn, states: np.ndarray, keys, beta: float = 1.0) -> tuple[np.ndarray, Scores]:
    """(beta * log R(x), the scores), with NaN log rewards and an error for each failed object."""
    out = call_reward(reward, states)
    value = np.asarray(out.reward, dtype=np.float64)
    if value.shape != (len(states),) or len(out.errors) != len(states):
        raise RewardError(f"reward returned shape {value.shape} for {len(states)} objects")
    return log_of(out, beta), out


def log_of(scores: Scores, beta: float) -> np.ndarray:
    """beta * log R(x) per object, NaN where it failed; an R that is NaN, infinite or <= 0
    fails its object here (its error says which)."""
    value = np.asarray(scores.reward, dtype=np.float64)
    for i in np.flatnonzero((~np.isfinite(value) | (value <= 0)) & ~scores.failed):
        what = "not finite" if not np.isfinite(value[i]) else "not positive"
        scores.errors[i] = f"reward is {what}: R={float(value[i])!r}"
    failed = scores.failed
    with np.errstate(invalid="ignore"):
        return np.where(failed, np.nan, beta * np.log(np.where(failed, 1.0, value)))


def call_reward(reward: RewardFn, states: np.ndarray) -> Scores:
    """The reward's Scores; a batch that raises is scored again object by object, and an
    object that raises alone fails with the exception as its error."""
    try:
        return as_scores(reward(states))
    except (RewardError, RewardServiceError):
        raise
    except Exception as e:  # a user's reward may raise anything on some inputs: find which, record why
        if len(states) == 1:
            return Scores.all_failed(1, f"reward raised {type(e).__name__}: {e}")
        parts = [call_reward(reward, states[i : i + 1]) for i in range(len(states))]
        return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("reward", "raw")),
                      [e for p in parts for e in p.errors])


def as_scores(out) -> Scores:
    if isinstance(out, Scores):
        return Scores(out.reward, out.raw, list(out.errors), out.keys)
    raw = np.asarray(out, dtype=np.float64)
    return Scores(raw, raw, [None] * len(raw))


def log_rewards(reward: RewardFn, states: np.ndarray, keys, beta: float = 1.0) -> np.ndarray:
    """beta * log R(x) for rewards that must never fail an object; a failure is a RewardError."""
    log_r, scores = score_objects(reward, states, keys, beta)
    failed = scores.failed
    if failed.any():
        i = int(np.argmax(failed))
        raise RewardError(f"reward failed for {failed.sum()} of {len(failed)} objects; "
                          f"first: x={keys(states[i : i + 1])[0]}: {scores.errors[i]}")
    return log_r


class FailureWindow:
    """The failure rate over the last `size` objects; above `max_rate` the run must stop."""

    def __init__(self, max_rate: float, size: int):
        self.max_rate = max_rate
        self.recent: deque[bool] = deque(maxlen=size)

    def add(self, errors: list, objects: np.ndarray, keys) -> None:
        """Raises RewardError naming the latest failed object when the rate is too high (judged
        once min(size, 100) objects have been seen)."""
        self.recent.extend(e is not None for e in errors)
        n, failed = len(self.recent), sum(self.recent)
        if n >= min(self.recent.maxlen, 100) and failed / n > self.max_rate:
            i = max(i for i, e in enumerate(errors) if e is not None)
            raise RewardError(f"the reward failed for {failed} of the last {n} objects, more than "
                              f"reward.max_failure_rate={self.max_rate:g}; latest: x={keys(objects[i : i + 1])[0]}: "
                              f"{errors[i]}")


def report_failures(sampled, env, window: FailureWindow) -> None:
    """Names the first failed object of a report on stderr and checks the failure rate."""
    failed = [i for i, e in enumerate(sampled.errors) if e is not None]
    if failed:
        i = failed[0]
        print(f"distgfn: reward failed for {len(failed)} of {len(sampled.errors)} objects; first: "
              f"x={env.keys(sampled.objects[i : i + 1])[0]}: {sampled.errors[i]}", file=sys.stderr)
    window.add(sampled.errors, sampled.objects, env.keys)


def make_reward(cfg: Config, env, oracle=None) -> RewardFn:
    """The configured reward as a callable on terminal states: the reward object (`oracle` when
    given, else built here: inline, and in each pool worker), or the client of its remote oracles."""
    from distgfn import tasks
    from distgfn.rewards.remote import OracleReward, remote_oracle

    if oracle is None:
        oracle = remote_oracle(cfg) if cfg.reward.mode == "remote" else tasks.make_oracle(cfg, env)
    reward = OracleReward(env, oracle, tasks.to_reward(tasks.reward_factory(cfg)))
    return Delayed(reward, cfg.reward.latency_ms / 1000) if cfg.reward.latency_ms > 0 else reward


class Delayed:
    """A reward that takes `seconds` longer per call: a stand-in for a remote oracle's latency.

    It waits rather than computes, like a process waiting on a docking server."""

    def __init__(self, reward: RewardFn, seconds: float):
        self.reward, self.seconds = reward, seconds

    def __call__(self, states: np.ndarray) -> np.ndarray | Scores:
        time.sleep(self.seconds)
        return self.reward(states)
