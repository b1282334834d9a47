"""The Ray runtime's driver: starts or joins Ray, creates the roles (distgfn.roles), runs
the control loop.

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
from pathlib import Path

import ray

from distgfn import checkpoint, runstate
from distgfn.config import Config
from distgfn.evaluation import make_evaluator
from distgfn.fleet import Fleet
from distgfn.messages import TrainStats
from distgfn.metrics import MetricsLog, drop_rows_after, print_progress
from distgfn.ray_metrics import RayMetrics
from distgfn.roles import WORKER_ENV, RoleFailure, Roles, actor_needs, create_roles, new_actor, unwrap
from distgfn.rows import Counts, Row, Rows, crossed
from distgfn.runstate import RunState
from distgfn.scaling import Scaling, cpus_needed, reward_workers
from distgfn.rewards import RewardError, RewardServiceError
from distgfn.signals import deferred_stops, stop_requested
from distgfn.tasks import make_env


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


class ControlLoop:
    """One Ray run: starts the roles (again from a checkpoint when the learner or the replay
    table dies), keeps the learner's and the actors' calls in flight, and turns what they
    report into metrics rows (RayRows) and checkpoints (RayCheckpoints)."""

    def __init__(self, cfg: Config, run_dir: Path, progress=print_progress):
        self.cfg, self.run_dir = cfg, run_dir
        self.roles: Roles | None = None
        self.fleet: Fleet | None = None
        env = make_env(cfg)
        self.evaluator = make_evaluator(cfg, env, run_dir)
        self.reporting = RayRows(cfg, run_dir, env, self.evaluator, progress)
        self.checkpoints = RayCheckpoints(cfg, run_dir, self.reporting.rows, self.evaluator, self.reporting.log)
        self.scaling = Scaling(cfg, run_dir)
        self.step = self.role_restarts = self.past_actor_failures = 0
        self.departed: dict[str, dict] = {}  # name -> lifetime totals of each actor gone (scaled away, or at the end)

    @property
    def num_actors(self) -> int:
        return self.fleet.target if self.fleet else self.scaling.actors

    def start(self, saved: tuple[int, dict] | None = None, resumed: bool = True) -> None:
        """Creates the roles, then continues from `saved` (step, files) when given."""
        first_step = saved[0] if saved else 0
        self.roles = create_roles(self.cfg, self.num_actors, self.scaling.workers, recovering=not resumed)
        self.fleet = Fleet(lambda name, i: new_actor(self.cfg, self.roles, name, i, first_step),
                           self.cfg.actors.max_restarts, self.cfg.actors.report_every_s,
                           on_restart=self.scaling.give_pool, departed=self.departed)
        self.scaling.attach(self.fleet, self.roles.pool)
        self.roles.wait_started(self.cfg)
        if saved:
            self.step = self.checkpoints.restore(self.roles, *saved, resumed=resumed)
        else:
            self.step = 0
            drop_rows_after(self.run_dir / "metrics.jsonl", 0)
        self.reporting.rows.restart(self.step, ray.get(self.roles.replay.stats.remote()))

    def run_surviving_failures(self) -> None:
        """Runs to learner.steps; when the learner or the replay table dies, recreates every role
        from the newest checkpoint (fault_tolerance.max_restarts times at most) and goes on."""
        while True:
            try:
                return self.run()
            except RoleFailure as e:
                self.role_restarts += 1
                saved = recovery_point(self.cfg, self.checkpoints.root, self.run_dir, e, self.role_restarts)
                self.kill_roles()
                self.start(saved, resumed=False)

    def run(self) -> None:
        self.fleet.scale_to(self.scaling.actors)
        self.stall = Stall(self.cfg)
        calls = train_calls(self.step, self.cfg.learner.steps, self.cfg.log.every)
        training = deque(self.roles.learner.train.remote(n) for n in calls[:2])
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
                if self.fleet.owns(ready):  # what an actor sampled goes to the evaluator and the row
                    self.reporting.rows.observe(*self.fleet.take(ready), self.step)
                    continue
                stats = unwrap(training.popleft())
                if calls:
                    training.append(self.roles.learner.train.remote(calls.pop(0)))
                if not training:  # the last update: the actors' last batches go into the last row
                    self.end_sampling()
                self.on_update(stats)
            self.checkpoints.save(self.roles)
        except ray.exceptions.RayActorError as e:
            raise RoleFailure(f"the {self.roles.role_of(e)} died ({type(e).__name__})") from e
        except (Stalled, RewardError, RewardServiceError) as e:
            self.stop_saving(str(e) if isinstance(e, Stalled) else "the reward failed")
            raise
        except KeyboardInterrupt:
            self.stop_saving("interrupted", training)

    def stop_saving(self, why: str, training: deque | None = None) -> None:
        """Says why the run stops early, stops the learner (no update waits for records that will
        not come), takes its calls in flight when given, and saves a checkpoint and the model."""
        print(f"distgfn: {why}; saving a checkpoint and the model, then stopping", file=sys.stderr)
        self.roles.learner.stop.remote()
        if training is not None:
            self.end_sampling()
            self.finish_training_calls(training)
        self.checkpoints.save_final(self.roles)

    def end_sampling(self) -> None:
        """Once a run: a stop (a second Ctrl-C) during the normal end does not drain again."""
        if self.fleet.ended is None:
            end_sampling(self.fleet, self.roles.replay, self.reporting.rows, self.step, self.cfg.ray.progress_timeout_s)

    def wait_for(self, training):
        """The first call to finish (an actor's or the learner's), or None when only an actor
        being restarted is due or a notice is; raises Stalled when no actor reported and the
        learner did not move for ray.progress_timeout_s, whatever Ray is restarting."""
        self.fleet.call_due()
        self.stall.notice(self.fleet.running, self.fleet.target)
        retry_s = self.fleet.next_retry_s()
        wait_s = min(self.stall.left(), retry_s if retry_s is not None else math.inf, NOTICE_EVERY_S)
        ready, _ = ray.wait(self.fleet.refs() + [training], num_returns=1, timeout=wait_s)
        if ready:
            self.stall.progress()
            return ready[0]
        self.stall.check(self.step, self.fleet, self.roles.replay)
        return None

    def on_update(self, stats: TrainStats) -> None:
        """A learner call's statistics; a metrics row (and a checkpoint) when due."""
        previous, self.step = self.step, stats.step
        row = self.reporting.on_update(stats, previous, self.roles, self.counts)
        if row is not None:
            self.scaling.autoscale(row)
            if crossed(previous, self.step, self.cfg.checkpoint.every):
                self.checkpoints.save(self.roles)

    def counts(self, replay: dict) -> Counts:
        self.fleet.saw_inserts(replay["inserted_by"])
        return Counts(self.checkpoints.trajectories_before, self.num_actors, actors_running=self.fleet.running,
                      actor_failures=self.past_actor_failures + self.fleet.failures, role_restarts=self.role_restarts,
                      reward_unavailable=sum(why is not None for why in self.fleet.unavailable().values()),
                      reward_workers=self.scaling.workers if self.cfg.reward.mode == "pool" else None)

    def finish_training_calls(self, training: deque) -> None:
        """Takes the learner calls that return now that it is stopping, so that a row due at a
        step the learner reached is written before the checkpoint at that step."""
        try:
            while training:
                self.on_update(unwrap(training.popleft(), timeout=self.cfg.ray.progress_timeout_s))
        except (ray.exceptions.RayError, RoleFailure) as e:
            print(f"distgfn: warning: the learner's last calls did not return ({type(e).__name__})", file=sys.stderr)

    def close(self) -> None:
        """Saves the model when the learner is alive, kills the roles, closes the metrics."""
        if self.roles is not None:
            self.roles.save_model(self.run_dir / "model.pt")
        self.kill_roles()
        self.reporting.close()
        self.evaluator.close()

    def kill_roles(self) -> None:
        """The rollout actors first, until their calls have ended (Fleet.kill): one still
        running after the replay table is killed would fail its pending insert and print an
        unhandled Ray error on the user's console."""
        if self.fleet is not None:
            self.scaling.actors, self.past_actor_failures = self.fleet.target, self.past_actor_failures + self.fleet.failures
            self.fleet.kill()
        if self.roles is not None:
            self.roles.kill()
        self.roles = self.fleet = None

    def scale(self, actors: int | None = None, reward_workers: int | None = None) -> dict:
        """Sets the number of rollout actors and (reward.mode pool) reward workers; see Scaling."""
        return self.scaling.scale(actors, reward_workers, self.step)


