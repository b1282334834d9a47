"""The HyperGrid reward of the seed paper.

    R(x) = R0 + R1 * prod_i 1[0.25 < |x_i/(H-1) - 0.5|]
              + R2 * prod_i 1[0.3 < |x_i/(H-1) - 0.5| < 0.4]
"""

from __future__ import annotations

import numpy as np


class HyperGridReward:
    def __init__(self, height: int, r0: float = 0.1, r1: float = 0.5, r2: float = 2.0):
        self.height, self.r0, self.r1, self.r2 = height, r0, r1, r2

    def __call__(self, states: np.ndarray) -> np.ndarray:
        d = np.abs(states[:, :-1] / (self.height - 1) - 0.5)
        outer = (d > 0.25).all(axis=1)
        ring = ((d > 0.3) & (d < 0.4)).all(axis=1)
        return self.r0 + self.r1 * outer + self.r2 * ring


class HyperGridOracle:
    """The built-in reward `hypergrid`, scoring cells by key "x1,x2,..." (the env's keys), the
    same object inline, in the reward pool and behind `distgfn serve-reward --reward hypergrid`."""

    scores_env = "hypergrid"

    def __init__(self, env, r0: float = 0.1, r1: float = 0.5, r2: float = 2.0):
        if not r0 > 0 or not r1 >= 0 or not r2 >= 0:
            raise ValueError(f"the HyperGrid reward needs r0 > 0, r1 >= 0, r2 >= 0; got r0={r0}, r1={r1}, r2={r2}")
        self.ndim = env.ndim
        self.reward = HyperGridReward(env.height, r0, r1, r2)

    def score(self, keys: list[str]) -> tuple[np.ndarray, list]:
        """One vectorized call for a batch of good keys; key by key only to name bad ones."""
        try:
            cells = np.array([[int(v) for v in key.split(",")] for key in keys], dtype=np.int64).reshape(len(keys), -1)
        except ValueError:
            cells = None  # not integers, or rows of different lengths
        if cells is None or cells.shape[1] != self.ndim or (cells < 0).any() or (cells >= self.reward.height).any():
            return self.score_each(keys)
        states = np.concatenate([cells, np.ones((len(cells), 1), np.int64)], axis=1)
        return self.reward(states).astype(np.float64), [None] * len(keys)

    def score_each(self, keys: list[str]) -> tuple[np.ndarray, list]:
        raw, errors = np.full(len(keys), np.nan), [None] * len(keys)
        for i, key in enumerate(keys):
            try:
                cell = np.array([int(v) for v in key.split(",")] + [1])
                if len(cell) != self.ndim + 1:
                    raise ValueError(f"not {self.ndim} coordinates")
                if (cell[:-1] < 0).any() or (cell[:-1] >= self.reward.height).any():
                    raise ValueError(f"outside the grid of side {self.reward.height}")
            except ValueError as e:
                errors[i] = f"bad cell {key!r}: {e}"
                continue
            raw[i] = self.reward(cell[None])[0]
        return raw, errors
