"""The reward cache: memoized by key, least recently used evicted, saved and restored."""

import numpy as np
import pytest

from distgfn import wire
from distgfn.rewards import RewardServiceError, Scores
from distgfn.rewards.cache import CachedReward, RewardCache


class CountingReward:
    """R(x) = x + 1 for integer states; x < 0 fails; records the states it was asked for."""

    def __init__(self):
        self.asked = []

    def __call__(self, states):
        self.asked.extend(states.tolist())
        errors = ["negative" if x < 0 else None for x in states]
        reward = np.where(states < 0, np.nan, states + 1.0)
        return Scores(reward, states * 10.0, errors)


def keys(states):
    return [f"k{x}" for x in states]


def test_lookup_counts_hits_and_misses_and_store_fills():
    cache = RewardCache(10)
    assert cache.lookup(["a", "b"]) == [None, None]
    cache.store(["a"], np.array([2.0]), np.array([20.0]))
    assert cache.lookup(["a", "b"]) == [(2.0, 20.0), None]
    assert cache.stats() == {"hits": 1, "misses": 3, "size": 1}


def test_evicts_the_least_recently_used_key_beyond_capacity():
    cache = RewardCache(2)
    cache.store(["a", "b"], np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    cache.lookup(["a"])  # b is now the least recently used
    cache.store(["c"], np.array([3.0]), np.array([3.0]))
    assert cache.lookup(["a", "b", "c"]) == [(1.0, 1.0), None, (3.0, 3.0)]


def test_restores_entries_order_and_counters_from_state_through_msgpack():
    cache = RewardCache(3)
    cache.store(["a", "b", "c"], np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]))
    cache.lookup(["a", "zz"])
    restored = RewardCache(3)
    restored.restore(wire.decode(wire.encode(cache.state())))
    assert restored.stats() == cache.stats()
    restored.store(["d"], np.array([4.0]), np.array([40.0]))  # evicts b, the least recently used
    assert restored.lookup(["a", "b", "c", "d"]) == [(1.0, 10.0), None, (3.0, 30.0), (4.0, 40.0)]


def test_cached_reward_scores_each_missing_key_once_and_reuses_it():
    inner, cache = CountingReward(), RewardCache(100)
    reward = CachedReward(inner, cache, keys)
    first = reward(np.array([1, 2, 1, 3]))
    assert sorted(inner.asked) == [1, 2, 3], "a key twice in one batch is scored once"
    np.testing.assert_array_equal(first.reward, [2.0, 3.0, 2.0, 4.0])
    np.testing.assert_array_equal(first.raw, [10.0, 20.0, 10.0, 30.0])
    second = reward(np.array([3, 4, 1]))
    assert sorted(inner.asked) == [1, 2, 3, 4], "only the new key reaches the reward"
    np.testing.assert_array_equal(second.reward, [4.0, 5.0, 2.0])
    assert second.errors == [None, None, None]


def test_failed_objects_are_reported_and_never_cached():
    inner, cache = CountingReward(), RewardCache(100)
    reward = CachedReward(inner, cache, keys)
    out = reward(np.array([-1, 5, -1]))
    assert out.errors == ["negative", None, "negative"] and np.isnan(out.reward[[0, 2]]).all()
    reward(np.array([-1]))
    assert inner.asked.count(-1) == 2, "a failure is asked again next time"
    assert cache.stats()["size"] == 1


def test_a_reward_that_raises_on_one_object_fails_only_that_one_through_the_cache():
    def picky(states):
        if 7 in states:
            raise ValueError("seven")
        return states + 1.0

    out = CachedReward(picky, RewardCache(10), keys)(np.array([1, 7, 2]))
    assert out.errors[0] is None and out.errors[2] is None and "seven" in out.errors[1]


def test_a_service_error_is_not_an_objects_failure_and_propagates():
    def down(states):
        raise RewardServiceError("oracle down")

    with pytest.raises(RewardServiceError, match="oracle down"):
        CachedReward(down, RewardCache(10), keys)(np.array([1]))
