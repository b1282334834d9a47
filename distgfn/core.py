"""The roles of distgfn, as small interfaces. Read this page to learn the system.

    cfg = load_config("configs/hypergrid.yaml")
    learner = Learner(cfg)                        # owns the model and the optimizer
    actor = RolloutWorker(cfg, seed=1)            # owns an env, a reward, a policy copy
    while learner.step < cfg.learner.steps:
        actor.set_weights(*learner.weights())     # VariableSource -> Actor
        rollout = actor.sample()                  # trajectories -> rewards -> batch
        learner.update(rollout.batch)             # one objective step

`distgfn.serial` runs exactly this loop in one process. The distributed runtime puts actors
and the learner in separate processes and a replay table between them; the roles stay
the same, only the transport changes.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

Weights = dict[str, np.ndarray]


class VariableSource(Protocol):
    def weights(self) -> tuple[int, Weights]:
        """The current policy version and its weights as a flat dict of numpy arrays."""


class Actor(Protocol):
    def set_weights(self, version: int, weights: Weights) -> None:
        """Adopt a newer policy; later samples are stamped with `version`."""

    def sample(self):
        """Roll out one batch of trajectories, score them, and return a training batch."""


class Learner(VariableSource, Protocol):
    step: int

    def update(self, batch: dict[str, np.ndarray]) -> float:
        """One gradient step of the objective on a stacked batch; returns the loss."""


class Saveable(Protocol):
    def state(self) -> dict:
        """Everything needed to continue, as arrays and plain values."""

    def restore(self, state: dict) -> None:
        """Continue from `state()`."""
