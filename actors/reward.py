"""Reward workers (reward.mode pool) and the run's shared reward cache, as Ray actors."""

from __future__ import annotations

import time

import ray
import torch

from distgfn.rewards.cache import RewardCache


@ray.remote
class RewardActor:
    """Computes one reward (reward.name, as in inline mode) for chunks of terminal states."""

    def __init__(self, cfg):
        torch.set_num_threads(1)
        from distgfn.envs import make_env
        from distgfn.rewards import make_reward

        self.reward = make_reward(cfg, make_env(cfg))
        self.totals = {"calls": 0, "objects": 0, "busy_s": 0.0}

    def score(self, states):
        from distgfn.rewards import call_reward

        start = time.perf_counter()
        try:
            return call_reward(self.reward, states)
        finally:
            self.totals["calls"] += 1
            self.totals["objects"] += len(states)
            self.totals["busy_s"] += time.perf_counter() - start

    def stats(self) -> dict:
        """Calls, objects and seconds spent scoring so far (busy_s / wall time: utilization)."""
        return dict(self.totals)

    def ready(self) -> bool:
        """Returns once every call queued before it has run (callers use it to let a worker finish)."""
        return True


CacheActor = ray.remote(num_cpus=0)(RewardCache)
