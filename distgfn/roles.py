"""The roles of one start of a Ray run, made and unmade together.

    roles = create_roles(cfg, actors=4, workers=0)   # replay table, learner, reward cache and pool
    actor = new_actor(cfg, roles, "actor0", 0, first_step=0)   # the Fleet makes the rollout actors
    step, inserted = roles.restore(files)            # from a checkpoint of either runtime
    snap = roles.snapshot(timeout_s=120)             # for the next one
    roles.kill()

    replay  = ReplayActor(...)                      one threaded actor, no CPU reserved
    learner = LearnerActor(cfg, replay)             a GPU when the cluster has one
    cache   = CacheActor(size)                      rewards by key (reward.cache_size > 0)
    pool    = [RewardActor(cfg)]                    reward.workers of them (reward.mode pool)
    actors  = [RolloutActor(cfg, seed_i, replay, pool, cache)]   actors.num, actors.cpus each
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import ray

from distgfn import runstate, wire
from distgfn.config import Config, ConfigError, cache_size, error_buffer, max_batch
from distgfn.scaling import RewardPool, cpus_needed

WORKER_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


class RoleFailure(Exception):
    """The learner or the replay table died; the run can go on from the last checkpoint."""


@dataclass
class Snapshot:
    """A consistent checkpoint of the learner and the replay table (see LearnerActor.snapshot)."""

    step: int
    learner: bytes
    replay: bytes
    inserted: int  # the replay table's insert count in `replay`
    pending: list[bytes]  # records the learner had taken but not trained on
    cache: dict | None  # the reward cache, when the run has one


@dataclass
class Roles:
    replay: object
    learner: object
    cache: object | None  # CacheActor, when reward.cache_size > 0
    pool: RewardPool  # RewardActors (reward.mode pool; none otherwise)
    # Each asked for its Ray actor id when it was made (not waited on: start-up goes on); a
    # RayActorError about a role carries that id.
    id_refs: list

    def role_of(self, error: ray.exceptions.RayActorError) -> str:
        """Which role a RayActorError is about, by the actor id it carries."""
        try:
            ids = ray.get(self.id_refs, timeout=10)
        except ray.exceptions.RayError:  # a role that died before it answered
            return "learner or replay table"
        return dict(zip(ids, ["replay table", "learner"])).get(error.actor_id, "learner or replay table")

    def wait_started(self, cfg: Config) -> None:
        """Waits until the replay table and the learner run; a TimeoutError naming what they
        need when that takes more than ray.progress_timeout_s (no node offers it)."""
        try:
            ray.get(self.id_refs, timeout=cfg.ray.progress_timeout_s)
        except ray.exceptions.GetTimeoutError:
            need = f"{cfg.learner.cpus:g} CPU" + (f" and {learner_gpus(cfg)} GPU" if learner_gpus(cfg) else "")
            if cfg.ray.learner_resource:
                need += f" and the resource {cfg.ray.learner_resource!r} (ray.learner_resource)"
            raise TimeoutError(f"the learner and the replay table did not start within {cfg.ray.progress_timeout_s:g} s "
                               f"(ray.progress_timeout_s): no node offered {need}") from None

    @property
    def started(self) -> bool:
        """Whether the replay table and the learner were built (their actor ids came back)."""
        ready, _ = ray.wait(self.id_refs, num_returns=len(self.id_refs), timeout=0)
        return len(ready) == len(self.id_refs)

    def restore(self, files: dict[str, bytes]) -> tuple[int, int]:
        """Loads a checkpoint of either runtime into the replay table (with the records the
        learner had taken but not trained on), the learner and the reward cache; returns the
        learner's step and the table's insert count."""
        if "replay.pt" in files:  # a serial run's checkpoint has no replay table to restore
            ray.get(self.replay.restore_bytes.remote(files["replay.pt"], runstate.pending(files)))
        step = unwrap(self.learner.restore.remote(files["learner.pt"]))
        if self.cache is not None and "reward_cache.msgpack" in files:
            ray.get(self.cache.restore.remote(wire.decode(files["reward_cache.msgpack"])))
        return step, ray.get(self.replay.stats.remote())["inserted"]

    def snapshot(self, timeout_s: float) -> Snapshot:
        """Taken by the learner between two updates while the actors keep sampling; a learner
        that does not answer within timeout_s is a RoleFailure."""
        try:
            snap = unwrap(self.learner.snapshot.remote(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RoleFailure(f"the learner did not take a snapshot within {timeout_s} s "
                              f"(ray.progress_timeout_s)") from None
        replay, inserted = ray.get(snap["replay"][0])
        cache = ray.get(self.cache.state.remote(), timeout=timeout_s) if self.cache is not None else None
        return Snapshot(snap["step"], snap["learner"], replay, inserted, snap["pending"], cache)

    def save_model(self, path) -> None:
        """Saves the learner's model; a learner that cannot is reported, not allowed to hide
        the error that ended the run. A learner that did not start has no model to save (it
        would not answer)."""
        if not self.started:
            print("distgfn: no model to save: the learner did not start", file=sys.stderr)
            return
        try:
            self.learner.stop.remote()
            ray.get(self.learner.save_model.remote(str(path)), timeout=60)
        except ray.exceptions.RayError as e:
            print(f"distgfn: warning: the model could not be saved: {type(e).__name__}: {e}", file=sys.stderr)

    def kill(self) -> None:
        for handle in [self.replay, self.learner, self.cache, *self.pool.handles()]:
            if handle is not None:
                ray.kill(handle)


def create_roles(cfg: Config, actors: int, workers: int, recovering: bool = False) -> Roles:
    """The replay table, the learner, the reward cache and pool (the rollout actors are the
    Fleet's, made by new_actor); `actors` is how many there will be."""
    from actors.replay import ReplayActor
    from actors.reward import CacheActor
    from learner.actor import LearnerActor

    try:
        check_resources(cfg, actors, workers)
    except ConfigError as e:
        if not recovering:
            raise
        # After a lost node the cluster may be short until a replacement joins: wait for it.
        print(f"distgfn: warning: {e}; the roles wait for nodes (ray.progress_timeout_s)", file=sys.stderr)
    r = cfg.replay
    replay = ReplayActor.options(runtime_env=WORKER_ENV, resources=learner_resources(cfg)).remote(
        spec=record_spec(cfg), capacity=r.capacity, min_size=r.min_size, samples_per_insert=r.samples_per_insert,
        error_buffer=error_buffer(cfg), batch_size=max_batch(cfg), sampler=r.sampler,
        alpha=r.alpha, seed=cfg.seed,
    )
    learner = LearnerActor.options(
        num_cpus=cfg.learner.cpus, num_gpus=learner_gpus(cfg), runtime_env=WORKER_ENV, resources=learner_resources(cfg)
    ).remote(cfg, replay)
    size = cache_size(cfg)
    cache = CacheActor.options(runtime_env=WORKER_ENV).remote(size) if size else None
    id_refs = [replay.actor_id.remote(), learner.actor_id.remote()]
    return Roles(replay, learner, cache, RewardPool(lambda: new_reward_worker(cfg), workers), id_refs)


def record_spec(cfg: Config):
    """What every record of this run holds (its env and objective decide)."""
    from distgfn.batch import RecordSpec
    from distgfn.objectives import OBJECTIVES
    from distgfn.tasks import make_env

    return RecordSpec.of(make_env(cfg), OBJECTIVES[cfg.objective.name].NEEDS_PARENTS)


def new_reward_worker(cfg: Config):
    from actors.reward import RewardActor

    return RewardActor.options(num_cpus=cfg.reward.cpus_per_worker, runtime_env=WORKER_ENV,
                               max_restarts=cfg.actors.max_restarts, resources=worker_resources(cfg)).remote(cfg)


def worker_resources(cfg: Config) -> dict:
    """ray.worker_resource: keeps rollout actors and reward workers on the nodes that offer it."""
    return {cfg.ray.worker_resource: 0.001} if cfg.ray.worker_resource else {}


def learner_resources(cfg: Config) -> dict:
    """ray.learner_resource: keeps the learner and the replay table on the nodes that offer it."""
    return {cfg.ray.learner_resource: 0.001} if cfg.ray.learner_resource else {}


def actor_needs(cfg: Config) -> str:
    """What a rollout actor asks of a node, for messages."""
    need = f"{cfg.actors.cpus:g} CPU"
    return need + (f" and the resource {cfg.ray.worker_resource!r} (ray.worker_resource)" if cfg.ray.worker_resource else "")


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
    for key, who in (("worker_resource", "rollout actors and reward workers"), ("learner_resource",
                                                                                "the learner and the replay table")):
        name = getattr(cfg.ray, key)
        if name and ray.cluster_resources().get(name, 0) <= 0:
            print(f"distgfn: warning: no node offers the resource {name!r} (ray.{key}) yet; {who} wait for one "
                  f"(an autoscaling cluster starts a node type that has it)", file=sys.stderr)


def unwrap(ref, timeout: float | None = None):
    """ray.get that re-raises a remote error as its own type (a RewardError stays one, and a
    dead actor under a call is a RayActorError)."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as e:
        raise remote_cause(e) from None


def remote_cause(error: ray.exceptions.RayTaskError) -> Exception:
    """The exception a remote call raised, as its own type (the RayTaskError if it has none)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error
