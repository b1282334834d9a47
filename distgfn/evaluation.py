"""Exact and empirical evaluation on enumerable grids.

`exact_distribution` computes the policy's terminal distribution P_policy(x) by dynamic
programming over the DAG: cells are processed in order of their coordinate sum (every edge
goes from level L to L + 1), with

    P(s') = sum over parents (s, a) of s' of P(s) * pi(a | s),    P(s_0) = 1,

and P_policy(x) the same sum into the terminal state of x. No sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Sampled:
    """Objects the actors sampled, as evaluators see them."""

    objects: np.ndarray  # terminal states
    log_reward: np.ndarray  # beta * log R(x); NaN where the reward failed
    raw: np.ndarray  # the oracle's own output
    errors: list  # per object: None, or why its reward failed
    versions: np.ndarray  # the policy version each was sampled with

    @classmethod
    def of(cls, rollout) -> "Sampled":
        n = len(rollout.objects)
        return cls(rollout.objects, rollout.log_reward, rollout.scores.raw, rollout.scores.errors,
                   np.full(n, rollout.version))

    @classmethod
    def concat(cls, parts: list["Sampled"]) -> "Sampled":
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("objects", "log_reward", "raw")),
                   [e for p in parts for e in p.errors], np.concatenate([p.versions for p in parts]))


def make_evaluator(cfg, env, run_dir):
    """GridEvaluator for HyperGrid; MoleculeEvaluator (molecules.jsonl, top-k, modes) for molecules."""
    if cfg.env.name == "fragments":
        from distgfn.chem.evaluation import MoleculeEvaluator

        return MoleculeEvaluator(env, run_dir, cfg.reward.beta, cfg.eval.mode_reward, cfg.eval.mode_similarity)
    from distgfn.rewards.hypergrid import HyperGridReward

    # The target distribution from the formula itself, wherever training gets its rewards.
    r = cfg.reward
    return GridEvaluator(env, HyperGridReward(env.height, r.r0, r.r1, r.r2), r.beta, cfg.eval.empirical_window)


def exact_distribution(env, log_policy) -> np.ndarray:
    """P_policy over all cells in ravel order (0 for unreachable ones).

    `log_policy(states) -> (n, n_actions)` log pi(a|s), -inf on invalid actions.
    """
    cells = env.all_cells()
    log_pi = log_policy(cells)
    reach = np.zeros(len(cells))
    reach[0] = 1.0
    live = env.is_live(cells)
    level = cells[:, :-1].sum(axis=1)
    for lv in range(1, level.max() + 1):
        rows = np.nonzero((level == lv) & live)[0]
        reach[rows] = inflow(env, cells[rows], reach, log_pi)

    ends = cells.copy()
    ends[:, -1] = 1
    ends = ends[env.is_reachable_object(cells)]
    result = np.zeros(len(cells))
    result[env.cell_index(ends)] = inflow(env, ends, reach, log_pi)
    return result


def inflow(env, states, reach, log_pi) -> np.ndarray:
    parents, actions, child = env.parents(states)
    p = env.cell_index(parents)
    return np.bincount(child, weights=reach[p] * np.exp(log_pi[p, actions]), minlength=len(states))


def target_distribution(env, reward, beta: float = 1.0) -> np.ndarray:
    """R(x)^beta / Z over all cells in ravel order (0 for unreachable ones)."""
    ends = env.all_cells()
    ends[:, -1] = 1
    r = reward(ends) ** beta * env.is_reachable_object(ends)
    return r / r.sum()


def l1(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.abs(p - q).sum())


class EmpiricalTracker:
    """Counts the last `window` sampled objects (for l1_empirical) and every mode ever seen."""

    def __init__(self, target: np.ndarray, window: int):
        self.target = target
        self.ring = np.full(window, -1, dtype=np.int64)
        self.counts = np.zeros(len(target), dtype=np.int64)
        self.seen = 0
        self.modes = target >= target.max() * (1 - 1e-9)
        self.mode_hit = np.zeros(len(target), dtype=bool)

    def add(self, index: np.ndarray) -> None:
        for chunk in np.array_split(index, max(1, -(-len(index) // len(self.ring)))):
            slots = (self.seen + np.arange(len(chunk))) % len(self.ring)
            old = self.ring[slots]
            np.subtract.at(self.counts, old[old >= 0], 1)
            self.ring[slots] = chunk
            np.add.at(self.counts, chunk, 1)
            self.mode_hit[chunk] = True
            self.seen += len(chunk)

    def state(self) -> dict:
        """The window and the modes seen, as tensors (for checkpoints)."""
        return {"ring": torch.from_numpy(self.ring.copy()), "counts": torch.from_numpy(self.counts.copy()),
                "mode_hit": torch.from_numpy(self.mode_hit.copy()), "seen": self.seen}

    def restore(self, state: dict) -> None:
        self.ring[:], self.counts[:] = state["ring"].numpy(), state["counts"].numpy()
        self.mode_hit[:], self.seen = state["mode_hit"].numpy(), state["seen"]

    def l1_empirical(self) -> float:
        total = self.counts.sum()
        return l1(self.counts / max(total, 1), self.target)

    def modes_found(self) -> int:
        return int((self.mode_hit & self.modes).sum())

    @property
    def n_modes(self) -> int:
        return int(self.modes.sum())


class GridEvaluator:
    """The HyperGrid metrics of a run: l1_exact, l1_empirical and modes_found."""

    exact = True  # exact_metrics needs the policy

    def __init__(self, env, reward, beta: float, window: int):
        self.env = env
        self.target = target_distribution(env, reward, beta)
        self.tracker = EmpiricalTracker(self.target, window)
        self.failures = 0

    def observe(self, sampled: Sampled, step: int) -> None:
        self.tracker.add(self.env.cell_index(sampled.objects))
        self.failures += sum(e is not None for e in sampled.errors)

    def state(self) -> dict:
        return {**self.tracker.state(), "failures": self.failures}

    def restore(self, state: dict, step: int) -> None:
        self.tracker.restore(state)
        self.failures = state.get("failures", 0)

    def close(self) -> None:
        pass

    def sampled_metrics(self) -> dict:
        t = self.tracker
        return {"l1_empirical": t.l1_empirical(), "modes_found": t.modes_found(), "modes_total": t.n_modes,
                "reward_failures": self.failures}

    def exact_metrics(self, log_policy) -> dict:
        return {"l1_exact": l1(exact_distribution(self.env, log_policy), self.target)}
