"""The distributed runtime on a real local Ray cluster."""

from pathlib import Path

import pytest
from actor_faults import kill_during_a_call

from distgfn import driver, roles
from distgfn.config import load_config
from distgfn.messages import Published
from distgfn.metrics import read_metrics
from distgfn.wire import encode

ROW_KEYS = {"step", "trajectories", "wall_s", "loss", "traj_per_s", "policy_lag_min", "policy_lag_mean",
            "policy_lag_max", "replay_size", "updates_per_s", "inserts_per_s", "samples_per_insert",
            "dropped_stale", "reward_latency_ms", "record_bytes_mean", "learner_wait_frac",
            "l1_empirical", "modes_found", "modes_total", "actor_failures", "lost_actor_calls"}


def quiet(row, total):
    pass


def test_two_actors_learn_2d_grid_and_log_every_metric(ray_cluster, tmp_path):
    cfg = load_config(None, ["actors.num=2", "learner.steps=500", "log.every=100", "eval.every=100",
                             "replay.min_size=32"])
    driver.train(cfg, tmp_path, progress=quiet)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [100, 200, 300, 400, 500]
    assert all(ROW_KEYS | {"l1_exact"} <= set(r) for r in rows)
    assert rows[0]["l1_exact"] > 0.05 and rows[-1]["l1_exact"] < 0.03
    assert all(0.8 <= r["samples_per_insert"] <= 1.25 for r in rows[1:]), "the rate limiter keeps 1:1"
    assert 0 <= rows[-1]["policy_lag_min"] <= rows[-1]["policy_lag_mean"] <= rows[-1]["policy_lag_max"] <= 20
    assert (tmp_path / "model.pt").exists()
    assert ray_cluster.is_initialized(), "the driver leaves a cluster it joined running"


def records(n, version=0, start=0):
    return [encode({"id": f"r{i}", "version": version, "log_reward": 0.0, "batch": b""})
            for i in range(start, start + n)]


def make_replay(**settings):
    from actors.replay import ReplayActor

    return ReplayActor.remote(**{"capacity": 100, **settings})


def test_replay_actor_sample_waits_for_min_size_then_wakes_on_insert(ray_cluster):
    ray = ray_cluster
    replay = make_replay(min_size=4)
    assert ray.get(replay.sample.remote(2, 2, None, 0.05)) is None, "blocked below min_size"
    waiting = replay.sample.remote(2, 2, None, 60.0)
    assert ray.get(replay.insert.remote(records(4), 5.0)).taken == 4
    got = ray.get(waiting, timeout=30)
    assert len(got) == 2 and all(v == 0 for v, _ in got)


def test_replay_actor_holds_back_inserts_when_samples_lag(ray_cluster):
    ray = ray_cluster
    replay = make_replay(min_size=2, samples_per_insert=2.0, error_buffer=2.0, batch_size=1)
    assert ray.get(replay.insert.remote(records(3), 0.05)).taken == 3, "filling up to min_size is never held"
    assert ray.get(replay.insert.remote(records(2, start=3), 0.05)).taken == 0, "held back whole"
    pending = replay.insert.remote(records(2, start=3), 60.0)
    assert ray.get(replay.sample.remote(1, 1, None, 5.0)) is not None
    assert ray.get(replay.sample.remote(1, 1, None, 5.0)) is not None
    assert ray.get(pending, timeout=30).taken == 2


