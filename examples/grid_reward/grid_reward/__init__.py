"""A reward-only example: your own reward on distgfn's HyperGrid environment.

    reward: {name: grid_reward:Diagonal, options: {width: 1, high: 2.0}}

Any object with score(keys) -> (raw, errors) is a reward. HyperGrid's keys are cells written
"x1,x2,..."; this one rewards cells near the diagonal x1 = x2 = ... . Named by import path, it
runs inline in the rollout actors, in the reward pool (reward.mode pool), or behind
`distgfn serve-reward --reward grid_reward:Diagonal` (reward.mode remote).
"""

from __future__ import annotations

import numpy as np


class Diagonal:
    scores_env = "hypergrid"  # distgfn refuses a config that pairs it with another env

    def __init__(self, width: int = 1, low: float = 0.1, high: float = 2.0):
        if width < 0 or low <= 0 or high <= 0:
            raise ValueError(f"needs width >= 0, low > 0, high > 0; got width={width}, low={low}, high={high}")
        self.width, self.low, self.high = width, low, high

    def score(self, keys: list[str]):
        raw, errors = np.full(len(keys), np.nan), [None] * len(keys)
        for i, key in enumerate(keys):
            try:
                x = [int(v) for v in key.split(",")]
            except ValueError:
                errors[i] = f"not a HyperGrid cell: {key!r}"
                continue
            raw[i] = self.high if max(x) - min(x) <= self.width else self.low
        return raw, errors
