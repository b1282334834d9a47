"""Learner updates per second by device and batch size: the HyperGrid MLP and the fragment GNN.

    python benchmarks/learner_device.py [--batches 16 64 256] [--seconds 5] [--data-dir DIR]

Each model trains on batches recorded once from its rollout worker (configs/hypergrid-4d.yaml
and configs/seh.yaml, the sEH proxy's data from --data-dir or $DISTGFN_DATA_DIR), stacked and
decoded as the learner actor does, on the CPU with one thread and, where CUDA is present, on
the GPU. Prints updates/s and trajectories/s for each (model, device, batch), and, where CUDA is
present, a short serial training run of configs/hypergrid-4d.yaml with `learner.device: cuda`
beside the same run on the CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from distgfn.batch import training_batch  # noqa: E402
from distgfn.config import load_config  # noqa: E402
from distgfn.learning import Learner  # noqa: E402
from distgfn.rollout import RolloutWorker, encode_records  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def recorded(cfg, n: int) -> list[bytes]:
    """n records from the config's rollout worker."""
    worker, out = RolloutWorker(cfg, seed=0), []
    while len(out) < n:
        out += encode_records(worker.sample(), f"r{len(out)}")
    return out[:n]


def updates_per_s(cfg, records: list[bytes], batch: int, seconds: float) -> float:
    """Updates/s over `seconds` after two warm-up updates, decoding included."""
    learner = Learner(cfg)
    batches = [records[i:i + batch] for i in range(0, len(records) - batch + 1, batch)]

    def step(i):
        learner.update(training_batch(batches[i % len(batches)]))

    for i in range(2):
        step(i)
    if learner.device.type == "cuda":
        torch.cuda.synchronize()
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step(done)
        done += 1
    if learner.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def training_run(device: str, steps: int = 1000) -> str:
    """A short serial run of hypergrid-4d with the learner on `device`: its speed and l1_exact."""
    import tempfile

    from distgfn import serial
    from distgfn.metrics import read_metrics

    cfg = load_config(CONFIGS / "hypergrid-4d.yaml", [f"learner.device={device}", f"learner.steps={steps}",
                                                      f"log.every={steps}", f"eval.every={steps}"])
    with tempfile.TemporaryDirectory() as run:
        learner = serial.train(cfg, Path(run), progress=lambda row, total: None)
        (row,) = read_metrics(Path(run) / "metrics.jsonl")
    return (f"hypergrid-4d serial, learner on {learner.device}: {steps} updates, {row['traj_per_s']:.0f} traj/s, "
            f"l1_exact {row['l1_exact']:.4f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--data-dir", default=os.environ.get("DISTGFN_DATA_DIR"))
    args = p.parse_args()
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    models = [("HyperGrid MLP (hypergrid-4d)", CONFIGS / "hypergrid-4d.yaml", [])]
    if args.data_dir:
        models.append(("fragment GNN (seh)", CONFIGS / "seh.yaml", [f"data.dir={args.data_dir}"]))
    else:
        print("fragment GNN: skipped (no --data-dir or DISTGFN_DATA_DIR for the sEH proxy's data)")
    print(f"torch {torch.__version__}, devices: {', '.join(devices)}"
          + (f" ({torch.cuda.get_device_name()})" if "cuda" in devices else ""))
    for name, path, sets in models:
        records = recorded(load_config(path, sets), 4 * max(args.batches))
        for device in devices:
            cfg = load_config(path, sets + [f"learner.device={device}"])
            for batch in args.batches:
                rate = updates_per_s(cfg, records, batch, args.seconds)
                print(f"{name:30s} {device:5s} batch {batch:4d}: {rate:8.1f} updates/s = {rate * batch:9.0f} traj/s",
                      flush=True)
    if "cuda" in devices:
        for device in devices:
            print(training_run(device), flush=True)
    else:
        print("no CUDA device here: the GPU figures and the learner.device=cuda training run are not measured")


if __name__ == "__main__":
    main()
