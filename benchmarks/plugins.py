"""A user's own task, trained the way a user runs it (needs `pip install -e examples/motifs
-e examples/grid_reward`):

    python benchmarks/plugins.py reward [--steps 2000] [--samples 50000]
    python benchmarks/plugins.py motifs [--steps 3000]

reward: grid_reward:Diagonal (examples/grid_reward) on the built-in 2-D HyperGrid, trained
inline in the serial runtime, inline on Ray, in Ray's reward pool, and behind
`distgfn serve-reward` (a real gRPC server on 127.0.0.1; serial and Ray runtimes); after each run
`distgfn sample` draws N objects and the script prints the empirical L1 between their
frequencies and R(x)/Z, with the run's own l1_exact.
motifs: the example task (examples/motifs) in both runtimes; prints l1_exact after training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def distgfn(*args: str) -> None:
    subprocess.run([str(BIN / "distgfn"), *args], check=True, stderr=subprocess.DEVNULL)


def last_row(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def diagonal_target() -> np.ndarray:
    cells = np.indices((8, 8)).reshape(2, -1).T
    r = np.where(np.abs(cells[:, 0] - cells[:, 1]) <= 1, 2.0, 0.1)
    return r / r.sum()


def empirical_l1(samples: Path) -> float:
    cells = np.array([json.loads(line)["x"] for line in samples.read_text().splitlines()])
    freq = np.bincount(cells[:, 0] * 8 + cells[:, 1], minlength=64) / len(cells)
    return float(np.abs(freq - diagonal_target()).sum())


def serve() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(BIN / "distgfn"), "serve-reward", "--reward", "grid_reward:Diagonal", "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # "distgfn: serving reward ... on 127.0.0.1:PORT"
    return proc, line.strip().rsplit(" ", 1)[-1]


def reward_modes(steps: int, samples: int, only: list[str] | None = None) -> None:
    config = str(REPO / "examples/grid_reward/config.yaml")
    modes = [("inline, serial", ["runtime=serial"]), ("inline, ray", ["runtime=ray"]),
             ("pool, ray", ["runtime=ray", "actors.num=1", "reward.mode=pool", "reward.workers=1",
                            "reward.cpus_per_worker=0.5"]),
             ("remote, serial", ["runtime=serial", "reward.mode=remote"]),
             ("remote, ray", ["runtime=ray", "reward.mode=remote"])]
    print(f"grid_reward:Diagonal on the 2-D HyperGrid (8x8), {steps} updates of 16, then {samples:,} samples")
    for name, sets in modes:
        if only and name.split(",")[0] not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            run, server = Path(tmp) / "run", None
            if "reward.mode=remote" in sets:
                server, address = serve()
                sets = [*sets, f"reward.addresses={address}"]
            start = time.perf_counter()
            try:
                distgfn("train", config, "--run-dir", str(run), "--set", f"learner.steps={steps}",
                        *[a for s in sets for a in ("--set", s)])
                train_s = time.perf_counter() - start
                # `sample` scores what it draws with the run's reward: the oracle too, in remote mode.
                distgfn("sample", str(run), "-n", str(samples), "--out", str(Path(tmp) / "samples.jsonl"))
            finally:
                if server is not None:
                    server.terminate()
                    server.wait(timeout=30)
            row = last_row(run)
            print(f"  {name:15s} l1_exact {row['l1_exact']:.4f}  empirical L1 of {samples:,} samples "
                  f"{empirical_l1(Path(tmp) / 'samples.jsonl'):.4f}  modes {row['modes_found']}/{row['modes_total']}  "
                  f"train {train_s:.0f} s", flush=True)


def motifs(steps: int) -> None:
    config = str(REPO / "examples/motifs/config.yaml")
    print(f"examples/motifs (448 sequences), {steps} updates of 16")
    for runtime in ("serial", "ray"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            distgfn("train", config, "--run-dir", str(Path(tmp) / "run"), "--set", f"runtime={runtime}",
                    "--set", f"learner.steps={steps}")
            row = last_row(Path(tmp) / "run")
            print(f"  {runtime:6s} l1_exact {row['l1_exact']:.4f}  modes {row['modes_found']}/{row['modes_total']}  "
                  f"trajectories {row['trajectories']:,}  {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["reward", "motifs"])
    p.add_argument("--steps", type=int)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--modes", nargs="+", choices=["inline", "pool", "remote"], help="reward: only these modes")
    args = p.parse_args()
    if args.what == "reward":
        reward_modes(args.steps or 2000, args.samples, args.modes)
    else:
        motifs(args.steps or 3000)


if __name__ == "__main__":
    main()
