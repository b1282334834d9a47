"""Reward pools, the shared reward cache, a reward service that goes down, and scaling a running
job, on a real local Ray cluster."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from actor_faults import kill_during_a_call

from distgfn import cli, driver, scaling
from distgfn.config import load_config, save_config
from distgfn.metrics import read_metrics


def quiet(row, total):
    pass


class Background:
    """A ControlLoop run in a thread, so the test can act on the job while it runs. Keeps the
    replay table's statistics from just before the roles are killed."""

    def __init__(self, cfg, run_dir: Path, progress=quiet):
        save_config(cfg, run_dir / "config.yaml")  # as `distgfn train` does
        self.loop = driver.ControlLoop(cfg, run_dir, progress=progress)
        self.error, self.replay_stats = None, None
        self.thread = threading.Thread(target=self.main, daemon=True)

    def main(self):
        import ray

        try:
            self.loop.start()
            self.loop.run()
            self.replay_stats = ray.get(self.loop.roles.replay.stats.remote())
        except BaseException as e:  # re-raised in the test's thread by join()
            self.error = e
        finally:
            self.loop.close()

    def join(self, timeout_s: float):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"the run did not finish within {timeout_s} s"
        if self.error is not None:
            raise self.error


def wait_for_step(run_dir: Path, step: int, timeout_s: float, job: Background) -> None:
    """Polls metrics.jsonl (a file has no event to wait on) until a row reaches `step`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if job.error is not None:
            raise job.error
        path = run_dir / "metrics.jsonl"
        if path.exists() and any(r["step"] >= step for r in read_metrics(path)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no metrics row reached step {step} within {timeout_s} s")


def test_scaling_a_running_job_from_1_to_3_actors_and_back_loses_nothing(ray_cluster, tmp_path):
    # The throughput this adds is measured in benchmarks/ray_runtime.py scaling, not asserted here.
    cfg = load_config(None, ["actors.num=1", "actors.cpus=0.25", "learner.cpus=0.5", "reward.latency_ms=40",
                             "learner.steps=450", "log.every=25", "eval.every=0", "replay.min_size=16",
                             "actors.report_every_s=0.2"])
    job = Background(cfg, tmp_path)
    job.thread.start()
    wait_for_step(tmp_path, 100, 120, job)
    assert cli.main(["scale", str(tmp_path), "--actors", "3", "--timeout", "60"]) == 0
    wait_for_step(tmp_path, 325, 120, job)
    assert cli.main(["scale", str(tmp_path), "--actors", "1", "--timeout", "60"]) == 0
    job.join(180)

    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(25, 451, 25))
    counts = [r["actors"] for r in rows]
    assert counts[0] == 1 and 3 in counts and counts[-1] == 1
    departed = job.loop.departed
    assert set(departed) == {"actor0", "actor1", "actor2"}, "actor1 and actor2 left, then actor0 at the end"
    for name, totals in departed.items():
        assert totals["trajectories"] > 0
        assert totals["trajectories"] == totals["in_replay"] == job.replay_stats["inserted_by"][name], \
            "every trajectory a departed actor sampled is in the replay table"


def test_pool_mode_scales_reward_workers_drains_pipelined_actors_and_caches_rewards(ray_cluster, tmp_path):
    cfg = load_config(None, ["reward.mode=pool", "reward.workers=1", "reward.cpus_per_worker=0.25",
                             "reward.in_flight=2", "reward.cache_size=1000", "actors.num=2", "actors.cpus=0.25",
                             "learner.cpus=0.5", "learner.steps=300", "log.every=50", "eval.every=100",
                             "replay.min_size=16", "actors.report_every_s=0.2"])

    def scale_at_100(row, total):
        if row["step"] == 100:
            job.loop.scale(actors=1, reward_workers=2)

    job = Background(cfg, tmp_path, progress=scale_at_100)
    job.thread.start()
    job.join(180)

    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
    assert [r["reward_workers"] for r in rows] == [1, 1, 2, 2, 2, 2]
    assert [r["actors"] for r in rows] == [2, 2, 1, 1, 1, 1]
    totals = job.loop.departed["actor1"]
    assert totals["trajectories"] == totals["in_replay"] == job.replay_stats["inserted_by"]["actor1"]
    last = rows[-1]
    # 64 cells: after the first few hundred trajectories nearly every reward is a hit.
    assert last["reward_cache_size"] <= 64 and last["reward_cache_hits"] > 5 * last["reward_cache_misses"]
    assert last["l1_exact"] < rows[1]["l1_exact"]


def test_the_reward_cache_is_saved_with_checkpoints_and_restored_on_resume(ray_cluster, tmp_path):
    # A 4x4 grid: its 16 cells (the least likely ~3%) are all scored within the first 1,600
    # trajectories, so the saved cache is complete and a restored one misses nothing.
    base = ["env.options.height=4", "reward.cache_size=1000", "learner.steps=100", "log.every=50", "eval.every=50",
            "checkpoint.every=100", "replay.min_size=16"]
    driver.train(load_config(None, base), tmp_path, progress=quiet)
    saved = read_metrics(tmp_path / "metrics.jsonl")[-1]
    driver.train(load_config(None, base + ["learner.steps=150"]), tmp_path, progress=quiet, resume=True)
    resumed = read_metrics(tmp_path / "metrics.jsonl")[-1]
    assert resumed["step"] == 150
    assert saved["reward_cache_size"] == 16, "every cell of the 4x4 grid was scored by step 100"
    assert resumed["reward_cache_size"] == 16 and resumed["reward_cache_hits"] > saved["reward_cache_hits"]
    assert resumed["reward_cache_misses"] == saved["reward_cache_misses"], "the restored cache misses nothing"


def test_a_pool_whose_worker_died_scores_every_chunk_on_the_others(ray_cluster):
    from actors.reward import RewardActor
    from distgfn.tasks import make_env
    from distgfn.rewards.pool import PooledReward

    ray = ray_cluster
    cfg = load_config(None, [])
    workers = [RewardActor.options(num_cpus=0).remote(cfg) for _ in range(3)]
    ray.get([w.ready.remote() for w in workers])
    ray.kill(workers[1])
    states = make_env(cfg).all_cells()[:10]
    scores = PooledReward(workers)(states)
    assert scores.errors == [None] * 10
    from distgfn.rewards import make_reward

    np.testing.assert_allclose(scores.reward, make_reward(cfg, make_env(cfg))(states).reward)


def test_an_oracle_that_goes_down_makes_the_run_wait_and_continue_when_it_returns(ray_cluster, tmp_path, seh_data):
    from distgfn.chem.scores import QEDScorer
    from distgfn.oracle import serve

    server, port = serve(QEDScorer(), port=0)
    servers = [server]
    cfg = load_config(None, ["env.name=fragments", "reward.name=qed", "reward.mode=remote",
                             f"reward.addresses=127.0.0.1:{port}", "reward.deadline_s=10", f"data.dir={seh_data}",
                             "env.options.max_fragments=3", "sampler.batch_size=8", "actors.num=1", "actors.cpus=0.5",
                             "learner.cpus=0.5", "learner.steps=40", "log.every=10", "eval.every=0",
                             "replay.min_size=8", "actors.report_every_s=0.2"])

    def stop_oracle_at_10(row, total):
        if row["step"] == 10:
            servers[0].stop(grace=5).wait()

    job = Background(cfg, tmp_path, progress=stop_oracle_at_10)
    job.thread.start()
    deadline = time.monotonic() + 120
    while not (job.loop.fleet and any(job.loop.fleet.unavailable().values())):  # actors report the oracle down
        assert job.thread.is_alive(), f"the run ended while the oracle was down: {job.error!r}"
        assert time.monotonic() < deadline, "no actor reported the oracle down"
        time.sleep(0.1)
    down_at = max(r["step"] for r in read_metrics(tmp_path / "metrics.jsonl"))
    servers.append(serve(QEDScorer(), port=port)[0])  # back on the same port
    try:
        job.join(180)
    finally:
        servers[-1].stop(grace=None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20, 30, 40], "the run waited, then finished"
    assert down_at < 40 and rows[-1]["reward_unavailable"] == 0


def test_autoscale_adds_actors_while_the_learner_starves_on_slow_rewards_up_to_max_num(ray_cluster, tmp_path):
    # A 400 ms reward per batch of 16 against a learner that needs 16 records an update: the
    # learner starves and rewards take nearly all of an actor's time on any host, fast or busy.
    cfg = load_config(None, ["actors.num=1", "actors.cpus=0.25", "learner.cpus=0.5", "reward.latency_ms=400",
                             "actors.autoscale=true", "actors.max_num=3", "actors.autoscale_every_s=0.1",
                             "learner.steps=50", "log.every=5", "eval.every=0", "replay.min_size=16",
                             "actors.report_every_s=0.2"])
    job = Background(cfg, tmp_path)
    job.thread.start()
    job.join(180)
    counts = [r["actors"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert counts[0] == 1 and counts[-1] == 3 and max(counts) == 3 and counts == sorted(counts)
    assert all(b - a <= 1 for a, b in zip(counts, counts[1:])), "one actor at a time"


@pytest.mark.parametrize("wait, reward, grows", [(0.9, 0.9, True), (0.4, 0.9, False), (0.9, 0.4, False),
                                                 (None, 0.9, False), (0.9, None, False)])
def test_autoscale_grows_only_while_the_learner_starves_and_rewards_dominate(wait, reward, grows):
    assert scaling.wants_more_workers({"learner_wait_frac": wait, "reward_time_frac": reward}) is grows


def test_a_pool_chunk_not_scored_within_the_deadline_fails_its_objects(ray_cluster):
    from actors.reward import RewardActor
    from distgfn.tasks import make_env
    from distgfn.rewards.pool import PooledReward

    cfg = load_config(None, ["reward.latency_ms=2000"])
    worker = RewardActor.options(num_cpus=0).remote(cfg)
    scores = PooledReward([worker], deadline_s=0.3)(make_env(cfg).all_cells()[:3])
    assert scores.errors == ["reward worker did not answer within 0.3 s (reward.deadline_s)"] * 3
    assert np.isnan(scores.reward).all()
    ray_cluster.kill(worker)


def test_an_actor_dead_past_its_restarts_leaves_the_fleet_and_the_run_goes_on(ray_cluster, tmp_path):
    cfg = load_config(None, ["actors.num=2", "actors.max_restarts=0", "learner.steps=200", "log.every=50",
                             "eval.every=0", "replay.min_size=16", "actors.report_every_s=0.2"])

    killed = []

    def kill_one_from_50(row, total):
        if row["step"] >= 50 and not killed:  # no restart left: dead for good, the next call fails if not this one
            killed.append(kill_during_a_call(ray_cluster, job.loop.fleet, restart=False))
            if killed[0] is None:  # every call had returned: nothing killed yet
                killed.clear()

    job = Background(cfg, tmp_path, progress=kill_one_from_50)
    job.thread.start()
    job.join(180)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    assert rows[0]["actors"] == 2 and rows[-1]["actors"] == 1 and rows[-1]["actor_failures"] == 1


def busy_actor(ray, **options):
    """A rollout actor stand-in whose run never returns on its own (defined here, so Ray ships
    the class itself: its workers cannot import this test module)."""

    class Busy:
        def __init__(self):
            self.never = threading.Event()

        def run(self, seconds):
            self.never.wait()

    return ray.remote(num_cpus=0)(Busy).options(**options).remote()


def test_at_the_end_an_actor_no_node_placed_goes_at_once_and_an_ended_fleet_starts_none(ray_cluster):
    """An actor waiting for a node (scaled beyond the cluster) began nothing: the run's end does
    not wait on its call, which would never return. Scaling after the end (the last row's
    autoscale) starts no actor."""
    ray = ray_cluster
    from distgfn.fleet import Fleet

    fleet = Fleet(lambda name, index: busy_actor(ray, resources={"nowhere": 1} if index else {}), max_restarts=0,
                  run_s=1.0)
    fleet.scale_to(2)
    ray.get(fleet.members["actor0"].ready, timeout=60)
    try:
        assert fleet.end() == 1
        assert list(fleet.members) == ["actor0"] and len(fleet.refs()) == 1, "actor1 and its call are gone"
        assert fleet.members["actor0"].leaving, "the placed actor drains after its call in flight"
        fleet.scale_to(4)
        assert list(fleet.members) == ["actor0"] and len(fleet.refs()) == 1
    finally:
        fleet.kill()


def test_killing_the_fleet_returns_once_every_call_in_flight_has_ended(ray_cluster):
    """The driver kills the replay table right after the fleet: a rollout actor still running
    then would fail its insert into an unhandled error on the user's console."""
    ray = ray_cluster
    from distgfn.fleet import Fleet

    fleet = Fleet(lambda name, index: busy_actor(ray), max_restarts=0, run_s=1.0)
    fleet.scale_to(2)
    refs = fleet.refs()
    fleet.kill()
    ended, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    assert len(ended) == 2 and fleet.refs() == [] and fleet.target == 0
    for ref in ended:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(ref)
