"""The rollout actor: samples with its policy copy, scores, encodes and inserts records."""

from __future__ import annotations

import os
import time

import ray
import torch

from distgfn.evaluation import Sampled
from distgfn.rollout import RolloutWorker, encode_records


@ray.remote
class RolloutActor:
    def __init__(self, cfg, seed: int, name: str, replay, insert_timeout_s: float):
        torch.set_num_threads(1)
        self.worker = RolloutWorker(cfg, seed)
        self.replay = replay
        # A restarted actor gets new record ids, so its records never collide with old ones.
        self.prefix = f"{name}.{os.urandom(4).hex()}"
        self.batches = 0
        self.insert_timeout_s = insert_timeout_s
        self.pending = None  # (records, ObjectRef of their insert)

    def run(self, seconds: float, max_batches: int | None = None) -> dict:
        """Samples batches for `seconds` (at least one batch, at most max_batches) and sends
        their records to the replay table. Each insert completes during the next batch,
        overlapping with its sampling (a rate-limited insert makes it wait), and its
        acknowledgement brings the newest weights, adopted at once. Reporting by time keeps the
        driver's calls few whether a batch takes milliseconds or minutes."""
        if self.worker.version < 0:
            self.adopt(*ray.get(self.replay.latest.remote()))
        stats = {"sampled": [], "versions": [], "reward_s": [], "sample_s": 0.0, "insert_wait_s": 0.0,
                 "record_bytes": 0, "records": 0}
        end = time.perf_counter() + seconds
        while not stats["versions"] or (time.perf_counter() < end and len(stats["versions"]) != max_batches):
            stats["insert_wait_s"] += self.flush()
            start = time.perf_counter()
            rollout = self.worker.sample()
            records = encode_records(rollout, f"{self.prefix}-{self.batches}")
            self.batches += 1
            if records:  # none when every reward in the batch failed
                self.pending = (records, self.replay.insert.remote(records, timeout_s=1.0))
            stats["sample_s"] += time.perf_counter() - start
            stats["sampled"].append(Sampled.of(rollout))
            stats["versions"].append(rollout.version)
            stats["reward_s"].append(rollout.reward_s)
            stats["record_bytes"] += sum(map(len, records))
            stats["records"] += len(records)
        stats["sampled"] = Sampled.concat(stats["sampled"])
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
            records = records[result["taken"]:]
            if not records:
                return time.perf_counter() - start
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay took no records for {self.insert_timeout_s} s; {len(records)} waiting")
            ref = self.replay.insert.remote(records, timeout_s=1.0)

    def adopt(self, version: int, weights: list) -> int:
        """Loads the weights if `version` is newer than the policy held; returns the version held."""
        if version > self.worker.version:
            # Zero-copy: the policy reads the arrays in Ray's shared-memory object store.
            self.worker.set_weights(version, ray.get(weights[0]), share=True)
        return self.worker.version

    def version(self) -> int:
        return self.worker.version
