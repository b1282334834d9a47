"""The rollout actor: samples with its policy copy, scores, encodes and inserts records."""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import wait

import ray
import torch

from distgfn.evaluation import Sampled
from distgfn.rewards.cache import RemoteCache
from distgfn.rollout import RolloutWorker, encode_records


@ray.remote
class RolloutActor:
    def __init__(self, cfg, seed: int, name: str, replay, insert_timeout_s: float, reward_workers=None,
                 cache=None):
        """`reward_workers`: the pool's RewardActors (reward.mode pool); `cache`: the run's
        CacheActor, or None."""
        torch.set_num_threads(1)
        torch.manual_seed(seed)  # the policy's initial weights too (published weights replace them)
        threads = cfg.reward.in_flight if cfg.reward.mode != "inline" else 0
        self.worker = RolloutWorker(cfg, seed, pool=reward_workers,
                                    cache=RemoteCache(cache) if cache is not None else None, threads=threads)
        self.in_flight = max(threads, 1)
        self.replay = replay
        # A restarted actor gets new record ids, so its records never collide with old ones.
        self.name, self.prefix = name, f"{name}.{os.urandom(4).hex()}"
        self.batches = 0
        self.insert_timeout_s = insert_timeout_s
        self.begun = deque()  # batches sampled whose rewards are being computed, oldest first
        self.pending = None  # (records, ObjectRef of their insert)
        # Over the actor's life: trajectories finished (scored or failed), records made, and
        # records the replay table confirmed taking.
        self.totals = {"trajectories": 0, "records": 0, "in_replay": 0}

    def run(self, seconds: float, max_batches: int | None = None) -> dict:
        """Samples for `seconds` (at most max_batches batches) and sends the records to the
        replay table; returns what it sampled. Up to reward.in_flight batches wait on their
        rewards while the next is sampled (one with inline rewards, computed at once). A batch
        is sampled while the previous one's insert is in flight, and sent once that insert is
        acknowledged (a rate-limited insert makes the actor wait, one batch ahead at most); the
        acknowledgement brings the newest weights, adopted at once. Reporting by time keeps the
        driver's calls few whether a batch takes milliseconds or minutes; a report may hold no
        batch when rewards are slow or their service is down."""
        if self.worker.version < 0:
            self.adopt(*ray.get(self.replay.latest.remote()))
        stats = new_stats()
        end = time.perf_counter() + seconds
        while len(stats["versions"]) != max_batches:
            while len(self.begun) < self.in_flight:
                self.begun.append(self.worker.begin())
            if not wait([self.begun[0].scored], timeout=max(end - time.perf_counter(), 0)).done:
                break
            self.send(self.begun.popleft(), stats)
            if time.perf_counter() >= end:
                break
        return self.report(stats)

    def drain(self) -> dict:
        """Finishes every batch begun and waits until all its records are in the replay table;
        the actor can then be removed without losing anything it sampled. The report adds
        `totals`, the actor's lifetime counts."""
        stats = new_stats()
        while self.begun:
            self.send(self.begun.popleft(), stats)
        stats["insert_wait_s"] += self.flush()
        report = self.report(stats)
        report["totals"] = dict(self.totals)
        return report

    def send(self, begun, stats: dict) -> None:
        """Builds the batch's records and sends them, once the previous insert is complete."""
        stats["insert_wait_s"] += self.flush()
        rollout = self.worker.finish(begun)
        start = time.perf_counter()
        records = encode_records(rollout, f"{self.prefix}-{self.batches}")
        self.batches += 1
        if records:  # none when every reward in the batch failed
            self.pending = (records, self.insert(records))
        stats["sample_s"] += rollout.sample_s + time.perf_counter() - start
        stats["sampled"].append(Sampled.of(rollout))
        stats["versions"].append(rollout.version)
        stats["reward_s"].append(rollout.reward_s)
        stats["record_bytes"] += sum(map(len, records))
        stats["records"] += len(records)
        self.totals["trajectories"] += len(rollout.objects)
        self.totals["records"] += len(records)

    def report(self, stats: dict) -> dict:
        stats["sampled"] = Sampled.concat(stats["sampled"]) if stats["sampled"] else None
        stats["unavailable"] = self.worker.unavailable
        return stats

    def flush(self) -> float:
        """Waits until the last batch's records are all in the replay table, adopting the weights
        the acknowledgement names; returns the time waited."""
        if self.pending is None:
            return 0.0
        start = time.perf_counter()
        records, ref = self.pending
        self.pending = None
        deadline = time.monotonic() + self.insert_timeout_s
        while True:
            result = ray.get(ref)
            if result["rejected"]:
                raise ValueError(f"replay rejected {result['rejected']} records: {result['errors']}")
            self.adopt(result["version"], result["weights"])
            self.totals["in_replay"] += result["taken"]
            records = records[result["taken"]:]
            if not records:
                return time.perf_counter() - start
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay took no records for {self.insert_timeout_s} s; {len(records)} waiting")
            ref = self.insert(records)

    def insert(self, records: list[bytes]):
        return self.replay.insert.remote(records, timeout_s=1.0, held_version=self.worker.version)

    def adopt(self, version: int, weights: list | None) -> int:
        """Loads the weights if `version` is newer than the policy held; returns the version held."""
        if version > self.worker.version:
            # Zero-copy: the policy reads the arrays in Ray's shared-memory object store.
            self.worker.set_weights(version, ray.get(weights[0]), share=True)
        return self.worker.version

    def set_reward_workers(self, workers: list) -> None:
        """The reward pool after scaling (reward.mode pool)."""
        self.worker.pool.set_workers(workers)

    def version(self) -> int:
        return self.worker.version


def new_stats() -> dict:
    return {"sampled": [], "versions": [], "reward_s": [], "sample_s": 0.0, "insert_wait_s": 0.0,
            "record_bytes": 0, "records": 0}
