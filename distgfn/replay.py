"""The replay table: a plain Python object (the distributed runtime wraps it as one Ray actor).

    table = ReplayTable(capacity=10_000, min_size=64, samples_per_insert=1.0, error_buffer=256)
    table.insert([Record("actor0-17", version=3, log_reward=1.2, data=b"...")])
    batch = table.sample(16, up_to=64)      # 16 to 64 records; None: blocked

A reward that was paid for is never thrown away: every record is sampled at least once.
- Sampling takes the records never sampled yet ("fresh") first, oldest first, and asks for
  more when they pile up: `sample(n, up_to)` returns between n and up_to records, as many
  fresh ones as there are in that range, topped up to n by the sampler. So the learner's
  batch grows with the backlog, and its consumption keeps up with production.
- The sampler: `fifo` (fresh records only, each handed out once and then removed, like
  Reverb's Queue: on-policy-like training), `uniform` (the top-up drawn with replacement)
  or `prioritized` (the top-up drawn with P(i) proportional to exp(alpha * log_reward_i)).
- Capacity evicts the oldest record, and only one sampled at least once: an insert that
  would evict a fresh record is held instead (back-pressure), never a silent loss.
- Rate limiting as DeepMind Reverb's SampleToInsertRatio: with diff = inserts *
  samples_per_insert - samples (see diff()), an insert is allowed while diff + samples_per_insert <=
  max_diff and a sample of n while diff - n >= min_diff, where min/max_diff =
  min_size * samples_per_insert -/+ error_buffer. Below `min_size` inserts always go through
  and sampling waits. Settings where both could block at once are rejected. A held insert
  makes the actor wait for the learner instead of paying for rewards nobody trains on.
- Inserts are idempotent by record id (a retried insert is a no-op).
- `min_version` is an explicit policy a user may choose (learner.max_policy_lag): records
  older than it are dropped at sampling, and counted as dropped_stale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import itertools
import math

import numpy as np

from distgfn import wire


class ReplayFull(RuntimeError):
    """At a run's end (the learner stopped), an insert that capacity holds: every slot holds a
    record never sampled."""


@dataclass
class Record:
    id: str
    version: int
    log_reward: float
    data: bytes | None  # the encoded record (distgfn.batch.write_record); None while only `local` is set
    # (LocalBatch, index) when the record was made in this process (the serial runtime): the
    # learner reads its trajectory without a msgpack round trip (distgfn.rollout.local_records).
    # It is encoded into `data` only for a checkpoint (distgfn.serial.encode_pending).
    local: tuple | None = field(default=None, repr=False, compare=False)


@dataclass
class Counters:
    inserted: int = 0
    sampled: int = 0
    evicted: int = 0  # by capacity, each after it was sampled at least once
    dropped_stale: int = 0  # by the explicit max_policy_lag policy only
    trained: int = 0  # records sampled at least once (the learner trained on them)
    duplicates: int = 0


@dataclass
class ReplayTable:
    capacity: int
    min_size: int = 1
    samples_per_insert: float | None = None  # None: no rate limit
    error_buffer: float = 0.0
    # Largest number of records one sample() returns (its up_to); the deadlock check needs it.
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
        self.fresh: dict[str, int] = {}  # id -> slot of the records never sampled, oldest first
        self.next_slot = 0
        self.rng = np.random.default_rng(self.seed)
        # Records inserted since this table was made, by source (the id's part before its first
        # "."; a rollout actor's name): what each actor contributed, for scaling and audits.
        self.inserted_by: dict[str, int] = {}

    @property
    def size(self) -> int:
        return len(self.slot_of)

    def stats(self) -> dict:
        """The counters and size, as metrics rows read them."""
        c = self.counters
        return {"size": self.size, "inserted": c.inserted, "sampled": c.sampled, "evicted": c.evicted,
                "dropped_stale": c.dropped_stale, "trained": c.trained, "duplicates": c.duplicates,
                "fraction_trained": self.fraction_trained}

    @property
    def fraction_trained(self) -> float | None:
        """Records sampled at least once / records inserted (None before any insert)."""
        c = self.counters
        return c.trained / c.inserted if c.inserted else None

    def diff(self) -> float:
        """inserts * samples_per_insert - samples, where records dropped unsampled (stale) count
        as never inserted, so dropping cannot deadlock."""
        c = self.counters
        return (c.inserted - c.dropped_stale) * (self.samples_per_insert or 0) - c.sampled

    def can_insert(self, n: int = 1) -> bool:
        """Room for n new records: none of them would evict a fresh record, and the rate
        limiter (above min_size) admits the first."""
        if len(self.fresh) + n > self.capacity:
            return False
        if self.samples_per_insert is None or self.size < self.min_size:
            return True
        return self.diff() + self.samples_per_insert <= self.max_diff

    def batch_size_now(self, n: int, up_to: int) -> int:
        """How many records a sample would return now (0: blocked): the fresh backlog clamped
        to [n, up_to], less where the rate limiter allows fewer (never below n)."""
        available = self.size if self.sampler == "fifo" else len(self.fresh)
        want = min(max(available, n), up_to)
        if self.samples_per_insert is not None:
            want = min(want, math.floor(self.diff() - self.min_diff))
        ready = self.size >= max(self.min_size, n if self.sampler == "fifo" else 1)
        return want if ready and want >= n else 0

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
        if fresh and not self.can_insert(len(fresh)):
            return 0
        self.counters.duplicates += len(records) - len(fresh)
        for record in fresh:
            self._put(record)
            source = record.id.split(".", 1)[0]
            self.inserted_by[source] = self.inserted_by.get(source, 0) + 1
        return len(records)

    def _put(self, record: Record) -> None:
        """Writes the record over the oldest slot (can_insert made sure it holds no fresh record)."""
        old = self.records[self.next_slot]
        if old is not None:
            del self.slot_of[old.id]
            self.counters.evicted += 1
        self.records[self.next_slot] = record
        self.slot_of[record.id] = self.fresh[record.id] = self.next_slot
        self.next_slot = (self.next_slot + 1) % self.capacity
        self.counters.inserted += 1

    def sample(self, n: int, up_to: int | None = None, min_version: int | None = None) -> list[Record] | None:
        """n to up_to (default n) records, the fresh ones first, or None when the rate limiter
        or min_size blocks sampling."""
        if min_version is not None:
            self._drop_older_than(min_version)
        k = self.batch_size_now(n, max(up_to or n, n))
        if not k:
            return None
        taken = self._take_fresh(k)
        self.counters.sampled += k
        return taken + self._draw(k - len(taken))

    def _take_fresh(self, k: int) -> list[Record]:
        """Up to k of the oldest fresh records (dicts keep insertion order); fifo removes them."""
        taken = []
        for record_id in list(itertools.islice(self.fresh, k)):
            slot = self.fresh.pop(record_id)
            taken.append(self.records[slot])
            if self.sampler == "fifo":
                del self.slot_of[record_id]
                self.records[slot] = None
        self.counters.trained += len(taken)
        return taken

    def _draw(self, k: int) -> list[Record]:
        """k records drawn with replacement by the sampler (uniform or prioritized)."""
        if k <= 0:
            return []
        slots = np.fromiter(self.slot_of.values(), dtype=np.int64, count=self.size)
        if self.sampler == "prioritized":
            logits = self.alpha * np.array([self.records[s].log_reward for s in slots])
            p = np.exp(logits - logits.max())
            chosen = self.rng.choice(slots, size=k, p=p / p.sum())
        else:
            chosen = slots[self.rng.integers(0, len(slots), size=k)]
        return [self.records[s] for s in chosen]

    def _drop_older_than(self, min_version: int) -> None:
        """The explicit max_policy_lag policy: drops the records older than min_version."""
        stale = [(i, s) for i, s in self.slot_of.items() if self.records[s].version < min_version]
        for record_id, slot in stale:
            del self.slot_of[record_id]
            self.fresh.pop(record_id, None)
            self.records[slot] = None
        self.counters.dropped_stale += len(stale)

    def state(self) -> dict:
        live = sorted(self.slot_of.values(), key=lambda s: (s - self.next_slot) % self.capacity)
        return {"records": [record_state(self.records[s]) for s in live], "counters": asdict(self.counters),
                "fresh": list(self.fresh), "rng": self.rng.bit_generator.state}

    def restore(self, state: dict, requeue: list[Record] = ()) -> None:
        """Continues from state(). `requeue`: records that had been sampled but not trained on
        when the state was taken; they go back in as the oldest, and count as unsampled and
        fresh (each is counted as trained again when it is next sampled)."""
        self.records = [None] * self.capacity
        self.slot_of, self.fresh, self.next_slot = {}, {}, 0
        counters = Counters(**state["counters"])
        saved = [Record(**r) for r in state["records"]]
        ids = {r.id for r in saved}
        taken = {r.id: r for r in requeue}  # a uniform draw may hold a record twice
        # A checkpoint from before fresh records were tracked: a fifo table holds only fresh ones.
        fresh = set(state.get("fresh", ids if self.sampler == "fifo" else ())) | set(taken)
        for r in ([r for i, r in taken.items() if i not in ids] + saved)[-self.capacity:]:
            self._put(r)
        for record_id in [i for i in self.fresh if i not in fresh]:
            del self.fresh[record_id]
        counters.sampled -= len(requeue)
        counters.trained -= len(taken)
        self.counters = counters
        self.rng.bit_generator.state = state["rng"]


def record_state(record: Record) -> dict:
    """A record as a checkpoint holds it: its bytes, never the in-process decoded batch."""
    if record.data is None:
        raise ValueError(f"record {record.id} has no bytes yet; encode it before a checkpoint")
    return {"id": record.id, "version": record.version, "log_reward": record.log_reward, "data": record.data}


def check_settings(capacity, min_size, samples_per_insert, error_buffer, batch_size, sampler="uniform") -> None:
    if sampler not in ("fifo", "uniform", "prioritized"):
        raise ValueError(f"replay: sampler must be fifo, uniform or prioritized; got {sampler!r}")
    if capacity < 1 or min_size < 1:
        raise ValueError(f"replay: capacity ({capacity}) and min_size ({min_size}) must be >= 1")
    if min_size > capacity:
        raise ValueError(f"replay: min_size ({min_size}) > capacity ({capacity}) would never allow sampling")
    if batch_size > capacity:
        raise ValueError(f"replay: a batch of {batch_size} records cannot fit a capacity of {capacity}")
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


def parse_record(blob: bytes, spec=None) -> Record:
    """Checks an encoded record's header, and with a spec (distgfn.batch.RecordSpec) its body
    too; raises wire.WireError naming what is wrong."""
    msg = wire.decode(blob)
    if not isinstance(msg, dict):
        raise wire.WireError(f"record is a {type(msg).__name__}, not a map")
    rid, version, log_r = msg.get("id"), msg.get("version"), msg.get("log_reward")
    if not isinstance(rid, str) or not isinstance(version, int) or not isinstance(msg.get("batch"), bytes):
        raise wire.WireError(f"record needs id (str), version (int) and batch (bytes); got {describe(msg)}")
    if not isinstance(log_r, (int, float)) or not math.isfinite(log_r):
        raise wire.WireError(f"record {rid}: log_reward must be a finite number; got {log_r!r}")
    if spec is not None:
        try:
            spec.check(wire.decode(msg["batch"]))
        except wire.WireError as e:
            raise wire.WireError(f"record {rid[:100]}: {e}") from None
    return Record(rid, version, float(log_r), blob)


def describe(msg: dict) -> str:
    return ", ".join(f"{k}: {type(v).__name__}" for k, v in msg.items())
