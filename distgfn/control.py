"""Requests to a running job through its run directory: `distgfn scale RUN_DIR --actors N`.

    request_id = request_scale(run_dir, actors=3)          # from any process
    done = wait_for_answer(run_dir, request_id, timeout_s=120)
    # the driver, between learner calls:
    request = read_request(run_dir)                        # {"id", "actors", "reward_workers"} or None
    answer(run_dir, request["id"], {"actors": 3, ...})

A request is one JSON file, `RUN_DIR/control/scale.json`, replaced whole (written aside, then
renamed); the driver answers in `control/scale-done.json` with the request's id. Files work
the same for an embedded local cluster and for a job on a cluster whose run directory the
caller can reach, and need no port or credentials.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path


class ControlError(ValueError):
    """A control request is malformed, or the job did not answer it in time."""


def request_scale(run_dir: Path, actors: int | None = None, reward_workers: int | None = None) -> str:
    if actors is None and reward_workers is None:
        raise ControlError("give --actors N, --reward-workers N or both")
    for name, value in (("actors", actors), ("reward workers", reward_workers)):
        if value is not None and value < 1:
            raise ControlError(f"the number of {name} must be >= 1; got {value}")
    if not (run_dir / "config.yaml").exists():
        raise ControlError(f"{run_dir / 'config.yaml'} not found; is {run_dir} a run directory?")
    request = {"id": uuid.uuid4().hex, "actors": actors, "reward_workers": reward_workers}
    write_json(run_dir / "control" / "scale.json", request)
    return request["id"]


def read_request(run_dir: Path) -> dict | None:
    """The latest scale request, or None; a malformed file raises ControlError."""
    path = run_dir / "control" / "scale.json"
    try:
        request = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ControlError(f"cannot read the scale request {path}: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("id"), str):
        raise ControlError(f"{path} is not a scale request (a JSON object with an id)")
    for key in ("actors", "reward_workers"):
        value = request.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise ControlError(f"{path}: {key} must be a positive integer or null; got {value!r}")
    return request


def answer(run_dir: Path, request_id: str, result: dict) -> None:
    write_json(run_dir / "control" / "scale-done.json", {"id": request_id, **result})


def wait_for_answer(run_dir: Path, request_id: str, timeout_s: float) -> dict:
    """The driver's answer to the request; polls the answer file (a file has no event to wait on)."""
    path = run_dir / "control" / "scale-done.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            done = None
        if isinstance(done, dict) and done.get("id") == request_id:
            return done
        time.sleep(0.2)
    raise ControlError(f"the job in {run_dir} did not answer the scale request within {timeout_s:g} s; is it running? "
                       f"(it takes effect when the job reads it, between learner calls)")


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside.write_text(json.dumps(value))
    os.replace(aside, path)
