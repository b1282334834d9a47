"""The Ray runtime's driver: starts or joins Ray, creates the roles, runs the control loop.

    replay  = ReplayActor(...)                      one threaded actor, no CPU reserved
    learner = LearnerActor(cfg, replay)             a GPU when the cluster has one
    actors  = [RolloutActor(cfg, seed_i, replay)]   actors.num of them, actors.cpus each

Each rollout actor always has one `run` call (actors.report_every_s of sampling) in flight;
the learner always has two `train` calls (log.every updates each) queued, so neither waits
on the driver. Records go from actors to the replay table to the learner directly, and new
weights from the learner to the actors through the replay table's insert acknowledgements;
the driver only collects statistics, evaluates and logs.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import ray

from distgfn import checkpoint, wire
from distgfn.config import Config, ConfigError, config_text, error_buffer
from distgfn.envs import make_env
from distgfn.evaluation import make_evaluator
from distgfn.learning import policy_log_probs
from distgfn.metrics import MetricsLog, drop_rows_after, mean, print_progress
from distgfn.models import make_model, set_weights
from distgfn.rewards import FailureWindow, RewardError, report_failures
from distgfn.signals import stop_on_sigterm

WORKER_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


def train(cfg: Config, run_dir: Path, progress=print_progress, resume: bool = False) -> None:
    """Trains to learner.steps; with resume, continues from the newest usable checkpoint."""
    saved = checkpoint.load_latest(checkpoint.root_for(cfg, run_dir)) if resume else None
    loop = ControlLoop(cfg, run_dir, progress=progress)  # missing data files fail here, before Ray starts
    started_ray = False
    try:
        started_ray = connect(cfg)
        stop_on_sigterm()
        loop.start(saved)
        loop.run_surviving_failures()
    finally:
        loop.close()
        if started_ray:
            ray.shutdown()


class RoleFailure(Exception):
    """The learner or the replay table died; the run can go on from the last checkpoint."""


def connect(cfg: Config) -> bool:
    """Joins ray.address, else RAY_ADDRESS, else starts an embedded local cluster (never a bare
    ray.init(), which would join whatever cluster it finds). True if this call started Ray."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        print(f"distgfn: joining Ray cluster at {address}", file=sys.stderr)
        ray.init(address=address, runtime_env=WORKER_ENV)
        return True
    need = math.ceil(cfg.learner.cpus + cfg.actors.num * cfg.actors.cpus)
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, need)
    print(f"distgfn: starting an embedded local Ray cluster ({num_cpus} CPUs)", file=sys.stderr)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=WORKER_ENV)
    return True


def create_roles(cfg: Config, first_step: int = 0):
    """The replay table, the learner and the rollout actors. Actor seeds depend on the step a
    run starts from, so a resumed run does not replay the random streams of its start."""
    from actors.replay import ReplayActor
    from actors.rollout import RolloutActor
    from learner.actor import LearnerActor

    check_resources(cfg)
    r = cfg.replay
    replay = ReplayActor.options(runtime_env=WORKER_ENV).remote(
        capacity=r.capacity, min_size=r.min_size, samples_per_insert=r.samples_per_insert,
        error_buffer=error_buffer(cfg), batch_size=cfg.sampler.batch_size, sampler=r.sampler,
        alpha=r.alpha, seed=cfg.seed,
    )
    learner = LearnerActor.options(
        num_cpus=cfg.learner.cpus, num_gpus=learner_gpus(cfg), runtime_env=WORKER_ENV
    ).remote(cfg, replay)
    actors = [
        RolloutActor.options(num_cpus=cfg.actors.cpus, runtime_env=WORKER_ENV, max_restarts=cfg.actors.max_restarts,
                             max_task_retries=0).remote(
            cfg, seed=actor_seed(cfg.seed, i, first_step), name=f"actor{i}", replay=replay,
            insert_timeout_s=cfg.ray.progress_timeout_s,
        )
        for i in range(cfg.actors.num)
    ]
    return replay, learner, actors


def actor_seed(seed: int, actor: int, first_step: int) -> int:
    return int(np.random.SeedSequence([seed, actor, first_step]).generate_state(1)[0])


def learner_gpus(cfg: Config) -> int:
    """One GPU for the learner when the cluster has one and the config allows CUDA."""
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    return 1 if has_gpu and cfg.learner.device != "cpu" else 0


