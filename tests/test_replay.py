"""The replay table without Ray, one behaviour per test."""

import numpy as np
import pytest

from distgfn.replay import Record, ReplayTable


def records(n, start=0, version=0, log_reward=0.0):
    return [Record(f"r{i}", version, log_reward, b"x") for i in range(start, start + n)]


def test_blocks_sampling_until_min_size():
    table = ReplayTable(capacity=10, min_size=3)
    table.insert(records(2))
    assert table.sample(1) is None
    table.insert(records(1, start=2))
    assert len(table.sample(1)) == 1


def test_evicts_oldest_first_at_capacity_once_sampled():
    table = ReplayTable(capacity=3)
    table.insert(records(3))
    table.sample(3)
    table.insert(records(2, start=3))
    assert sorted(table.slot_of) == ["r2", "r3", "r4"]
    assert table.counters.evicted == 2 and table.size == 3


def test_holds_an_insert_that_would_evict_an_unsampled_record():
    table = ReplayTable(capacity=3)
    assert table.insert(records(2)) == 2
    assert table.insert(records(2, start=2)) == 0, "r0 was never sampled: the insert waits"
    assert table.size == 2 and table.counters.evicted == 0
    table.sample(1)  # r0, the oldest fresh record
    assert table.insert(records(2, start=2)) == 2 and sorted(table.slot_of) == ["r1", "r2", "r3"]


def test_samples_fresh_records_first_oldest_first():
    table = ReplayTable(capacity=10, seed=0)
    table.insert(records(3))
    assert [r.id for r in table.sample(2)] == ["r0", "r1"]
    batch = table.sample(3)
    assert batch[0].id == "r2" and {r.id for r in batch[1:]} <= {"r0", "r1", "r2"}, "then drawn by the sampler"
    assert table.counters.trained == 3 and table.fraction_trained == 1.0


def test_batch_grows_with_the_backlog_up_to_the_limit():
    table = ReplayTable(capacity=100, batch_size=8)
    table.insert(records(5))
    assert len(table.sample(2, up_to=8)) == 5, "all 5 fresh records in one batch"
    table.insert(records(20, start=5))
    assert len(table.sample(2, up_to=8)) == 8
    assert len(table.sample(2, up_to=8)) == 8
    assert len(table.sample(2, up_to=8)) == 4
    assert len(table.sample(2, up_to=8)) == 2, "no backlog: the minimum, drawn by the sampler"
    assert table.counters.trained == 25


def test_fifo_batch_grows_with_the_backlog():
    table = ReplayTable(capacity=100, sampler="fifo", batch_size=8)
    table.insert(records(11))
    assert [len(table.sample(2, up_to=8)), len(table.sample(2, up_to=8))] == [8, 3]
    assert table.sample(2, up_to=8) is None and table.counters.trained == 11


def test_rate_limiter_caps_a_growing_batch():
    # spi 0.5, buffer 4.25, min_size 1: a sample of k is allowed while 0.5 * inserted - sampled - k >= -3.75.
    table = ReplayTable(capacity=100, samples_per_insert=0.5, error_buffer=4.25, batch_size=8)
    table.insert(records(8))  # diff 4
    assert len(table.sample(2, up_to=8)) == 7, "8 fresh, but 4 - 8 < -3.75"
    assert table.sample(2, up_to=8) is None, "4 - 7 - 2 < -3.75"
    table.insert(records(2, start=8))  # diff -2
    assert [r.id for r in table.sample(1, up_to=8)] == ["r7"], "-2 - 1 >= -3.75; -2 - 2 is not"


def test_inserts_are_idempotent_by_id():
    table = ReplayTable(capacity=10)
    assert table.insert(records(3)) == 3
    assert table.insert(records(3)) == 3, "a retried insert is accepted"
    assert table.size == 3 and table.counters.inserted == 3 and table.counters.duplicates == 3


def test_blocks_inserts_when_samples_lag():
    # min_size 2, spi 2, buffer 2: an insert is admitted while inserts*2 - samples + 2 <= 6.
    table = ReplayTable(capacity=100, min_size=2, samples_per_insert=2.0, error_buffer=2.0, batch_size=1)
    assert [table.insert(records(1, start=i)) for i in range(5)] == [1, 1, 1, 0, 0]
    assert table.sample(1) is not None and table.sample(1) is not None
    assert table.insert(records(1, start=3)) == 1, "two samples make room for exactly one insert"
    assert table.insert(records(1, start=4)) == 0


def test_inserts_a_group_all_or_none():
    table = ReplayTable(capacity=100, min_size=2, samples_per_insert=2.0, error_buffer=2.0, batch_size=1)
    table.insert(records(1)), table.insert(records(1, start=1)), table.insert(records(1, start=2))
    assert table.insert(records(3, start=3)) == 0 and table.size == 3, "blocked: none of the group goes in"
    table.sample(1), table.sample(1)
    assert table.insert(records(3, start=3)) == 3 and table.size == 6, "room for one: the whole group goes in"


