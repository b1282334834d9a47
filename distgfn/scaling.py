"""Scaling a running Ray job: its reward pool, `distgfn scale` requests and actors.autoscale.

    pool = RewardPool(make_worker, n=4)          # reward.mode pool
    scaling = Scaling(cfg, run_dir)              # targets that survive role restarts
    scaling.attach(fleet, pool)                  # the roles of the current start
    scaling.apply_request(step)                  # between learner calls
    scaling.autoscale(row)                       # after each metrics row
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import ray

from distgfn import control
from distgfn.config import Config


def reward_workers(cfg: Config) -> int:
    return cfg.reward.workers if cfg.reward.mode == "pool" else 0


def cpus_needed(cfg: Config, actors: int, workers: int) -> float:
    return cfg.learner.cpus + actors * cfg.actors.cpus + workers * cfg.reward.cpus_per_worker


class RewardPool:
    """The reward workers of reward.mode pool, shared by the rollout actors."""

    def __init__(self, make_worker: Callable[[], object], n: int):
        self.make_worker = make_worker
        self.workers = [make_worker() for _ in range(n)]
        self.retiring: list[tuple[list, object]] = []  # (calls to wait for, worker to kill then)

    def resize(self, n: int, actors: list) -> None:
        """Grows or shrinks the pool; a removed worker is killed once every rollout actor uses the
        new pool and its queued chunks are done (a chunk cut short is rescored elsewhere)."""
        self.workers.extend(self.make_worker() for _ in range(n - len(self.workers)))
        kept, removed = self.workers[:n], self.workers[n:]
        self.workers = kept
        told = [actor.set_reward_workers.remote(kept) for actor in actors]
        self.retiring += [(told + [w.ready.remote()], w) for w in removed]

    def retire_done(self) -> None:
        """Kills the removed workers that nothing waits on any more."""
        still = []
        for refs, worker in self.retiring:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            if len(done) == len(refs):
                ray.kill(worker)
            else:
                still.append((refs, worker))
        self.retiring = still

    def handles(self) -> list:
        return self.workers + [w for _, w in self.retiring]


class Scaling:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        # Targets for the next start of the roles (the fleet's own target while it runs).
        self.actors, self.workers = cfg.actors.num, reward_workers(cfg)
        # A request already in the run directory was for an earlier process of this run (a
        # resumed run starts from the config's counts).
        self.last_request_id, self.last_autoscale = earlier_request_id(run_dir), time.monotonic()
        self.fleet = self.pool = None

    def attach(self, fleet, pool: RewardPool) -> None:
        """The roles of the current start (new ones after a role restart)."""
        self.fleet, self.pool = fleet, pool

    def give_pool(self, actor) -> None:
        """Hands a rollout actor that Ray rebuilt (with the pool it was made with) today's pool."""
        if self.cfg.reward.mode == "pool":
            actor.set_reward_workers.remote(self.pool.workers)

    def scale(self, actors: int | None = None, reward_workers: int | None = None, step: int = 0) -> dict:
        """Sets the number of rollout actors and (reward.mode pool) reward workers of the running
        job. New ones start at once (on an autoscaling cluster, ones that do not fit wait for a
        node); leaving actors finish and insert what they began, then go. Returns the targets."""
        if reward_workers is not None and self.cfg.reward.mode != "pool":
            raise control.ControlError(f"reward workers scale with reward.mode pool; this run's is {self.cfg.reward.mode}")
        self.warn_if_unplaceable(actors or self.fleet.target, reward_workers or self.workers)
        if actors is not None:
            print(f"distgfn: {actors} rollout actors (was {self.fleet.target})", file=sys.stderr)
            self.fleet.scale_to(actors)
            self.actors = actors
        if reward_workers is not None:
            print(f"distgfn: {reward_workers} reward workers (was {self.workers})", file=sys.stderr)
            self.pool.resize(reward_workers, self.fleet.handles())
            self.workers = reward_workers
        return {"actors": self.fleet.target, "reward_workers": self.workers, "step": step}

    def warn_if_unplaceable(self, actors: int, workers: int) -> None:
        cpus, need = ray.cluster_resources().get("CPU", 0), cpus_needed(self.cfg, actors, workers)
        if need > cpus:
            print(f"distgfn: warning: {actors} actors and {workers} reward workers need {need:g} CPUs and the "
                  f"cluster has {cpus:g}; those that do not fit wait for resources (an autoscaling cluster adds "
                  f"nodes)", file=sys.stderr)

    def apply_request(self, step: int) -> None:
        """Applies a new `distgfn scale` request from the run directory, and answers it."""
        try:
            request = control.read_request(self.run_dir)
        except control.ControlError as e:
            print(f"distgfn: warning: {e}; ignored", file=sys.stderr)
            return
        if request is None or request["id"] == self.last_request_id:
            return
        self.last_request_id = request["id"]
        try:
            result = self.scale(request.get("actors"), request.get("reward_workers"), step)
        except control.ControlError as e:
            result = {"error": str(e)}
        control.answer(self.run_dir, request["id"], result)

    def autoscale(self, row: dict) -> None:
        """actors.autoscale: one more worker while the learner starves and rewards dominate."""
        a = self.cfg.actors
        if not a.autoscale or time.monotonic() - self.last_autoscale < a.autoscale_every_s:
            return
        if self.fleet is not None and self.fleet.ended is not None:  # the run's last rows
            return
        if not wants_more_workers(row):
            return
        self.last_autoscale = time.monotonic()
        if self.cfg.reward.mode == "pool" and self.workers < a.max_num:
            self.scale(reward_workers=self.workers + 1, step=row["step"])
        elif self.cfg.reward.mode != "pool" and self.fleet.target < a.max_num:
            self.scale(actors=self.fleet.target + 1, step=row["step"])


def earlier_request_id(run_dir: Path) -> str | None:
    try:
        request = control.read_request(run_dir)
    except control.ControlError:
        return None
    return request["id"] if request else None


def wants_more_workers(row: dict) -> bool:
    """The learner waited for records over half the interval, and rewards took over half the
    actors' time: more reward throughput would train faster."""
    wait, reward = row.get("learner_wait_frac"), row.get("reward_time_frac")
    return wait is not None and reward is not None and wait > 0.5 and reward > 0.5