def test_a_closed_replay_actor_takes_held_inserts_and_refuses_only_what_capacity_holds(ray_cluster):
    from distgfn.replay import ReplayFull

    ray = ray_cluster
    replay = make_replay(min_size=2, samples_per_insert=2.0, error_buffer=2.0, batch_size=1)
    assert ray.get(replay.insert.remote(records(3), 0.05)).taken == 3
    held = replay.insert.remote(records(2, start=3), 60.0)
    assert ray.get(replay.insert.remote(records(1, start=5), 0.05)).taken == 0, "the rate limiter holds inserts"
    ray.get(replay.close.remote())
    ack = ray.get(held, timeout=30)
    assert ack.taken == 2 and ack.closed, "the learner has stopped: held inserts go in"
    assert ray.get(replay.stats.remote())["inserted"] == 5
    # The learner's last prefetch takes nothing: the records stay for the final checkpoint.
    assert ray.get(replay.sample.remote(1, 5, None, 60.0), timeout=30) is None
    assert ray.get(replay.stats.remote())["sampled"] == 0
    full = make_replay(capacity=4)
    ray.get(full.insert.remote(records(4), 0.05))
    ray.get(full.close.remote())
    with pytest.raises(ReplayFull, match="all 4 slots"):
        ray.get(full.insert.remote(records(1, start=4), 60.0), timeout=30)
    assert ray.get(full.stats.remote())["inserted"] == 4, "no record never sampled is evicted"


def test_replay_actor_serves_held_inserts_first_come_first_served(ray_cluster):
    import time

    ray = ray_cluster
    replay = make_replay(min_size=2, samples_per_insert=2.0, error_buffer=2.0, batch_size=1)
    ray.get(replay.insert.remote(records(3), 0.05))

    def wait_until_waiting(n: int) -> None:
        deadline = time.monotonic() + 30
        while ray.get(replay.stats.remote())["waiting_inserts"] != n:
            assert time.monotonic() < deadline, f"{n} inserts were never held at once"

    first = replay.insert.remote(records(2, start=10), 60.0)
    wait_until_waiting(1)
    second = replay.insert.remote(records(2, start=20), 60.0)
    wait_until_waiting(2)
    ray.get([replay.sample.remote(1, 1, None, 5.0) for _ in range(2)])  # room for one insert
    assert ray.get(first, timeout=30).taken == 2, "the first held insert goes in first"
    assert ray.get(replay.stats.remote())["waiting_inserts"] == 1
    ray.get([replay.sample.remote(1, 1, None, 5.0) for _ in range(4)])
    assert ray.get(second, timeout=30).taken == 2


