"""Replay records are checked whole at insert: a record whose body breaks what the run's env and
objective produce is refused with a reason and counted; the learner never sees it."""

import numpy as np
import pytest

from distgfn import wire
from distgfn.batch import RecordSpec, pack_record, read_record, split_batch, stack_batches, write_record
from distgfn.config import load_config
from distgfn.learning import Learner
from distgfn.replay import parse_record
from distgfn.rollout import RolloutWorker, encode_records

# The learner on the CPU on any host: an index out of range on CUDA would poison the process's CUDA context.
CFG = ["env.options.height=5", "model.options.hidden=32", "learner.device=cpu"]


@pytest.fixture(scope="module")
def made():
    """(cfg, spec, good records, one trajectory's batch) of a 2-D HyperGrid flow-matching run."""
    cfg = load_config(None, CFG)
    worker = RolloutWorker(cfg, seed=0)
    rollout = worker.sample()
    spec = RecordSpec.of(worker.env, with_parents=True)
    return cfg, spec, encode_records(rollout, "a"), split_batch(rollout.batch)[0]


def tampered(part, **changes) -> bytes:
    """A record of `part` with fields of its packed form replaced (None: removed)."""
    record = pack_record(part)
    for name, value in changes.items():
        if value is None:
            record.pop(name)
        else:
            record[name] = value
    return wire.encode({"id": "bad", "version": 0, "log_reward": 0.0, "batch": wire.encode(record)})


def test_records_a_worker_makes_pass_the_check(made):
    cfg, spec, good, _ = made
    assert spec.parents and spec.masks and spec.n_actions == 3 and spec.feat_shape == (2,)
    assert [parse_record(blob, spec).id for blob in good] == [parse_record(blob).id for blob in good]


def bad_bodies(part):
    n = len(part["row"])
    return {
        "a missing field": dict(row=None),
        "an unknown field": dict(extra=np.zeros(1)),
        "row out of feats": dict(row=np.full(n, 99, dtype=np.int8)),
        "a negative row": dict(row=np.full(n, -1, dtype=np.int8)),
        "an action out of range": dict(action=np.array([7] * (n - 1) + [-1], dtype=np.int8)),
        "a float action": dict(action=np.zeros(n, dtype=np.float32)),
        "a short action": dict(action=np.zeros(n - 1, dtype=np.int8)),
        "feats of the wrong width": dict(feats=np.zeros((3, 5), dtype=np.int8)),
        "a NaN log_reward": dict(log_reward=np.array([np.nan], dtype=np.float32)),
        "a wrong mask width": dict(mask_width=9),
        "truncated masks": dict(masks=np.zeros(0, dtype=np.uint8)),
        "parents out of feats": dict(parent_row=np.full(int(part["n_parents"].sum()), 99, dtype=np.int8)),
        "too few parents": dict(parent_action=np.zeros(0, dtype=np.int8)),
        "a body that is a list": None,
    }


def test_each_malformed_body_is_refused_naming_the_problem(made):
    _, spec, _, part = made
    for problem, changes in bad_bodies(part).items():
        blob = (wire.encode({"id": "bad", "version": 0, "log_reward": 0.0, "batch": wire.encode([1, 2])})
                if changes is None else tampered(part, **changes))
        parse_record(blob)  # the header alone is fine
        with pytest.raises(wire.WireError, match=r"record bad: record"):
            parse_record(blob, spec)


def test_without_the_check_a_malformed_record_crashes_the_learner(made):
    """Why the body is checked at insert: the learner cannot tell a bad record from a bug."""
    cfg, _, good, part = made
    learner = Learner(cfg)
    bad = tampered(part, row=np.full(len(part["row"]), 99, dtype=np.int8))
    with pytest.raises((IndexError, RuntimeError)):
        learner.update(stack_batches([read_record(b) for b in [*good[:3], bad]]))


