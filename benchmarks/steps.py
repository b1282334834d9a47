"""One training step as the serial runtime takes it, timed piece by piece, for the benchmark
scripts' `split` commands (benchmarks/hypergrid.py and benchmarks/seh.py)."""

from __future__ import annotations

import time

from distgfn.batch import build_batch
from distgfn.rewards import score_objects
from distgfn.sampling import sample_trajectories


def timed_step(worker, learner) -> tuple[dict, tuple[float, float, float, float]]:
    """Samples a batch with the worker's policy, scores it, builds its training batch (with
    parents: flow matching) and trains on it; returns the batch and the seconds of each of the
    four."""
    env, s, beta = worker.env, worker.cfg.sampler, worker.cfg.reward.beta
    t0 = time.perf_counter()
    trajs = sample_trajectories(env, worker.policy, s.batch_size, worker.rng, s.epsilon, s.temperature)
    t1 = time.perf_counter()
    log_r, _ = score_objects(worker.reward, trajs.final, env.keys, beta)
    t2 = time.perf_counter()
    batch = build_batch(env, trajs, log_r, with_parents=True)
    t3 = time.perf_counter()
    learner.update(batch)
    return batch, (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)
