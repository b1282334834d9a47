"""The replay table as one Ray actor. It is threaded: a blocked insert or sample waits on a
condition variable in its own thread, without holding up other calls.

At a run's end the driver closes it (`close`): the learner has stopped, so the rate limiter
no longer holds inserts and the rollout actors' last batches go in, to the final checkpoint.

It also serves the newest published weights: the learner announces each version here, and
every insert acknowledgement (InsertAck) carries the newest Published version, so rollout
actors learn of new weights without any extra call.
"""

from __future__ import annotations

import threading
import time

import ray

from distgfn import checkpoint
from distgfn.messages import InsertAck, Published
from distgfn.replay import ReplayFull, ReplayTable, parse_record
from distgfn.wire import WireError


@ray.remote(num_cpus=0, max_concurrency=256)
class ReplayActor:
    def __init__(self, spec=None, **table_settings):
        """`spec` (distgfn.batch.RecordSpec): what every record must hold; a record that breaks
        it is rejected at insert and counted, so the learner never sees it."""
        self.spec = spec
        self.table = ReplayTable(**table_settings)
        self.rejected = 0
        self.changed = threading.Condition()
        self.newest = Published(-1, [None])
        self.turns = Turns()
        self.closed = False  # the run is ending: no learner samples any more (see close)

    def actor_id(self) -> str:
        """Ray's id of this actor, which a RayActorError about it carries."""
        return ray.get_runtime_context().get_actor_id()

    def publish(self, published: Published) -> None:
        with self.changed:
            if published.version > self.newest.version:
                self.newest = published

    def close(self) -> int:
        """The run is ending and the learner has stopped: the rate limiter stops holding inserts,
        so the rollout actors' last batches go in (and into the final checkpoint). Capacity still
        holds an insert that would evict a record never sampled; such an insert now fails at once
        (ReplayFull) instead of waiting for a learner that will not come. Acknowledgements say
        the table is closed, so actors begin no new batch. Returns the records inserted so far."""
        with self.changed:
            self.closed = True
            self.table.samples_per_insert = None
            self.changed.notify_all()
            return self.table.counters.inserted

    def latest(self) -> Published:
        return self.newest

    @ray.method(enable_task_events=False)  # hundreds a second: keep them out of Ray's task history
    def insert(self, blobs: list[bytes], timeout_s: float, held_version: int = -1) -> InsertAck:
        """Inserts the records all or none, waiting up to timeout_s for the rate limiter;
        corrupt records are rejected and reported, never inserted. The acknowledgement names
        the newest published weights when they are newer than `held_version` (else None: a
        reference passed around costs Ray bookkeeping)."""
        records, errors = [], []
        for blob in blobs:
            try:
                records.append(parse_record(blob, self.spec))
            except WireError as e:
                errors.append(str(e))
        with self.changed:
            self.rejected += len(errors)
            turn = self.turns.take() if records else None  # an empty insert only asks for weights
        taken, full_at_close = 0, False

        def insert_all() -> tuple[bool, bool]:
            nonlocal taken, full_at_close
            if turn is not None and not self.closed and not self.turns.mine(turn):
                return False, False
            taken = self.table.insert(records)
            full_at_close = self.closed and taken < len(records)
            return taken == len(records), taken > 0

        try:
            self._until(insert_all, timeout_s)
        finally:
            if turn is not None:
                with self.changed:
                    self.turns.done(turn)
                    self.changed.notify_all()
        if full_at_close:
            raise ReplayFull(f"the run is ending and all {self.table.capacity} slots of the replay table hold "
                             f"records never sampled: {len(records)} records could not go in")
        newest = self.newest if self.newest.version > held_version else None
        return InsertAck(taken, len(errors), errors[:3], newest, closed=self.closed)

    def sample(self, n: int, up_to: int, min_version: int | None, timeout_s: float):
        """[(version, blob)] * (n to up_to: see ReplayTable.sample), or None if sampling stayed
        blocked for timeout_s, or the table is closed (the learner has stopped: the learner's
        last prefetch takes nothing, so the records stay in the table and its checkpoint)."""
        batch = None

        def sample_once() -> tuple[bool, bool]:
            nonlocal batch
            if self.closed:
                return True, False
            batch = self.table.sample(n, up_to, min_version)
            return batch is not None, batch is not None

        self._until(sample_once, timeout_s)
        return None if batch is None else [(r.version, r.data) for r in batch]

    def _until(self, attempt, timeout_s: float) -> None:
        """Calls attempt() -> (done, changed) until done or timeout_s passes. Other waiters are
        woken only when the table changed (an insert can unblock a sample and a sample an
        insert); waking them after a failed try would make blocked callers wake each other
        in a loop."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                done, changed = attempt()
                if changed:
                    self.changed.notify_all()
                left = deadline - time.monotonic()
                if done or left <= 0 or self.closed:
                    return
                self.changed.wait(left)

    def state_bytes(self) -> tuple[bytes, int]:
        """The table's contents, counters and RNG, for a checkpoint, and its insert count then."""
        with self.changed:
            state = self.table.state()
        return checkpoint.state_to_bytes(state), state["counters"]["inserted"]

    def restore_bytes(self, data: bytes, requeue: list[bytes] = ()) -> None:
        """Continues from state_bytes(); `requeue` holds records the learner had taken but not
        trained on when the checkpoint was made."""
        state = checkpoint.state_from_bytes(data)
        with self.changed:
            self.table.restore(state, [parse_record(blob) for blob in requeue])
            self.changed.notify_all()

    def stats(self) -> dict:
        with self.changed:
            return {**self.table.stats(), "rejected": self.rejected, "inserted_by": dict(self.table.inserted_by),
                    "waiting_inserts": self.turns.waiting}


class Turns:
    """First come, first served among held inserts. An actor whose insert is held keeps its
    place in line, so its batch never waits behind later ones: the policy lag of what the
    learner trains on stays bounded by the back-pressure, whichever actor the wake-up favours."""

    def __init__(self):
        self.next = self.serving = 0
        self.gone: set[int] = set()  # turns finished (served, or given up) out of order

    def take(self) -> int:
        self.next += 1
        return self.next - 1

    def mine(self, turn: int) -> bool:
        return turn == self.serving

    def done(self, turn: int) -> None:
        self.gone.add(turn)
        while self.serving in self.gone:
            self.gone.remove(self.serving)
            self.serving += 1

    @property
    def waiting(self) -> int:
        return self.next - self.serving - len(self.gone)