def test_the_replay_actor_counts_what_it_refuses_and_keeps_the_rest(ray_cluster, made):
    from actors.replay import ReplayActor

    _, spec, good, part = made
    replay = ReplayActor.remote(spec=spec, capacity=100)
    bad = tampered(part, action=np.array([7] * (len(part["row"]) - 1) + [-1], dtype=np.int8))
    ack = ray_cluster.get(replay.insert.remote([bad, *good], 10.0))
    assert (ack.taken, ack.rejected) == (len(good), 1)
    assert "action has values outside [0, 3)" in ack.errors[0]
    assert ray_cluster.get(replay.stats.remote())["rejected"] == 1


def test_a_record_written_for_another_env_is_refused(made):
    _, spec, _, _ = made
    other = load_config(None, ["env.options.ndim=3", "env.options.height=5", "model.options.hidden=32"])
    rollout = RolloutWorker(other, seed=0).sample()
    blob = write_record("x", 0, float(rollout.batch["log_reward"][0]), pack_record_ready(rollout))
    with pytest.raises(wire.WireError, match="feats"):
        parse_record(blob, spec)


def pack_record_ready(rollout):
    """The first trajectory of a rollout, as write_record takes it."""
    return split_batch(rollout.batch)[0]


def test_local_records_are_encoded_for_a_checkpoint_and_restore_as_the_same_records(made):
    """The serial runtime keeps its records decoded; a checkpoint of its table holds the same
    bytes encode_records makes, and a table restored from it gives back the same batches."""
    from distgfn.replay import ReplayTable
    from distgfn.rollout import local_records
    from distgfn.serial import encode_pending

    cfg = made[0]
    rollout = RolloutWorker(cfg, seed=0).sample()
    records = local_records(rollout, "serial.0")
    assert all(r.data is None and r.local is not None for r in records)
    table = ReplayTable(capacity=64, sampler="fifo", batch_size=16)
    table.insert(records)
    with pytest.raises(ValueError, match="no bytes yet"):
        table.state()
    encode_pending(table)
    state = table.state()
    assert [r["data"] for r in state["records"]] == encode_records(rollout, "serial.0")
    restored = ReplayTable(capacity=64, sampler="fifo", batch_size=16)
    restored.restore(state)
    for record, part in zip(restored.sample(len(records)), split_batch(rollout.batch)):
        assert record.local is None
        for name, value in read_record(record.data).items():
            assert np.array_equal(value, part[name]), name


def assert_same_arrays(a: dict, b: dict, same_dtypes: bool = True) -> None:
    """Same fields and values; with same_dtypes, the same dtypes too (the wire narrows integers)."""
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
        assert a[name].dtype == b[name].dtype or not same_dtypes, name


@pytest.mark.parametrize("objective", ["fm", "tb"])
def test_a_batch_split_into_records_stacks_back_to_the_same_arrays(objective):
    """The serial runtime trains on a whole rollout batch, the Ray learner on its records stacked:
    they must be the same arrays (parents in the same order too), so both train alike."""
    from distgfn.batch import training_batch, training_batch_of

    cfg = load_config(None, CFG + [f"objective.name={objective}"])
    rollout = RolloutWorker(cfg, seed=3).sample()
    assert_same_arrays(training_batch_of(split_batch(rollout.batch)), rollout.batch)
    assert_same_arrays(training_batch(encode_records(rollout, "a")), rollout.batch, same_dtypes=False)


def test_local_records_train_on_their_batch_whole_only_when_they_are_all_of_it_in_order(made):
    from distgfn.batch import training_batch_of
    from distgfn.rollout import local_records, local_training_batch

    cfg = made[0]
    worker = RolloutWorker(cfg, seed=0)
    first, second = worker.sample(), worker.sample()
    a, b = local_records(first, "s.0"), local_records(second, "s.1")
    assert local_training_batch(a) is first.batch
    parts_a, parts_b = split_batch(first.batch), split_batch(second.batch)
    for records, parts in (
        (a[1:], parts_a[1:]),  # not all of it
        (a[::-1], parts_a[::-1]),  # out of order
        (a[:3] + b[:2], parts_a[:3] + parts_b[:2]),  # two batches
    ):
        assert_same_arrays(local_training_batch(records), training_batch_of(parts))