def test_replay_actor_rejects_corrupt_records_and_keeps_serving(ray_cluster):
    ray = ray_cluster
    replay = make_replay()
    good = records(1)[0]
    bad = [good[: len(good) // 2], b"\xc1garbage", encode([1, 2]), encode({"id": "x", "version": "v", "batch": b""})]
    result = ray.get(replay.insert.remote(bad + records(1, start=7), 1.0))
    assert result.rejected == 4 and result.taken == 1
    assert any("cannot decode" in e for e in result.errors)
    assert ray.get(replay.stats.remote())["size"] == 1


def test_actors_adopt_published_versions_and_stale_records_are_dropped(ray_cluster):
    ray = ray_cluster
    from actors.rollout import RolloutActor
    from distgfn.tasks import make_env
    from distgfn.models import get_weights
    from distgfn.tasks import make_model
    from distgfn.wire import decode

    cfg = load_config(None, ["env.options.height=4", "model.options.hidden=16"])
    replay = make_replay(capacity=1000)
    actor = RolloutActor.options(num_cpus=0).remote(cfg, seed=1, name="a", replay=replay, insert_timeout_s=30)
    model = make_model(cfg, make_env(cfg))
    ray.get(replay.publish.remote(Published(5, [ray.put(get_weights(model))])))
    result = ray.get(actor.run.remote(0.0), timeout=60)
    assert result.versions == [5] and ray.get(actor.version.remote()) == 5
    ray.get(actor.flush.remote())  # its records are in; the acknowledgement named version 5
    ray.get(replay.publish.remote(Published(3, [ray.put(get_weights(model))])))
    assert ray.get(replay.latest.remote()).version == 5, "an older version never replaces a newer one"
    for p in model.parameters():
        p.data.zero_()
    ray.get(replay.publish.remote(Published(7, [ray.put(get_weights(model))])))
    result = ray.get(actor.run.remote(60.0, max_batches=3), timeout=60)
    # The first batch samples with 5; the next waits for the first insert's acknowledgement,
    # which brings 7, so it and the third sample with 7.
    assert result.versions == [5, 7, 7] and ray.get(actor.version.remote()) == 7

    # An acknowledgement carries the weights only to an actor that lacks them.
    assert ray.get(replay.insert.remote([], 1.0, held_version=7)).newest is None
    assert ray.get(replay.insert.remote([], 1.0, held_version=5)).newest is not None

    sampled = ray.get(replay.sample.remote(16 * 4, 16 * 4, None, 5.0))
    assert {decode(b)["version"] for _, b in sampled} <= {5, 7} and {v for v, _ in sampled} <= {5, 7}
    assert ray.get(replay.sample.remote(1, 1, 8, 0.05)) is None
    stats = ray.get(replay.stats.remote())
    assert stats["dropped_stale"] == stats["inserted"] == 64 and stats["size"] == 0


def test_learner_asks_for_a_gpu_only_when_the_cluster_has_one(ray_cluster):
    assert ray_cluster.cluster_resources().get("GPU", 0) == 0
    assert roles.learner_gpus(load_config(None)) == 0


def test_asking_for_more_cpus_than_the_cluster_has_is_a_clear_error(ray_cluster, tmp_path):
    from distgfn.config import ConfigError

    cfg = load_config(None, ["actors.num=8", "actors.cpus=1"])
    with pytest.raises(ConfigError, match=r"has 2 CPUs but it takes 9: learner.cpus 1 \+ actors \* actors.cpus = 8 \* 1"):
        driver.train(cfg, tmp_path, progress=quiet)


def test_cli_trains_on_the_cluster_it_finds_and_samples(ray_cluster, tmp_path, capsys):
    from distgfn.cli import main

    run = tmp_path / "run"
    code = main(["train", str(Path(__file__).parents[1] / "configs" / "hypergrid.yaml"), "--run-dir", str(run), "--set", "learner.steps=40",
                 "--set", "log.every=20", "--set", "eval.every=20", "--set", "replay.min_size=16"])
    assert code == 0
    err = capsys.readouterr().err
    assert "ray runtime" in err and "step 40/40" in err
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [20, 40]
    assert main(["sample", str(run), "-n", "5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_a_run_cleanly_with_a_checkpoint_and_the_model(tmp_path, signum):
    """A real `distgfn train` process on its own embedded cluster, interrupted mid-run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    config = Path(__file__).parents[1] / "configs" / "hypergrid.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distgfn", "train", str(config), "--run-dir", str(run),
         "--set", "learner.steps=1000000", "--set", "log.every=10", "--set", "eval.every=0",
         "--set", "ray.num_cpus=2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "RAY_ADDRESS": ""},
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().strip():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no metrics row within 120 s"
            time.sleep(0.2)  # polling a file for a bounded time, not synchronizing on a guess
        proc.send_signal(getattr(signal, signum))
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "interrupted; saving a checkpoint and the model" in out
    assert "the rollout actors' last batches:" in out and "did not finish" not in out, out
    assert (run / "model.pt").exists()
    from distgfn import checkpoint

    assert checkpoint.load_latest(run / "checkpoints")[0] >= read_metrics(run / "metrics.jsonl")[-1]["step"]
    assert read_metrics(run / "metrics.jsonl")[-1]["step"] < 1000000


def test_a_stop_with_the_replay_table_dead_says_so_and_ends_without_a_traceback(ray_cluster, tmp_path, capsys):
    cfg = load_config(None, ["learner.steps=100000", "log.every=50", "eval.every=0", "replay.min_size=16"])

    def kill_the_replay_table_then_stop(row, total):
        ray_cluster.kill(loop.roles.replay)
        raise KeyboardInterrupt("stop")  # as Ctrl-C between two rows

    loop = driver.ControlLoop(cfg, tmp_path, progress=kill_the_replay_table_then_stop)
    try:
        loop.start()
        loop.run()
    finally:
        loop.close()
    err = capsys.readouterr().err
    assert "the replay table failed at the run's end" in err, err
    assert "no final checkpoint" in err, err


def test_a_reward_error_in_an_actor_reaches_the_driver_as_itself(ray_cluster):
    from distgfn.rewards import RewardError

    @ray_cluster.remote
    def bad_reward():
        raise RewardError("reward is not finite for 1 of 16 objects; first: x=3,4 R=nan")

    with pytest.raises(RewardError, match="x=3,4 R=nan"):
        roles.unwrap(bad_reward.remote())


class Crash(Exception):
    """Stands in for a driver that dies: the periodic checkpoint is all that is left."""


def test_a_run_that_dies_resumes_from_its_checkpoint_without_gaps_or_duplicates(ray_cluster, tmp_path):
    overrides = ["learner.steps=200", "log.every=50", "eval.every=50", "checkpoint.every=100",
                 "replay.min_size=16"]
    cfg = load_config(None, overrides)

    def crash_at_150(row, total):
        if row["step"] == 150:
            raise Crash()

    with pytest.raises(Crash):
        driver.train(cfg, tmp_path, progress=crash_at_150)
    from distgfn import checkpoint

    step, files = checkpoint.load_latest(tmp_path / "checkpoints")
    # The learner keeps training while the driver asks for the snapshot, so it lands a little after 100.
    assert 100 <= step <= 200 and set(files) == {"learner.pt", "replay.pt", "pending.msgpack", "run.pt", "config.yaml"}
    driver.train(cfg, tmp_path, progress=quiet, resume=True)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    counts = [r["trajectories"] for r in rows]
    # Each update samples a batch and the rate limiter holds sampling to inserts, so the count grows every row.
    assert all(a < b for a, b in zip(counts, counts[1:])) and counts[0] > 0, f"counter restarted: {counts}"
    assert rows[-1]["l1_exact"] < rows[0]["l1_exact"], "training carries on from the checkpoint"
    assert checkpoint.load_latest(tmp_path / "checkpoints")[0] == 200, "the finished run checkpoints"


def test_a_driver_killed_with_sigkill_resumes_without_gaps_or_duplicates(ray_cluster, tmp_path):
    """A real `distgfn train` process joins this test's cluster and is SIGKILLed after its
    first checkpoint; `distgfn train --resume` then finishes the run."""
    import glob
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    config = Path(__file__).parents[1] / "configs" / "hypergrid.yaml"
    common = ["--set", "learner.steps=600", "--set", "log.every=50", "--set", "eval.every=50",
              "--set", "checkpoint.every=100", "--set", "replay.min_size=16"]
    proc = subprocess.Popen([sys.executable, "-m", "distgfn", "train", str(config), "--run-dir", str(run), *common],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not glob.glob(str(run / "checkpoints" / "step-*" / "MANIFEST.json")):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)  # polling a file for a bounded time, not synchronizing on a guess
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    before = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
    resumed = subprocess.run([sys.executable, "-m", "distgfn", "train", "--resume", str(run)],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from the ray checkpoint" in resumed.stderr
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
    assert steps == list(range(50, 601, 50)), f"before the kill: {before}"


def answer_when_back(ray, call, timeout_s):
    """call() -> ObjectRef of an actor method, retried while Ray restarts the actor (bounded)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(call(), timeout=timeout_s)
        except ray.exceptions.ActorUnavailableError:
            assert time.monotonic() < deadline, "the actor did not come back"
            time.sleep(0.2)


def test_a_killed_rollout_actor_restarts_with_current_weights_and_the_run_completes(ray_cluster, tmp_path):
    ray = ray_cluster
    cfg = load_config(None, ["learner.steps=300", "log.every=50", "eval.every=150", "replay.min_size=16",
                             "actors.report_every_s=0.2"])
    lost = []  # (actor name, step, calls taken until then) of a kill that cost a call in flight
    taken = []  # (actor name, report or None) of every actor call the run took, in order

    def kill_an_actor_from_100(row, total):
        if row["step"] >= 100 and not lost:  # until a kill lands while a call is in flight
            killed = kill_during_a_call(ray, loop.fleet)
            if killed and killed[1]:
                lost.append((killed[0], row["step"], len(taken)))

    loop = driver.ControlLoop(cfg, tmp_path, progress=kill_an_actor_from_100)
    try:
        loop.start()
        record_takes(loop.fleet, taken)
        loop.run()
        assert lost, "no kill landed while one of the actor's calls was in flight"
        name, step, before = lost[0]
        after = [report for who, report in taken[before:] if who == name and report is not None and report.versions]
        if not after:  # Ray had not restarted it when the run ended (a busy host): it is still in the fleet
            actor = loop.fleet.members[name].handle
            after = [answer_when_back(ray, lambda: actor.run.remote(0.0), timeout_s=60)]
    finally:
        loop.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
    assert rows[-1]["actor_failures"] >= 1 and sum(r["lost_actor_calls"] for r in rows) >= 1
    assert after[0].versions[0] > step, "the restarted actor samples with weights newer than at its death"


def record_takes(fleet, taken: list) -> None:
    """Keeps (actor name, report) of every call the fleet takes (observation only)."""
    take = fleet.take

    def recording(ref):
        name = fleet.calls[ref]
        report, lost = take(ref)
        taken.append((name, report))
        return report, lost

    fleet.take = recording


@pytest.mark.parametrize("role", ["learner", "replay"])
def test_a_dead_learner_or_replay_table_is_recreated_from_the_last_checkpoint(ray_cluster, tmp_path, role):
    ray = ray_cluster
    cfg = load_config(None, ["learner.steps=300", "log.every=50", "eval.every=50", "checkpoint.every=100",
                             "replay.min_size=16"])
    killed = []

    def kill_at_150(row, total):
        if row["step"] == 150 and not killed:
            killed.append(getattr(loop.roles, role))
            ray.kill(killed[0])

    loop = driver.ControlLoop(cfg, tmp_path, progress=kill_at_150)
    try:
        loop.start()
        loop.run_surviving_failures()
    finally:
        loop.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300], "rows after the checkpoint are redone once"
    assert killed and rows[0]["role_restarts"] == 0 and rows[-1]["role_restarts"] == 1
    assert rows[-1]["l1_exact"] < rows[0]["l1_exact"]
    from distgfn import checkpoint

    assert checkpoint.load_latest(tmp_path / "checkpoints")[0] == 300


def test_a_learner_dying_more_than_max_restarts_stops_with_a_clear_error(ray_cluster, tmp_path):
    ray = ray_cluster
    cfg = load_config(None, ["learner.steps=300", "log.every=50", "checkpoint.every=50", "replay.min_size=16",
                             "fault_tolerance.max_restarts=0"])

    def kill_learner_at_100(row, total):
        if row["step"] == 100:
            ray.kill(loop.roles.learner)

    loop = driver.ControlLoop(cfg, tmp_path, progress=kill_learner_at_100)
    try:
        loop.start()
        with pytest.raises(RuntimeError, match=r"fault_tolerance.max_restarts=0.*--resume .* continues from the checkpoint at step"):
            loop.run_surviving_failures()
    finally:
        loop.close()


def test_a_run_resumes_in_the_other_runtime_both_ways(ray_cluster, tmp_path):
    import json

    from distgfn import serial

    base = ["env.options.height=5", "model.options.hidden=32", "log.every=20", "eval.every=20",
            "checkpoint.every=20", "replay.min_size=16"]

    def newest_manifest() -> dict:
        newest = sorted((tmp_path / "checkpoints").glob("step-*"))[-1]
        return json.loads((newest / "MANIFEST.json").read_text())

    serial.train(load_config(None, base + ["runtime=serial", "learner.steps=40"]), tmp_path, progress=quiet)
    driver.train(load_config(None, base + ["runtime=ray", "learner.steps=80"]), tmp_path, progress=quiet, resume=True)
    assert newest_manifest()["runtime"] == "ray" and newest_manifest()["step"] == 80
    serial.train(load_config(None, base + ["runtime=serial", "learner.steps=120"]), tmp_path, progress=quiet,
                 resume=True)
    assert newest_manifest()["runtime"] == "serial"
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [20, 40, 60, 80, 100, 120]
    counts = [r["trajectories"] for r in rows]
    assert counts == sorted(counts) and counts[2] > counts[1], "the count of trajectories carries across runtimes"
    assert all("l1_exact" in r for r in rows)


def test_a_run_whose_actors_never_start_stops_with_a_checkpoint_naming_what_they_wait_for(ray_cluster, tmp_path,
                                                                                          capsys):
    from distgfn import checkpoint

    # 20 s: the learner must start within it, also on a busy machine.
    cfg = load_config(None, ["ray.worker_resource=nowhere", "ray.progress_timeout_s=20", "learner.steps=100",
                             "log.every=50", "eval.every=0"])
    with pytest.raises(driver.Stalled, match=r"0 of 2 rollout actors running; the others wait for a node with "
                                             r"0.5 CPU and the resource 'nowhere' \(ray.worker_resource\)"):
        driver.train(cfg, tmp_path, progress=quiet)
    assert "no node offers the resource 'nowhere' (ray.worker_resource)" in capsys.readouterr().err
    assert checkpoint.load_latest(tmp_path / "checkpoints")[0] == 0, "a checkpoint before stopping"
    assert (tmp_path / "model.pt").exists()


def test_the_learner_and_replay_table_go_where_ray_learner_resource_is_offered(ray_cluster, tmp_path, capsys):
    cfg = load_config(None, ["ray.learner_resource=gpu_node", "ray.progress_timeout_s=5", "learner.steps=10",
                             "log.every=10", "eval.every=0"])
    with pytest.raises(TimeoutError, match=r"the learner and the replay table did not start within 5 s "
                                           r"\(ray.progress_timeout_s\): no node offered 1 CPU and the resource "
                                           r"'gpu_node' \(ray.learner_resource\)"):
        driver.train(cfg, tmp_path, progress=quiet)
    err = capsys.readouterr().err
    # Not a model save waiting on a learner that was never placed, then a GetTimeoutError.
    assert "no model to save: the learner did not start" in err and "could not be saved" not in err
    assert not (tmp_path / "model.pt").exists()


def test_metrics_say_how_many_actors_run_and_how_many_wait(ray_cluster, tmp_path):
    cfg = load_config(None, ["actors.num=2", "learner.steps=100", "log.every=50", "eval.every=0"])
    driver.train(cfg, tmp_path, progress=quiet)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert all(r["actors_running"] + r["actors_pending"] == r["actors"] == 2 for r in rows)
    assert rows[-1]["actors_running"] >= 1, "the actor that sampled what was trained on ran"


def test_actors_sample_actors_batch_size_at_once_and_the_learner_trains_sampler_batch_size(ray_cluster, tmp_path):
    cfg = load_config(None, ["actors.num=1", "actors.batch_size=40", "learner.steps=100", "log.every=50",
                             "eval.every=0", "replay.min_size=16", "replay.samples_per_insert=null"])
    loop = driver.ControlLoop(cfg, tmp_path, progress=quiet)
    taken = []  # every actor call the run takes, the last (drained) ones too
    try:
        loop.start()
        record_takes(loop.fleet, taken)
        loop.run()
    finally:
        loop.close()
    batches = [(len(r.versions), len(r.sampled.objects)) for _, r in taken if r is not None and r.versions]
    assert batches and all(objects == 40 * n for n, objects in batches), f"40 trajectories a batch: {batches}"
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["batch_mean"] for r in rows] == [16, 16], "16 records an update (sampler.batch_size)"
