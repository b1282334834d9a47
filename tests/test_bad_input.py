"""Bad configs and bad rewards give clear errors that name the problem."""

import re
from pathlib import Path

import numpy as np
import pytest

from distgfn.cli import main
from distgfn.config import ConfigError, load_config
from distgfn.envs.hypergrid import HyperGrid
from distgfn.rewards import FailureWindow, RewardError, log_rewards, score_objects


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'env.hieght'.*known in env: name, options; the env's own settings go under env.options"):
        load_config(write(tmp_path, "env:\n  hieght: 8\n"))


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'lerner'"):
        load_config(write(tmp_path, "lerner:\n  lr: 0.1\n"))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"env.options must be a mapping of option names to values; got str 'eight'"):
        load_config(write(tmp_path, "env:\n  options: eight\n"))
    with pytest.raises(ConfigError, match=r"sampler.batch_size must be int; got float 1.5"):
        load_config(None, ["sampler.batch_size=1.5"])
    with pytest.raises(ConfigError, match=r"learner.steps must be int; got bool True"):
        load_config(None, ["learner.steps=true"])


def test_section_given_a_scalar(tmp_path):
    with pytest.raises(ConfigError, match=r"env must be a mapping; got int 3"):
        load_config(write(tmp_path, "env: 3\n"))


def test_height_below_two_is_rejected_naming_the_option():
    from distgfn.tasks import make_env

    with pytest.raises(ConfigError, match=r"env: hypergrid\(height=1\) raised ValueError: HyperGrid needs .*height=1"):
        make_env(load_config(None, ["env.options.height=1"]))


def test_choice_keys_list_the_choices():
    with pytest.raises(ConfigError, match=r"objective.name must be one of fm, tb, db; got 'xx'"):
        load_config(None, ["objective.name=xx"])


def test_malformed_override():
    with pytest.raises(ConfigError, match=r"must look like key=value"):
        load_config(None, ["learner.lr"])


def test_ints_are_accepted_for_floats_and_overrides_apply(tmp_path):
    cfg = load_config(write(tmp_path, "learner:\n  lr: 1\n"), ["env.options.ndim=3", "sampler.epsilon=0.5"])
    assert cfg.learner.lr == 1.0 and isinstance(cfg.learner.lr, float)
    assert cfg.env.options["ndim"] == 3 and cfg.sampler.epsilon == 0.5


@pytest.mark.parametrize("value,what", [(np.nan, "not finite"), (-0.5, "not positive"), (0.0, "not positive")])
def test_reward_returning_nan_or_negative_is_an_error_naming_the_object(value, what):
    env = HyperGrid(2, 4)
    states = np.array([[0, 1, 1], [2, 3, 1]])

    def reward(s):
        return np.where(s[:, 0] == 2, value, 1.0)

    with pytest.raises(RewardError, match=rf"reward failed for 1 of 2 objects; first: x=2,3: reward is {what}: R="):
        log_rewards(reward, states, env.keys)


def test_objects_whose_reward_raises_or_is_nan_fail_alone_and_the_rest_are_scored():
    env = HyperGrid(2, 4)
    states = np.array([[0, 1, 1], [1, 1, 1], [2, 3, 1], [3, 3, 1]])

    def reward(s):
        if (s[:, 0] == 1).any():
            raise ZeroDivisionError("no reward for x0 = 1")
        return np.where(s[:, 0] == 2, np.nan, 1.0 + s[:, 0])

    log_r, scores = score_objects(reward, states, env.keys)
    assert scores.failed.tolist() == [False, True, True, False]
    assert "ZeroDivisionError: no reward for x0 = 1" in scores.errors[1] and "not finite" in scores.errors[2]
    np.testing.assert_allclose(log_r[[0, 3]], np.log([1.0, 4.0]))
    assert np.isnan(log_r[[1, 2]]).all()


def test_the_failure_window_stops_only_above_the_rate():
    env = HyperGrid(2, 4)
    window = FailureWindow(max_rate=0.25, size=8)
    objects = np.array([[1, 2, 1]] * 4)
    window.add([None, "x", None, None], objects, env.keys)  # 1 of 4: under the rate, too few to judge anyway
    window.add([None, None, None, None], objects, env.keys)  # 1 of 8
    with pytest.raises(RewardError, match=r"failed for 3 of the last 8 objects.*max_failure_rate=0.25; latest: x=1,2: z"):
        window.add(["v", "y", "z", None], objects, env.keys)  # 3 of the last 8


