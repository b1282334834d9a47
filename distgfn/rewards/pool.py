"""A reward computed on a pool of reward actors (reward.mode pool).

    reward = PooledReward([RewardActor.remote(cfg) for _ in range(cfg.reward.workers)])
    scores = reward(states)      # the batch split over the workers, scored in parallel

Each call splits its batch into one chunk per worker (fewer if the batch is smaller),
starting at a rotating worker so small batches spread. A rollout actor makes at most
reward.in_flight calls at once, so each worker has at most that many chunks queued from
each rollout actor. A chunk whose worker died is scored again on another worker; when none
is left the call fails with RewardServiceError. Chunks not scored within `deadline_s` of the
call fail their objects and are cancelled.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from distgfn.rewards import RewardServiceError, Scores


class PooledReward:
    def __init__(self, workers: list, deadline_s: float | None = None):
        self.workers, self.deadline_s = list(workers), deadline_s
        self.turns = itertools.count()
        self.lock = threading.Lock()

    def set_workers(self, workers: list) -> None:
        """The pool after scaling: calls made from now on use only these workers."""
        with self.lock:
            self.workers = list(workers)

    def __call__(self, states: np.ndarray) -> Scores:
        import ray

        with self.lock:
            workers, first = list(self.workers), next(self.turns)
        if not workers:
            raise RewardServiceError("the reward pool has no workers")
        chunks = [c for c in np.array_split(np.arange(len(states)), len(workers)) if len(c)]
        order = [workers[(first + i) % len(workers)] for i in range(len(workers))]
        refs = [w.score.remote(states[c]) for w, c in zip(order, chunks)]
        # One deadline for the whole call, from now; chunks past it fail and are cancelled, so
        # they do not stay queued on their workers.
        done, late = ray.wait(refs, num_returns=len(refs), timeout=self.deadline_s)
        for ref in late:
            ray.cancel(ref)
        parts = [self.result(ref, states[c], order, i) if ref not in late else self.timed_out(len(c))
                 for i, (ref, c) in enumerate(zip(refs, chunks))]
        return Scores(np.concatenate([p.reward for p in parts]), np.concatenate([p.raw for p in parts]),
                      [e for p in parts for e in p.errors])

    def timed_out(self, n: int) -> Scores:
        return Scores.all_failed(n, f"reward worker did not answer within {self.deadline_s:g} s (reward.deadline_s)")

    def result(self, ref, states: np.ndarray, order: list, i: int) -> Scores:
        """A finished chunk's scores; if its worker died, scored on the next workers in turn
        (each retry with the deadline of its own)."""
        import ray

        for attempt in range(len(order)):
            try:
                return ray.get(ref, timeout=self.deadline_s)
            except ray.exceptions.GetTimeoutError:
                ray.cancel(ref)
                return self.timed_out(len(states))
            except ray.exceptions.RayActorError as e:
                last = e
                if attempt + 1 < len(order):
                    ref = order[(i + attempt + 1) % len(order)].score.remote(states)
            except ray.exceptions.RayTaskError as e:
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
        raise RewardServiceError(f"every reward worker tried for a chunk of {len(states)} objects died; "
                                 f"last: {type(last).__name__}: {last}")
