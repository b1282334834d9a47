"""The serial runtime: every role in one process, on-policy. For debugging and tests without Ray."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from distgfn import checkpoint, wire
from distgfn.config import Config, cache_size, config_text
from distgfn.evaluation import Sampled, make_evaluator
from distgfn.learning import Learner
from distgfn.metrics import MetricsLog, drop_rows_after, mean, print_progress
from distgfn.rewards import FailureWindow, RewardError, report_failures
from distgfn.rewards.cache import RewardCache
from distgfn.rollout import RolloutWorker
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
    except RewardError:
        print("distgfn: the reward failed; saving a checkpoint, then stopping", file=sys.stderr)
        run.save()
        raise
    finally:
        log.close()
        evaluator.close()
    run.save()
    torch.save(learner.model.state_dict(), run_dir / "model.pt")
    return learner


class SerialRun:
    """Checkpoints of a serial run: the learner, the sampler's RNG, the evaluation window, the
    counters, and the last metrics row they match (rows after it are dropped on resume)."""

    def __init__(self, cfg, run_dir, learner, worker, evaluator, clock, cache=None):
        self.cfg, self.run_dir = cfg, run_dir
        self.learner, self.worker, self.evaluator, self.clock = learner, worker, evaluator, clock
        self.cache = cache
        self.trajectories = 0
        self.root = checkpoint.root_for(cfg, run_dir)

    def steps(self, log, failures, progress) -> None:
        """The loop: sample a batch, train on it, log a row every log.every updates. A stop asked
        for by Ctrl-C or SIGTERM takes effect between two steps."""
        cfg, learner, worker, cache = self.cfg, self.learner, self.worker, self.cache
        shared = worker.model is learner.model
        losses = []
        while learner.step < cfg.learner.steps:
            if stop_requested():
                raise KeyboardInterrupt("stop requested")
            if not shared:
                worker.set_weights(*learner.weights())
            rollout = worker.sample()
            self.trajectories += len(rollout.objects)
            sampled = Sampled.of(rollout)
            self.evaluator.observe(sampled, learner.step)
            report_failures(sampled, learner.env, failures)
            if rollout.batch is None:  # every reward in the batch failed: nothing to train on
                continue
            losses.append(learner.update(rollout.batch))
            if learner.step % cfg.log.every == 0 or learner.step == cfg.learner.steps:
                row = metrics_row(cfg, learner, self.evaluator, self.clock, self.trajectories, losses, cache)
                log.write(row)
                progress(row, cfg.learner.steps)
                losses = []
                if cfg.checkpoint.every and learner.step % cfg.checkpoint.every == 0:
                    self.save()

    def save(self) -> None:
        run = {"worker_rng": self.worker.rng.bit_generator.state, "trajectories": self.trajectories,
               "wall_s": self.clock.wall(), "metrics_step": self.learner.step,
               "evaluator": self.evaluator.state()}
        files = {"learner.pt": checkpoint.state_to_bytes(self.learner.state()),
                 "run.pt": checkpoint.state_to_bytes(run), "config.yaml": config_text(self.cfg).encode()}
        if self.cache is not None:
            files["reward_cache.msgpack"] = wire.encode(self.cache.state())
        checkpoint.save(self.root, self.learner.step, files, keep=self.cfg.checkpoint.keep)

    def restore(self) -> None:
        step, files = checkpoint.load_latest(self.root)
        self.learner.restore(checkpoint.state_from_bytes(files["learner.pt"]))
        run = checkpoint.state_from_bytes(files["run.pt"])
        self.worker.rng.bit_generator.state = run["worker_rng"]
        self.trajectories = run["trajectories"]
        self.clock.start -= run["wall_s"]
        self.clock.restart(self.trajectories)
        self.evaluator.restore(run["evaluator"], run["metrics_step"])
        if self.cache is not None and "reward_cache.msgpack" in files:
            self.cache.restore(wire.decode(files["reward_cache.msgpack"]))
        drop_rows_after(self.run_dir / "metrics.jsonl", run["metrics_step"])
        print(f"distgfn: resuming from the checkpoint at step {step} in {self.root}", file=sys.stderr)


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


def metrics_row(cfg, learner, evaluator, clock, trajectories, losses, cache=None) -> dict:
    row = {
        "step": learner.step,
        "trajectories": trajectories,
        "wall_s": round(clock.wall(), 3),
        "loss": mean(losses),
        "traj_per_s": clock.rate(trajectories),
        "policy_lag_mean": 0.0,
        "replay_size": 0,
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