def train_calls(step: int, steps: int, per_call: int) -> list[int]:
    """Updates per learner call, from `step` to `steps`: one call per metrics row, so the
    driver's round trips stay off the learner's time. Calls end on multiples of log.every,
    also when resuming from a step between them."""
    ends = sorted({*range(step - step % per_call + per_call, steps, per_call), steps})
    return [end - start for start, end in zip([step] + ends, ends) if end > start]


def end_sampling(fleet: Fleet, replay, rows: Rows, step: int, timeout_s: float) -> None:
    """The run's end: the replay table stops holding inserts (ReplayActor.close), and every
    rollout actor returns its call in flight and then finishes and inserts every batch it began
    (Fleet.end). The rewards already paid for go to the final checkpoint, and what the actors
    sampled to the rows (the last row, molecules.jsonl). Waits up to timeout_s
    (ray.progress_timeout_s) and says what did not finish. A failure here is reported, not
    raised: the final checkpoint comes next (with the replay table dead, the run's failure
    handling takes over there: recovery, or a warning on a stop)."""
    deadline = time.monotonic() + timeout_s
    try:
        inserted = ray.get(replay.close.remote(), timeout=timeout_s)
        unbuilt = fleet.end()
        failed = take_last_reports(fleet, rows, step, deadline)
        records = ray.get(replay.stats.remote(), timeout=max(deadline - time.monotonic(), 5.0))["inserted"] - inserted
    except ray.exceptions.RayError as e:
        print(f"distgfn: warning: the replay table failed at the run's end ({type(e).__name__}); the rollout "
              f"actors' last batches are not saved", file=sys.stderr)
        return
    line = f"the rollout actors' last batches: {records} records went into the replay table and the final checkpoint"
    if fleet.refs():
        line += f"; {len(fleet.refs())} actors did not finish within {timeout_s:g} s (ray.progress_timeout_s)"
    if failed:
        line += f"; {len(failed)} actors failed to finish ({failed[0]})"
    if unbuilt:
        line += f"; {unbuilt} actors had not started (waiting for a node, or still starting) and began nothing"
    print(f"distgfn: {line}", file=sys.stderr)


