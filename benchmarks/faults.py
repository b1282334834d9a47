"""Figures of surviving failures (issue: checkpoints, resume, failures). Each part prints its lines:

    python benchmarks/faults.py kills     # one rollout actor killed every 10 s during a ~2-minute
                                          # HyperGrid run, against an undisturbed run (same seed, budget)
    python benchmarks/faults.py sigkill   # a `distgfn train` process SIGKILLed after a checkpoint and
                                          # resumed, against an uninterrupted run: both l1_exact curves

HyperGrid ndim 4, height 8, FM, 2 rollout actors on an embedded local Ray cluster (2 CPUs).
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray  # noqa: E402

from distgfn import driver  # noqa: E402
from distgfn.config import load_config  # noqa: E402
from distgfn.metrics import read_metrics  # noqa: E402

GRID4 = ["env.options.ndim=4", "env.options.height=8", "sampler.batch_size=16", "model.options.hidden=256", "model.options.layers=2"]


def kills(steps: int, every_s: float = 10.0) -> None:
    cfg = load_config(None, GRID4 + [f"learner.steps={steps}", "log.every=50", "eval.every=500",
                                     "checkpoint.every=0", "actors.num=2", "seed=0"])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        calm = run_loop(cfg, kill_every_s=None)
        again = run_loop(cfg, kill_every_s=None)  # Ray runs are not deterministic: the noise floor
        hit = run_loop(cfg, kill_every_s=every_s)
    finally:
        ray.shutdown()
    print(f"kills (FM, HyperGrid ndim 4, {steps} updates, 2 actors; rows every 50 updates)")
    for name, (rows, killed) in (("undisturbed", calm), ("undisturbed again", again),
                                 (f"kill every {every_s:g} s", hit)):
        gaps = [b["wall_s"] - a["wall_s"] for a, b in zip(rows, rows[1:])]
        print(f"  {name:18s}: {rows[-1]['wall_s']:6.1f} s, final l1_exact {rows[-1]['l1_exact']:.4f}, "
              f"kills {killed}, actor_failures {rows[-1]['actor_failures']}, lost calls "
              f"{sum(r['lost_actor_calls'] for r in rows)}, longest gap between rows of 50 updates {max(gaps):.2f} s")
    ratio = hit[0][-1]["l1_exact"] / calm[0][-1]["l1_exact"]
    noise = again[0][-1]["l1_exact"] / calm[0][-1]["l1_exact"]
    print(f"  final l1_exact disturbed / undisturbed = {ratio:.3f} (undisturbed again / undisturbed = {noise:.3f})")


def run_loop(cfg, kill_every_s: float | None) -> tuple[list[dict], int]:
    """One run through the driver's control loop; a thread kills actor i % n every kill_every_s."""
    killed, stop = [0], threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        loop = driver.ControlLoop(cfg, Path(tmp), progress=lambda row, total: None)

        def killer():
            while not stop.wait(kill_every_s):
                actors = loop.fleet.handles()
                ray.kill(actors[killed[0] % len(actors)], no_restart=False)
                killed[0] += 1

        try:
            loop.start()
            if kill_every_s:
                threading.Thread(target=killer, daemon=True).start()
            loop.run_surviving_failures()
        finally:
            stop.set()
            loop.close()
        return read_metrics(Path(tmp) / "metrics.jsonl"), killed[0]


def sigkill(steps: int) -> None:
    """Two real `distgfn train` processes; the second is SIGKILLed once a checkpoint past the
    middle exists, then resumed with `distgfn train --resume`."""
    config = Path(__file__).parents[1] / "configs" / "hypergrid-4d.yaml"
    sets = ["learner.steps=%d" % steps, "log.every=125", "eval.every=125", "checkpoint.every=500", "seed=0"]
    args = [a for s in sets for a in ("--set", s)]
    with tempfile.TemporaryDirectory() as tmp:
        whole, cut = Path(tmp) / "whole", Path(tmp) / "cut"
        train([str(config), "--run-dir", str(whole), *args])
        proc = subprocess.Popen([sys.executable, "-m", "distgfn", "train", str(config), "--run-dir", str(cut), *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        middle = f"step-{steps // 2:012d}"
        deadline = time.monotonic() + 600
        while not glob.glob(str(cut / "checkpoints" / "step-*" / "MANIFEST.json")) or \
                max(Path(p).parent.name for p in glob.glob(str(cut / "checkpoints" / "step-*" / "MANIFEST.json"))) < middle:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the run ended or stalled before its middle checkpoint")
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = read_metrics(cut / "metrics.jsonl")[-1]["step"]
        train(["--resume", str(cut)])
        a, b = read_metrics(whole / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl")
    print(f"sigkill (FM, HyperGrid ndim 4, {steps} updates, 2 actors; killed after the row at step {killed_at})")
    print(f"  {'step':>6s} {'uninterrupted':>14s} {'killed+resumed':>15s}")
    for ra, rb in zip(a, b):
        assert ra["step"] == rb["step"], "both runs log the same steps"
        print(f"  {ra['step']:6d} {ra['l1_exact']:14.4f} {rb['l1_exact']:15.4f}")


def train(argv: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "distgfn", "train", *argv], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["kills", "sigkill", "all"])
    p.add_argument("--steps", type=int, default=None, help="learner updates per run")
    args = p.parse_args()
    if args.part in ("kills", "all"):
        kills(args.steps or 8000)
    if args.part in ("sigkill", "all"):
        sigkill(args.steps or 3000)


if __name__ == "__main__":
    main()
