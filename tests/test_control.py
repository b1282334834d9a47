"""Scale requests through a run directory (distgfn.control), without a running job."""

import json

import pytest

from distgfn import cli, control


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    return tmp_path


def test_a_request_is_read_back_whole_and_answered_by_id(run_dir):
    request_id = control.request_scale(run_dir, actors=3)
    assert control.read_request(run_dir) == {"id": request_id, "actors": 3, "reward_workers": None}
    control.answer(run_dir, request_id, {"actors": 3, "reward_workers": 0, "step": 100})
    assert control.wait_for_answer(run_dir, request_id, timeout_s=1)["step"] == 100


@pytest.mark.parametrize("actors, workers, message", [
    (None, None, "give --actors N, --reward-workers N or both"),
    (0, None, "actors must be >= 1; got 0"),
    (None, -2, "reward workers must be >= 1; got -2"),
])
def test_a_bad_request_is_refused_before_it_is_written(run_dir, actors, workers, message):
    with pytest.raises(control.ControlError, match=message):
        control.request_scale(run_dir, actors, workers)
    assert not (run_dir / "control" / "scale.json").exists()


def test_a_directory_that_holds_no_run_is_refused(tmp_path):
    with pytest.raises(control.ControlError, match="config.yaml not found"):
        control.request_scale(tmp_path, actors=2)


@pytest.mark.parametrize("text, named", [
    ("{not json", "cannot read the scale request"),
    ('["a list"]', "is not a scale request"),
    ('{"id": "x", "actors": "three"}', "actors must be a positive integer or null; got 'three'"),
])
def test_a_malformed_request_file_is_an_error_naming_it(run_dir, text, named):
    (run_dir / "control").mkdir()
    (run_dir / "control" / "scale.json").write_text(text)
    with pytest.raises(control.ControlError, match=named):
        control.read_request(run_dir)


def test_a_request_nobody_answers_times_out_with_a_clear_error(run_dir, capsys):
    assert cli.main(["scale", str(run_dir), "--actors", "2", "--timeout", "0.5"]) == 2
    assert "did not answer the scale request within 0.5 s; is it running?" in capsys.readouterr().err
    assert json.loads((run_dir / "control" / "scale.json").read_text())["actors"] == 2


def test_a_resumed_run_does_not_apply_a_request_made_to_its_earlier_process(run_dir):
    from distgfn.config import load_config
    from distgfn.driver import ControlLoop

    request_id = control.request_scale(run_dir, actors=8)
    loop = ControlLoop(load_config(None, []), run_dir)
    try:
        assert loop.scaling.last_request_id == request_id and loop.num_actors == 2
    finally:
        loop.reporting.close()
