"""Rehearses a cluster job on this machine, with the commands a cluster user runs:

    python deploy/roundtrip.py [--work-dir DIR] [--cpus 2]

1. `ray start --head` (its own temp dir and ports, so it never meets another cluster here);
2. `ray job submit --working-dir .` of a short HyperGrid run; waits for it; checks its run
   directory and metrics;
3. `distgfn check` submitted as a job: passes, and refuses a GPU the cluster does not have;
4. a longer run submitted with `--no-wait`, stopped with `ray job stop` once it has a
   checkpoint, then resubmitted with `distgfn train --resume`; checks that its metrics
   continue without gaps or duplicates;
5. a user's reward module that is installed nowhere, shipped with `--working-dir` and named
   by import path: its rollout actors import it from the working directory;
6. stops the cluster (every process it started).

Prints each step and a final JSON line of figures (seconds from `ray start` to the first job's
end, and the steps of the stop and resume). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# A small 2-D HyperGrid run that fits 2 CPUs: learner 0.5, one actor 0.5.
SMALL = ["--set", "actors.num=1", "--set", "actors.cpus=0.5", "--set", "learner.cpus=0.5", "--set", "log.every=50",
         "--set", "eval.every=100", "--set", "checkpoint.every=100"]


class RoundTripError(RuntimeError):
    pass


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class HeadNode:
    """`ray start --head --block` in its own session; stop() ends it and every process it started."""

    def __init__(self, cpus: int, log: Path):
        self.temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
        gcs, dash, client, manager, objects, agent, agent_grpc, metrics, runtime_env, low = free_ports(10)
        self.address = f"http://127.0.0.1:{dash}"
        cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={cpus}", f"--port={gcs}",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
               f"--ray-client-server-port={client}", f"--node-manager-port={manager}",
               f"--object-manager-port={objects}", f"--dashboard-agent-listen-port={agent}",
               f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
               f"--runtime-env-agent-port={runtime_env}", f"--temp-dir={self.temp}"]
        # `ray job stop` sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (default 3 s):
        # give the run time to write its final checkpoint.
        env = {**os.environ, "RAY_JOB_STOP_WAIT_TIME_S": "60", "OMP_NUM_THREADS": "1"}
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float) -> None:
        """Polls the job server (an HTTP service has no event to wait on) until it answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RoundTripError(f"ray start exited with {self.proc.returncode}; see {self.log.name}")
            if ray_cli(["job", "list", "--address", self.address], timeout_s=30, check=False).returncode == 0:
                return
            time.sleep(1.0)
        raise RoundTripError(f"the job server at {self.address} did not answer within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM to `ray start` alone: Ray drains the node (at once when it is idle) and stops
        the processes it started; a SIGTERM to the whole group left the node unable to drain,
        and it waited its full 30 s drain timeout. Then SIGKILL to what is left of the group."""
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.log.close()


def ray_cli(args: list[str], timeout_s: float, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # clusters from `ray start --head` require the token
    done = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout_s,
                          cwd=REPO)
    if check and done.returncode != 0:
        raise RoundTripError(f"ray {' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                             f"{done.stderr[-2000:]}")
    return done


def submit(address: str, job_id: str, train_args: list[str], wait: bool, timeout_s: float):
    args = ["job", "submit", "--address", address, "--submission-id", job_id, "--working-dir", str(REPO)]
    args += [] if wait else ["--no-wait"]
    # The job runs with the cluster's environment: name the Python that has distgfn installed.
    return ray_cli(args + ["--", sys.executable, "-m", "distgfn", "train", *train_args], timeout_s)


def job_status(address: str, job_id: str) -> str:
    done = ray_cli(["job", "status", "--address", address, job_id], timeout_s=60)
    out = (done.stdout + done.stderr).lower()  # "Job 'x' was stopped", "... is currently running"
    for state in ("succeeded", "stopped", "failed", "running", "pending"):
        if state in out:
            return state.upper()
    raise RoundTripError(f"cannot read the status of job {job_id}: {out}")


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def newest_checkpoint(run_dir: Path) -> int | None:
    from distgfn import checkpoint

    names = checkpoint.complete_checkpoints(run_dir / "checkpoints")
    return checkpoint.step_of(names[-1]) if names else None


def wait_for(what: str, test, timeout_s: float, poll_s: float = 0.5):
    """Polls `test` (files and job states have no event to wait on) until it returns a value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = test()
        if value:
            return value
        time.sleep(poll_s)
    raise RoundTripError(f"{what}: not within {timeout_s} s")


def check_rows(rows: list[dict], last: int, what: str) -> None:
    """A row every 50 updates and one at the end, each once (a run stopped between two rows
    resumes from its checkpoint there, and its next row is again on a multiple of 50)."""
    steps = [r["step"] for r in rows]
    expected = sorted({*range(50, last + 1, 50), last})
    if steps != expected:
        raise RoundTripError(f"{what}: metrics steps {steps}, expected {expected}")


def checks_on_the_cluster(head: HeadNode) -> None:
    """`distgfn check` as a job: it joins the cluster and compares what a config asks for with it."""
    def check(*sets: str) -> subprocess.CompletedProcess:
        args = ["job", "submit", "--address", head.address, "--working-dir", str(REPO), "--", sys.executable,
                "-m", "distgfn", "check", "configs/hypergrid.yaml", *SMALL, *sets]
        return ray_cli(args, timeout_s=300, check=False)

    good, gpu = check(), check("--set", "learner.device=cuda:1")
    if good.returncode != 0 or "on the Ray cluster at" not in good.stdout:
        raise RoundTripError(f"distgfn check failed on the cluster:\n{good.stdout[-2000:]}{good.stderr[-1000:]}")
    if gpu.returncode == 0 or "asks for GPU 1" not in gpu.stdout + gpu.stderr:
        raise RoundTripError(f"distgfn check accepted learner.device=cuda:1 on a cluster without GPUs:\n{gpu.stdout[-2000:]}")
    print("roundtrip: `distgfn check` passed on the cluster, and refused a GPU it does not have", flush=True)


def first_job(head: HeadNode, work: Path, started: float) -> float:
    run1 = work / "job-1"
    print(f"roundtrip: submitting a 300-update job, run directory {run1}", flush=True)
    submit(head.address, f"distgfn-{uuid.uuid4().hex[:8]}", ["configs/hypergrid.yaml", "--run-dir", str(run1),
                                                             "--set", "learner.steps=300", *SMALL],
           wait=True, timeout_s=600)
    seconds = time.monotonic() - started
    check_rows(read_rows(run1), 300, "job 1")
    if not (run1 / "model.pt").exists() or newest_checkpoint(run1) != 300:
        raise RoundTripError("job 1 left no model.pt or no checkpoint at step 300")
    print(f"roundtrip: job 1 finished; {seconds:.1f} s from `ray start` (metrics and checkpoint checked)", flush=True)
    return seconds


def stopped_and_resumed(head: HeadNode, work: Path) -> dict:
    run2, job2 = work / "job-2", f"distgfn-{uuid.uuid4().hex[:8]}"
    submit(head.address, job2, ["configs/hypergrid.yaml", "--run-dir", str(run2), "--set", "learner.steps=100000",
                                *SMALL], wait=False, timeout_s=120)
    wait_for("job 2's checkpoint at step 200", lambda: (newest_checkpoint(run2) or 0) >= 200, timeout_s=300)
    print("roundtrip: job 2 has a checkpoint; `ray job stop`", flush=True)
    ray_cli(["job", "stop", "--address", head.address, job2], timeout_s=180)
    wait_for("job 2 stopped", lambda: job_status(head.address, job2) == "STOPPED", timeout_s=120, poll_s=1.0)
    stopped_at = newest_checkpoint(run2)
    rows_at_stop = read_rows(run2)
    target = stopped_at + 200
    print(f"roundtrip: job 2 stopped with its checkpoint at step {stopped_at}; resubmitting with --resume", flush=True)
    submit(head.address, f"distgfn-{uuid.uuid4().hex[:8]}", ["--resume", str(run2), "--set",
                                                             f"learner.steps={target}"], wait=True, timeout_s=600)
    check_rows(read_rows(run2), target, "job 2 resumed")
    print(f"roundtrip: job 2 resumed from step {stopped_at} and finished at {target}; metrics continuous", flush=True)
    return {"stopped_at_step": stopped_at, "rows_before_stop": len(rows_at_stop), "resumed_to_step": target}


# A user's reward, written into a job's working directory and installed nowhere else.
SHIPPED_REWARD = '''
import numpy as np


class Corner:
    """R = high on the cell (0, 0), low elsewhere (HyperGrid keys "x1,x2")."""

    def __init__(self, high=2.0, low=0.1):
        self.high, self.low = high, low

    def score(self, keys):
        return np.array([self.high if k == "0,0" else self.low for k in keys]), [None] * len(keys)
'''


def shipped_plugin_job(head: HeadNode, work: Path) -> None:
    """A job whose reward module lives only in its working directory (`ray job submit
    --working-dir`): the driver and every Ray worker import it from there."""
    ship = work / "user-job"
    ship.mkdir(exist_ok=True)
    (ship / "shipped_reward.py").write_text(SHIPPED_REWARD)
    run3 = work / "job-3"
    args = ["job", "submit", "--address", head.address, "--working-dir", str(ship), "--", sys.executable, "-m",
            "distgfn", "train", str(REPO / "configs/hypergrid.yaml"), "--run-dir", str(run3), "--set",
            "reward.name=shipped_reward:Corner", "--set", "reward.options={}", "--set", "learner.steps=100", *SMALL]
    ray_cli(args, timeout_s=600)
    rows = read_rows(run3)
    if not rows or rows[-1]["step"] != 100 or rows[-1].get("modes_total") != 1:
        raise RoundTripError(f"job 3 (shipped reward) did not train on the shipped reward: {rows[-1:]}")
    print("roundtrip: job 3 trained with a reward module shipped only in its working directory", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, help="where run directories go (default: a new temporary directory)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local cluster (default 2)")
    args = p.parse_args()
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="distgfn-roundtrip-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    head = HeadNode(args.cpus, work / "ray-start.log")
    try:
        head.wait_ready(timeout_s=180)
        print(f"roundtrip: cluster up at {head.address} after {time.monotonic() - started:.1f} s", flush=True)
        figures = {"ray_start_to_first_job_done_s": round(first_job(head, work, started), 1)}
        checks_on_the_cluster(head)
        figures.update(stopped_and_resumed(head, work))
        shipped_plugin_job(head, work)
    except (RoundTripError, subprocess.TimeoutExpired) as e:
        print(f"roundtrip: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        head.stop()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
