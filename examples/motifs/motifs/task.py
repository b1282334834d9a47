"""A task distgfn has never seen: sequences built left to right, rewarded by closeness to motifs.

    env:    {name: motifs.task:Sequences, options: {alphabet: "01", min_length: 6, max_length: 8}}
    reward: {name: motifs.task:MotifReward, options: {motifs: ["01100110", "1110001"]}}
    model:  {name: motifs.task:OneHotMLP, options: {hidden: 64}}     # or distgfn's built-in mlp

A state is one row of integers: the letters so far (1..A, 0 where the sequence has not
reached yet) and a done flag. Actions 0..A-1 append a letter, action A stops (allowed from
min_length on; at max_length it is the only one). Each state has exactly one parent (its
prefix), so parents() is short; the state space is small, so it is declared enumerable and
distgfn evaluates the trained policy exactly (l1_exact).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from distgfn.core import ENUMERABLE, PARENTS


class Sequences:
    capabilities = frozenset({PARENTS, ENUMERABLE})

    def __init__(self, alphabet: str = "01", min_length: int = 6, max_length: int = 8):
        if len(alphabet) < 2 or len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet needs two or more distinct letters; got {alphabet!r}")
        if not 1 <= min_length <= max_length:
            raise ValueError(f"needs 1 <= min_length <= max_length; got {min_length}, {max_length}")
        self.alphabet, self.min_length, self.max_length = alphabet, min_length, max_length
        self.stop = len(alphabet)
        self.n_actions = len(alphabet) + 1
        self.max_steps = max_length + 1
        # featurize(): one column per position, 0 (empty) or 1..A.
        self.feature_sizes = [len(alphabet) + 1] * max_length

    def initial_states(self, n: int) -> np.ndarray:
        return np.zeros((n, self.max_length + 1), dtype=np.int64)

    def lengths(self, states: np.ndarray) -> np.ndarray:
        return (states[:, :-1] > 0).sum(axis=1)

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return states[:, -1] == 1

    def masks(self, states: np.ndarray) -> np.ndarray:
        alive, length = ~self.is_terminal(states), self.lengths(states)
        grow = np.repeat((alive & (length < self.max_length))[:, None], len(self.alphabet), axis=1)
        stop = alive & (length >= self.min_length)
        return np.concatenate([grow, stop[:, None]], axis=1)

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        out, rows = states.copy(), np.arange(len(states))
        grow = actions != self.stop
        out[rows[grow], self.lengths(states)[grow]] = actions[grow] + 1
        out[~grow, -1] = 1
        return out

    def parents(self, states: np.ndarray):
        length = self.lengths(states)
        done = self.is_terminal(states)
        child = np.flatnonzero(done | (length > 0))
        parent = states[child].copy()
        actions = np.full(len(child), self.stop)
        grown = ~done[child]
        last = length[child][grown] - 1
        actions[grown] = parent[grown, last] - 1
        parent[np.flatnonzero(grown), last] = 0
        parent[~grown, -1] = 0
        return parent, actions, child

    def featurize(self, states: np.ndarray) -> np.ndarray:
        return states[:, :-1]

    def keys(self, states: np.ndarray) -> list[str]:
        letters = np.array(["", *self.alphabet])
        return ["".join(row) for row in letters[states[:, :-1]].tolist()]

    def objects(self, states: np.ndarray) -> list:
        return self.keys(states)


class MotifReward:
    """R(x) = base + scale * exp(-d(x)), d the smallest Hamming distance between x and a motif
    (a length difference counts as that many mismatches). Scores by key, so the same object
    runs inline, in distgfn's reward pool, or behind `distgfn serve-reward`."""

    def __init__(self, motifs: list[str] = ("01100110", "1110001"), base: float = 0.05, scale: float = 1.0):
        if not motifs or not all(isinstance(m, str) and m for m in motifs):
            raise ValueError(f"motifs must be a non-empty list of strings; got {motifs!r}")
        if base <= 0 or scale < 0:
            raise ValueError(f"needs base > 0 and scale >= 0; got base={base}, scale={scale}")
        self.motifs, self.base, self.scale = list(motifs), base, scale

    def score(self, keys: list[str]):
        raw = [self.base + self.scale * np.exp(-min(distance(k, m) for m in self.motifs)) for k in keys]
        return np.array(raw), [None] * len(keys)


def distance(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


class OneHotMLP(nn.Module):
    """A model of your own, built as OneHotMLP(env, **model.options): an MLP over the one-hot
    letters of featurize(), with n_actions + 1 outputs (log flows or logits per action, then
    log F(s))."""

    def __init__(self, env: Sequences, hidden: int = 64):
        super().__init__()
        self.n_values = len(env.alphabet) + 1
        self.net = nn.Sequential(nn.Linear(env.max_length * self.n_values, hidden), nn.LeakyReLU(),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, env.n_actions + 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(nn.functional.one_hot(features.long(), self.n_values).flatten(1).float())
