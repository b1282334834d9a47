"""The environment interface: a deterministic episodic DAG, vectorized over a batch of states.

States are rows of one integer numpy array (n, width), so a batch of states is a plain array,
trajectories are 3-D arrays, and nothing on the hot path is a per-state Python object. A
terminal state ("done") has no outgoing actions; the object it stands for is scored by a
separate Reward.

    env = HyperGrid(ndim=2, height=8)
    s = env.initial_states(16)                  # (16, width)
    a = pick(env.masks(s))                      # masks: (16, n_actions) bool
    s = env.step(s, a)                          # env.is_terminal(s): (16,) bool
    parents, actions, child = env.parents(s)    # every (parent, action) leading to each s
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Env(Protocol):
    n_actions: int
    stop_action: int
    # Upper bound on the number of actions in any trajectory.
    max_steps: int

    def initial_states(self, n: int) -> np.ndarray:
        """n copies of the initial state s0."""

    def masks(self, states: np.ndarray) -> np.ndarray:
        """(n, n_actions) bool: the valid actions of each state; all False for terminal ones."""

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The states reached by taking `actions` (which must be valid) in `states`."""

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        """(n,) bool."""

    def parents(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (parent, action) pair with step(parent, action) == state, for non-initial states.

        Returns (parent_states, parent_actions, child_index): parallel arrays with one row per
        pair; child_index[k] is the row of `states` that pair k leads to.
        """

    def featurize(self, states: np.ndarray) -> np.ndarray:
        """The policy network's input for each state (compact; the model expands it)."""

    def keys(self, states: np.ndarray) -> list[str]:
        """A canonical string key per terminal state, equal for equal objects."""

    def objects(self, states: np.ndarray) -> list:
        """A JSON-ready description of each terminal object (what `distgfn sample` prints as x)."""
