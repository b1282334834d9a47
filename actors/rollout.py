"""The rollout actor: samples with its policy copy, scores, encodes and inserts records."""

from __future__ import annotations

import os
import time

import ray
import torch

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

    def run_batch(self, version: int, weights: list) -> dict:
        """Adopts `version` if newer (weights = [ObjectRef of the numpy dict]), samples one batch,
        inserts its records (waiting while the rate limiter holds them back), returns stats."""
        self.adopt(version, weights)
        start = time.perf_counter()
        rollout = self.worker.sample()
        records = encode_records(rollout, f"{self.prefix}-{self.batches}")
        self.batches += 1
        sampled = time.perf_counter()
        self.insert(records)
        return {
            "objects": rollout.objects,
            "version": rollout.version,
            "reward_s": rollout.reward_s,
            "sample_s": sampled - start,
            "insert_wait_s": time.perf_counter() - sampled,
            "record_bytes": sum(map(len, records)),
            "records": len(records),
        }

    def adopt(self, version: int, weights: list) -> int:
        """Loads the weights if `version` is newer than the policy held; returns the version held."""
        if version > self.worker.version:
            self.worker.set_weights(version, ray.get(weights[0]))
        return self.worker.version

    def insert(self, records: list[bytes]) -> None:
        deadline = time.monotonic() + self.insert_timeout_s
        while records:
            result = ray.get(self.replay.insert.remote(records, timeout_s=min(1.0, self.insert_timeout_s)))
            if result["rejected"]:
                raise ValueError(f"replay rejected {result['rejected']} records: {result['errors']}")
            records = records[result["taken"]:]
            if records and time.monotonic() > deadline:
                raise TimeoutError(f"replay accepted no room for {len(records)} records in {self.insert_timeout_s} s")

    def version(self) -> int:
        return self.worker.version
