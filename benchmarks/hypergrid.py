"""HyperGrid speed and sample efficiency of the serial runtime, on one CPU thread.

Prints, for FM and TB on ndim 4, height 8, batch 16, MLP 2x256, Adam lr 1e-3:
  - trajectories per second sampled and trained (no evaluation during the timed run);
  - trajectories and training wall time until l1_exact <= 0.05 (evaluated every 125 updates,
    evaluation time left out), and l1_exact at the end of the budget.

    python benchmarks/hypergrid.py [--budget 100000] [--objectives fm tb]

`split` prints instead where one FM step of the serial runtime goes (sampling, with the
policy's forward passes apart; the reward; the training batch; the learner update), the
matmul arithmetic beneath it against this core's fp32 matmul rate, and, with --compile, the
learner's update with the loss under torch.compile against eager on the same batches:

    python benchmarks/hypergrid.py split [--batches 300] [--compile]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distgfn import serial  # noqa: E402
from distgfn.config import load_config  # noqa: E402
from distgfn.learning import Learner  # noqa: E402
from distgfn.metrics import read_metrics  # noqa: E402
from distgfn.rollout import RolloutWorker  # noqa: E402
from steps import timed_step  # noqa: E402  (benchmarks/steps.py)

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


class TimedPolicy:
    """The worker's policy, timed: seconds, calls and rows evaluated."""

    def __init__(self):
        self.seconds, self.calls, self.rows, self.policy = 0.0, 0, 0, None

    def __call__(self, features):
        start = time.perf_counter()
        out = self.policy(features)
        self.seconds += time.perf_counter() - start
        self.calls, self.rows = self.calls + 1, self.rows + len(features)
        return out


def split(batches: int, warmup: int = 50, compile_loss: bool = False) -> None:
    """Where one serial FM step goes, piece by piece, as SerialRun does it (on-policy: the
    worker samples with the learner's own model)."""
    cfg = load_config(None, SETTINGS + ["objective.name=fm", "learner.lr_schedule=constant"])
    serial.seed_everything(cfg.seed)
    learner = Learner(cfg)
    worker, timed = RolloutWorker(cfg, seed=cfg.seed, model=learner.model), TimedPolicy()
    s = cfg.sampler
    times = dict.fromkeys(["sampling", "reward", "training batch", "learner update"], 0.0)
    shapes, recorded = [], []
    for i in range(warmup + batches):
        start = time.perf_counter()
        worker.follow(learner.step)  # the policy's snapshot of the weights: part of sampling
        timed.policy, worker.policy = worker.policy, timed
        follow_s = time.perf_counter() - start
        batch, seconds = timed_step(worker, learner)
        if i == warmup - 1:
            timed.seconds, timed.calls, timed.rows = 0.0, 0, 0
        if i >= warmup:
            for key, dt in zip(times, (seconds[0] + follow_s, *seconds[1:])):
                times[key] += dt
            shapes.append((len(batch["feats"]), len(batch["row"]), len(batch["parent_row"])))
            recorded.append(batch)
    per = {key: 1000 * total / batches for key, total in times.items()}
    step_ms = sum(per.values())
    rows, states, edges = np.mean(shapes, axis=0)
    print(f"one serial FM step, mean of {batches} batches of {s.batch_size} after {warmup} (HyperGrid ndim 4 "
          f"height 8, MLP 2x256, one thread); a batch has {states:.0f} states, {edges:.0f} parent edges and "
          f"{rows:.0f} distinct feature rows")
    for key, ms in per.items():
        print(f"  {key:15s} {ms:6.3f} ms")
    print(f"    of sampling, the policy's forward: {1000 * timed.seconds / batches:.3f} ms in "
          f"{timed.calls / batches:.1f} calls of {timed.rows / timed.calls:.1f} rows")
    print(f"  {'step':15s} {step_ms:6.3f} ms = {1000 * s.batch_size / step_ms:,.0f} trajectories/s")
    floor(learner.model, rows, timed.rows / batches, s.batch_size, step_ms)
    if compile_loss:
        compared(learner, recorded)


def floor(model, rows: float, policy_rows: float, batch_size: int, step_ms: float) -> None:
    """The step's matmul arithmetic at this core's fp32 matmul rate: what nothing but
    arithmetic would take."""
    sizes = [(m.in_features, m.out_features) for m in model.body if isinstance(m, torch.nn.Linear)]
    first = (model.embed.num_embeddings, model.embed.embedding_dim)
    forward = sum(i * o for i, o in [first] + sizes)
    # Backward: a weight gradient for every layer, an input gradient for all but the first
    # (its input is the multi-hot vector, no parameter).
    learner_flop = 2 * rows * (2 * forward + sum(i * o for i, o in sizes))
    policy_flop = 2 * policy_rows * sum(i * o for i, o in sizes)  # the first layer is a gather
    rate = matmul_rate(int(rows), sizes[0][0])
    floor_ms = 1000 * (learner_flop + policy_flop) / rate
    print(f"  matmul arithmetic: learner {learner_flop / 1e6:.0f} MFLOP, policy {policy_flop / 1e6:.0f} MFLOP a batch; "
          f"this core's fp32 matmul: {rate / 1e9:.0f} GFLOP/s ({int(rows)} x {sizes[0][0]} @ {sizes[0][0]} x "
          f"{sizes[0][1]})")
    print(f"  at that rate with nothing else: {floor_ms:.3f} ms a batch = {1000 * batch_size / floor_ms:,.0f} "
          f"trajectories/s; the rest of the step, {step_ms - floor_ms:.3f} ms, is everything else")


def matmul_rate(rows: int, width: int, seconds: float = 1.0) -> float:
    a, w = torch.randn(rows, width), torch.randn(width, width)
    for _ in range(20):
        a @ w
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ w
        n += 1
    return 2 * rows * width * width * n / (time.perf_counter() - start)


def compared(learner: Learner, batches: list[dict]) -> None:
    """Learner.update on the same batches, with the objective's loss eager and under
    torch.compile (dynamic shapes: rows differ from batch to batch)."""
    eager = learner.objective
    results = {}
    for name, loss in (("eager", eager.loss), ("torch.compile", torch.compile(eager.loss, dynamic=True))):
        learner.objective = SimpleNamespace(loss=loss)
        start = time.perf_counter()
        for batch in batches[:10]:
            learner.update(batch)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for batch in batches[10:]:
            learner.update(batch)
        results[name] = 1000 * (time.perf_counter() - start) / (len(batches) - 10)
        print(f"  learner update, {name}: {results[name]:.3f} ms (its first 10 updates took {first:.1f} s)")
    learner.objective = eager
    print(f"  torch.compile / eager: {results['torch.compile'] / results['eager']:.2f}x the time")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", nargs="?", choices=["learning", "split"], default="learning")
    p.add_argument("--budget", type=int, default=100_000, help="trajectories per learning run")
    p.add_argument("--objectives", nargs="+", default=["fm", "tb"])
    p.add_argument("--batches", type=int, default=300, help="split: batches timed")
    p.add_argument("--compile", action="store_true", help="split: also the update with torch.compile")
    args = p.parse_args()
    if args.command == "split" and args.batches <= (10 if args.compile else 0):
        p.error(f"split needs --batches > {10 if args.compile else 0} (--compile times all but the first 10)")
    torch.set_num_threads(1)
    if args.command == "split":
        split(args.batches, compile_loss=args.compile)
        return
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
