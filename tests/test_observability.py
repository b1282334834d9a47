"""Watching and checking runs: the progress line, `distgfn status`, `distgfn report`,
TensorBoard event files and `distgfn check`."""

import shutil
from pathlib import Path

import pytest

from distgfn import cli, serial
from distgfn.config import load_config, save_config
from distgfn.metrics import progress_line, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quiet(row, total):
    pass


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-D HyperGrid run (serial runtime: no Ray needed), as `distgfn train` leaves it."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(None, ["runtime=serial", "learner.steps=300", "log.every=50", "eval.every=100",
                             "checkpoint.every=100"])
    save_config(cfg, run_dir / "config.yaml")
    serial.train(cfg, run_dir, progress=quiet)
    return run_dir


def test_the_progress_line_shows_budget_health_and_time_left():
    row = {"step": 500, "trajectories": 8000, "traj_per_s": 1500.0, "loss": 0.01, "wall_s": 10.0,
           "policy_lag_mean": 2.5, "updates_per_s": 50.0, "replay_size": 900, "reward_latency_ms": 210.0,
           "reward_cache_hits": 30, "reward_cache_misses": 70, "reward_failures": 4, "reward_unavailable": 2,
           "actors": 3, "reward_workers": 2}
    line = progress_line(row, 2000)
    for part in ("step 500/2000 (25%)", "lag 2.5", "replay 900", "reward 210 ms", "cache 30%", "failed 4",
                 "ORACLE DOWN (2 actors waiting)", "actors 3+2w", "10s, ~30s left"):
        assert part in line, (part, line)


def test_status_of_a_finished_run_names_its_state_last_row_and_checkpoints(finished_run, capsys):
    assert cli.main(["status", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "state: finished" in out and "step 300/300 (100%)" in out
    assert "3 complete, newest at step 300" in out
    assert cli.main(["status", str(finished_run), "--json"]) == 0
    import json

    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "finished" and status["last_row"]["step"] == 300


def test_status_of_a_directory_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path)]) == 2
    assert "config.yaml not found; is" in capsys.readouterr().err


