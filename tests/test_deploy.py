"""deploy/: a real `ray start --head` + `ray job submit` round trip, and manifests that match the code."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from distgfn.config import load_config
from distgfn.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def test_ray_job_submit_round_trip_with_stop_and_resume(tmp_path):
    """`ray start --head`, a job through `ray job submit`, a second one stopped with `ray job
    stop` and resumed; the script checks as it goes, and the run directories are checked here."""
    done = subprocess.run([sys.executable, str(DEPLOY / "roundtrip.py"), "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["step"] for r in read_metrics(tmp_path / "job-1" / "metrics.jsonl")] == [50, 100, 150, 200, 250, 300]
    steps = [r["step"] for r in read_metrics(tmp_path / "job-2" / "metrics.jsonl")]
    last = figures["resumed_to_step"]
    assert figures["stopped_at_step"] >= 200 and steps == sorted({*range(50, last + 1, 50), last})
    assert (tmp_path / "job-2" / "model.pt").exists()
    shipped = read_metrics(tmp_path / "job-3" / "metrics.jsonl")
    assert shipped[-1]["step"] == 100 and shipped[-1]["modes_total"] == 1, "trained on the reward shipped as a module"


def manifests() -> list[dict]:
    docs = []
    for path in [DEPLOY / "cluster.yaml", *sorted((DEPLOY / "kuberay").glob("*.yaml"))]:
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_manifests_parse_and_only_cpu_workers_offer_rollout_and_only_the_gpu_node_learner():
    docs = {d.get("kind", "cluster-launcher"): d for d in manifests()}
    assert {"cluster-launcher", "RayCluster", "RayJob", "PersistentVolumeClaim"} <= set(docs)
    launcher = docs["cluster-launcher"]["available_node_types"]
    assert "rollout" in launcher["cpu_workers"]["resources"] and launcher["gpu_learner"]["resources"]["GPU"] == 1
    assert "rollout" not in launcher["gpu_learner"]["resources"] and "learner" in launcher["gpu_learner"]["resources"]
    assert "learner" not in launcher["cpu_workers"]["resources"]
    for spec in (docs["RayCluster"]["spec"], docs["RayJob"]["spec"]["rayClusterSpec"]):
        groups = {g["groupName"]: g["rayStartParams"] for g in spec["workerGroupSpecs"]}
        assert "rollout" in groups["cpu-workers"]["resources"] and "learner" not in groups["cpu-workers"]["resources"]
        assert "learner" in groups["gpu-learner"]["resources"] and "rollout" not in groups["gpu-learner"]["resources"]
        assert groups["gpu-learner"]["num-gpus"] == "1"


def test_every_distgfn_command_in_deploy_uses_real_configs_and_keys():
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".md"))
    sets = {(key, value.rstrip(";'\"")) for key, value in re.findall(r"--set ([\w.]+)=(\S+)", text)}
    assert {"ray.worker_resource", "checkpoint.path", "checkpoint.every"} <= {key for key, _ in sets}
    for key, value in sets:  # each as written there, on the config those commands train
        load_config(REPO / "configs/seh.yaml", [f"{key}={value}"])
    for config in set(re.findall(r"(configs/[\w-]+\.yaml)", text)):
        assert (REPO / config).exists(), config
