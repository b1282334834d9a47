"""A user's own environment, reward and model, named by import path (issue: bring your own problem).

The example packages under examples/ are installed by the test command, as a user installs
theirs; tests/fault_plugins.py holds plugins that break the protocols on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distgfn import serial
from distgfn.cli import main
from distgfn.config import load_config
from distgfn.metrics import read_metrics

EXAMPLES = Path(__file__).parents[1] / "examples"
GRID_REWARD = str(EXAMPLES / "grid_reward" / "config.yaml")
MOTIFS = str(EXAMPLES / "motifs" / "config.yaml")
SHORT = ["learner.steps=300", "log.every=100", "eval.every=100"]
# Cells of the 8x8 grid with |x - y| <= 1: what grid_reward:Diagonal rewards highest.
DIAGONAL_CELLS = 8 + 7 + 7


def train_cli(tmp_path, config: str, *overrides: str) -> int:
    args = ["train", config, "--run-dir", str(tmp_path / "run")]
    for item in overrides:
        args += ["--set", item]
    return main(args)


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


BAD_INPUT = [
    (GRID_REWARD, ["reward.name=nowhere.at_all:Thing"],
     "reward.name: module nowhere.at_all does not import (ModuleNotFoundError: No module named 'nowhere')"),
    (GRID_REWARD, ["reward.name=grid_reward:Nope"], "reward.name: module grid_reward has no Nope"),
    (GRID_REWARD, ["reward.name=fault_plugin_broken:Docking"],
     "reward.name: module fault_plugin_broken does not import (RuntimeError: the docking licence file is missing)"),
    (GRID_REWARD, ["reward.name=fault_plugins:NoScore", "reward.options={}"],
     "reward.name: fault_plugins:NoScore (NoScore) has no score(keys) method"),
    (GRID_REWARD, ["reward.options.width=-1"],
     "reward: grid_reward:Diagonal(width=-1, low=0.1, high=2.0) raised ValueError: needs width >= 0"),
    (GRID_REWARD, ["reward.options.colour=1"],
     "reward.options: grid_reward:Diagonal takes no option 'colour' (it takes: width, low, high)"),
    (MOTIFS, ["env.name=fault_plugins:HalfEnv", "env.options={}"],
     "env.name: fault_plugins:HalfEnv (HalfEnv) lacks masks, step, is_terminal, featurize, keys, objects, max_steps"),
    (GRID_REWARD, ["env.name=motifs.task:Sequences", "env.options={}"],
     "reward.name 'grid_reward:Diagonal' scores env 'hypergrid', not env.name 'motifs.task:Sequences'"),
    (MOTIFS, ["env.name=fault_plugins:WrongParents"],
     "env.name: fault_plugins:WrongParents (WrongParents) fails the consistency check: parents: step("),
    (MOTIFS, ["env.name=fault_plugins:NeverStops"],
     "fails the consistency check: a uniform random policy did not terminate within max_steps=5"),
    (MOTIFS, ["env.name=fault_plugins:NoParents"],
     "objective.name fm: flow matching needs the parents of each state, and env fault_plugins:NoParents declares "
     "no 'parents' capability"),
    (MOTIFS, ["model.name=motifs.task:nothing"], "model.name: module motifs.task has no nothing"),
    (GRID_REWARD, ["env.name=fault_plugins:UnnormalizedBackward"],
     "fails the consistency check: backward_log_probs over the parents of state [1, 1, 0] sum to 2.0000, not 1"),
    (MOTIFS, ["model.options.hidden=0"], "model: mlp(hidden=0, layers=2) raised ValueError: mlp needs hidden >= 1"),
    (MOTIFS, ["model.name=fault_plugins:WrongShape", "model.options={}"],
     "model: fault_plugins:WrongShape returned (2, 3) for 2 states; it must return (n, n_actions + 1) = (2, 4)"),
    (MOTIFS, ["model.name=fault_plugins:WrongLogitsAt", "model.options={}"],
     "model: fault_plugins:WrongLogitsAt logits_at(features, rows, actions) differs from forward(features)[rows, "
     "actions]"),
]


@pytest.mark.parametrize("config, overrides, message", BAD_INPUT, ids=[b[2][:40] for b in BAD_INPUT])
def test_bad_plugin_stops_train_and_check_with_one_line_and_exit_2(tmp_path, capsys, config, overrides, message):
    assert train_cli(tmp_path, config, "runtime=serial", *overrides) == 2
    line = one_error_line(capsys)
    assert line.startswith("distgfn: error: ") and message in line, line
    assert not (tmp_path / "run").exists(), "nothing starts, nothing is written"
    args = ["check", config] + [a for item in overrides for a in ("--set", item)]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_check_reports_a_plugin_task_that_passes(capsys):
    assert main(["check", MOTIFS, "--set", "runtime=serial"]) == 0
    out = capsys.readouterr().out
    assert "env: motifs.task:Sequences passed the consistency check (capabilities: enumerable, parents)" in out
    assert "reward: motifs.task:MotifReward scored 4 of 4 random objects" in out


def test_tb_trains_an_env_without_parents(tmp_path):
    cfg = load_config(MOTIFS, ["runtime=serial", "env.name=fault_plugins:NoParents", "objective.name=tb", *SHORT])
    serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["step"] == 300 and rows[-1]["l1_exact"] < rows[0]["l1_exact"]


def test_tb_uses_the_envs_backward_policy_in_batches_records_and_training(tmp_path):
    from distgfn.batch import build_batch, read_record, split_batch, stack_batches, write_record
    from distgfn.sampling import Trajectories
    from fault_plugins import TiltedGrid

    env = TiltedGrid(ndim=2, height=4)
    # s0 -> (0,1) -> (1,1) -> stop: back from (1,1) along axis 0 has P_B = 3/4.
    states = np.array([[[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]]])
    trajs = Trajectories(states, np.array([[1, 0, 2]]), np.array([3]))
    batch = build_batch(env, trajs, np.zeros(1), with_parents=False)
    np.testing.assert_allclose(batch["log_pb"], [0, 0, np.log(0.75), 0], atol=1e-6)
    again = stack_batches([read_record(write_record("a", 0, 0.0, part)) for part in split_batch(batch)])
    np.testing.assert_allclose(again["log_pb"], batch["log_pb"])
    cfg = load_config(None, ["runtime=serial", "env.name=fault_plugins:TiltedGrid", "objective.name=tb", *SHORT])
    serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["l1_exact"] < 0.5 * rows[0]["l1_exact"], [r["l1_exact"] for r in rows]


def test_an_env_without_capabilities_gets_empirical_metrics(tmp_path):
    cfg = load_config(MOTIFS, ["runtime=serial", "env.name=fault_plugins:Plain", "objective.name=tb", *SHORT])
    serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert "l1_exact" not in rows[-1] and rows[-1]["distinct_objects"] > 10
    assert rows[-1]["log_reward_best"] == pytest.approx(np.log(1.05)), "a motif itself was sampled"
    assert rows[-1]["log_reward_mean"] > rows[0]["log_reward_mean"], "TB moves towards the motifs"


def test_a_user_reward_fails_objects_alone_in_every_way_it_can():
    from distgfn.rewards import make_reward, score_objects
    from distgfn.tasks import make_env

    cfg = load_config(None, ["reward.name=fault_plugins:Flaky"])
    env = make_env(cfg)
    cells = np.array([[0, 0, 1], [1, 0, 1], [0, 2, 1], [0, 5, 1], [3, 3, 1], [4, 4, 1]])
    log_r, scores = score_objects(make_reward(cfg, env), cells, env.keys)
    assert scores.errors == [None, "reward raised ZeroDivisionError: no reward at 1,0", "reward is not finite: R=nan",
                             "reward is not positive: R=-1.0",
                             "reward raised BadAnswer: score() returned 0 values and 0 errors for 1 keys", None]
    np.testing.assert_allclose(log_r[[0, 5]], np.log([1.0, 5.0]))
    assert np.isnan(log_r[1:5]).all(), "failed objects get no reward, not a made-up one"


def test_a_run_with_a_failing_user_reward_counts_the_failures_and_goes_on(tmp_path):
    cfg = load_config(None, ["runtime=serial", "reward.name=fault_plugins:Flaky", "reward.max_failure_rate=0.9",
                             "learner.steps=60", "log.every=20", "eval.every=0"])
    serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [20, 40, 60], "the run goes on"
    assert 0 < rows[-1]["reward_failures"] < rows[-1]["trajectories"]


def diagonal_target() -> np.ndarray:
    cells = np.indices((8, 8)).reshape(2, -1).T
    r = np.where(np.abs(cells[:, 0] - cells[:, 1]) <= 1, 2.0, 0.1)
    return r / r.sum()


def check_learned_diagonal(run_dir) -> None:
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert rows[-1]["step"] == 300
    assert rows[-1]["modes_total"] == DIAGONAL_CELLS, "the evaluator's target is the user's reward"
    assert rows[-1]["l1_exact"] < 0.5 * rows[0]["l1_exact"], [r["l1_exact"] for r in rows]
    assert rows[-1]["reward_failures"] == 0


def test_user_reward_serial(tmp_path):
    assert train_cli(tmp_path, GRID_REWARD, "runtime=serial", *SHORT) == 0
    check_learned_diagonal(tmp_path / "run")
    assert main(["sample", str(tmp_path / "run"), "-n", "2000", "--out", str(tmp_path / "s.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    cells = np.array([r["x"] for r in rows])
    on_diagonal = np.abs(cells[:, 0] - cells[:, 1]) <= 1
    assert on_diagonal.mean() > 0.6, "most samples sit where the user's reward is high"
    assert {r["raw"] for r in rows} <= {0.1, 2.0}


def test_user_reward_inline_on_ray(ray_cluster, tmp_path):
    assert train_cli(tmp_path, GRID_REWARD, "runtime=ray", "actors.num=2", *SHORT) == 0
    check_learned_diagonal(tmp_path / "run")


def test_user_reward_in_the_pool_on_ray(ray_cluster, tmp_path):
    assert train_cli(tmp_path, GRID_REWARD, "runtime=ray", "actors.num=1", "reward.mode=pool", "reward.workers=1",
                     "reward.cpus_per_worker=0.5", *SHORT) == 0
    check_learned_diagonal(tmp_path / "run")


def test_user_reward_behind_serve_reward(tmp_path):
    from distgfn.oracle import serve
    from distgfn.rewards.remote import served_oracle

    server, port = serve(served_oracle("grid_reward:Diagonal", []), "127.0.0.1", 0)
    try:
        assert train_cli(tmp_path, GRID_REWARD, "runtime=serial", "reward.mode=remote",
                         f"reward.addresses=127.0.0.1:{port}", *SHORT) == 0
    finally:
        server.stop(None).wait(timeout=10)
    check_learned_diagonal(tmp_path / "run")


def test_score_command_scores_keys_with_a_user_reward(tmp_path, capsys):
    (tmp_path / "cells").write_text("0,0\n0,7\nnot-a-cell\n")
    assert main(["score", "--reward", "grid_reward:Diagonal", str(tmp_path / "cells")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == {"x": "0,0", "log_reward": pytest.approx(np.log(2.0)), "raw": 2.0}
    assert rows[1]["raw"] == 0.1
    assert rows[2] == {"x": "not-a-cell", "error": "not a HyperGrid cell: 'not-a-cell'"}
