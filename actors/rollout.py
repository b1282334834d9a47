"""The rollout actor: samples with its policy copy, scores, encodes and inserts records."""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import wait

import ray
import torch

from distgfn.evaluation import Sampled
from distgfn.messages import ActorReport, Published
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
                                    cache=RemoteCache(cache) if cache is not None else None, threads=threads,
                                    batch_size=cfg.actors.batch_size)
        self.in_flight = max(threads, 1)
        self.replay = replay
        # A restarted actor gets new record ids, so its records never collide with old ones.
        self.name, self.prefix = name, f"{name}.{os.urandom(4).hex()}"
        self.batches = 0
        self.insert_timeout_s = insert_timeout_s
        self.begun = deque()  # batches sampled whose rewards are being computed, oldest first
        self.pending = None  # (records, ObjectRef of their insert)
        self.closed = False  # the replay table said the run is ending: begin no new batch
        # Over the actor's life: trajectories finished (scored or failed), records made, and
        # records the replay table confirmed taking.
        self.totals = {"trajectories": 0, "records": 0, "in_replay": 0}

    def run(self, seconds: float, max_batches: int | None = None) -> ActorReport:
        """Samples for `seconds` (at most max_batches batches) and sends the records to the
        replay table; returns what it sampled. Up to reward.in_flight batches wait on their
        rewards while the next is sampled (one with inline rewards, computed at once). A batch
        is sampled once the previous insert is acknowledged (a rate-limited insert makes the
        actor wait), with the newest weights, which the acknowledgement brings: the policy lag
        of a batch is then the updates made while it was sampled and scored, not one batch
        more (max lag 30 -> 19 at 8 actors, same throughput). Reporting by time keeps the
        driver's calls few whether a batch takes milliseconds or minutes; a report may hold no
        batch when rewards are slow or their service is down."""
        if self.worker.version < 0:
            self.adopt(ray.get(self.replay.latest.remote()))
        report = ActorReport()
        end = time.perf_counter() + seconds
        while len(report.versions) != max_batches:
            self.begin_batches(report)
            if self.closed or not wait([self.begun[0].scored], timeout=max(end - time.perf_counter(), 0)).done:
                break
            self.send(self.begun.popleft(), report)
            if time.perf_counter() >= end:
                break
        return self.finish_report(report)

    def begin_batches(self, report: ActorReport) -> None:
        """Begins batches until reward.in_flight are in flight, each once the previous insert
        is acknowledged, with the newest weights the acknowledgement names; none once the
        replay table is closed (the run is ending: `drain` finishes those begun)."""
        while len(self.begun) < self.in_flight:
            report.insert_wait_s += self.flush()
            if self.closed:
                return
            self.begun.append(self.worker.begin())

    def drain(self) -> ActorReport:
        """Finishes every batch begun and waits until all its records are in the replay table;
        the actor can then be removed without losing anything it sampled. The report adds
        `totals`, the actor's lifetime counts."""
        report = ActorReport()
        while self.begun:
            self.send(self.begun.popleft(), report)
        report.insert_wait_s += self.flush()
        report.totals = dict(self.totals)
        return self.finish_report(report)

    def send(self, begun, report: ActorReport) -> None:
        """Builds the batch's records and sends them, once the previous insert is complete."""
        report.insert_wait_s += self.flush()
        rollout = self.worker.finish(begun)
        start = time.perf_counter()
        records = encode_records(rollout, f"{self.prefix}-{self.batches}")
        self.batches += 1
        if records:  # none when every reward in the batch failed
            self.pending = (records, self.insert(records))
        report.sample_s += rollout.sample_s + time.perf_counter() - start
        report.sampled = Sampled.of(rollout) if report.sampled is None else Sampled.concat([report.sampled,
                                                                                          Sampled.of(rollout)])
        report.versions.append(rollout.version)
        report.reward_s.append(rollout.reward_s)
        report.record_bytes += sum(map(len, records))
        report.records += len(records)
        self.totals["trajectories"] += len(rollout.objects)
        self.totals["records"] += len(records)

    def finish_report(self, report: ActorReport) -> ActorReport:
        report.unavailable = self.worker.unavailable
        return report

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
            ack = ray.get(ref)
            if ack.rejected:
                raise ValueError(f"replay rejected {ack.rejected} records: {ack.errors}")
            self.adopt(ack.newest)
            self.closed = ack.closed
            self.totals["in_replay"] += ack.taken
            records = records[ack.taken:]
            if not records:
                return time.perf_counter() - start
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay took no records for {self.insert_timeout_s} s; {len(records)} waiting")
            ref = self.insert(records)

    def insert(self, records: list[bytes]):
        # One long wait keeps this actor's place in the table's line of held inserts.
        return self.replay.insert.remote(records, timeout_s=self.insert_timeout_s, held_version=self.worker.version)

    def adopt(self, published: Published | None) -> int:
        """Loads the weights if they are newer than the policy held; returns the version held."""
        if published is not None and published.version > self.worker.version:
            # Zero-copy: the policy reads the arrays in Ray's shared-memory object store.
            self.worker.set_weights(published.version, ray.get(published.weights[0]), share=True)
        return self.worker.version

    def set_reward_workers(self, workers: list) -> None:
        """The reward pool after scaling (reward.mode pool)."""
        self.worker.pool.set_workers(workers)

    def version(self) -> int:
        return self.worker.version

