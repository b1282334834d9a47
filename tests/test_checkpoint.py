"""Checkpoint storage and the learner's state round trip (groundwork for resume)."""

from pathlib import Path

import pytest
import torch

from distgfn import checkpoint
from distgfn.config import load_config
from distgfn.learning import Learner
from distgfn.rollout import RolloutWorker


def test_save_then_load_returns_the_newest_and_keeps_only_keep(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, step, {"a.bin": f"a{step}".encode(), "b.bin": b"b"}, keep=2)
    assert checkpoint.complete_checkpoints(tmp_path) == ["step-000000000030", "step-000000000040"]
    assert checkpoint.load_latest(tmp_path) == (40, {"a.bin": b"a40", "b.bin": b"b"})
    assert not list(tmp_path.glob(".tmp-*")), "no temporary directory is left behind"


def test_torn_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path):
    checkpoint.save(tmp_path, 10, {"a.bin": b"ten"})
    torn = Path(checkpoint.save(tmp_path, 20, {"a.bin": b"twenty"}))
    (torn / checkpoint.MANIFEST).unlink()  # as if killed between the files and the marker
    with pytest.warns(UserWarning, match=r"step-000000000020: torn: no MANIFEST.json"):
        assert checkpoint.load_latest(tmp_path) == (10, {"a.bin": b"ten"})


def test_corrupted_file_is_skipped(tmp_path):
    checkpoint.save(tmp_path, 10, {"a.bin": b"ten"})
    bad = Path(checkpoint.save(tmp_path, 20, {"a.bin": b"twenty"}))
    (bad / "a.bin").write_bytes(b"twentx")
    with pytest.warns(UserWarning, match=r"a.bin is corrupted"):
        assert checkpoint.load_latest(tmp_path)[0] == 10


def test_a_filesystem_uri_root_goes_through_pyarrow_fs(tmp_path):
    uri = f"file://{tmp_path}/bucket/run"
    for step in (10, 20, 30):
        assert checkpoint.save(uri, step, {"a.bin": f"a{step}".encode()}, keep=2) == f"{uri}/step-{step:012d}"
    assert checkpoint.complete_checkpoints(uri) == ["step-000000000020", "step-000000000030"]
    assert checkpoint.load_latest(uri) == (30, {"a.bin": b"a30"})
    (tmp_path / "bucket/run/step-000000000030/a.bin").write_bytes(b"a3x")
    with pytest.warns(UserWarning, match=r"step-000000000030: a.bin is corrupted"):
        assert checkpoint.load_latest(uri) == (20, {"a.bin": b"a20"})


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    bad = Path(checkpoint.save(tmp_path, 5, {"a.bin": b"x"}))
    (bad / "a.bin").unlink()
    with pytest.warns(UserWarning), pytest.raises(checkpoint.CheckpointError, match=r"no usable checkpoint .*missing"):
        checkpoint.load_latest(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="none found"):
        checkpoint.load_latest(tmp_path / "empty")


def test_learner_restored_from_a_checkpoint_continues_exactly(tmp_path):
    cfg = load_config(None, ["env.options.height=5", "model.options.hidden=32", "learner.steps=60"])
    worker = RolloutWorker(cfg, seed=1)
    batches = [worker.sample().batch for _ in range(50)]  # fixed data: only the learner varies
    torch.manual_seed(0)
    original = Learner(cfg)
    for batch in batches[:30]:
        original.update(batch)
    checkpoint.save(tmp_path, original.step, {"learner.pt": checkpoint.state_to_bytes(original.state())})
    expected = [original.update(batch) for batch in batches[30:]]

    torch.manual_seed(123)  # a different initialization, overwritten by the restore
    resumed = Learner(cfg)
    step, files = checkpoint.load_latest(tmp_path)
    resumed.restore(checkpoint.state_from_bytes(files["learner.pt"]))
    assert step == resumed.step == 30
    assert [resumed.update(batch) for batch in batches[30:]] == expected
    for name, value in original.state()["model"].items():
        assert torch.equal(value, resumed.state()["model"][name]), name


class Crash(Exception):
    """Stands in for a killed process: nothing after it runs."""


def run_serial(tmp_path, name, stop_at=None, error=KeyboardInterrupt, resume=False):
    from distgfn import serial

    cfg = load_config(None, ["runtime=serial", "env.options.height=5", "model.options.hidden=32", "learner.steps=60",
                             "log.every=10", "eval.every=10", "checkpoint.every=20"])
    run_dir = tmp_path / name
    run_dir.mkdir(exist_ok=True)

    def progress(row, total):
        if row["step"] == stop_at:
            raise error()

    serial.train(cfg, run_dir, progress=progress, resume=resume)
    return read_rows(run_dir)


