"""Reward workers (reward.mode pool) and the run's shared reward cache, as Ray actors."""

from __future__ import annotations

import ray
import torch

from distgfn.rewards.cache import RewardCache


@ray.remote
class RewardActor:
    """Computes one reward (reward.name, as in inline mode) for chunks of terminal states."""

    def __init__(self, cfg):
        torch.set_num_threads(1)
        from distgfn.tasks import make_env
        from distgfn.rewards import make_reward

        self.reward = make_reward(cfg, make_env(cfg))

    def score(self, states):
        from distgfn.rewards import call_reward

        return call_reward(self.reward, states)

    def ready(self) -> bool:
        """Returns once every call queued before it has run (callers use it to let a worker finish)."""
        return True


CacheActor = ray.remote(num_cpus=0)(RewardCache)
