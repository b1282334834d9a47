"""Rewards memoized by the object's key (canonical SMILES for molecules), shared by a run.

    cache = RewardCache(capacity=100_000)
    reward = CachedReward(docking_reward, cache, env.keys)
    scores = reward(states)          # only keys never scored before reach docking_reward

The Ray runtime keeps one `RewardCache` in a `CacheActor` that every rollout actor asks
(`RemoteCache`), so a molecule docked by one actor is never docked again by another. Only
rewards that succeeded are kept: a failure may be a timeout that succeeds next time. The
least recently used keys are evicted beyond `capacity`; the contents and the hit and miss
counters are saved with each checkpoint.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from distgfn.rewards import Scores, call_reward


class RewardCache:
    """key -> (R(x), raw oracle output), least recently used evicted beyond `capacity`."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1; got {capacity}")
        self.capacity = capacity
        self.entries: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.hits = self.misses = 0

    def lookup(self, keys: list[str]) -> list[tuple[float, float] | None]:
        found = []
        for key in keys:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
            found.append(entry)
        hits = sum(entry is not None for entry in found)
        self.hits += hits
        self.misses += len(keys) - hits
        return found

    def store(self, keys: list[str], reward: np.ndarray, raw: np.ndarray) -> None:
        for key, r, x in zip(keys, reward.tolist(), raw.tolist()):
            self.entries[key] = (r, x)
            self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "size": len(self.entries)}

    def state(self) -> dict:
        """Plain lists and arrays, oldest entry first (msgpack-able)."""
        values = np.array(list(self.entries.values()), dtype=np.float64).reshape(-1, 2)
        return {"keys": list(self.entries), "reward": values[:, 0].copy(), "raw": values[:, 1].copy(),
                "hits": self.hits, "misses": self.misses}

    def restore(self, state: dict) -> None:
        self.entries.clear()
        self.store(state["keys"], np.asarray(state["reward"]), np.asarray(state["raw"]))
        self.hits, self.misses = int(state["hits"]), int(state["misses"])


class CachedReward:
    """A reward that asks `cache` first and scores only the keys it lacks, each once per call."""

    def __init__(self, reward, cache, keys):
        self.reward, self.cache, self.keys = reward, cache, keys

    def __call__(self, states: np.ndarray) -> Scores:
        keys = self.keys(states)
        found = self.cache.lookup(keys)
        reward, raw = np.full(len(keys), np.nan), np.full(len(keys), np.nan)
        errors: list = [None] * len(keys)
        missing: dict[str, list[int]] = {}  # a key sampled twice in one batch is scored once
        for i, (key, entry) in enumerate(zip(keys, found)):
            if entry is None:
                missing.setdefault(key, []).append(i)
            else:
                reward[i], raw[i] = entry
        if missing:
            self.score_missing(states, missing, reward, raw, errors)
        return Scores(reward, raw, errors, keys)

    def score_missing(self, states, missing: dict[str, list[int]], reward, raw, errors) -> None:
        """Scores one object per missing key, fills the batch's arrays, and keeps the successes."""
        scores = call_reward(self.reward, states[[where[0] for where in missing.values()]])
        got, got_raw = np.asarray(scores.reward, dtype=np.float64), np.asarray(scores.raw, dtype=np.float64)
        for j, where in enumerate(missing.values()):
            reward[where], raw[where] = got[j], got_raw[j]
            for i in where:
                errors[i] = scores.errors[j]
        with np.errstate(invalid="ignore"):
            good = np.array([e is None for e in scores.errors]) & np.isfinite(got) & (got > 0)
        if good.any():
            self.cache.store([k for k, ok in zip(missing, good) if ok], got[good], got_raw[good])


class RemoteCache:
    """A CacheActor seen through RewardCache's lookup and store (store does not wait)."""

    def __init__(self, actor):
        self.actor = actor

    def lookup(self, keys: list[str]) -> list:
        import ray

        return ray.get(self.actor.lookup.remote(keys))

    def store(self, keys: list[str], reward: np.ndarray, raw: np.ndarray) -> None:
        self.actor.store.remote(keys, reward, raw)
