"""HyperGrid speed and sample efficiency of the serial runtime, on one CPU thread.

Prints, for FM and TB on ndim 4, height 8, batch 16, MLP 2x256, Adam lr 1e-3:
  - trajectories per second sampled and trained (no evaluation during the timed run);
  - trajectories and training wall time until l1_exact <= 0.05 (evaluated every 125 updates,
    evaluation time left out), and l1_exact at the end of the budget.

    python benchmarks/hypergrid.py [--budget 100000] [--objectives fm tb]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from distgfn import serial  # noqa: E402
from distgfn.config import load_config  # noqa: E402
from distgfn.metrics import read_metrics  # noqa: E402

SETTINGS = ["env.options.ndim=4", "env.options.height=8", "sampler.batch_size=16", "model.options.hidden=256", "model.options.layers=2",
            "learner.lr=0.001"]


def run(objective: str, overrides: list[str]) -> list[dict]:
    cfg = load_config(None, SETTINGS + [f"objective.name={objective}"] + overrides)
    with tempfile.TemporaryDirectory() as tmp:
        serial.train(cfg, Path(tmp), progress=lambda row, total: None)
        return read_metrics(Path(tmp) / "metrics.jsonl")


def speed(objective: str, steps: int = 1500) -> float:
    (row,) = run(objective, [f"learner.steps={steps}", f"log.every={steps}", "eval.every=0"])
    return row["traj_per_s"]


def time_to_target(objective: str, budget: int, target: float = 0.05) -> dict:
    rows = run(objective, [f"learner.steps={budget // 16}", "log.every=125", "eval.every=125"])
    train_s, last, reached = 0.0, 0, None
    for row in rows:
        train_s += (row["trajectories"] - last) / row["traj_per_s"]
        last = row["trajectories"]
        if reached is None and row.get("l1_exact", 1.0) <= target:
            reached = {"trajectories": last, "train_s": train_s, "step": row["step"]}
    return {"final_l1_exact": rows[-1]["l1_exact"], "budget": last, "modes": rows[-1]["modes_found"],
            "reached": reached}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=100_000, help="trajectories per learning run")
    p.add_argument("--objectives", nargs="+", default=["fm", "tb"])
    args = p.parse_args()
    torch.set_num_threads(1)
    print("HyperGrid ndim 4 height 8, batch 16, MLP 2x256, lr 1e-3 (cosine), torch threads 1")
    for objective in args.objectives:
        rate = speed(objective)
        print(f"{objective}: {rate:.0f} trajectories/s sampled and trained")
        r = time_to_target(objective, args.budget)
        if r["reached"]:
            hit = r["reached"]
            print(f"{objective}: l1_exact <= 0.05 after {hit['trajectories']} trajectories "
                  f"(step {hit['step']}), {hit['train_s']:.1f} s of training")
        else:
            print(f"{objective}: l1_exact <= 0.05 not reached within {r['budget']} trajectories")
        print(f"{objective}: l1_exact {r['final_l1_exact']:.4f} after {r['budget']} trajectories, "
              f"modes {r['modes']}/16")


if __name__ == "__main__":
    main()
