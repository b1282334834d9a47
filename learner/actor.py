"""The learner actor: trains on batches from the replay table and publishes weights.

Weights are published as one `ray.put` of a flat dict of numpy arrays per version and
announced to the replay table, whose insert acknowledgements hand the reference to the
rollout actors; they read the arrays from the object store.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import ray
import torch

from distgfn import checkpoint
from distgfn.batch import training_batch
from distgfn.config import max_batch
from distgfn.messages import Published, TrainStats
from distgfn.learning import Learner


@ray.remote(concurrency_groups={"control": 1})
class LearnerActor:
    def __init__(self, cfg, replay, sample_timeout_s: float = 1.0):
        torch.set_num_threads(1)
        self.cfg = cfg
        self.learner = Learner(cfg)
        self.replay = replay
        self.sample_timeout_s = sample_timeout_s
        self.prefetched = None
        self.stopping = threading.Event()
        # Held for each update (fetch, train, publish), so a snapshot falls between updates.
        self.lock = threading.Lock()
        self.publish()

    def actor_id(self) -> str:
        """Ray's id of this actor, which a RayActorError about it carries."""
        return ray.get_runtime_context().get_actor_id()

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        """Makes the running and queued train calls return at the next update (a stop must not
        wait for records that may never come)."""
        self.stopping.set()

    def publish(self) -> None:
        """One ray.put of the weights per version, announced to the replay table (which hands
        it to rollout actors with their next insert acknowledgement)."""
        version, weights = self.learner.weights()
        self.published = Published(version, [ray.put(weights)])
        self.replay.publish.remote(self.published)

    def train(self, n_updates: int) -> TrainStats:
        """n_updates objective steps, publishing every learner.publish_every updates and at the
        end. Returns the call's statistics."""
        losses, lags, waited, start, trained = [], [], 0.0, time.perf_counter(), 0
        while len(losses) < n_updates and not self.stopping.is_set():
            # The lock is let go between empty tries, so a snapshot never waits on a starved learner.
            with self.lock:
                wait_start = time.perf_counter()
                records = self.try_records()
                waited += time.perf_counter() - wait_start
                if records is None:
                    continue
                lags.extend(self.learner.step - version for version, _ in records)
                trained += len(records)
                batch = training_batch([blob for _, blob in records])
                losses.append(self.learner.update(batch))
                if self.learner.step % self.cfg.learner.publish_every == 0:
                    self.publish()
        with self.lock:
            if self.published.version != self.learner.step:
                self.publish()
        return TrainStats(
            step=self.learner.step, updates=len(losses), records=trained,
            loss=float(np.mean(losses)) if losses else None,
            lag_min=int(min(lags)) if lags else None,
            lag_mean=float(np.mean(lags)) if lags else None,
            lag_max=int(max(lags)) if lags else None,
            wait_s=waited, busy_s=time.perf_counter() - start, published=self.published,
        )

    def try_records(self) -> list | None:
        """The next batch of records, or None if none came within sample_timeout_s; the request
        for the one after is sent before returning, so the next update does not wait on a round
        trip to the replay."""
        if self.prefetched is None:
            self.prefetched = self.request()
        records = ray.get(self.prefetched)
        self.prefetched = self.request()
        return records

    def request(self):
        """Every record not yet trained on, from sampler.batch_size up to learner.max_batch."""
        lag = self.cfg.learner.max_policy_lag
        # The batch asked for now trains at the next step (it is prefetched), hence the + 1.
        min_version = None if lag is None else self.learner.step + 1 - lag
        return self.replay.sample.remote(self.cfg.sampler.batch_size, max_batch(self.cfg), min_version,
                                         self.sample_timeout_s)

    @ray.method(concurrency_group="control")
    def snapshot(self) -> dict:
        """A consistent checkpoint of the learner and the replay table, taken between updates.
        The prefetched batch (already out of the replay table, not yet trained on) is returned
        as `pending`, and no other request is outstanding while the replay table is saved, so
        no record is in neither and none in both."""
        with self.lock:
            pending = ray.get(self.prefetched) if self.prefetched is not None else None
            replay = self.replay.state_bytes.remote()
            ray.wait([replay], fetch_local=False)
            return {"step": self.learner.step, "learner": checkpoint.state_to_bytes(self.learner.state()),
                    "pending": [blob for _, blob in pending or []], "replay": [replay]}

    def restore(self, data: bytes) -> int:
        """Continues from a snapshot's learner bytes; returns the restored step."""
        with self.lock:
            self.learner.restore(checkpoint.state_from_bytes(data))
            self.publish()
        return self.learner.step

    def save_model(self, path: str) -> None:
        torch.save(self.learner.model.state_dict(), path)
