"""Exact and empirical evaluation of environments that can enumerate their states.

An env declaring the `enumerable` capability is expanded once from s0 with its own masks and
step (`StateGraph`): every reachable state, every edge, and a topological order in waves.
`exact_distribution` then computes the policy's terminal distribution P_policy(x) by dynamic
programming over that DAG,

    P(s') = sum over edges (s, a) -> s' of P(s) * pi(a | s),    P(s_0) = 1,

with P_policy(x) the probability of reaching x's terminal state (summed over terminal states
with the same key). No sampling noise. Other envs get the metrics of their declared
`evaluator`, or `EmpiricalEvaluator`'s.
"""

from __future__ import annotations

import sys
from collections import deque
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
    keys: list | None = None  # env.keys(objects), when the reward computed them on the actor

    @classmethod
    def of(cls, rollout) -> "Sampled":
        n = len(rollout.objects)
        return cls(rollout.objects, rollout.log_reward, rollout.scores.raw, rollout.scores.errors,
                   np.full(n, rollout.version), rollout.scores.keys)

    @classmethod
    def concat(cls, parts: list["Sampled"]) -> "Sampled":
        keys = None if any(p.keys is None for p in parts) else [k for p in parts for k in p.keys]
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("objects", "log_reward", "raw")),
                   [e for p in parts for e in p.errors], np.concatenate([p.versions for p in parts]), keys)

    def keys_of(self, env) -> list:
        """The objects' keys: those the actor's reward computed, else env.keys here."""
        return self.keys if self.keys is not None else env.keys(self.objects)


def make_evaluator(cfg, env, run_dir):
    """ExactEvaluator for enumerable envs; else the env's declared evaluator class, built as
    cls(cfg, env, run_dir); else EmpiricalEvaluator."""
    cls = evaluator_class(env)
    if cls is ExactEvaluator:
        from distgfn.rewards import make_reward

        return ExactEvaluator(env, make_reward(cfg, env), cfg.reward.beta, cfg.eval.empirical_window)
    if cls is EmpiricalEvaluator:
        return EmpiricalEvaluator(env, cfg.eval.empirical_window)
    return cls(cfg, env, run_dir)


def evaluator_class(env):
    """The class whose metrics (and `report(cfg, run_dir)`, unless None) a run of `env` gets."""
    from distgfn import tasks
    from distgfn.core import ENUMERABLE

    if tasks.has(env, ENUMERABLE):
        return ExactEvaluator
    declared = getattr(env, "evaluator", None)
    return EmpiricalEvaluator if declared is None else tasks.find("env.evaluator", declared, {})


class StateGraph:
    """Every state reachable from s0, found by expanding valid actions level by level.

    states (U, width); edges src -> dst by action; waves: lists of edge indices whose
    sources have all their inflow once the earlier waves are applied (Kahn's algorithm)."""

    def __init__(self, env, max_states: int = 2_000_000):
        # States are told apart by the env's state_keys when it declares them (one tree
        # numbered two ways is one state), else by their rows.
        keys_of = getattr(env, "state_keys", None) or (lambda states: [row.tobytes() for row in states])
        index: dict = {}
        rows, src, act, dst = [], [], [], []
        frontier = env.initial_states(1)
        frontier_at = self.add(index, rows, frontier, keys_of(frontier))[1]
        while len(frontier):
            parent, action = np.nonzero(env.masks(frontier))
            children = env.step(frontier[parent], action)
            fresh, child_at = self.add(index, rows, children, keys_of(children))
            if len(index) > max_states:
                raise ValueError(f"the env has more than {max_states:,} states reachable from s0; too many to "
                                 f"evaluate exactly (drop its 'enumerable' capability)")
            src.append(frontier_at[parent])
            act.append(action)
            dst.append(child_at)
            frontier, frontier_at = children[fresh], child_at[fresh]
        self.states = np.stack(rows)
        self.src, self.action, self.dst = (np.concatenate(x).astype(np.int64) for x in (src, act, dst))
        self.terminal = env.is_terminal(self.states)
        self.waves = topological_waves(len(self.states), self.src, self.dst)

    @staticmethod
    def add(index: dict, rows: list, states: np.ndarray, keys: list) -> tuple[np.ndarray, np.ndarray]:
        """Registers unseen states; returns (which rows of `states` were new, each row's index)."""
        fresh, at = np.zeros(len(states), dtype=bool), np.empty(len(states), dtype=np.int64)
        for i, key in enumerate(keys):
            if key not in index:
                index[key] = len(rows)
                rows.append(states[i])
                fresh[i] = True
            at[i] = index[key]
        return fresh, at


