"""The replay table as one Ray actor (async: blocked inserts and samples wait without holding it).

It also serves the newest published weights: the learner announces each version here, and
every insert acknowledgement carries the newest (version, [ObjectRef]), so rollout actors
learn of new weights without any extra call.
"""

from __future__ import annotations

import asyncio

import ray

from distgfn.replay import ReplayTable, parse_record
from distgfn.wire import WireError


@ray.remote(num_cpus=0)
class ReplayActor:
    def __init__(self, **table_settings):
        self.table = ReplayTable(**table_settings)
        self.rejected = 0
        self._changed = None
        self.weights = (-1, [None])

    def publish(self, version: int, weights: list) -> None:
        if version > self.weights[0]:
            self.weights = (version, weights)

    def latest(self) -> tuple[int, list]:
        return self.weights

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:  # created on the actor's event loop
            self._changed = asyncio.Condition()
        return self._changed

    async def insert(self, blobs: list[bytes], timeout_s: float) -> dict:
        """Inserts what the rate limiter allows within timeout_s; corrupt records are rejected
        and reported, never inserted. Returns {"taken", "rejected", "errors"}."""
        records, errors = [], []
        for blob in blobs:
            try:
                records.append(parse_record(blob))
            except WireError as e:
                errors.append(str(e))
        self.rejected += len(errors)
        taken = 0

        def insert_rest() -> bool:
            nonlocal taken
            taken += self.table.insert(records[taken:])
            return taken == len(records)

        await self._until(insert_rest, timeout_s)
        version, weights = self.weights
        return {"taken": taken, "rejected": len(errors), "errors": errors[:3], "version": version, "weights": weights}

    async def sample(self, n: int, min_version: int | None, timeout_s: float):
        """[(version, blob)] * n, or None if sampling stayed blocked for timeout_s."""
        batch = None

        def sample_once() -> bool:
            nonlocal batch
            batch = self.table.sample(n, min_version)
            return batch is not None

        await self._until(sample_once, timeout_s)
        return None if batch is None else [(r.version, r.data) for r in batch]

    async def _until(self, attempt, timeout_s: float) -> None:
        """Calls attempt() until it returns True or timeout_s passes, waking other waiters after
        each try (an insert can unblock a sample and a sample an insert)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self.changed:
            while True:
                done = attempt()
                self.changed.notify_all()
                left = deadline - loop.time()
                if done or left <= 0:
                    return
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except asyncio.TimeoutError:
                    pass

    def stats(self) -> dict:
        c = self.table.counters
        return {"size": self.table.size, "inserted": c.inserted, "sampled": c.sampled, "evicted": c.evicted,
                "dropped_stale": c.dropped_stale, "duplicates": c.duplicates, "rejected": self.rejected}
