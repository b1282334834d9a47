"""The serial runtime: every role in one process, on-policy. For debugging and tests without Ray."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from distgfn import checkpoint, runstate, wire
from distgfn.batch import read_record, stack_batches
from distgfn.config import Config, cache_size
from distgfn.evaluation import Sampled, make_evaluator
from distgfn.learning import Learner
from distgfn.metrics import MetricsLog, drop_rows_after, mean, print_progress
from distgfn.replay import ReplayTable
from distgfn.rewards import FailureWindow, RewardError, RewardServiceError, report_failures
from distgfn.rewards.cache import RewardCache
from distgfn.rollout import RolloutWorker
from distgfn.runstate import RunState
from distgfn.signals import deferred_stops, stop_requested


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def train(cfg: Config, run_dir: Path, progress=print_progress, resume: bool = False) -> Learner:
    """Trains to learner.steps; with resume, continues from the newest usable checkpoint."""
    seed_everything(cfg.seed)
    learner = Learner(cfg)
    # On CPU the worker samples with the learner's own model; on a GPU it keeps a CPU copy.
    shared = learner.device.type == "cpu"
    cache = RewardCache(cache_size(cfg)) if cache_size(cfg) else None
    worker = RolloutWorker(cfg, seed=cfg.seed, model=learner.model if shared else None, cache=cache)
    evaluator = make_evaluator(cfg, learner.env, run_dir)
    clock = Clock()
    run = SerialRun(cfg, run_dir, learner, worker, evaluator, clock, cache)
    if resume:
        run.restore()
    log = MetricsLog(run_dir / "metrics.jsonl")
    if resume:
        log.restarted_at(learner.step)
    failures = FailureWindow(cfg.reward.max_failure_rate, cfg.reward.failure_window)
    try:
        with deferred_stops():
            run.steps(log, failures, progress)
    except KeyboardInterrupt:
        print("distgfn: interrupted; saving a checkpoint and the model, then stopping", file=sys.stderr)
    except (RewardError, RewardServiceError):  # as the Ray runtime: what was learned is kept
        print("distgfn: the reward failed; saving a checkpoint and the model, then stopping", file=sys.stderr)
        run.finish()
        raise
    finally:
        log.close()
        evaluator.close()
    run.finish()
    return learner


class SerialRun:
    """The serial loop and its checkpoints (distgfn.runstate: the layout both runtimes share):
    the learner, the sampler's RNG, the evaluation window and the counters; rows logged after a
    checkpoint are dropped on resume."""

    def __init__(self, cfg, run_dir, learner, worker, evaluator, clock, cache=None):
        self.cfg, self.run_dir = cfg, run_dir
        self.learner, self.worker, self.evaluator, self.clock = learner, worker, evaluator, clock
        self.cache = cache
        self.trajectories = 0
        self.backlog: list[bytes] = []  # records of a Ray checkpoint not trained on yet: first in line
        self.root = checkpoint.root_for(cfg, run_dir)

    def steps(self, log, failures, progress) -> None:
        """The loop: sample a batch, train on it, log a row every log.every updates. A stop asked
        for by Ctrl-C or SIGTERM takes effect between two steps."""
        cfg, learner, cache = self.cfg, self.learner, self.cache
        losses = []
        while learner.step < cfg.learner.steps:
            if stop_requested():
                raise KeyboardInterrupt("stop requested")
            batch = self.next_backlog_batch() if self.backlog else self.sample(failures)
            if batch is None:  # every reward in the batch failed: nothing to train on
                continue
            losses.append(learner.update(batch))
            if learner.step % cfg.log.every == 0 or learner.step == cfg.learner.steps:
                row = metrics_row(cfg, learner, self.evaluator, self.clock, self.trajectories, losses, cache,
                                  len(self.backlog))
                log.write(row)
                progress(row, cfg.learner.steps)
                losses = []
                if cfg.checkpoint.every and learner.step % cfg.checkpoint.every == 0:
                    self.save()

    def sample(self, failures) -> dict | None:
        """Samples a batch with the current policy and scores it; its training batch (None
        when every reward in it failed)."""
        if self.worker.model is not self.learner.model:
            self.worker.set_weights(*self.learner.weights())
        rollout = self.worker.sample()
        self.trajectories += len(rollout.objects)
        sampled = Sampled.of(rollout)
        self.evaluator.observe(sampled, self.learner.step)
        report_failures(sampled, self.learner.env, failures)
        return rollout.batch

    def next_backlog_batch(self) -> dict:
        n = self.cfg.sampler.batch_size
        blobs, self.backlog = self.backlog[:n], self.backlog[n:]
        return stack_batches([read_record(blob) for blob in blobs])

    def finish(self) -> None:
        """The last checkpoint, and the model."""
        self.save()
        torch.save(self.learner.model.state_dict(), self.run_dir / "model.pt")

    def save(self) -> None:
        """A checkpoint; records still in the backlog go into it as pending, so none is lost."""
        state = RunState("serial", self.clock.wall(), self.trajectories, self.evaluator.state(),
                         self.worker.rng.bit_generator.state)
        replay = None
        if self.backlog:  # an empty fifo table: on resume the backlog is exactly `pending`
            replay = checkpoint.state_to_bytes(ReplayTable(capacity=1, sampler="fifo").state())
        runstate.save(self.cfg, self.root, self.learner.step, checkpoint.state_to_bytes(self.learner.state()), state,
                      replay=replay, pending=self.backlog, cache=self.cache.state() if self.cache else None)

    def restore(self) -> None:
        """Continues from the newest checkpoint, written by either runtime."""
        step, files = checkpoint.load_latest(self.root)
        self.learner.restore(checkpoint.state_from_bytes(files["learner.pt"]))
        state = RunState.from_files(files)
        if state.sampler_rng is not None:  # a Ray checkpoint's actors each had their own
            self.worker.rng.bit_generator.state = state.sampler_rng
        self.trajectories = state.trajectories
        self.clock.start -= state.wall_s
        self.clock.restart(self.trajectories)
        self.evaluator.restore(state.evaluator, step)
        if self.cache is not None and "reward_cache.msgpack" in files:
            self.cache.restore(wire.decode(files["reward_cache.msgpack"]))
        self.backlog = runstate.untrained_records(files)
        drop_rows_after(self.run_dir / "metrics.jsonl", step)
        extra = f"; {len(self.backlog)} scored records not trained on yet go first" if self.backlog else ""
        print(f"distgfn: resuming from the {state.runtime} checkpoint at step {step} in {self.root}{extra}",
              file=sys.stderr)


class Clock:
    """Wall time, and the training time between rows with evaluation time left out."""

    def __init__(self):
        self.start = self.mark = time.perf_counter()
        self.trajectories_at_mark = 0

    def rate(self, trajectories: int) -> float:
        """Trajectories per second since the last restart()."""
        return (trajectories - self.trajectories_at_mark) / max(time.perf_counter() - self.mark, 1e-9)

    def restart(self, trajectories: int) -> None:
        self.mark, self.trajectories_at_mark = time.perf_counter(), trajectories

    def wall(self) -> float:
        return time.perf_counter() - self.start


def metrics_row(cfg, learner, evaluator, clock, trajectories, losses, cache=None, replay_size: int = 0) -> dict:
    """replay_size: records of a Ray checkpoint still waiting to be trained on (none otherwise)."""
    row = {
        "step": learner.step,
        "trajectories": trajectories,
        "wall_s": round(clock.wall(), 3),
        "loss": mean(losses),
        "traj_per_s": clock.rate(trajectories),
        "policy_lag_mean": 0.0,
        "replay_size": replay_size,
        "fraction_trained": 1.0,  # each batch is trained on as soon as it is scored
    }
    if cache is not None:
        row.update({f"reward_cache_{k}": v for k, v in cache.stats().items()})
    row.update(evaluator.sampled_metrics())
    every = cfg.eval.every
    if evaluator.exact and ((every and learner.step % every == 0) or learner.step == cfg.learner.steps):
        row.update(evaluator.exact_metrics(learner.log_policy))
    clock.restart(trajectories)  # after evaluation, so its time is left out of the next rate
    return row