def read_rows(run_dir):
    from distgfn.metrics import read_metrics

    keys = ("step", "trajectories", "loss", "l1_exact", "l1_empirical", "modes_found")
    return [{k: r[k] for k in keys} for r in read_metrics(run_dir / "metrics.jsonl")]


def test_a_stopped_serial_run_resumes_to_the_same_curve(tmp_path):
    expected = run_serial(tmp_path, "whole")
    stopped = run_serial(tmp_path, "stopped", stop_at=40)
    assert [r["step"] for r in stopped] == [10, 20, 30, 40]
    assert checkpoint.load_latest(tmp_path / "stopped" / "checkpoints")[0] == 40, "a clean stop checkpoints"
    assert run_serial(tmp_path, "stopped", resume=True) == expected


def test_a_killed_serial_run_resumes_from_its_last_checkpoint_without_duplicate_rows(tmp_path):
    expected = run_serial(tmp_path, "whole")
    with pytest.raises(Crash):
        run_serial(tmp_path, "killed", stop_at=50, error=Crash)
    assert [r["step"] for r in read_rows(tmp_path / "killed")] == [10, 20, 30, 40, 50]
    assert run_serial(tmp_path, "killed", resume=True) == expected


def test_cli_resume_errors_are_clear(tmp_path, capsys):
    from distgfn.cli import main

    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("runtime: serial\n")
    assert main(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "no usable checkpoint" in capsys.readouterr().err
    assert main(["train", "configs/x.yaml", "--resume", str(tmp_path / "r")]) == 2
    assert "either CONFIG or --resume" in capsys.readouterr().err


def test_a_serial_run_resumed_from_a_ray_checkpoint_trains_first_on_its_untrained_records(tmp_path):
    from distgfn import runstate, serial
    from distgfn.evaluation import make_evaluator
    from distgfn.metrics import read_metrics
    from distgfn.replay import ReplayTable, parse_record
    from distgfn.rollout import encode_records

    cfg = load_config(None, ["runtime=serial", "env.options.height=5", "model.options.hidden=32", "learner.steps=4",
                             "log.every=2", "eval.every=0", "sampler.batch_size=16"])
    worker = RolloutWorker(cfg, seed=0)
    records = [r for i in range(2) for r in encode_records(worker.sample(), f"actor0.x-{i}")]
    assert len(records) == 32
    table = ReplayTable(capacity=100, sampler="fifo")
    table.insert([parse_record(blob) for blob in records[8:]])  # the learner had taken the first 8
    learner = Learner(cfg)
    state = runstate.RunState("ray", 5.0, 500, make_evaluator(cfg, learner.env, tmp_path).state())
    runstate.save(cfg, checkpoint.root_for(cfg, tmp_path), 0, checkpoint.state_to_bytes(learner.state()), state,
                  replay=checkpoint.state_to_bytes(table.state()), pending=records[:8])

    serial.train(cfg, tmp_path, progress=lambda row, total: None, resume=True)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["trajectories"] for r in rows] == [500, 532], "2 updates on the 32 paid-for records, then 2 on new ones"
    assert checkpoint.load_latest(checkpoint.root_for(cfg, tmp_path))[0] == 4


def test_the_manifest_records_the_runtime_that_wrote_it(tmp_path):
    import json

    written = checkpoint.save(tmp_path, 10, {"a.bin": b"a"}, runtime="serial")
    assert json.loads((Path(written) / checkpoint.MANIFEST).read_text())["runtime"] == "serial"


def test_checkpoints_from_before_the_shared_layout_still_load(tmp_path):
    from distgfn.runstate import RunState

    evaluator = {"window": [1, 2]}
    old_ray = {"driver.pt": checkpoint.state_to_bytes({"wall_s": 12.5, "evaluator": evaluator})}
    old_serial = {"run.pt": checkpoint.state_to_bytes({"worker_rng": {"state": 7}, "trajectories": 320, "wall_s": 3.0,
                                                       "metrics_step": 20, "evaluator": evaluator})}
    assert RunState.from_files(old_ray) == RunState("ray", 12.5, 0, evaluator)
    assert RunState.from_files(old_serial) == RunState("serial", 3.0, 320, evaluator, {"state": 7})
    state = RunState("ray", 1.0, 5, evaluator)
    assert RunState.from_files({"run.pt": state.to_bytes()}) == state
