"""HyperGrid, the seed paper's synthetic benchmark.

A state is a cell x in {0..H-1}^ndim plus a done flag, stored as one row [x_1..x_ndim, done].
Actions: "+1 on axis i" (i < ndim) and "stop" (= ndim). By default every cell may stop, so
the terminal objects are all H^ndim cells. With `terminate_at_edge` (the original paper
code) reaching H-1 on any axis also ends the episode; cells with two or more coordinates at
H-1 are then unreachable.
"""

from __future__ import annotations

import numpy as np

from distgfn.core import ENUMERABLE, PARENTS


# Grids up to this many cells are evaluated exactly (l1_exact); larger ones empirically.
MAX_EXACT_CELLS = 1_000_000


class HyperGrid:
    def __init__(self, ndim: int = 2, height: int = 8, terminate_at_edge: bool = False):
        if not isinstance(ndim, int) or not isinstance(height, int) or ndim < 1 or height < 2:
            raise ValueError(f"HyperGrid needs integers ndim >= 1 and height >= 2; got ndim={ndim!r}, height={height!r}")
        if height ** ndim >= 2**63:
            raise ValueError(f"HyperGrid height ** ndim = {height}**{ndim} cells is beyond what a cell index can count "
                             f"(2**63); use fewer dimensions or a lower height")
        small = height ** ndim <= MAX_EXACT_CELLS
        self.capabilities = frozenset({PARENTS, ENUMERABLE} if small else {PARENTS})
        self.ndim = ndim
        self.height = height
        self.terminate_at_edge = terminate_at_edge
        self.n_actions = ndim + 1
        self.stop_action = ndim
        self.max_steps = ndim * (height - 1) + 1
        self.width = ndim + 1
        self.feature_sizes = [height] * ndim
        self._unit = np.eye(ndim, dtype=np.int64)

    def initial_states(self, n: int) -> np.ndarray:
        return np.zeros((n, self.width), dtype=np.int64)

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return states[:, -1] == 1

    def masks(self, states: np.ndarray) -> np.ndarray:
        alive = ~self.is_terminal(states)
        grow = (states[:, :-1] < self.height - 1) & alive[:, None]
        return np.concatenate([grow, alive[:, None]], axis=1)

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        out = states.copy()
        rows = np.arange(len(states))
        stop = actions == self.stop_action
        grow = ~stop
        out[rows[grow], actions[grow]] += 1
        out[stop, -1] = 1
        if self.terminate_at_edge:
            out[grow & (out[:, :-1] == self.height - 1).any(axis=1), -1] = 1
        return out

    def parents(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = states[:, :-1]
        done = self.is_terminal(states)
        by_stop = done.copy()
        if self.terminate_at_edge:
            by_stop &= ~(x == self.height - 1).any(axis=1)
        # Candidate parent x - e_i for every axis i, valid where x_i > 0 and the state was
        # reached by a "+1" move (from a non-terminal, so in edge mode an interior, parent).
        candidates = x[:, None, :] - self._unit[None]
        valid = (x > 0) & ~by_stop[:, None]
        if self.terminate_at_edge:
            valid &= ~(candidates == self.height - 1).any(axis=2)
        rows, axes = np.nonzero(valid)
        stop_rows = np.nonzero(by_stop)[0]
        cells = np.concatenate([x[stop_rows], candidates[rows, axes]])
        parent_states = np.concatenate([cells, np.zeros((len(cells), 1), np.int64)], axis=1)
        actions = np.concatenate([np.full(len(stop_rows), self.stop_action), axes])
        return parent_states, actions, np.concatenate([stop_rows, rows])

    def featurize(self, states: np.ndarray) -> np.ndarray:
        # The model one-hot encodes the coordinates itself, so records stay small.
        return states[:, :-1]

    def keys(self, states: np.ndarray) -> list[str]:
        return [",".join(map(str, row)) for row in states[:, :-1].tolist()]

    def objects(self, states: np.ndarray) -> list:
        return states[:, :-1].tolist()

    # Exact evaluation helpers: the grid is small enough to enumerate.

    def all_cells(self) -> np.ndarray:
        """Every cell as a non-terminal state, in ravel order (cell_index(all_cells()) == arange)."""
        grid = np.indices((self.height,) * self.ndim).reshape(self.ndim, -1).T
        return np.concatenate([grid, np.zeros((len(grid), 1), np.int64)], axis=1)

    def cell_index(self, states: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(states[:, :-1].T, (self.height,) * self.ndim)

    def is_live(self, states: np.ndarray) -> np.ndarray:
        """Whether each cell can be a non-terminal state."""
        if self.terminate_at_edge:
            return (states[:, :-1] < self.height - 1).all(axis=1)
        return np.ones(len(states), dtype=bool)

    def is_reachable_object(self, states: np.ndarray) -> np.ndarray:
        """Whether each cell can be a sampled terminal object."""
        if self.terminate_at_edge:
            return (states[:, :-1] == self.height - 1).sum(axis=1) <= 1
        return np.ones(len(states), dtype=bool)
