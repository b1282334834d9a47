"""Checkpoint cost: time and bytes for a 100k-record replay table and a 1M-parameter learner.

    python benchmarks/checkpoint.py [--records 100000]

Measures what the driver does per checkpoint, in one process: serialize the learner state
and the replay table state, and write them with distgfn.checkpoint.save (fsync included).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from distgfn import checkpoint  # noqa: E402
from distgfn.config import load_config  # noqa: E402
from distgfn.learning import Learner  # noqa: E402
from distgfn.replay import ReplayTable, parse_record  # noqa: E402
from distgfn.rollout import RolloutWorker, encode_records  # noqa: E402

GRID4 = ["env.options.ndim=4", "env.options.height=8", "sampler.batch_size=16"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=100_000)
    n = p.parse_args().records
    torch.set_num_threads(1)
    cfg = load_config(None, GRID4 + ["model.options.hidden=700", "model.options.layers=3"])
    learner = Learner(cfg)
    params = sum(x.numel() for x in learner.model.parameters())
    worker = RolloutWorker(load_config(None, GRID4), seed=0)
    table = ReplayTable(capacity=n)
    while table.size < n:
        table.insert([parse_record(b) for b in encode_records(worker.sample(), f"b{table.size}")])
    learner.update(worker.sample().batch)  # Adam's moments exist from the first update on
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        files = {"learner.pt": checkpoint.state_to_bytes(learner.state()),
                 "replay.pt": checkpoint.state_to_bytes(table.state())}
        serialized = time.perf_counter()
        checkpoint.save(tmp, 1, files)
        written = time.perf_counter()
        step, loaded = checkpoint.load_latest(tmp)
        restored = ReplayTable(capacity=n)
        restored.restore(checkpoint.state_from_bytes(loaded["replay.pt"]))
        read = time.perf_counter()
    sizes = {k: len(v) / 1e6 for k, v in files.items()}
    print(f"learner {params / 1e6:.2f}M parameters: {sizes['learner.pt']:.1f} MB; "
          f"replay {n} records: {sizes['replay.pt']:.1f} MB")
    print(f"serialize {serialized - start:.2f} s, write with fsync {written - serialized:.2f} s, "
          f"read + verify + restore the table {read - written:.2f} s")


if __name__ == "__main__":
    main()