def test_blocks_samples_when_inserts_lag():
    table = ReplayTable(capacity=100, min_size=2, samples_per_insert=1.0, error_buffer=1.0)
    table.insert(records(2))
    # diff = 2, min_diff = 2 - 1 = 1: one sample allowed, then blocked until another insert.
    assert table.sample(1) is not None
    assert table.sample(1) is None
    table.insert(records(1, start=2))
    assert table.sample(1) is not None


@pytest.mark.parametrize("spi,buffer,batch", [(4.0, 2.0, 1), (1.0, 4.0, 16), (1.0, 0.5, 1)])
def test_rejects_deadlocking_settings(spi, buffer, batch):
    with pytest.raises(ValueError, match="deadlocks"):
        ReplayTable(capacity=100, min_size=10, samples_per_insert=spi, error_buffer=buffer, batch_size=batch)


def test_rejects_min_size_above_capacity():
    with pytest.raises(ValueError, match="never allow sampling"):
        ReplayTable(capacity=4, min_size=5)


def test_drops_and_counts_stale_records():
    table = ReplayTable(capacity=10)
    table.insert(records(3, version=1) + records(2, start=3, version=5))
    batch = table.sample(50, min_version=4)
    assert {r.id for r in batch} <= {"r3", "r4"}
    assert table.counters.dropped_stale == 3 and table.size == 2


def test_prioritized_sampling_follows_reward():
    table = ReplayTable(capacity=10, sampler="prioritized", seed=1)
    table.insert([Record("lo", 0, 0.0, b""), Record("hi", 0, np.log(9.0), b"")])
    ids = [r.id for r in table.sample(10_000)]
    assert ids.count("hi") / len(ids) == pytest.approx(0.9, abs=0.02)


def test_restores_contents_counters_and_rng_from_state():
    table = ReplayTable(capacity=4, seed=3)
    table.insert(records(4))
    table.sample(3)
    table.insert(records(2, start=4))
    copy = ReplayTable(capacity=4, seed=99)
    copy.restore(table.state())
    assert copy.counters == table.counters
    assert list(copy.slot_of) == list(table.state()["records"][i]["id"] for i in range(4))
    assert list(copy.fresh) == list(table.fresh) == ["r3", "r4", "r5"]
    assert [r.id for r in copy.sample(5)] == [r.id for r in table.sample(5)]
    copy.insert(records(1, start=6))
    table.insert(records(1, start=6))
    assert sorted(copy.slot_of) == sorted(table.slot_of), "FIFO order survives the round trip"


def test_fifo_hands_out_the_oldest_records_once():
    table = ReplayTable(capacity=10, min_size=1, sampler="fifo")
    table.insert(records(5))
    assert [r.id for r in table.sample(2)] == ["r0", "r1"]
    assert [r.id for r in table.sample(3)] == ["r2", "r3", "r4"]
    assert table.sample(1) is None and table.size == 0
    table.insert(records(2, start=5))
    assert table.sample(3) is None, "fifo waits for a full batch"
    assert [r.id for r in table.sample(2)] == ["r5", "r6"]


def test_stale_drops_free_the_rate_limiter():
    table = ReplayTable(capacity=100, min_size=2, samples_per_insert=1.0, error_buffer=2.0, sampler="fifo")
    taken = [table.insert(records(1, start=i, version=0)) for i in range(10)]
    assert sum(taken) == 4, "inserts stop at min_size + error_buffer"
    assert table.sample(2, min_version=1) is None, "every record is stale"
    assert table.counters.dropped_stale == 4
    assert table.insert(records(4, start=10, version=1)) == 4, "dropped records no longer hold inserts back"


def test_restore_requeues_taken_records_as_the_oldest_and_unsampled():
    table = ReplayTable(capacity=10, sampler="fifo")
    table.insert(records(4))
    taken = table.sample(2)
    state = table.state()
    copy = ReplayTable(capacity=10, sampler="fifo")
    copy.restore(state, requeue=taken)
    assert copy.counters.sampled == copy.counters.trained == 0 and copy.counters.inserted == 4
    assert [r.id for r in copy.sample(4)] == ["r0", "r1", "r2", "r3"]


def test_restore_makes_taken_records_fresh_again_in_a_uniform_table():
    table = ReplayTable(capacity=10)
    table.insert(records(3))
    taken = table.sample(2)  # r0, r1: still in the table, no longer fresh
    copy = ReplayTable(capacity=10)
    copy.restore(table.state(), requeue=taken)
    assert copy.size == 3 and list(copy.fresh) == ["r0", "r1", "r2"]
    assert copy.counters.trained == 0 and copy.counters.sampled == 0
    copy.sample(3)
    assert copy.counters.trained == 3 and copy.fraction_trained == 1.0
