"""What the roles of a Ray run say to each other, one definition each.

    rollout actor --insert(records)--> replay table --InsertAck--> rollout actor
    learner --publish(Published)--> replay table (InsertAck.weights hands it on)
    learner --train(n)--> TrainStats --> driver
    rollout actor --run(seconds)--> ActorReport --> driver

These travel between Ray actors of one job (Ray serializes them). What crosses a process or
trust boundary is msgpack: a record (`distgfn.batch.write_record`), a reward request to an
oracle (`distgfn.oracle`), a metrics row (one JSON line).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Published:
    """A policy version: the number of updates applied, and [ObjectRef] of its weights (one
    flat dict of numpy arrays put in the object store once; in a list so that Ray passes the
    reference instead of fetching the arrays)."""

    version: int
    weights: list


@dataclass
class InsertAck:
    """The replay table's answer to an insert: all records taken or none (rate limited: send
    them again), the corrupt ones rejected, and the newest weights when the sender lacks them."""

    taken: int
    rejected: int = 0
    errors: list[str] = field(default_factory=list)  # the first few rejections, each naming why
    newest: Published | None = None  # None: the sender holds the newest version already
    closed: bool = False  # the run is ending (ReplayActor.close): begin no new batch


@dataclass
class TrainStats:
    """What one learner `train` call did."""

    step: int  # learner updates so far
    updates: int  # in this call
    records: int  # records trained on in this call
    loss: float | None  # mean over the call's updates
    lag_min: int | None  # policy lag of the records trained on: updates since each was sampled
    lag_mean: float | None
    lag_max: int | None
    wait_s: float  # waiting for records
    busy_s: float
    published: Published | None = None  # the weights after the call (Ray runtime)


@dataclass
class ActorReport:
    """What a rollout actor did in one `run` (or `drain`) call."""

    sampled: object | None = None  # distgfn.evaluation.Sampled: the objects and their scores
    versions: list[int] = field(default_factory=list)  # the policy version of each batch
    reward_s: list[float] = field(default_factory=list)  # reward time of each batch
    sample_s: float = 0.0  # time sampling and building batches
    insert_wait_s: float = 0.0  # time held by back-pressure (waiting on the replay table)
    record_bytes: int = 0
    records: int = 0
    unavailable: str | None = None  # why the reward service is down, while it is
    totals: dict | None = None  # a drain's lifetime counts: trajectories, records, in_replay
