"""Plugins for tests/test_plugins.py: most break the protocols on purpose (bad input).

Importable as `fault_plugins` because pytest puts tests/ on sys.path; used in-process only
(serial runtime, `distgfn check`), never by Ray workers.
"""

from __future__ import annotations

import numpy as np
import torch
from motifs.task import Sequences

from distgfn.core import BACKWARD_POLICY, ENUMERABLE, PARENTS
from distgfn.envs.hypergrid import HyperGrid


class NoScore:
    """A reward without score()."""

    def __call__(self, keys):
        return keys


class HalfEnv:
    """An env missing most of the protocol."""

    n_actions = 2

    def initial_states(self, n):
        return np.zeros((n, 1), np.int64)


class WrongParents(Sequences):
    """parents() names the wrong action for every grown state."""

    def parents(self, states):
        parent, actions, child = super().parents(states)
        grown = actions != self.stop
        actions[grown] = (actions[grown] + 1) % len(self.alphabet)
        return parent, actions, child


class NeverStops(Sequences):
    """Claims max_steps shorter than its sequences need."""

    def __init__(self, **options):
        super().__init__(**options)
        self.max_steps = self.min_length - 1


class NoParents(Sequences):
    """A tree-shaped env that declares no parents: TB and DB train on it, FM refuses it."""

    capabilities = frozenset({ENUMERABLE})


class Flaky:
    """A HyperGrid reward that fails some objects in every way a user's reward can: raises,
    NaN, a negative value, a wrong-length answer (for a batch holding cell 3,3)."""

    def score(self, keys):
        if any(k == "3,3" for k in keys):
            return np.ones(len(keys) - 1), [None] * (len(keys) - 1)
        raw = []
        for key in keys:
            x, y = (int(v) for v in key.split(","))
            if x == 1:
                raise ZeroDivisionError(f"no reward at {key}")
            raw.append(np.nan if y == 2 else -1.0 if y == 5 else 1.0 + x)
        return np.array(raw), [None] * len(keys)


class WrongShape(torch.nn.Module):
    """A model whose output lacks the log F(s) column."""

    def __init__(self, env):
        super().__init__()
        self.n_actions = env.n_actions
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, features):
        return self.scale * torch.zeros(len(features), self.n_actions)


class WrongLogitsAt(WrongShape):
    """A model of the right shape whose optional logits_at does not give its forward's entries."""

    def forward(self, features):
        return self.scale * torch.zeros(len(features), self.n_actions + 1)

    def logits_at(self, features, rows, actions):
        return self.scale * torch.ones(len(rows))


class Plain(Sequences):
    """An env that declares no capability: TB trains on it, metrics are empirical."""

    capabilities = frozenset()


class TiltedGrid(HyperGrid):
    """HyperGrid with a backward policy: a cell goes back along axis 0 three times as often as
    along any other axis (the stop step has one parent)."""

    def __init__(self, **options):
        super().__init__(**options)
        self.capabilities = frozenset({PARENTS, ENUMERABLE, BACKWARD_POLICY})

    def backward_log_probs(self, parents, actions, states):
        x = states[:, :-1]
        weights = (x > 0) * np.where(np.arange(self.ndim) == 0, 3.0, 1.0)
        grow = actions != self.stop_action
        p = np.ones(len(states))
        p[grow] = weights[grow, actions[grow]] / weights[grow].sum(axis=1)
        return np.log(p)


class UnnormalizedBackward(TiltedGrid):
    def backward_log_probs(self, parents, actions, states):
        return np.zeros(len(states))