def check_resources(cfg: Config) -> None:
    cpus = ray.cluster_resources().get("CPU", 0)
    need = cfg.learner.cpus + cfg.actors.num * cfg.actors.cpus
    if need > cpus:
        raise ConfigError(
            f"the Ray cluster has {cpus:g} CPUs but learner.cpus + actors.num * actors.cpus = "
            f"{cfg.learner.cpus:g} + {cfg.actors.num} * {cfg.actors.cpus:g} = {need:g}; "
            f"lower actors.cpus (fractions are fine when rewards wait on I/O) or add nodes"
        )
    if cfg.learner.device.startswith("cuda") and ray.cluster_resources().get("GPU", 0) < 1:
        raise ConfigError(f"learner.device={cfg.learner.device!r} but the Ray cluster has no GPU")


def dead_class(error: ray.exceptions.RayActorError) -> str:
    """The class of the actor an error is about, from Ray's message ("class_name: LearnerActor")."""
    found = re.search(r"class_name: (\w+)", str(error))
    return found.group(1) if found else "learner or replay table"


def unwrap(ref, timeout: float | None = None):
    """ray.get that re-raises a remote error as its own type (a RewardError stays one, and a
    dead actor under a call is a RayActorError)."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else None
        raise (cause or e) from None


class ControlLoop:
    def __init__(self, cfg: Config, run_dir: Path, progress=print_progress):
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.replay, self.learner, self.actors = None, None, []
        self.log = MetricsLog(run_dir / "metrics.jsonl")
        self.env = make_env(cfg)
        self.eval_model = make_model(cfg.model, self.env)
        self.evaluator = make_evaluator(cfg, self.env, run_dir)
        self.step = self.role_restarts = 0
        self.failures, self.restarting = {}, set()  # actor id -> deaths; actors being restarted
        self.failure_window = FailureWindow(cfg.reward.max_failure_rate, cfg.reward.failure_window)
        self.interval = Interval()
        self.start_time = time.perf_counter()
        self.checkpoints = checkpoint.root_for(cfg, run_dir)

    def start(self, saved: tuple[int, dict] | None = None, resumed: bool = True) -> None:
        """Creates the roles, then continues from `saved` (step, files) when given."""
        self.replay, self.learner, self.actors = create_roles(self.cfg, first_step=saved[0] if saved else 0)
        if saved:
            self.restore(*saved, resumed=resumed)
        else:
            self.step = 0
            drop_rows_after(self.run_dir / "metrics.jsonl", 0)
        self.interval = Interval(self.step, ray.get(self.replay.stats.remote()))

    def restore(self, step: int, files: dict[str, bytes], resumed: bool = True) -> None:
        """Continues from a checkpoint: the replay table (with the records the learner had taken
        but not trained on), the learner, then the driver's own counters and metrics. A resumed
        run's clock continues from the checkpoint's; after a failure inside a run it keeps going."""
        pending = wire.decode(files["pending.msgpack"])
        ray.get(self.replay.restore_bytes.remote(files["replay.pt"], pending))
        self.step = unwrap(self.learner.restore.remote(files["learner.pt"]))
        driver = checkpoint.state_from_bytes(files["driver.pt"])
        if resumed:
            self.start_time = time.perf_counter() - driver["wall_s"]
        self.evaluator.restore(driver["evaluator"], self.step)
        drop_rows_after(self.run_dir / "metrics.jsonl", self.step)
        verb = "resuming" if resumed else "continuing"
        print(f"distgfn: {verb} from the checkpoint at step {step} in {self.checkpoints}", file=sys.stderr)

    def run_surviving_failures(self) -> None:
        """Runs to learner.steps; when the learner or the replay table dies, recreates every role
        from the newest checkpoint (fault_tolerance.max_restarts times at most) and goes on."""
        while True:
            try:
                return self.run()
            except RoleFailure as e:
                self.recover(e)

    def recover(self, error: RoleFailure) -> None:
        self.role_restarts += 1
        limit = self.cfg.fault_tolerance.max_restarts
        try:
            saved = checkpoint.load_latest(self.checkpoints)
        except checkpoint.CheckpointError:
            saved = None
        at = f"the checkpoint at step {saved[0]}" if saved else "step 0 (no checkpoint yet)"
        if self.role_restarts > limit:
            raise RuntimeError(
                f"{error}; that is {self.role_restarts} failures of the learner or the replay table, more than "
                f"fault_tolerance.max_restarts={limit}. No new checkpoint could be taken without them; "
                f"`distgfn train --resume {self.run_dir}` continues from {at}") from error
        print(f"distgfn: {error}; recreating the learner, replay table and rollout actors from {at} "
              f"(restart {self.role_restarts} of {limit})", file=sys.stderr)
        self.kill_roles()
        self.start(saved, resumed=False)

    def save_checkpoint(self) -> None:
        """A snapshot of the learner and replay table (taken by the learner between updates,
        while the actors keep sampling) and the driver's counters, written whole or not at all."""
        timeout = self.cfg.ray.progress_timeout_s
        try:
            snap = unwrap(self.learner.snapshot.remote(), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise RoleFailure(f"the learner did not take a snapshot within {timeout} s (ray.progress_timeout_s)") from None
        driver = {"wall_s": time.perf_counter() - self.start_time,
                  "evaluator": self.evaluator.state()}
        files = {"learner.pt": snap["learner"], "replay.pt": ray.get(snap["replay"][0]),
                 "pending.msgpack": wire.encode(snap["pending"]), "driver.pt": checkpoint.state_to_bytes(driver),
                 "config.yaml": config_text(self.cfg).encode()}
        checkpoint.save(self.checkpoints, snap["step"], files, keep=self.cfg.checkpoint.keep)

    def run(self) -> None:
        # One learner call per metrics row: the driver's round trips stay off the learner's time.
        steps, per_call = self.cfg.learner.steps, self.cfg.log.every
        seconds = self.cfg.actors.report_every_s
        sampling = {a.run.remote(seconds): a for a in self.actors}
        # Calls end on multiples of log.every, also when resuming from a step between them.
        ends = sorted({*range(self.step - self.step % per_call + per_call, steps, per_call), steps})
        calls = [end - start for start, end in zip([self.step] + ends, ends) if end > start]
        training = deque(self.learner.train.remote(n) for n in calls[:2])
        calls = calls[2:]
        retry = {}  # actor -> when to call it again (it is restarting)
        try:
            while training:
                for actor in [a for a, due in retry.items() if due <= time.monotonic()]:
                    del retry[actor]
                    sampling[actor.run.remote(seconds)] = actor
                wait_s = min([self.cfg.ray.progress_timeout_s] + [due - time.monotonic() for due in retry.values()])
                ready, _ = ray.wait(list(sampling) + [training[0]], num_returns=1, timeout=max(wait_s, 0.0))
                if not ready and not retry:
                    raise TimeoutError(self.stalled_message())
                if not ready:
                    continue
                if ready[0] in sampling:
                    actor = sampling.pop(ready[0])
                    outcome = self.on_batch(ready[0], actor)
                    if outcome == "ok":
                        sampling[actor.run.remote(seconds)] = actor
                    elif outcome == "restarting":
                        retry[actor] = time.monotonic() + 0.5
                    elif not sampling and not retry:
                        raise RuntimeError("every rollout actor died more than actors.max_restarts times")
                    continue
                stats = unwrap(training.popleft())
                if calls:
                    training.append(self.learner.train.remote(calls.pop(0)))
                self.on_update(stats)
            self.save_checkpoint()
        except ray.exceptions.RayActorError as e:
            raise RoleFailure(f"the {dead_class(e)} died ({type(e).__name__})") from e
        except RewardError:
            print("distgfn: the reward failed; saving a checkpoint and the model, then stopping", file=sys.stderr)
            self.final_checkpoint()
            raise
        except KeyboardInterrupt:
            print("distgfn: interrupted; saving a checkpoint and the model, then stopping", file=sys.stderr)
            self.learner.stop.remote()  # no update waits for records that will not come
            self.final_checkpoint()

    def final_checkpoint(self) -> None:
        """The checkpoint of a run that stops: a dead role is reported, never recovered from."""
        try:
            self.save_checkpoint()
        except (RoleFailure, ray.exceptions.RayActorError) as e:
            print(f"distgfn: warning: no final checkpoint ({e}); the last complete one stands", file=sys.stderr)

    def close(self) -> None:
        """Saves the model when the learner is alive, kills the roles, closes the metrics."""
        if self.learner is not None:
            self.save_model()
        self.kill_roles()
        self.log.close()
        self.evaluator.close()

    def kill_roles(self) -> None:
        for handle in [self.replay, self.learner, *self.actors]:
            if handle is not None:
                ray.kill(handle)
        self.replay, self.learner, self.actors = None, None, []

    def save_model(self) -> None:
        """Saves the learner's model; a learner that cannot is reported, not allowed to hide
        the error that ended the run."""
        try:
            self.learner.stop.remote()
            ray.get(self.learner.save_model.remote(str(self.run_dir / "model.pt")), timeout=60)
        except ray.exceptions.RayError as e:
            print(f"distgfn: warning: the model could not be saved: {type(e).__name__}: {e}", file=sys.stderr)

    def on_batch(self, ref, actor) -> str:
        """Takes an actor's report: "ok", "restarting" (call it again shortly) or "dead" (it
        died more than actors.max_restarts times). A call whose actor died is lost: Ray
        restarts the actor, which adopts the newest weights before sampling again. Its last
        batch's records may or may not have reached the replay table: whole, or in part if
        rate-limited at that moment."""
        key = actor._actor_id
        try:
            result = unwrap(ref)
        except ray.exceptions.RayActorError as e:
            if e.actor_id and e.actor_id != key.hex():
                raise  # another actor died under this call: the replay table
            if key in self.restarting:  # a retry while Ray restarts it: nothing new was lost
                return "restarting"
            self.restarting.add(key)
            self.interval.lost_calls += 1
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            limit = self.cfg.actors.max_restarts
            print(f"distgfn: a rollout actor failed ({type(e).__name__}); failure {failures}", file=sys.stderr)
            return "restarting" if limit < 0 or failures <= limit else "dead"
        self.restarting.discard(key)
        self.evaluator.observe(result["sampled"], self.step)
        report_failures(result["sampled"], self.env, self.failure_window)
        self.interval.add_batch(result)
        return "ok"

    def on_update(self, stats: dict) -> None:
        previous, self.step = self.step, stats["step"]
        self.interval.add_update(stats)
        last = self.step == self.cfg.learner.steps
        if last or crossed(previous, self.step, self.cfg.log.every):
            evaluate = last or crossed(previous, self.step, self.cfg.eval.every)
            row = self.metrics_row(stats["weights"] if evaluate else None)
            self.log.write(row)
            self.progress(row, self.cfg.learner.steps)
            if crossed(previous, self.step, self.cfg.checkpoint.every):
                self.save_checkpoint()

    def metrics_row(self, weights) -> dict:
        replay = ray.get(self.replay.stats.remote(), timeout=self.cfg.ray.progress_timeout_s)
        row = {"step": self.step, "trajectories": replay["inserted"],
               "wall_s": round(time.perf_counter() - self.start_time, 3), "actor_failures": sum(self.failures.values()),
               "role_restarts": self.role_restarts,
               "lost_actor_calls": self.interval.lost_calls}
        row.update(self.interval.summary(replay))
        row.update(self.evaluator.sampled_metrics())
        if weights is not None and self.evaluator.exact:
            set_weights(self.eval_model, ray.get(weights[0]))
            row.update(self.evaluator.exact_metrics(lambda s: policy_log_probs(self.eval_model, self.env, s)))
        self.interval = Interval(self.step, replay)
        return row

    def stalled_message(self) -> str:
        replay = ray.get(self.replay.stats.remote(), timeout=10)
        return (f"no batch sampled and no learner update for {self.cfg.ray.progress_timeout_s} s "
                f"(ray.progress_timeout_s) at step {self.step}; replay table: {replay}")


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


class Interval:
    """What happened between two metrics rows."""

    def __init__(self, step: int = 0, replay: dict | None = None):
        self.start = time.perf_counter()
        self.first_step = self.step = step
        self.replay = replay or {"inserted": 0, "sampled": 0}
        self.trajectories = self.record_bytes = self.records = self.lost_calls = 0
        self.losses, self.lag_means, self.reward_s = [], [], []
        self.lag_min, self.lag_max, self.learner_wait_s = math.inf, -math.inf, 0.0

    def add_batch(self, r: dict) -> None:
        self.trajectories += len(r["sampled"].objects)
        self.reward_s.extend(r["reward_s"])
        self.record_bytes += r["record_bytes"]
        self.records += r["records"]

    def add_update(self, s: dict) -> None:
        self.step = s["step"]
        if not s["updates"]:
            return
        self.losses.append(s["loss"])
        self.lag_means.append(s["lag_mean"])
        self.lag_min, self.lag_max = min(self.lag_min, s["lag_min"]), max(self.lag_max, s["lag_max"])
        self.learner_wait_s += s["wait_s"]

    def summary(self, replay: dict) -> dict:
        dt = max(time.perf_counter() - self.start, 1e-9)
        inserted = replay["inserted"] - self.replay["inserted"]
        sampled = replay["sampled"] - self.replay["sampled"]
        return {
            "loss": mean(self.losses),
            "traj_per_s": self.trajectories / dt,
            "policy_lag_min": self.lag_min if self.losses else None,
            "policy_lag_mean": mean(self.lag_means),
            "policy_lag_max": self.lag_max if self.losses else None,
            "replay_size": replay["size"],
            "updates_per_s": (self.step - self.first_step) / dt,
            "inserts_per_s": inserted / dt,
            "samples_per_insert": sampled / inserted if inserted else None,
            "dropped_stale": replay["dropped_stale"],
            "reward_latency_ms": 1000 * mean(self.reward_s) if self.reward_s else None,
            "record_bytes_mean": self.record_bytes / self.records if self.records else None,
            "learner_wait_frac": self.learner_wait_s / dt,
        }


