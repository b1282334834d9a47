import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from distgfn import serial
from distgfn.cli import main
from distgfn.config import load_config
from distgfn.metrics import read_metrics

CONFIG = str(Path(__file__).parents[1] / "configs" / "hypergrid.yaml")
DESIGN_KEYS = {"step", "trajectories", "wall_s", "loss", "traj_per_s", "policy_lag_mean", "replay_size"}
GRID_KEYS = {"l1_exact", "l1_empirical", "modes_found", "modes_total"}


def quiet(row, total):
    pass


def test_flow_matching_learns_2d_grid_to_l1_below_0_01(tmp_path):
    cfg = load_config(CONFIG, ["learner.steps=800", "eval.every=200", "log.every=100"])
    serial.train(cfg, tmp_path, progress=quiet)
    evaluated = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "l1_exact" in r]
    assert evaluated[0]["l1_exact"] > 0.01, "the start is far from the target"
    assert evaluated[-1]["step"] == 800 and evaluated[-1]["l1_exact"] <= 0.01
    assert evaluated[-1]["modes_found"] == evaluated[-1]["modes_total"] == 4


@pytest.mark.parametrize("objective", ["tb", "db"])
def test_tb_and_db_reduce_l1_on_a_small_grid(tmp_path, objective):
    cfg = load_config(None, [f"objective.name={objective}", "env.options.height=4", "learner.steps=600",
                             "eval.every=50", "log.every=50", "model.options.hidden=64"])
    serial.train(cfg, tmp_path, progress=quiet)
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "l1_exact" in r]
    assert rows[-1]["l1_exact"] < 0.5 * rows[0]["l1_exact"]


def test_same_seed_gives_the_same_run(tmp_path):
    overrides = ["learner.steps=30", "log.every=10", "eval.every=10"]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        serial.train(load_config(None, overrides), tmp_path / name, progress=quiet)
    a, b = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("a", "b"))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["l1_exact"] for r in a] == [r["l1_exact"] for r in b]


def test_cli_train_then_sample(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", CONFIG, "--run-dir", str(run), "--set", "runtime=serial", "--set", "env.options.height=4",
                 "--set", "learner.steps=60", "--set", "log.every=20", "--set", "eval.every=20"])
    assert code == 0
    assert "step 60/60" in capsys.readouterr().err, "a progress line reaches the terminal"
    assert yaml.safe_load((run / "config.yaml").read_text())["env"]["options"]["height"] == 4
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [20, 40, 60]
    assert [r["trajectories"] for r in rows] == [320, 640, 960]
    assert all(DESIGN_KEYS | GRID_KEYS <= set(r) for r in rows)
    assert all(math.isfinite(r["loss"]) and r["traj_per_s"] > 0 for r in rows)

    assert main(["sample", str(run), "-n", "50", "--out", str(tmp_path / "s.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(lines) == 50
    for line in lines:
        x = line["x"]
        assert len(x) == 2 and all(0 <= v < 4 for v in x) and line["key"] == f"{x[0]},{x[1]}"
        d = np.abs(np.array(x) / 3 - 0.5)
        r = 0.1 + 0.5 * (d > 0.25).all() + 2.0 * ((d > 0.3) & (d < 0.4)).all()
        assert line["log_reward"] == pytest.approx(math.log(r))


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", CONFIG, "--run-dir", str(run), "--set", "runtime=serial", "--set", "learner.steps=10",
            "--set", "log.every=10", "--set", "eval.every=10"]
    assert main(args) == 0
    before = (run / "metrics.jsonl").read_text()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == before


def test_objects_whose_reward_fails_are_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    from distgfn import rollout
    from distgfn.rewards.hypergrid import HyperGridReward

    def flaky(cfg, env):
        good = HyperGridReward(env.height)

        def reward(states):
            if (states[:, 0] == 1).any():
                raise ZeroDivisionError("no reward at x0 = 1")
            return np.where(states[:, 1] == 2, np.nan, good(states))

        return reward

    monkeypatch.setattr(rollout, "make_reward", flaky)
    cfg = load_config(None, ["runtime=serial", "env.options.height=4", "learner.steps=40", "log.every=20", "eval.every=20",
                             "reward.max_failure_rate=0.9"])
    serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [20, 40], "failed objects are left out; every update still happens"
    assert 0 < rows[-1]["reward_failures"] < rows[-1]["trajectories"]


def test_a_reward_failing_too_often_stops_the_run_with_a_checkpoint(tmp_path, monkeypatch):
    from distgfn import checkpoint, rollout
    from distgfn.rewards import RewardError

    monkeypatch.setattr(rollout, "make_reward", lambda cfg, env: lambda states: np.full(len(states), np.nan))
    cfg = load_config(None, ["runtime=serial", "env.options.height=4", "learner.steps=40", "log.every=20",
                             "reward.max_failure_rate=0.5", "reward.failure_window=64"])
    with pytest.raises(RewardError, match=r"failed for 64 of the last 64 objects, more than reward.max_failure_rate=0.5"):
        serial.train(cfg, tmp_path, progress=lambda row, total: None)
    assert checkpoint.load_latest(tmp_path / "checkpoints")[0] == 0, "a final checkpoint before stopping"


def test_a_serial_run_whose_oracle_goes_down_keeps_a_checkpoint_and_the_model(tmp_path):
    """As the Ray runtime does: the run stops with the service error, and what it learned stays."""
    from distgfn import checkpoint, serial
    from distgfn.oracle import serve
    from distgfn.rewards import RewardServiceError
    from distgfn.tasks import make_env, make_oracle

    task = ["runtime=serial", "env.options.height=5", "model.options.hidden=32", "learner.steps=100",
            "log.every=10", "eval.every=0"]
    inline = load_config(None, task)
    server, port = serve(make_oracle(inline, make_env(inline)))
    cfg = load_config(None, task + ["reward.mode=remote", f"reward.addresses=127.0.0.1:{port}",
                                    "reward.unavailable_wait_s=0", "reward.deadline_s=5"])

    def stop_the_oracle_at_20(row, total):
        if row["step"] == 20:
            server.stop(grace=None).wait()

    with pytest.raises(RewardServiceError):
        serial.train(cfg, tmp_path, progress=stop_the_oracle_at_20)
    assert checkpoint.load_latest(tmp_path / "checkpoints")[0] == 20
    assert (tmp_path / "model.pt").exists()


def test_learner_device_auto_falls_back_to_the_cpu_and_cuda_without_a_gpu_says_so(tmp_path, monkeypatch):
    """As on a host without CUDA (whether or not this one has a GPU): `auto` trains on the CPU,
    and an explicit `cuda` is refused at start with the setting named."""
    import torch

    from distgfn.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    cfg = load_config(CONFIG, ["learner.steps=20", "log.every=20", "eval.every=20", "learner.device=auto"])
    learner = serial.train(cfg, tmp_path, progress=quiet)
    assert learner.device.type == "cpu" and learner.step == 20
    assert all(p.device.type == "cpu" for p in learner.model.parameters())
    with pytest.raises(RuntimeError, match="learner.device='cuda' but no CUDA device is available"):
        serial.train(load_config(CONFIG, ["learner.device=cuda"]), tmp_path / "cuda", progress=quiet)