def take_last_reports(fleet: Fleet, rows: Rows, step: int, deadline: float) -> list[str]:
    """The ending actors' reports, to the rows, until every call returned or the deadline;
    returns why each call that failed did."""
    failed = []
    while fleet.refs() and (left := deadline - time.monotonic()) > 0:
        ready, _ = ray.wait(fleet.refs(), num_returns=1, timeout=left)
        for ref in ready:
            try:
                report, lost = fleet.take(ref)
                rows.observe(report, lost, step)
            except Exception as e:  # whatever the cause: reported, and the checkpoint is still saved
                failed.append(f"{type(e).__name__}: {e}")
    return failed


NOTICE_EVERY_S = 30.0  # how often a run with no rollout actor running says so


class Stalled(TimeoutError):
    """Nothing moved for ray.progress_timeout_s: no actor report, no learner update."""


class Stall:
    """When the run last moved, and what to say while no rollout actor runs."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.last = time.monotonic()
        self.noticed = -math.inf

    def progress(self) -> None:
        self.last = time.monotonic()

    def left(self) -> float:
        return self.cfg.ray.progress_timeout_s - (time.monotonic() - self.last)

    def notice(self, running: int, target: int) -> None:
        """Says which resources the actors wait for when none has run for NOTICE_EVERY_S."""
        if running == 0 and time.monotonic() - max(self.last, self.noticed) >= NOTICE_EVERY_S:
            self.noticed = time.monotonic()
            print(f"distgfn: waiting: {self.actors_line(running, target)}", file=sys.stderr, flush=True)

    def check(self, step: int, fleet, replay) -> None:
        """Raises Stalled when nothing moved for ray.progress_timeout_s."""
        if self.left() <= 0:
            stats = ray.get(replay.stats.remote(), timeout=10)
            raise Stalled(f"no rollout actor reported and no learner update for {self.cfg.ray.progress_timeout_s:g} s "
                          f"(ray.progress_timeout_s) at step {step}: {self.actors_line(fleet.running, fleet.target)}; "
                          f"replay table: {stats['size']} records, {stats['inserted']} inserted")

    def actors_line(self, running: int, target: int) -> str:
        return (f"{running} of {target} rollout actors running; the others wait for a node with "
                f"{actor_needs(self.cfg)} free, or are being restarted")


def recovery_point(cfg: Config, root, run_dir: Path, error: RoleFailure, restarts: int) -> tuple[int, dict] | None:
    """The checkpoint to recreate the roles from after `error` (None: from step 0), or the
    error that ends the run when there were more than fault_tolerance.max_restarts."""
    limit = cfg.fault_tolerance.max_restarts
    try:
        saved = checkpoint.load_latest(root)
    except checkpoint.CheckpointError:
        saved = None
    at = f"the checkpoint at step {saved[0]}" if saved else "step 0 (no checkpoint yet)"
    if restarts > limit:
        raise RuntimeError(
            f"{error}; that is {restarts} failures of the learner or the replay table, more than "
            f"fault_tolerance.max_restarts={limit}. No new checkpoint could be taken without them; "
            f"`distgfn train --resume {run_dir}` continues from {at}") from error
    print(f"distgfn: {error}; recreating the learner, replay table and rollout actors from {at} "
          f"(restart {restarts} of {limit})", file=sys.stderr)
    return saved


class RayRows:
    """A Ray run's metrics rows: at each learner call that crosses log.every, a row from the
    replay table's and the reward cache's figures and the run's counts, written to
    metrics.jsonl, Ray metrics and the progress line."""

    def __init__(self, cfg: Config, run_dir: Path, env, evaluator, progress):
        self.cfg, self.evaluator, self.progress = cfg, evaluator, progress
        self.rows = Rows(cfg, env, evaluator)
        self.log = MetricsLog(run_dir / "metrics.jsonl")
        self.ray_metrics = None  # made at the first row (after ray.init)
        self.run_name = run_dir.resolve().name

    def on_update(self, stats: TrainStats, previous: int, roles: Roles, counts) -> dict | None:
        """Adds a learner call; returns the row written, if one was due. `counts(replay)` gives
        the run's Counts from the replay table's stats, without the trajectories of this table."""
        self.rows.add_update(stats)
        step, last = stats.step, stats.step == self.cfg.learner.steps
        if not (last or crossed(previous, step, self.cfg.log.every)):
            return None
        evaluate = last or crossed(previous, step, self.cfg.eval.every)
        row = self.make(step, roles, counts, stats.published.weights if evaluate else None).to_dict()
        self.log.write(row)
        self.ray_metrics = self.ray_metrics or RayMetrics(self.run_name)
        self.ray_metrics.record(row)
        self.progress(row, self.cfg.learner.steps)
        return row

    def make(self, step: int, roles: Roles, counts_of, weights) -> Row:
        timeout = self.cfg.ray.progress_timeout_s
        replay = ray.get(roles.replay.stats.remote(), timeout=timeout)
        counts = counts_of(replay)
        counts.trajectories += replay["inserted"]
        if roles.cache is not None:
            counts.cache = ray.get(roles.cache.stats.remote(), timeout=timeout)
        log_policy = self.rows.policy(ray.get(weights[0])) if weights is not None and self.evaluator.exact else None
        return self.rows.make(step, replay, counts, log_policy)

    def close(self) -> None:
        self.log.close()


class RayCheckpoints:
    """Checkpoints of a Ray run in the layout both runtimes share (distgfn.runstate): the
    learner's and replay table's snapshot, the reward cache, and the run's own state."""

    def __init__(self, cfg: Config, run_dir: Path, rows: Rows, evaluator, log: MetricsLog):
        self.cfg, self.run_dir, self.rows, self.evaluator, self.log = cfg, run_dir, rows, evaluator, log
        self.root = checkpoint.root_for(cfg, run_dir)
        self.trajectories_before = 0  # sampled before this replay table (a resume from a serial run)

    def save(self, roles: Roles) -> None:
        """Written whole or not at all; the learner takes its snapshot between two updates while
        the actors keep sampling."""
        snap = roles.snapshot(self.cfg.ray.progress_timeout_s)
        state = RunState("ray", self.rows.wall_s(), self.trajectories_before + snap.inserted, self.evaluator.state())
        runstate.save(self.cfg, self.root, snap.step, snap.learner, state, replay=snap.replay, pending=snap.pending,
                      cache=snap.cache)

    def save_final(self, roles: Roles) -> None:
        """The checkpoint of a run that stops: a dead role is reported, never recovered from."""
        try:
            self.save(roles)
        except (RoleFailure, ray.exceptions.RayActorError) as e:
            print(f"distgfn: warning: no final checkpoint ({e}); the last complete one stands", file=sys.stderr)

    def restore(self, roles: Roles, step: int, files: dict[str, bytes], resumed: bool = True) -> int:
        """Continues from a checkpoint of either runtime; returns the learner's step. A resumed
        run's clock continues from the checkpoint's; after a failure inside a run it keeps
        going. Metrics rows logged after the checkpoint are dropped (they are redone)."""
        learner_step, inserted = roles.restore(files)
        state = RunState.from_files(files)
        if resumed:
            self.rows.start_time = time.perf_counter() - state.wall_s
        self.trajectories_before = max(state.trajectories - inserted, 0)
        self.evaluator.restore(state.evaluator, learner_step)
        drop_rows_after(self.run_dir / "metrics.jsonl", learner_step)
        self.log.restarted_at(learner_step)
        verb = "resuming" if resumed else "continuing"
        print(f"distgfn: {verb} from the {state.runtime} checkpoint at step {step} in {self.root}", file=sys.stderr)
        return learner_step
