"""Node loss on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster): a head
with no CPUs, a learner node (`learner` resource), two rollout nodes (`rollout`). One run loses
a rollout node and goes on with the actors left, then loses the learner's node, gets a
replacement (as an autoscaler or KubeRay would add one) and recovers from its last checkpoint
to its budget, counting nothing twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgfn.metrics import read_metrics

CONFIG = Path(__file__).parents[1] / "configs" / "hypergrid.yaml"
LEARNER, ROLLOUT = {"learner": 1}, {"rollout": 1}


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    yield c
    c.shutdown()


def rows_until(run_dir: Path, job: subprocess.Popen, holds, what: str, timeout: float = 180.0) -> list[dict]:
    """The run's metrics rows once holds(rows) is true; fails if the run ends or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        path = run_dir / "metrics.jsonl"
        rows = read_metrics(path) if path.exists() else []
        if rows and holds(rows):
            return rows
        assert job.poll() is None, f"the run ended before {what}: {job.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s: {rows[-1:] if rows else 'no rows'}"
        time.sleep(0.5)


def test_losing_a_rollout_node_then_the_learner_node_the_run_reaches_its_budget(cluster, tmp_path):
    learner_node = cluster.add_node(num_cpus=1, resources=LEARNER)
    rollout_nodes = [cluster.add_node(num_cpus=1, resources=ROLLOUT) for _ in range(2)]
    cluster.wait_for_nodes()
    run_dir = tmp_path / "run"
    sets = [f"ray.address={cluster.address}", "ray.worker_resource=rollout", "ray.learner_resource=learner",
            "actors.num=4", "actors.cpus=0.5", "learner.cpus=1", "learner.steps=1500", "log.every=50",
            "eval.every=0", "checkpoint.every=100", "env.options.height=5", "model.options.hidden=32",
            "ray.progress_timeout_s=120", "actors.report_every_s=0.5"]
    job = subprocess.Popen([sys.executable, "-m", "distgfn", "train", str(CONFIG), "--run-dir", str(run_dir),
                            *[a for s in sets for a in ("--set", s)]], stderr=subprocess.PIPE, text=True)
    try:
        rows_until(run_dir, job, lambda rows: rows[-1]["actors_running"] == 4, "4 running actors")
        cluster.remove_node(rollout_nodes[0])  # two actors go with it; no room left to restart them
        rows = rows_until(run_dir, job, lambda rows: rows[-1]["actors_pending"] == 2 and rows[-1]["actors_running"] == 2,
                          "a row with the 2 actors left running")
        before = rows[-1]["step"]
        rows_until(run_dir, job, lambda rows: rows[-1]["step"] >= before + 200, "progress with the actors left")

        cluster.remove_node(learner_node)  # the learner and the replay table go with it
        cluster.add_node(num_cpus=1, resources=LEARNER)  # the replacement
        _, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err[-3000:]
    assert "recreating the learner, replay table and rollout actors from the checkpoint at step" in err
    rows = read_metrics(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 1500, f"each step once, to the budget: {steps}"
    assert rows[-1]["role_restarts"] == 1
    # The rate limiter (one sample per insert) keeps what was scored within a few batches of what
    # was trained on (16 a step): counting the checkpoint's trajectories twice would break it.
    assert all(r["trajectories"] <= 16 * r["step"] + 400 for r in rows), [(r["step"], r["trajectories"]) for r in rows]
    counts = [r["trajectories"] for r in rows]
    assert counts == sorted(counts), f"the count goes on from the checkpoint's: {counts}"
