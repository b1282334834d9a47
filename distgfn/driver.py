"""The Ray runtime's driver: starts or joins Ray, creates the roles, runs the control loop.

    replay  = ReplayActor(...)                      one threaded actor, no CPU reserved
    learner = LearnerActor(cfg, replay)             a GPU when the cluster has one
    cache   = CacheActor(size)                      rewards by key (reward.cache_size > 0)
    pool    = [RewardActor(cfg)]                    reward.workers of them (reward.mode pool)
    actors  = [RolloutActor(cfg, seed_i, replay, pool, cache)]   actors.num, actors.cpus each

Each rollout actor always has one `run` call (actors.report_every_s of sampling) in flight;
the learner always has two `train` calls (log.every updates each) queued, so neither waits
on the driver. Records go from actors to the replay table to the learner directly, and new
weights from the learner to the actors through the replay table's insert acknowledgements;
the driver only collects statistics, evaluates, logs, and scales: between calls it reads
scale requests (`distgfn scale`, distgfn.control) and the autoscale policy. A rollout actor
that leaves finishes and inserts every batch it began (`drain`) before it is removed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray

from distgfn import checkpoint, runstate, wire
from distgfn.config import Config, ConfigError, cache_size, error_buffer, max_batch
from distgfn.evaluation import make_evaluator
from distgfn.fleet import Fleet
from distgfn.messages import ActorReport, TrainStats
from distgfn.learning import policy_log_probs
from distgfn.metrics import MetricsLog, drop_rows_after, mean, print_progress
from distgfn.models import set_weights
from distgfn.ray_metrics import RayMetrics
from distgfn.runstate import RunState
from distgfn.scaling import RewardPool, Scaling, cpus_needed, reward_workers
from distgfn.rewards import FailureWindow, RewardError, RewardServiceError, report_failures
from distgfn.signals import deferred_stops, stop_requested
from distgfn.tasks import make_env, make_model

WORKER_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


def train(cfg: Config, run_dir: Path, progress=print_progress, resume: bool = False) -> None:
    """Trains to learner.steps; with resume, continues from the newest usable checkpoint."""
    saved = checkpoint.load_latest(checkpoint.root_for(cfg, run_dir)) if resume else None
    loop = ControlLoop(cfg, run_dir, progress=progress)  # missing data files fail here, before Ray starts
    started_ray = False
    try:
        started_ray = connect(cfg)
        with deferred_stops():
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
    need = math.ceil(cpus_needed(cfg, cfg.actors.num, reward_workers(cfg)))
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, need)
    print(f"distgfn: starting an embedded local Ray cluster ({num_cpus} CPUs)", file=sys.stderr)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=WORKER_ENV)
    return True


@dataclass
class Roles:
    replay: object
    learner: object
    cache: object | None  # CacheActor, when reward.cache_size > 0
    pool: RewardPool  # RewardActors (reward.mode pool; none otherwise)
    ids: dict  # Ray's actor id (hex) of the replay table and the learner -> the role's name


def create_roles(cfg: Config, actors: int, workers: int) -> Roles:
    """The replay table, the learner, the reward cache and pool (the rollout actors are the
    Fleet's, made by new_actor); `actors` is how many there will be."""
    from actors.replay import ReplayActor
    from actors.reward import CacheActor
    from learner.actor import LearnerActor

    check_resources(cfg, actors, workers)
    r = cfg.replay
    replay = ReplayActor.options(runtime_env=WORKER_ENV).remote(
        capacity=r.capacity, min_size=r.min_size, samples_per_insert=r.samples_per_insert,
        error_buffer=error_buffer(cfg), batch_size=max_batch(cfg), sampler=r.sampler,
        alpha=r.alpha, seed=cfg.seed,
    )
    learner = LearnerActor.options(
        num_cpus=cfg.learner.cpus, num_gpus=learner_gpus(cfg), runtime_env=WORKER_ENV
    ).remote(cfg, replay)
    size = cache_size(cfg)
    cache = CacheActor.options(runtime_env=WORKER_ENV).remote(size) if size else None
    ids = dict(zip(ray.get([replay.actor_id.remote(), learner.actor_id.remote()]), ["replay table", "learner"]))
    return Roles(replay, learner, cache, RewardPool(lambda: new_reward_worker(cfg), workers), ids)


def new_reward_worker(cfg: Config):
    from actors.reward import RewardActor

    return RewardActor.options(num_cpus=cfg.reward.cpus_per_worker, runtime_env=WORKER_ENV,
                               max_restarts=cfg.actors.max_restarts, resources=worker_resources(cfg)).remote(cfg)


def worker_resources(cfg: Config) -> dict:
    """ray.worker_resource: keeps rollout actors and reward workers on the nodes that offer it."""
    return {cfg.ray.worker_resource: 0.001} if cfg.ray.worker_resource else {}


def new_actor(cfg: Config, roles: Roles, name: str, index: int, first_step: int):
    """A rollout actor. Its seed depends on the step the run starts from, so a resumed run does
    not replay the random streams of its start."""
    from actors.rollout import RolloutActor

    return RolloutActor.options(num_cpus=cfg.actors.cpus, runtime_env=WORKER_ENV, max_restarts=cfg.actors.max_restarts,
                                max_task_retries=0, resources=worker_resources(cfg)).remote(
        cfg, seed=actor_seed(cfg.seed, index, first_step), name=name, replay=roles.replay,
        insert_timeout_s=cfg.ray.progress_timeout_s, reward_workers=roles.pool.workers if cfg.reward.mode == "pool" else None,
        cache=roles.cache,
    )


def actor_seed(seed: int, actor: int, first_step: int) -> int:
    return int(np.random.SeedSequence([seed, actor, first_step]).generate_state(1)[0])


def learner_gpus(cfg: Config) -> int:
    """One GPU for the learner when the cluster has one and the config allows CUDA."""
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    return 1 if has_gpu and cfg.learner.device != "cpu" else 0


def check_resources(cfg: Config, actors: int, workers: int) -> None:
    cpus = ray.cluster_resources().get("CPU", 0)
    need = cpus_needed(cfg, actors, workers)
    if need > cpus:
        pool = f" + reward.workers * reward.cpus_per_worker = {workers} * {cfg.reward.cpus_per_worker:g}" if workers else ""
        raise ConfigError(
            f"the Ray cluster has {cpus:g} CPUs but it takes {need:g}: learner.cpus {cfg.learner.cpus:g} + "
            f"actors * actors.cpus = {actors} * {cfg.actors.cpus:g}{pool}; "
            f"lower actors.cpus (fractions are fine when rewards wait on I/O) or add nodes"
        )
    if cfg.learner.device.startswith("cuda") and ray.cluster_resources().get("GPU", 0) < 1:
        raise ConfigError(f"learner.device={cfg.learner.device!r} but the Ray cluster has no GPU")
    name = cfg.ray.worker_resource
    if name and ray.cluster_resources().get(name, 0) <= 0:
        print(f"distgfn: warning: no node offers the resource {name!r} (ray.worker_resource) yet; rollout actors "
              f"and reward workers wait for one (an autoscaling cluster starts a node type that has it)", file=sys.stderr)


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
        self.roles: Roles | None = None
        self.log = MetricsLog(run_dir / "metrics.jsonl")
        self.env = make_env(cfg)
        self.eval_model = make_model(cfg, self.env)
        self.evaluator = make_evaluator(cfg, self.env, run_dir)
        self.step = self.role_restarts = self.past_actor_failures = 0
        self.trajectories_before = 0  # sampled before this replay table (a resume from a serial run)
        self.fleet: Fleet | None = None
        self.failure_window = FailureWindow(cfg.reward.max_failure_rate, cfg.reward.failure_window)
        self.interval = Interval()
        self.start_time = time.perf_counter()
        self.checkpoints = checkpoint.root_for(cfg, run_dir)
        self.scaling = Scaling(cfg, run_dir)
        self.first_step = 0
        self.departed: dict[str, dict] = {}  # name -> lifetime totals of each actor scaled away

    @property
    def replay(self):
        return self.roles.replay if self.roles else None

    @property
    def learner(self):
        return self.roles.learner if self.roles else None

    @property
    def actors(self) -> list:
        return self.fleet.handles() if self.fleet else []

    @property
    def num_actors(self) -> int:
        return self.fleet.target if self.fleet else self.scaling.actors

    @property
    def unavailable(self) -> dict[str, str | None]:
        """Actor name -> why its reward service was down at its last report (None: it was up)."""
        return self.fleet.unavailable() if self.fleet else {}

    def start(self, saved: tuple[int, dict] | None = None, resumed: bool = True) -> None:
        """Creates the roles, then continues from `saved` (step, files) when given."""
        self.first_step = saved[0] if saved else 0
        self.roles = create_roles(self.cfg, self.num_actors, self.scaling.workers)
        self.ray_metrics = RayMetrics(self.run_dir.resolve().name)
        self.fleet = Fleet(lambda name, i: new_actor(self.cfg, self.roles, name, i, self.first_step),
                           self.cfg.actors.max_restarts, self.cfg.actors.report_every_s,
                           on_restart=self.on_actor_restart, departed=self.departed)
        self.scaling.attach(self.fleet, self.roles.pool)
        if saved:
            self.restore(*saved, resumed=resumed)
        else:
            self.step = 0
            drop_rows_after(self.run_dir / "metrics.jsonl", 0)
        self.interval = Interval(self.step, ray.get(self.replay.stats.remote()))

    def restore(self, step: int, files: dict[str, bytes], resumed: bool = True) -> None:
        """Continues from a checkpoint: the replay table (with the records the learner had taken
        but not trained on), the learner, the reward cache, then the driver's own counters and
        metrics. A resumed run's clock continues from the checkpoint's; after a failure inside a
        run it keeps going."""
        if "replay.pt" in files:  # a serial run's checkpoint has no replay table to restore
            ray.get(self.replay.restore_bytes.remote(files["replay.pt"], runstate.pending(files)))
        self.step = unwrap(self.learner.restore.remote(files["learner.pt"]))
        if self.roles.cache is not None and "reward_cache.msgpack" in files:
            ray.get(self.roles.cache.restore.remote(wire.decode(files["reward_cache.msgpack"])))
        state = RunState.from_files(files)
        if resumed:
            self.start_time = time.perf_counter() - state.wall_s
        inserted = ray.get(self.replay.stats.remote())["inserted"]
        self.trajectories_before = max(state.trajectories - inserted, 0)
        self.evaluator.restore(state.evaluator, self.step)
        drop_rows_after(self.run_dir / "metrics.jsonl", self.step)
        self.log.restarted_at(self.step)
        verb = "resuming" if resumed else "continuing"
        print(f"distgfn: {verb} from the {state.runtime} checkpoint at step {step} in {self.checkpoints}",
              file=sys.stderr)

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
        while the actors keep sampling), the reward cache and the driver's counters, written
        whole or not at all."""
        timeout = self.cfg.ray.progress_timeout_s
        try:
            snap = unwrap(self.learner.snapshot.remote(), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise RoleFailure(f"the learner did not take a snapshot within {timeout} s (ray.progress_timeout_s)") from None
        replay, inserted = ray.get(snap["replay"][0])
        state = RunState("ray", time.perf_counter() - self.start_time, self.trajectories_before + inserted,
                         self.evaluator.state())
        cache = ray.get(self.roles.cache.state.remote(), timeout=timeout) if self.roles.cache is not None else None
        runstate.save(self.cfg, self.checkpoints, snap["step"], snap["learner"], state, replay=replay,
                      pending=snap["pending"], cache=cache)

    def run(self) -> None:
        # One learner call per metrics row: the driver's round trips stay off the learner's time.
        steps, per_call = self.cfg.learner.steps, self.cfg.log.every
        self.fleet.scale_to(self.scaling.actors)
        # Calls end on multiples of log.every, also when resuming from a step between them.
        ends = sorted({*range(self.step - self.step % per_call + per_call, steps, per_call), steps})
        calls = [end - start for start, end in zip([self.step] + ends, ends) if end > start]
        training = deque(self.learner.train.remote(n) for n in calls[:2])
        calls = calls[2:]
        try:
            while training:
                if stop_requested():
                    raise KeyboardInterrupt("stop requested")
                self.scaling.apply_request(self.step)
                self.roles.pool.retire_done()
                ready = self.wait_for(training[0])
                if ready is None:
                    continue
                if self.fleet.owns(ready):
                    self.on_actor_call(ready)
                    continue
                stats = unwrap(training.popleft())
                if calls:
                    training.append(self.learner.train.remote(calls.pop(0)))
                self.on_update(stats)
            self.save_checkpoint()
        except ray.exceptions.RayActorError as e:
            raise RoleFailure(f"the {self.role_of(e)} died ({type(e).__name__})") from e
        except (RewardError, RewardServiceError):
            print("distgfn: the reward failed; saving a checkpoint and the model, then stopping", file=sys.stderr)
            self.final_checkpoint()
            raise
        except KeyboardInterrupt:
            print("distgfn: interrupted; saving a checkpoint and the model, then stopping", file=sys.stderr)
            self.learner.stop.remote()  # no update waits for records that will not come
            self.finish_training_calls(training)
            self.final_checkpoint()

    def wait_for(self, training):
        """The first call to finish (an actor's or the learner's), or None when only an actor
        being restarted is due; raises TimeoutError when nothing moved for ray.progress_timeout_s."""
        self.fleet.call_due()
        retry_s = self.fleet.next_retry_s()
        wait_s = min(self.cfg.ray.progress_timeout_s, retry_s if retry_s is not None else math.inf)
        ready, _ = ray.wait(self.fleet.refs() + [training], num_returns=1, timeout=wait_s)
        if not ready and retry_s is None:
            raise TimeoutError(self.stalled_message())
        return ready[0] if ready else None

    def on_actor_call(self, ref) -> None:
        """Takes an actor's report: what it sampled goes to the evaluator, the failure window
        and the interval's figures. A call whose actor died is lost with its batches in
        progress; the last one's records may or may not have reached the replay table."""
        report, lost = self.fleet.take(ref)
        self.interval.lost_calls += lost
        if report is None:
            return
        if report.sampled is not None:
            self.evaluator.observe(report.sampled, self.step)
            report_failures(report.sampled, self.env, self.failure_window)
        self.interval.add_batch(report)

    def on_actor_restart(self, actor) -> None:
        if self.cfg.reward.mode == "pool":  # Ray rebuilt it with the pool it was made with
            actor.set_reward_workers.remote(self.roles.pool.workers)

    def role_of(self, error: ray.exceptions.RayActorError) -> str:
        """Which role a RayActorError is about, by the actor id it carries."""
        return self.roles.ids.get(error.actor_id, "learner or replay table") if self.roles else "learner or replay table"

    def finish_training_calls(self, training: deque) -> None:
        """Takes the learner calls that return now that it is stopping, so that a row due at a
        step the learner reached is written before the checkpoint at that step."""
        try:
            while training:
                self.on_update(unwrap(training.popleft(), timeout=self.cfg.ray.progress_timeout_s))
        except (ray.exceptions.RayError, RoleFailure) as e:
            print(f"distgfn: warning: the learner's last calls did not return ({type(e).__name__})", file=sys.stderr)

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
        if self.roles is not None:
            r = self.roles
            for handle in [r.replay, r.learner, r.cache, *r.pool.handles()]:
                if handle is not None:
                    ray.kill(handle)
        if self.fleet is not None:
            self.scaling.actors, self.past_actor_failures = self.fleet.target, self.past_actor_failures + self.fleet.failures
            self.fleet.kill()
        self.roles = self.fleet = None

    def save_model(self) -> None:
        """Saves the learner's model; a learner that cannot is reported, not allowed to hide
        the error that ended the run."""
        try:
            self.learner.stop.remote()
            ray.get(self.learner.save_model.remote(str(self.run_dir / "model.pt")), timeout=60)
        except ray.exceptions.RayError as e:
            print(f"distgfn: warning: the model could not be saved: {type(e).__name__}: {e}", file=sys.stderr)

    def scale(self, actors: int | None = None, reward_workers: int | None = None) -> dict:
        """Sets the number of rollout actors and (reward.mode pool) reward workers; see Scaling."""
        return self.scaling.scale(actors, reward_workers, self.step)

    # ------------------------------------------------------------ metrics

    def on_update(self, stats: TrainStats) -> None:
        previous, self.step = self.step, stats.step
        self.interval.add_update(stats)
        last = self.step == self.cfg.learner.steps
        if last or crossed(previous, self.step, self.cfg.log.every):
            evaluate = last or crossed(previous, self.step, self.cfg.eval.every)
            row = self.metrics_row(stats.published.weights if evaluate else None)
            self.log.write(row)
            self.ray_metrics.record(row)
            self.progress(row, self.cfg.learner.steps)
            self.scaling.autoscale(row)
            if crossed(previous, self.step, self.cfg.checkpoint.every):
                self.save_checkpoint()

    def metrics_row(self, weights) -> dict:
        replay = ray.get(self.replay.stats.remote(), timeout=self.cfg.ray.progress_timeout_s)
        row = {"step": self.step, "trajectories": self.trajectories_before + replay["inserted"],
               "wall_s": round(time.perf_counter() - self.start_time, 3), "actor_failures": self.past_actor_failures + self.fleet.failures,
               "role_restarts": self.role_restarts,
               "lost_actor_calls": self.interval.lost_calls, "actors": self.num_actors}
        if self.cfg.reward.mode == "pool":
            row["reward_workers"] = self.scaling.workers
        row.update(self.interval.summary(replay, self.num_actors))
        row["reward_unavailable"] = sum(why is not None for why in self.unavailable.values())
        if self.roles.cache is not None:
            cache = ray.get(self.roles.cache.stats.remote(), timeout=self.cfg.ray.progress_timeout_s)
            row.update({f"reward_cache_{k}": v for k, v in cache.items()})
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
        self.failed = self.record_bytes = self.records = self.lost_calls = self.trained = 0
        self.held_s = 0.0  # actors' time held by back-pressure (waiting on the replay table)
        self.losses, self.lag_means, self.reward_s = [], [], []
        self.lag_min, self.lag_max, self.learner_wait_s, self.sample_s = math.inf, -math.inf, 0.0, 0.0

    def add_batch(self, r: ActorReport) -> None:
        self.failed += sum(e is not None for e in r.sampled.errors) if r.sampled is not None else 0
        self.reward_s.extend(r.reward_s)
        self.sample_s += r.sample_s
        self.record_bytes += r.record_bytes
        self.records += r.records
        self.held_s += r.insert_wait_s

    def add_update(self, s: TrainStats) -> None:
        self.step = s.step
        if not s.updates:
            return
        self.losses.append(s.loss)
        self.trained += s.records
        self.lag_means.append(s.lag_mean)
        self.lag_min, self.lag_max = min(self.lag_min, s.lag_min), max(self.lag_max, s.lag_max)
        self.learner_wait_s += s.wait_s

    def summary(self, replay: dict, actors: int) -> dict:
        dt = max(time.perf_counter() - self.start, 1e-9)
        updates = self.step - self.first_step
        inserted = replay["inserted"] - self.replay["inserted"]
        sampled = replay["sampled"] - self.replay["sampled"]
        return {
            "loss": mean(self.losses),
            # The table's own count (exact at each row), plus the objects whose reward failed.
            "traj_per_s": (inserted + self.failed) / dt,
            "policy_lag_min": self.lag_min if self.losses else None,
            "policy_lag_mean": mean(self.lag_means),
            "policy_lag_max": self.lag_max if self.losses else None,
            "replay_size": replay["size"],
            "updates_per_s": updates / dt,
            "batch_mean": self.trained / updates if updates else None,
            "inserts_per_s": inserted / dt,
            "samples_per_insert": sampled / inserted if inserted else None,
            "dropped_stale": replay["dropped_stale"],
            # Every scored trajectory is trained on: records sampled at least once / inserted.
            "fraction_trained": replay["fraction_trained"],
            # Of the actors' time, the part held by back-pressure (the learner was behind).
            "actor_held_frac": self.held_s / (actors * dt),
            "reward_latency_ms": 1000 * mean(self.reward_s) if self.reward_s else None,
            # Of the actors' time on batches, the part spent in rewards (pipelined: waiting on them).
            "reward_time_frac": sum(self.reward_s) / (sum(self.reward_s) + self.sample_s) if self.reward_s else None,
            "record_bytes_mean": self.record_bytes / self.records if self.records else None,
            "learner_wait_frac": self.learner_wait_s / dt,
        }