def topological_waves(n: int, src: np.ndarray, dst: np.ndarray) -> list[np.ndarray]:
    """Edge indices grouped so that each group's sources have no pending inflow."""
    indegree = np.bincount(dst, minlength=n)
    order = np.argsort(src, kind="stable")
    starts = np.searchsorted(src[order], np.arange(n + 1))
    ready, waves = np.flatnonzero(indegree == 0), []
    while len(ready):
        edges = np.concatenate([order[starts[s] : starts[s + 1]] for s in ready])
        if not len(edges):
            break
        waves.append(edges)
        np.subtract.at(indegree, dst[edges], 1)
        touched = np.unique(dst[edges])
        ready = touched[indegree[touched] == 0]
    if indegree.any():
        raise ValueError("the env's transitions have a cycle; a GFlowNet needs a DAG")
    return waves


class ObjectSpace:
    """The terminal objects of an enumerable env, one per key, with the DAG that reaches them."""

    def __init__(self, env, max_states: int = 2_000_000):
        self.env = env
        self.graph = StateGraph(env, max_states)
        ends = np.flatnonzero(self.graph.terminal)
        self.keys, self.object_of = np.unique(np.array(env.keys(self.graph.states[ends]), dtype=object),
                                              return_inverse=True)
        self.end_rows = ends
        self.index = {key: i for i, key in enumerate(self.keys.tolist())}
        # One terminal state per object, to score.
        first = np.unique(self.object_of, return_index=True)[1]
        self.objects = self.graph.states[ends[first]]

    def distribution(self, log_policy) -> np.ndarray:
        """P_policy over the objects, in key order."""
        g = self.graph
        live = np.flatnonzero(~g.terminal)
        log_pi = np.full((len(g.states), int(g.action.max()) + 1 if len(g.action) else 1), -np.inf)
        log_pi[live] = log_policy(g.states[live])[:, : log_pi.shape[1]]
        reach = np.zeros(len(g.states))
        reach[0] = 1.0
        for edges in g.waves:
            np.add.at(reach, g.dst[edges], reach[g.src[edges]] * np.exp(log_pi[g.src[edges], g.action[edges]]))
        return np.bincount(self.object_of, weights=reach[self.end_rows], minlength=len(self.keys))

    def target(self, reward, beta: float) -> np.ndarray:
        """R(x)^beta / Z over the objects, in key order. Objects whose reward fails are never
        trained on: they get 0 here, and a warning says how many."""
        from distgfn.rewards import RewardError, score_objects

        log_r, scores = score_objects(reward, self.objects, self.env.keys, beta)
        failed = scores.failed
        if failed.all():
            raise RewardError(f"exact evaluation: the reward failed for all {len(failed)} objects; first: "
                              f"x={self.keys[0]}: {scores.errors[0]}")
        if failed.any():
            i = int(np.argmax(failed))
            print(f"distgfn: exact evaluation: the reward failed for {failed.sum()} of {len(failed)} objects, left "
                  f"out of the target; first: x={self.keys[i]}: {scores.errors[i]}", file=sys.stderr)
        p = np.exp(np.where(failed, -np.inf, log_r - np.nanmax(log_r)))
        return p / p.sum()


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


class ExactEvaluator:
    """Metrics of an enumerable env: l1_exact, l1_empirical and modes_found."""

    exact = True  # exact_metrics needs the policy
    report = None

    def __init__(self, env, reward, beta: float, window: int):
        self.env = env
        self.space = ObjectSpace(env)
        self.target = self.space.target(reward, beta)
        self.tracker = EmpiricalTracker(self.target, window)
        self.failures = 0

    def observe(self, sampled: Sampled, step: int) -> None:
        index = self.space.index
        self.tracker.add(np.array([index[k] for k in sampled.keys_of(self.env)], dtype=np.int64))
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
        return {"l1_exact": l1(self.space.distribution(log_policy), self.target)}


class EmpiricalEvaluator:
    """Metrics of any env from the objects sampled: distinct objects, and the mean and best
    log reward over the last window of them."""

    exact = False
    report = None

    def __init__(self, env, window: int = 10_000):
        self.env = env
        self.recent: deque = deque(maxlen=window)
        self.keys: set = set()
        self.best = -np.inf
        self.failures = 0

    def observe(self, sampled: Sampled, step: int) -> None:
        ok = np.isfinite(sampled.log_reward)
        self.recent.extend(sampled.log_reward[ok].tolist())
        # one object, one key, whatever its state row
        self.keys.update(k for k, good in zip(sampled.keys_of(self.env), ok) if good)
        if ok.any():
            self.best = max(self.best, float(sampled.log_reward[ok].max()))
        self.failures += int((~ok).sum())

    def sampled_metrics(self) -> dict:
        mean = float(np.mean(self.recent)) if self.recent else None
        return {"distinct_objects": len(self.keys), "log_reward_mean": mean,
                "log_reward_best": self.best if self.recent else None, "reward_failures": self.failures}

    def exact_metrics(self, log_policy) -> dict:
        return {}

    def state(self) -> dict:
        return {"failures": self.failures}

    def restore(self, state: dict, step: int) -> None:
        self.failures = state.get("failures", 0)

    def close(self) -> None:
        pass
