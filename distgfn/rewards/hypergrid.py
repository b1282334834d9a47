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
