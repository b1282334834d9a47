"""The rollout role: sample trajectories with a local policy copy, score them, build batches."""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from distgfn.batch import build_batch, read_record, split_batch, training_batch_of, write_record
from distgfn.config import Config
from distgfn.models import set_weights, share_weights
from distgfn.objectives import OBJECTIVES
from distgfn.replay import Record
from distgfn.rewards import RewardUnavailable, Scores, make_reward, score_objects
from distgfn.rewards.cache import CachedReward
from distgfn.rewards.pool import PooledReward
from distgfn.sampling import make_policy, sample_trajectories
from distgfn.tasks import make_env, make_model


@dataclass
class Rollout:
    batch: dict[str, np.ndarray] | None  # the trajectories whose reward was computed (None: none)
    objects: np.ndarray  # the terminal states sampled
    log_reward: np.ndarray  # beta * log R(x) of each object; NaN where the reward failed
    scores: Scores  # R(x), the oracle's output and errors, per object
    version: int
    reward_s: float  # time spent in the reward call
    sample_s: float  # time spent sampling the trajectories and building the batch


@dataclass
class Begun:
    """A batch sampled whose rewards are being computed."""

    trajs: object
    version: int
    scored: Future  # -> (log_r, scores, reward_s)
    sample_s: float


class RolloutWorker:
    def __init__(self, cfg: Config, seed: int, model=None, pool: list | None = None, cache=None, threads: int = 0,
                 batch_size: int | None = None):
        """`model` shares a policy with the caller (serial runtime); else the worker owns a copy.
        `pool`: reward actors that compute the reward (reward.mode pool); `cache`: a RewardCache
        or RemoteCache asked first. With `threads` > 0, rewards are computed in that many
        background threads, so that many batches can wait on a slow reward while the worker
        samples more. `batch_size`: trajectories per batch (None: sampler.batch_size)."""
        self.cfg = cfg
        self.batch_size = batch_size or cfg.sampler.batch_size
        self.env = make_env(cfg)
        self.pool = PooledReward(pool, cfg.reward.deadline_s) if pool is not None else None
        self.waiting = WaitingReward(self.pool or make_reward(cfg, self.env), cfg.reward.unavailable_wait_s)
        self.reward = CachedReward(self.waiting, cache, self.env.keys) if cache is not None else self.waiting
        self.model = model if model is not None else make_model(cfg, self.env)
        self.policy = make_policy(self.model, self.env.n_actions)
        self.with_parents = OBJECTIVES[cfg.objective.name].NEEDS_PARENTS
        self.rng = np.random.default_rng(seed)
        # -1 until weights are set: a worker's own random initialization is no published policy.
        self.version = -1 if model is None else 0
        self.reward_calls = ThreadPoolExecutor(threads, thread_name_prefix="reward") if threads else None

    def set_weights(self, version: int, weights, share: bool = False) -> None:
        """share=True uses the arrays in place (see models.share_weights) instead of copying."""
        (share_weights if share else set_weights)(self.model, weights)
        self.policy = make_policy(self.model, self.env.n_actions)  # shared tensors are new arrays
        self.version = version

    def follow(self, version: int) -> None:
        """The shared model (serial runtime) was trained in place to `version`: the policy, a
        snapshot of the weights (MLP.numpy_policy), is made anew."""
        self.policy = make_policy(self.model, self.env.n_actions)
        self.version = version

    def sample(self) -> Rollout:
        return self.finish(self.begin())

    def begin(self) -> Begun:
        """Samples a batch of trajectories and starts computing their rewards."""
        s, start = self.cfg.sampler, time.perf_counter()
        trajs = sample_trajectories(self.env, self.policy, self.batch_size, self.rng, s.epsilon, s.temperature)
        sample_s = time.perf_counter() - start
        if self.reward_calls is not None:
            return Begun(trajs, self.version, self.reward_calls.submit(self.score, trajs.final), sample_s)
        scored = Future()
        scored.set_result(self.score(trajs.final))
        return Begun(trajs, self.version, scored, sample_s)

    def finish(self, begun: Begun) -> Rollout:
        """Waits for the batch's rewards and builds its training batch."""
        log_r, scores, reward_s = begun.scored.result()
        start = time.perf_counter()
        ok = ~scores.failed
        # Objects whose reward failed are recorded by the caller but never trained on.
        trajs, final = begun.trajs, begun.trajs.final
        batch = build_batch(self.env, trajs.subset(ok), log_r[ok], self.with_parents) if ok.any() else None
        sample_s = begun.sample_s + time.perf_counter() - start
        return Rollout(batch, final, log_r, scores, begun.version, reward_s, sample_s)

    def score(self, final: np.ndarray):
        """(beta * log R, scores, seconds the reward took)."""
        start = time.perf_counter()
        log_r, scores = score_objects(self.reward, final, self.env.keys, self.cfg.reward.beta)
        return log_r, scores, time.perf_counter() - start

    @property
    def unavailable(self) -> str | None:
        """Why the reward service is down, while it is."""
        return self.waiting.unavailable