def test_report_draws_learning_curves_and_2d_heatmaps_from_the_run_files_alone(finished_run, tmp_path):
    copy = tmp_path / "copied-run"
    shutil.copytree(finished_run, copy)  # nothing but the files: no process, no Ray
    assert cli.main(["report", str(copy)]) == 0
    for name in ("learning_curves.png", "distribution.png"):
        data = (copy / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_metrics_rows_reach_tensorboard_event_files(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(finished_run / "tensorboard"))
    events.Reload()
    rows = read_metrics(finished_run / "metrics.jsonl")
    assert [e.step for e in events.Scalars("loss")] == [r["step"] for r in rows]
    assert [e.step for e in events.Scalars("l1_exact")] == [100, 200, 300]
    assert events.Scalars("l1_exact")[-1].value == pytest.approx(rows[-1]["l1_exact"], rel=1e-6)


def test_check_prints_what_runs_where_for_a_good_config(tmp_path, capsys):
    # learner.device=cpu: the same lines on a host with a GPU and without
    assert cli.main(["check", "configs/hypergrid.yaml", "--set", f"checkpoint.path={tmp_path / 'ckpt'}",
                     "--set", "learner.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "config: valid" in out and "reward: hypergrid scored 4 of 4 random objects" in out
    assert f"checkpoints: {tmp_path / 'ckpt'} (writable)" in out
    assert "learner: CPU" in out and "rollout actors: 2 x 0.5 CPU" in out


@pytest.mark.parametrize("overrides, message", [
    (["learner.device=cuda:64"], r"learner.device='cuda:64' asks for GPU 64 but .* has \d+ GPU"),
    (["reward.name=docking_magic"], "reward.name: .docking_magic. is neither a built-in"),
    (["checkpoint.path={file}/under-a-file"], "checkpoint.path .*under-a-file: cannot write and read it back"),
    (["reward.mode=remote", "reward.addresses=127.0.0.1:1"], "reward oracle at 127.0.0.1:1 does not answer"),
])
def test_check_rejects_what_would_fail_at_launch_with_a_clear_message(tmp_path, capsys, overrides, message):
    import re

    a_file = tmp_path / "plain-file"
    a_file.write_text("not a directory")
    sets = [item for o in overrides for item in ("--set", o.format(file=a_file))]
    assert cli.main(["check", "configs/hypergrid.yaml", *sets]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_ray_run_exports_its_figures_as_ray_metrics(ray_cluster, tmp_path):
    """Ray's metrics agent serves the run's gauges in Prometheus format on the node's metrics
    port (exported every few seconds: polled with a bound)."""
    import time
    import urllib.request

    from distgfn import driver

    run_dir = tmp_path / "metrics-run"
    run_dir.mkdir()
    driver.train(load_config(None, ["learner.steps=100", "log.every=50", "eval.every=50"]), run_dir, progress=quiet)
    port = ray_cluster._private.worker.global_worker.node.metrics_export_port
    wanted = f'run="{run_dir.name}"'
    deadline = time.monotonic() + 60
    seen = []
    while True:  # the agent may still serve the step-50 export: wait for the last one
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        steps = [line for line in text.splitlines() if line.startswith("ray_distgfn_step{") and wanted in line]
        seen = [float(line.rsplit(" ", 1)[1]) for line in steps]
        if 100.0 in seen:
            break
        assert time.monotonic() < deadline, f"distgfn_step for this run never read 100 within 60 s: {seen}"
        time.sleep(1.0)
    assert set(seen) <= {50.0, 100.0}
    assert any(line.startswith("ray_distgfn_traj_per_s{") and wanted in line for line in text.splitlines())


def test_tensorboard_drops_the_rows_a_resumed_run_redoes(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from distgfn.metrics import MetricsLog

    first = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (50, 100, 150):
        first.write({"step": step, "loss": float(step)})
    first.close()
    resumed = MetricsLog(tmp_path / "metrics.jsonl")  # resumed from a checkpoint at step 100
    resumed.restarted_at(100)
    resumed.write({"step": 150, "loss": -1.0})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(50, 50.0), (100, 100.0), (150, -1.0)]


def test_a_metrics_row_is_one_typed_definition_that_both_runtimes_write(finished_run):
    """Row is the one definition of the keys: a serial run's lines hold exactly its fields (the
    cache's and the evaluation's inline), a misspelt key is refused, and the Ray gauges are
    Row fields."""
    import dataclasses

    from distgfn.ray_metrics import GAUGES
    from distgfn.rows import Counts, Row

    row = read_metrics(finished_run / "metrics.jsonl")[-1]
    fixed = [f.name for f in dataclasses.fields(Row) if f.name not in ("cache", "evaluation", "reward_workers")]
    assert list(row)[: len(fixed)] == fixed
    assert set(row) - set(fixed) == {"l1_exact", "l1_empirical", "modes_found", "modes_total", "reward_failures"}
    with pytest.raises(TypeError, match="traj_per_sec"):
        Row(**{k: row[k] for k in fixed if k != "traj_per_s"}, traj_per_sec=1.0)
    assert set(GAUGES) - {f.name for f in dataclasses.fields(Row)} == {"reward_failures"}
    line = Row(**{k: row[k] for k in fixed}, cache={"hits": 3}, reward_workers=2).to_dict()
    assert line["reward_cache_hits"] == 3 and line["reward_workers"] == 2
    assert Counts(5, actors=1).cache is None


def test_a_rows_rates_leave_the_evaluation_out(monkeypatch):
    """The interval's rates are taken before the evaluation that the row also carries: an
    evaluation that takes (a fake clock's) 100 s does not lower traj_per_s or updates_per_s."""
    from distgfn import rows as rows_module
    from distgfn.config import load_config
    from distgfn.messages import TrainStats
    from distgfn.rows import Counts, Rows

    clock = [1000.0]
    monkeypatch.setattr(rows_module.time, "perf_counter", lambda: clock[0])

    class SlowEvaluator:
        exact = True

        def sampled_metrics(self):
            return {}

        def exact_metrics(self, log_policy):
            clock[0] += 100.0
            return {"l1_exact": 0.5}

    rows = Rows(load_config(None, []), env=None, evaluator=SlowEvaluator())
    rows.restart(0, {"inserted": 0, "sampled": 0})
    clock[0] += 2.0
    rows.add_update(TrainStats(step=10, updates=10, records=160, loss=1.0, lag_min=0, lag_mean=0.0, lag_max=0,
                               wait_s=0.0, busy_s=1.0))
    replay = {"inserted": 160, "sampled": 160, "size": 0, "dropped_stale": 0, "fraction_trained": 1.0}
    row = rows.make(10, replay, Counts(160, actors=1), log_policy=lambda states: None).to_dict()
    assert row["l1_exact"] == 0.5
    assert row["traj_per_s"] == 80.0 and row["updates_per_s"] == 5.0