def test_reward_of_wrong_shape_is_an_error():
    env = HyperGrid(2, 4)
    with pytest.raises(RewardError, match=r"shape \(3,\) for 2 objects"):
        log_rewards(lambda s: np.ones(3), np.zeros((2, 3), np.int64), env.keys)


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    code = main(["train", str(write(tmp_path, "env:\n  options: {height: 1}\n")), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert "distgfn: error: env: hypergrid(height=1) raised ValueError: HyperGrid needs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "nothing is written for an invalid config"


def test_cli_sample_on_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope"), "-n", "3"]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def test_objective_options_are_the_objectives_own():
    assert load_config(None, ["objective.name=tb", "objective.options.logz_lr=0.5"]).objective.options == {"logz_lr": 0.5}
    with pytest.raises(ConfigError, match=r"unknown key 'objective.options.leaf_coef' \(known in objective.options: "
                                          r"logz_lr\) \(objective.name tb\)"):
        load_config(None, ["objective.name=tb", "objective.options.leaf_coef=3"])
    with pytest.raises(ConfigError, match=r"objective.options: fm needs eps >= 0 and leaf_coef > 0; got eps=-1.0"):
        load_config(None, ["objective.options.eps=-1"])
    with pytest.raises(ConfigError, match=r"objective.options.leaf_coef must be float; got str 'abc'"):
        load_config(None, ["objective.options.leaf_coef=abc"])


BAD_VALUES = [
    (["learner.lr=.inf"], "learner.lr must be a finite number; got inf"),
    (["reward.deadline_s=.nan"], "reward.deadline_s must be a finite number; got nan"),
    (["seed=-1"], r"seed must be in \[0, 2\*\*63\); got -1"),
    (["ray.num_cpus=0"], "ray.num_cpus must be >= 1 or null; got 0"),
    (["actors.batch_size=0"], "actors.batch_size must be >= 1 or null; got 0"),
    (["learner.device=tpu"], "learner.device must be auto, cpu, cuda or cuda:N; got 'tpu'"),
    (["learner.device=cudafoo"], "learner.device must be auto, cpu, cuda or cuda:N; got 'cudafoo'"),
    (["env.options.ndim=40"], r"HyperGrid height \*\* ndim = 8\*\*40 cells is beyond what a cell index can count"),
    (["reward.mode=remote", "reward.addresses=127.0.0.1:99999"], r"reward.addresses: '127.0.0.1:99999' is not host:port"),
    (["reward.mode=remote", "reward.addresses=[zz::1]:5"], r"reward.addresses: '\[zz::1\]:5' is not host:port"),
    (["reward.mode=remote", "reward.addresses=[::1]:5", "reward.tls_ca=/no/such/ca.pem"],
     r"reward.tls_ca: no such file '/no/such/ca.pem'"),
]


@pytest.mark.parametrize("command", ["check", "train"])
@pytest.mark.parametrize("overrides,message", BAD_VALUES, ids=[m[:30] for _, m in BAD_VALUES])
def test_each_bad_value_is_one_clear_line_naming_the_key_at_check_and_train(tmp_path, capsys, command, overrides,
                                                                             message):
    config = str(Path(__file__).parents[1] / "configs" / "hypergrid.yaml")
    args = [command, config, "--run-dir", str(tmp_path / "run")] if command == "train" else [command, config]
    code = main(args + ["--set", "runtime=serial", "--set", "learner.steps=2"] +
                [a for o in overrides for a in ("--set", o)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err


def test_a_key_given_twice_in_a_config_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: key 'lr' is given twice in one mapping \(line 3\)"):
        load_config(write(tmp_path, "learner:\n  lr: 0.1\n  lr: 0.2\n"))


def test_ipv6_oracle_addresses_are_valid_also_as_an_override():
    cfg = load_config(None, ["reward.mode=remote", "reward.addresses=[::1]:50051,127.0.0.1:50052,oracle-0.svc:80"])
    from distgfn.config import oracle_addresses

    assert oracle_addresses(cfg) == ["[::1]:50051", "127.0.0.1:50052", "oracle-0.svc:80"]
