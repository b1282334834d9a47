"""The replay table: a plain Python object (the distributed runtime wraps it as one Ray actor).

    table = ReplayTable(capacity=10_000, min_size=64, samples_per_insert=4.0, error_buffer=256)
    table.insert([Record("actor0-17", version=3, log_reward=1.2, data=b"...")])
    batch = table.sample(16, min_version=learner_version - max_policy_lag)   # None: blocked

- FIFO eviction at `capacity`. Sampling is `fifo` (the oldest records, each handed out once
  and then removed, like Reverb's Queue: on-policy-like training, as in the serial runtime),
  `uniform` (with replacement) or `prioritized` (with replacement, P(i) proportional to
  exp(alpha * log_reward_i)).
- Rate limiting as DeepMind Reverb's SampleToInsertRatio: with diff = inserts *
  samples_per_insert - samples (see diff()), an insert is allowed while diff + samples_per_insert <=
  max_diff and a sample of n while diff - n >= min_diff, where min/max_diff =
  min_size * samples_per_insert -/+ error_buffer. Below `min_size` inserts always go through
  and sampling waits. Settings where both could block at once are rejected.
- Inserts are idempotent by record id (a retried insert is a no-op).
- Records older than `min_version` are dropped at sampling and counted as stale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import itertools
import math

import numpy as np

from distgfn import wire


@dataclass
class Record:
    id: str
    version: int
    log_reward: float
    data: bytes  # the encoded batch (distgfn.wire)


@dataclass
class Counters:
    inserted: int = 0
    sampled: int = 0
    evicted: int = 0
    dropped_stale: int = 0
    duplicates: int = 0


@dataclass
class ReplayTable:
    capacity: int
    min_size: int = 1
    samples_per_insert: float | None = None  # None: no rate limit
    error_buffer: float = 0.0
    # Largest n passed to sample(); the deadlock check needs it.
    batch_size: int = 1
    sampler: str = "uniform"  # fifo | uniform | prioritized
    alpha: float = 1.0
    seed: int = 0
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self):
        check_settings(self.capacity, self.min_size, self.samples_per_insert, self.error_buffer, self.batch_size,
                       self.sampler)
        self.records: list[Record | None] = [None] * self.capacity
        self.slot_of: dict[str, int] = {}
        self.next_slot = 0
        self.rng = np.random.default_rng(self.seed)
        # Records inserted since this table was made, by source (the id's part before its first
        # "."; a rollout actor's name): what each actor contributed, for scaling and audits.
        self.inserted_by: dict[str, int] = {}

    @property
    def size(self) -> int:
        return len(self.slot_of)

    def diff(self) -> float:
        """inserts * samples_per_insert - samples, where records dropped unsampled (stale, or
        evicted from a fifo table) count as never inserted, so dropping cannot deadlock."""
        c = self.counters
        lost = c.dropped_stale + (c.evicted if self.sampler == "fifo" else 0)
        return (c.inserted - lost) * (self.samples_per_insert or 0) - c.sampled

    def can_insert(self) -> bool:
        if self.samples_per_insert is None or self.size < self.min_size:
            return True
        return self.diff() + self.samples_per_insert <= self.max_diff

    def can_sample(self, n: int) -> bool:
        if self.size < max(self.min_size, n if self.sampler == "fifo" else 1):
            return False
        return self.samples_per_insert is None or self.diff() - n >= self.min_diff

    @property
    def min_diff(self) -> float:
        return self.min_size * (self.samples_per_insert or 0) - self.error_buffer

    @property
    def max_diff(self) -> float:
        return self.min_size * (self.samples_per_insert or 0) + self.error_buffer

    def insert(self, records: list[Record]) -> int:
        """Inserts a group of records (one actor batch) all or none: the group goes in whole when
        the rate limiter has room for its first record, so a batch is never half-inserted and
        the limiter overshoots by at most one group. Returns how many were taken: all (records
        already present count as taken, so a retry is harmless) or 0 (the caller retries)."""
        fresh = [r for r in records if r.id not in self.slot_of]
        if fresh and not self.can_insert():
            return 0
        self.counters.duplicates += len(records) - len(fresh)
        for record in fresh:
            self._put(record)
            source = record.id.split(".", 1)[0]
            self.inserted_by[source] = self.inserted_by.get(source, 0) + 1
        return len(records)

    def _put(self, record: Record) -> None:
        old = self.records[self.next_slot]
        if old is not None:
            del self.slot_of[old.id]
            self.counters.evicted += 1
        self.records[self.next_slot] = record
        self.slot_of[record.id] = self.next_slot
        self.next_slot = (self.next_slot + 1) % self.capacity
        self.counters.inserted += 1

    def sample(self, n: int, min_version: int | None = None) -> list[Record] | None:
        """n records, or None when the rate limiter or min_size blocks sampling."""
        if min_version is not None:
            self._drop_older_than(min_version)
        if not self.can_sample(n):
            return None
        if self.sampler == "fifo":
            return self._take_oldest(n)
        slots = np.fromiter(self.slot_of.values(), dtype=np.int64, count=self.size)
        if self.sampler == "prioritized":
            logits = self.alpha * np.array([self.records[s].log_reward for s in slots])
            p = np.exp(logits - logits.max())
            chosen = self.rng.choice(slots, size=n, p=p / p.sum())
        else:
            chosen = slots[self.rng.integers(0, len(slots), size=n)]
        self.counters.sampled += n
        return [self.records[s] for s in chosen]

    def _take_oldest(self, n: int) -> list[Record]:
        taken = []
        for record_id in list(itertools.islice(self.slot_of, n)):  # dicts keep insertion order
            slot = self.slot_of.pop(record_id)
            taken.append(self.records[slot])
            self.records[slot] = None
        self.counters.sampled += n
        return taken

    def _drop_older_than(self, min_version: int) -> None:
        stale = [s for s in self.slot_of.values() if self.records[s].version < min_version]
        for s in stale:
            del self.slot_of[self.records[s].id]
            self.records[s] = None
        self.counters.dropped_stale += len(stale)

    def state(self) -> dict:
        live = sorted(self.slot_of.values(), key=lambda s: (s - self.next_slot) % self.capacity)
        return {"records": [asdict(self.records[s]) for s in live], "counters": asdict(self.counters),
                "rng": self.rng.bit_generator.state}

    def restore(self, state: dict, requeue: list[Record] = ()) -> None:
        """Continues from state(). `requeue`: records that had been sampled but not trained on
        when the state was taken; they go back in as the oldest, and count as unsampled."""
        self.records = [None] * self.capacity
        self.slot_of, self.next_slot = {}, 0
        counters = Counters(**state["counters"])
        for r in (list(requeue) + [Record(**r) for r in state["records"]])[-self.capacity:]:
            self._put(r)
        counters.sampled -= len(requeue)
        self.counters = counters
        self.rng.bit_generator.state = state["rng"]


def check_settings(capacity, min_size, samples_per_insert, error_buffer, batch_size, sampler="uniform") -> None:
    if sampler not in ("fifo", "uniform", "prioritized"):
        raise ValueError(f"replay: sampler must be fifo, uniform or prioritized; got {sampler!r}")
    if capacity < 1 or min_size < 1:
        raise ValueError(f"replay: capacity ({capacity}) and min_size ({min_size}) must be >= 1")
    if min_size > capacity:
        raise ValueError(f"replay: min_size ({min_size}) > capacity ({capacity}) would never allow sampling")
    if samples_per_insert is None:
        return
    if samples_per_insert <= 0:
        raise ValueError(f"replay: samples_per_insert must be > 0; got {samples_per_insert}")
    # Blocked inserts must leave room to sample a batch, and a blocked batch room to insert.
    need = (samples_per_insert + batch_size) / 2
    if error_buffer < need:
        raise ValueError(
            f"replay: error_buffer {error_buffer} deadlocks with samples_per_insert {samples_per_insert} "
            f"and batch_size {batch_size}; it must be >= (samples_per_insert + batch_size) / 2 = {need}"
        )


def parse_record(blob: bytes) -> Record:
    """Checks an encoded record's header; raises wire.WireError naming what is wrong."""
    msg = wire.decode(blob)
    if not isinstance(msg, dict):
        raise wire.WireError(f"record is a {type(msg).__name__}, not a map")
    rid, version, log_r = msg.get("id"), msg.get("version"), msg.get("log_reward")
    if not isinstance(rid, str) or not isinstance(version, int) or not isinstance(msg.get("batch"), bytes):
        raise wire.WireError(f"record needs id (str), version (int) and batch (bytes); got {describe(msg)}")
    if not isinstance(log_r, (int, float)) or not math.isfinite(log_r):
        raise wire.WireError(f"record {rid}: log_reward must be a finite number; got {log_r!r}")
    return Record(rid, version, float(log_r), blob)


def describe(msg: dict) -> str:
    return ", ".join(f"{k}: {type(v).__name__}" for k, v in msg.items())
