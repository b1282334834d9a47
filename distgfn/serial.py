"""The serial runtime: the Ray run's roles in one process, for debugging and tests without Ray.

    worker --records--> ReplayTable (fifo) --batch--> Learner      one after the other

The parts are the Ray runtime's: a rollout worker's batches become records in a replay table
(in process, `fifo`: each record handed out once, oldest first; records point into their
rollout batch, decoded, and are encoded to msgpack only when a checkpoint holds them), the
learner trains on batches the table hands out (one whole rollout batch as it is:
rollout.LocalBatch), metrics rows come from `distgfn.rows` and checkpoints
are `distgfn.runstate`'s layout, so both runtimes write the same metrics and checkpoints, fail
the same way, and a run resumes in either. What differs is only the schedule: here a batch is
sampled when the table holds less than one batch, so training is on-policy (the policy lag is
0 unless rewards failed) and a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from distgfn import checkpoint, runstate, wire
from distgfn.batch import write_record
from distgfn.config import Config, cache_size
from distgfn.evaluation import Sampled, make_evaluator
from distgfn.learning import Learner
from distgfn.messages import ActorReport, TrainStats
from distgfn.metrics import MetricsLog, drop_rows_after, print_progress
from distgfn.replay import ReplayTable, parse_record
from distgfn.rewards import RewardError, RewardServiceError
from distgfn.rewards.cache import RewardCache
from distgfn.rollout import RolloutWorker, local_part, local_records, local_training_batch
from distgfn.rows import Counts, Rows, crossed
from distgfn.runstate import RunState
from distgfn.signals import deferred_stops, stop_requested


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def train(cfg: Config, run_dir: Path, progress=print_progress, resume: bool = False) -> Learner:
    """Trains to learner.steps; with resume, continues from the newest usable checkpoint."""
    seed_everything(cfg.seed)
    run = SerialRun(cfg, run_dir)
    if resume:
        run.restore()
    try:
        with deferred_stops():
            run.steps(progress)
    except KeyboardInterrupt:
        print("distgfn: interrupted; saving a checkpoint and the model, then stopping", file=sys.stderr)
    except (RewardError, RewardServiceError):  # as the Ray runtime: what was learned is kept
        print("distgfn: the reward failed; saving a checkpoint and the model, then stopping", file=sys.stderr)
        run.finish()
        raise
    finally:
        run.close()
    run.finish()
    return run.learner


class SerialRun:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.learner = Learner(cfg)
        # On CPU the worker samples with the learner's own model; on a GPU it keeps a CPU copy.
        self.shared = self.learner.device.type == "cpu"
        self.cache = RewardCache(cache_size(cfg)) if cache_size(cfg) else None
        self.worker = RolloutWorker(cfg, seed=cfg.seed, model=self.learner.model if self.shared else None,
                                    cache=self.cache)
        n = cfg.sampler.batch_size
        self.table = ReplayTable(capacity=max(cfg.replay.capacity, n), sampler="fifo", batch_size=n)
        self.evaluator = make_evaluator(cfg, self.learner.env, run_dir)
        self.rows = Rows(cfg, self.learner.env, self.evaluator)
        self.log = MetricsLog(run_dir / "metrics.jsonl")
        self.trajectories = self.batches = 0
        self.root = checkpoint.root_for(cfg, run_dir)

    def steps(self, progress) -> None:
        """Samples a batch whenever the table holds less than one, trains on the oldest batch,
        and logs a row every log.every updates. A stop asked for by Ctrl-C or SIGTERM takes
        effect between two steps."""
        cfg = self.cfg
        while self.learner.step < cfg.learner.steps:
            if stop_requested():
                raise KeyboardInterrupt("stop requested")
            records = self.table.sample(cfg.sampler.batch_size)
            if records is None:
                self.sample()
                continue
            previous = self.learner.step
            self.rows.add_update(self.update(records))
            step, last = self.learner.step, self.learner.step == cfg.learner.steps
            if last or crossed(previous, step, cfg.log.every):
                evaluate = last or crossed(previous, step, cfg.eval.every)
                row = self.rows.make(step, self.table.stats(), self.counts(),
                                     self.learner.log_policy if evaluate else None).to_dict()
                self.log.write(row)
                progress(row, cfg.learner.steps)
                if crossed(previous, step, cfg.checkpoint.every):
                    self.save()

    def sample(self) -> None:
        """One batch with the current policy, scored, into the table as records."""
        if self.shared:
            self.worker.follow(self.learner.step)  # the learner's model is the policy
        else:
            self.worker.set_weights(*self.learner.weights())
        rollout = self.worker.sample()
        start = time.perf_counter()
        records = local_records(rollout, f"serial.{self.batches}")
        self.batches += 1
        self.table.insert(records)
        self.trajectories += len(rollout.objects)
        # No record bytes: the records stay decoded in this process (record_bytes_mean is null).
        report = ActorReport(Sampled.of(rollout), [rollout.version], [rollout.reward_s],
                             rollout.sample_s + time.perf_counter() - start, 0.0, 0, 0,
                             self.worker.unavailable)
        self.rows.observe(report, False, self.learner.step)  # raises RewardError when too many fail

    def update(self, records: list) -> TrainStats:
        start, step = time.perf_counter(), self.learner.step
        loss = self.learner.update(local_training_batch(records))
        lags = [step - r.version for r in records]
        return TrainStats(self.learner.step, 1, len(records), loss, min(lags), float(np.mean(lags)), max(lags),
                          0.0, time.perf_counter() - start)

    def counts(self) -> Counts:
        return Counts(self.trajectories, actors=1, reward_unavailable=int(self.worker.unavailable is not None),
                      cache=self.cache.stats() if self.cache is not None else None)

    def finish(self) -> None:
        """The last checkpoint, and the model."""
        self.save()
        torch.save(self.learner.model.state_dict(), self.run_dir / "model.pt")

    def close(self) -> None:
        self.log.close()
        self.evaluator.close()

    def save(self) -> None:
        """A checkpoint in the layout both runtimes share; the table's records go with it."""
        state = RunState("serial", self.rows.wall_s(), self.trajectories, self.evaluator.state(),
                         self.worker.rng.bit_generator.state)
        encode_pending(self.table)
        runstate.save(self.cfg, self.root, self.learner.step, checkpoint.state_to_bytes(self.learner.state()), state,
                      replay=checkpoint.state_to_bytes(self.table.state()),
                      cache=self.cache.state() if self.cache else None)

    def restore(self) -> None:
        """Continues from the newest checkpoint, written by either runtime. From a Ray
        checkpoint, the records no update had trained on are trained on first."""
        step, files = checkpoint.load_latest(self.root)
        self.learner.restore(checkpoint.state_from_bytes(files["learner.pt"]))
        state = RunState.from_files(files)
        if state.sampler_rng is not None:  # a Ray checkpoint's actors each had their own
            self.worker.rng.bit_generator.state = state.sampler_rng
        if state.runtime == "serial" and "replay.pt" in files:
            self.table.restore(checkpoint.state_from_bytes(files["replay.pt"]))
        else:
            self.table.insert([parse_record(blob) for blob in runstate.untrained_records(files)])
        self.trajectories = state.trajectories
        self.rows.start_time -= state.wall_s
        self.rows.restart(step, self.table.stats())
        self.evaluator.restore(state.evaluator, step)
        if self.cache is not None and "reward_cache.msgpack" in files:
            self.cache.restore(wire.decode(files["reward_cache.msgpack"]))
        drop_rows_after(self.run_dir / "metrics.jsonl", step)
        self.log.restarted_at(step)
        waiting = f"; {self.table.size} scored records not trained on yet go first" if self.table.size else ""
        print(f"distgfn: resuming from the {state.runtime} checkpoint at step {step} in {self.root}{waiting}",
              file=sys.stderr)


def encode_pending(table: ReplayTable) -> None:
    """Gives every record still held only decoded (local_records) its bytes, for a checkpoint."""
    for r in table.records:
        if r is not None and r.data is None:
            r.data = write_record(r.id, r.version, r.log_reward, local_part(r))