class WaitingReward:
    """A reward that waits out its service being unavailable for up to `wait_s`, retrying with
    backoff and saying so on stderr. Inside the cache, so a retry asks the cache nothing again."""

    def __init__(self, reward, wait_s: float):
        self.reward, self.wait_s = reward, wait_s
        self.unavailable: str | None = None

    def __call__(self, states: np.ndarray):
        start, pause = time.perf_counter(), 1.0
        while True:
            try:
                out = self.reward(states)
                break
            except RewardUnavailable as e:
                waited = time.perf_counter() - start
                if waited > self.wait_s:
                    raise RewardUnavailable(f"{e}; gave up after {waited:.0f} s (reward.unavailable_wait_s)") from None
                if self.unavailable is None:
                    print(f"distgfn: reward service unavailable, waiting for it: {e}", file=sys.stderr, flush=True)
                self.unavailable = str(e)
                time.sleep(pause)  # a retry's backoff, not synchronization
                pause = min(2 * pause, 10.0)
        if self.unavailable is not None:
            print(f"distgfn: reward service back after {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            self.unavailable = None
        return out


def encode_records(rollout: Rollout, prefix: str) -> list[bytes]:
    """One msgpack record per trained-on trajectory, with ids `prefix-i`, stamped with the
    policy version."""
    return [write_record(record_id, rollout.version, log_r, part) for record_id, log_r, part in record_parts(rollout, prefix)]


def record_parts(rollout: Rollout, prefix: str) -> list[tuple[str, float, dict[str, np.ndarray]]]:
    """(id, log_reward, one-trajectory batch) of each trained-on trajectory."""
    if rollout.batch is None:
        return []
    parts = split_batch(rollout.batch)
    return [(record_id(prefix, i), float(log_r), part) for i, (part, log_r) in enumerate(zip(parts, rollout.batch["log_reward"]))]


def record_id(prefix: str, i: int) -> str:
    """The id of a batch's i-th record: `actor3.1f2e9a0c-17-5` (actor, restart, batch, index);
    the replay table counts records by the part before the first "."."""
    return f"{prefix}-{i}"


class LocalBatch:
    """A rollout batch whose records stay in this process (the serial runtime), never encoded
    unless a checkpoint holds them. An update whose records are exactly its trajectories, in
    order, trains on the batch as it is: the same arrays as its split parts stacked again
    (tests/test_records.py), without splitting them. It is split into one-trajectory parts
    only when a record must stand alone: a checkpoint, an update that mixes batches."""

    def __init__(self, batch: dict[str, np.ndarray]):
        self.batch = batch
        self.size = len(batch["log_reward"])
        self.parts: list[dict[str, np.ndarray]] | None = None

    def part(self, i: int) -> dict[str, np.ndarray]:
        if self.parts is None:
            self.parts = split_batch(self.batch)
        return self.parts[i]


def local_records(rollout: Rollout, prefix: str) -> list[Record]:
    """encode_records' records (same ids, versions and rewards) for a table in this process:
    each points into the rollout's LocalBatch, and is encoded only if a checkpoint needs it."""
    if rollout.batch is None:
        return []
    whole = LocalBatch(rollout.batch)
    return [Record(record_id(prefix, i), rollout.version, float(log_r), None, (whole, i))
            for i, log_r in enumerate(rollout.batch["log_reward"])]


def local_part(record: Record) -> dict[str, np.ndarray]:
    """A record's one-trajectory batch: from its LocalBatch, or decoded from its bytes."""
    if record.local is None:
        return read_record(record.data)
    whole, i = record.local
    return whole.part(i)


def local_training_batch(records: list[Record]) -> dict[str, np.ndarray]:
    """The learner's batch from records of a table in this process: a LocalBatch as it is when
    the records are all of its trajectories in order, else their parts stacked."""
    whole = records[0].local[0] if records[0].local is not None else None
    if whole is not None and len(records) == whole.size and all(
            r.local is not None and r.local[0] is whole and r.local[1] == i for i, r in enumerate(records)):
        return whole.batch
    return training_batch_of([local_part(r) for r in records])
