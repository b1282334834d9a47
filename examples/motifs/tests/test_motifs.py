"""The example task's own tests: its env keeps distgfn's protocol, its reward scores by key,
and distgfn trains it (serial runtime) towards the exact target."""

from pathlib import Path

import numpy as np
import pytest
from motifs.task import MotifReward, Sequences

from distgfn import serial, tasks
from distgfn.config import load_config
from distgfn.envcheck import check_env
from distgfn.evaluation import ObjectSpace
from distgfn.metrics import read_metrics

CONFIG = Path(__file__).parents[1] / "config.yaml"


def test_env_passes_distgfns_consistency_check():
    assert check_env(Sequences("01", 6, 8)) == []
    assert check_env(Sequences("ACGT", 2, 4)) == []


def test_parents_of_a_sequence_is_its_prefix():
    env = Sequences("01", 2, 3)
    s = env.step(env.step(env.initial_states(1), np.array([1])), np.array([0]))  # "10"
    parent, action, child = env.parents(s)
    assert env.keys(np.concatenate([s[:, :-1], [[1]]], axis=1)) == ["10"]
    assert parent.tolist() == [[2, 0, 0, 0]] and action.tolist() == [0] and child.tolist() == [0]


def test_stop_is_valid_from_min_length_and_forced_at_max_length():
    env = Sequences("01", 2, 3)
    s = env.initial_states(1)
    for expected in ([True, True, False], [True, True, False], [True, True, True], [False, False, True]):
        assert env.masks(s)[0].tolist() == expected
        s = env.step(s, np.array([0]))


def test_objects_are_every_sequence_of_the_allowed_lengths():
    space = ObjectSpace(Sequences("01", 6, 8))
    assert len(space.keys) == 2**6 + 2**7 + 2**8
    assert {len(k) for k in space.keys} == {6, 7, 8}


def test_reward_is_highest_on_the_motifs():
    raw, errors = MotifReward(["0110"], base=0.1, scale=1.0).score(["0110", "0111", "011"])
    np.testing.assert_allclose(raw, [1.1, 0.1 + np.exp(-1), 0.1 + np.exp(-1)])
    assert errors == [None, None, None]
    with pytest.raises(ValueError, match="motifs must be"):
        MotifReward([])


def test_distgfn_builds_the_task_from_its_config():
    task = tasks.build(load_config(CONFIG, ["runtime=serial"]))
    assert isinstance(task.env, Sequences) and isinstance(task.reward, MotifReward)


def test_trains_towards_the_exact_target(tmp_path):
    cfg = load_config(CONFIG, ["runtime=serial", "learner.steps=1500", "log.every=250", "eval.every=250"])
    serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["modes_found"] == rows[-1]["modes_total"] == 2
    assert rows[-1]["l1_exact"] < 0.1, [r["l1_exact"] for r in rows]


def test_trains_with_its_own_model(tmp_path):
    cfg = load_config(CONFIG, ["runtime=serial", "model.name=motifs.task:OneHotMLP", "model.options={hidden: 64}",
                               "learner.steps=1000", "log.every=250", "eval.every=250"])
    serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["l1_exact"] < 0.7 * rows[0]["l1_exact"], [r["l1_exact"] for r in rows]
