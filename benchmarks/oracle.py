"""Overhead of scoring through the gRPC oracle service instead of in-process, per batch.

Each round scores one batch in-process (`oracle.score`) and then through `OracleClient` to a
server on loopback, and prints the medians and the median of the per-round difference, the
overhead. Oracles: a trivial one (raw = len(key)), which shows the pure transport cost, and
the sEH proxy when its data is found ($DISTGFN_DATA_DIR or --data-dir). Target: overhead
under 2 ms per batch of 64.

    python benchmarks/oracle.py [--data-dir DIR] [--batch 64] [--calls 200]

The server runs in this process on its own gRPC threads, so it competes with the client for
the GIL: a server on another machine or process adds network time but not that contention.
On machines whose idle CPUs wake slowly (small VMs), the overhead grows with the oracle's own
time, because a call crosses several threads that have gone idle while the oracle computed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distgfn.config import load_config  # noqa: E402
from distgfn.oracle import OracleClient, serve  # noqa: E402

# Used when no sEH reference file is at hand: drug-sized SMILES, so the messages are realistic.
SMILES = ["CC(=O)Oc1ccccc1C(=O)O", "FC(F)(F)c1ncnc2[nH]cnc12", "N=C(N)c1c[nH]c2ccccc12", "c1nc(C2CCCCC2)cs1"]


class Lengths:
    """raw = len(key): no work, so what is measured is the transport."""

    def score(self, keys: list[str]) -> tuple[np.ndarray, list[str | None]]:
        return np.array([len(k) for k in keys], dtype=np.float64), [None] * len(keys)


def timed(score, keys: list[str]) -> float:
    start = time.perf_counter()
    score(keys)
    return time.perf_counter() - start


def compare(name: str, oracle, keys: list[str], calls: int) -> None:
    server, port = serve(oracle, "127.0.0.1", 0)
    try:
        with OracleClient([f"127.0.0.1:{port}"]) as client:
            for _ in range(5):  # warm-up: connection set-up, first-call allocations
                client.score(keys)
                oracle.score(keys)
            # Alternating the two paths round by round cancels drift (CPU frequency, other load).
            rounds = [(timed(oracle.score, keys), timed(client.score, keys)) for _ in range(calls)]
    finally:
        server.stop(None)
    local = statistics.median(r[0] for r in rounds)
    remote = statistics.median(r[1] for r in rounds)
    extra = sorted(r[1] - r[0] for r in rounds)
    print(f"{name:10s} batch {len(keys)}, {calls} calls: in-process {1e3 * local:8.3f} ms, gRPC {1e3 * remote:8.3f} ms, "
          f"overhead median {1e3 * extra[len(extra) // 2]:.3f} ms, p90 {1e3 * extra[int(0.9 * len(extra))]:.3f} ms "
          f"(target < 2 ms)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, help="sEH data (default: $DISTGFN_DATA_DIR; skipped when neither)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = args.data_dir or os.environ.get("DISTGFN_DATA_DIR")
    reference = Path(data) / "proxy_reference.json" if data else None
    smiles = [r["smiles"] for r in json.loads(reference.read_text())] if reference and reference.is_file() else SMILES
    keys = (smiles * (args.batch // len(smiles) + 1))[:args.batch]
    compare("trivial", Lengths(), keys, args.calls)
    if data:
        from distgfn.tasks import make_oracle

        oracle = make_oracle(load_config(None, ["env.name=fragments", "reward.name=seh_proxy", f"data.dir={data}"]))
        compare("seh_proxy", oracle, keys, args.calls)
    else:
        print("seh_proxy  skipped: set DISTGFN_DATA_DIR or --data-dir to the sEH data")


if __name__ == "__main__":
    main()
