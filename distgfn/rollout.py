"""The rollout role: sample trajectories with a local policy copy, score them, build batches."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from distgfn.batch import build_batch, split_batch, write_record
from distgfn.config import Config
from distgfn.envs import make_env
from distgfn.models import make_model, set_weights, share_weights
from distgfn.objectives import OBJECTIVES
from distgfn.rewards import Scores, make_reward, score_objects
from distgfn.sampling import sample_trajectories, torch_policy


@dataclass
class Rollout:
    batch: dict[str, np.ndarray] | None  # the trajectories whose reward was computed (None: none)
    objects: np.ndarray  # the terminal states sampled
    log_reward: np.ndarray  # beta * log R(x) of each object; NaN where the reward failed
    scores: Scores  # R(x), the oracle's output and errors, per object
    version: int
    reward_s: float  # time spent in the reward call


class RolloutWorker:
    def __init__(self, cfg: Config, seed: int, model=None):
        """`model` shares a policy with the caller (serial runtime); else the worker owns a copy."""
        self.cfg = cfg
        self.env = make_env(cfg)
        self.reward = make_reward(cfg, self.env)
        self.model = model if model is not None else make_model(cfg.model, self.env)
        self.policy = torch_policy(self.model, self.env.n_actions)
        self.with_parents = OBJECTIVES[cfg.objective.name].NEEDS_PARENTS
        self.rng = np.random.default_rng(seed)
        # -1 until weights are set: a worker's own random initialization is no published policy.
        self.version = -1 if model is None else 0

    def set_weights(self, version: int, weights, share: bool = False) -> None:
        """share=True uses the arrays in place (see models.share_weights) instead of copying."""
        (share_weights if share else set_weights)(self.model, weights)
        self.version = version

    def sample(self) -> Rollout:
        s = self.cfg.sampler
        trajs = sample_trajectories(self.env, self.policy, s.batch_size, self.rng, s.epsilon, s.temperature)
        final = trajs.final
        start = time.perf_counter()
        log_r, scores = score_objects(self.reward, final, self.env.keys, self.cfg.reward.beta)
        reward_s = time.perf_counter() - start
        scored = ~scores.failed
        # Objects whose reward failed are recorded by the caller but never trained on.
        batch = build_batch(self.env, trajs.subset(scored), log_r[scored], self.with_parents) if scored.any() else None
        return Rollout(batch, final, log_r, scores, self.version, reward_s)


def encode_records(rollout: Rollout, prefix: str) -> list[bytes]:
    """One msgpack record per trained-on trajectory, with ids `prefix-i`, stamped with the
    policy version."""
    if rollout.batch is None:
        return []
    return [
        write_record(f"{prefix}-{i}", rollout.version, float(log_r), part)
        for i, (part, log_r) in enumerate(zip(split_batch(rollout.batch), rollout.batch["log_reward"]))
    ]
