"""sEH proxy throughput on one CPU thread, split into featurization and network time.

Scores 256 molecules (the 12 reference molecules repeated) in batches of 64, several
rounds, and prints molecules per second per core for the median round. Target: >= 60.

    python benchmarks/seh_proxy.py [--data-dir DIR] [--molecules 256] [--batch 64] [--rounds 5]

DIR defaults to distgfn.data.data_dir("seh") ($DISTGFN_DATA_DIR, else the user cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from rdkit import Chem  # noqa: E402

from distgfn.chem.proxy import ProxyScorer, featurize  # noqa: E402
from distgfn.data import data_dir  # noqa: E402


def one_round(scorer: ProxyScorer, smiles: list[str], batch: int) -> tuple[float, float, float]:
    """(parse, featurize, network) seconds to score `smiles` in batches."""
    parse = feat = net = 0.0
    for start in range(0, len(smiles), batch):
        t0 = time.perf_counter()
        mols = [Chem.MolFromSmiles(s) for s in smiles[start:start + batch]]
        t1 = time.perf_counter()
        graphs = featurize(mols)
        t2 = time.perf_counter()
        with torch.inference_mode():
            scorer.model(graphs)
        t3 = time.perf_counter()
        parse, feat, net = parse + t1 - t0, feat + t2 - t1, net + t3 - t2
    return parse, feat, net


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--molecules", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    directory = data_dir("seh", args.data_dir)
    reference = json.loads((directory / "proxy_reference.json").read_text()) if (
        directory / "proxy_reference.json").is_file() else [{"smiles": "CC(=O)c1ncncc1N"}]
    smiles = [r["smiles"] for r in reference] * (args.molecules // len(reference) + 1)
    smiles = smiles[:args.molecules]
    scorer = ProxyScorer(directory)
    one_round(scorer, smiles, args.batch)  # warm-up
    rounds = [one_round(scorer, smiles, args.batch) for _ in range(args.rounds)]
    parse, feat, net = (statistics.median(r[i] for r in rounds) for i in range(3))
    n = len(smiles)
    atoms = sum(Chem.MolFromSmiles(s).GetNumAtoms() for s in smiles) / n
    print(f"{n} molecules ({atoms:.1f} heavy atoms on average), batches of {args.batch}, 1 thread, "
          f"median of {args.rounds} rounds")
    print(f"  parse SMILES : {1e3 * parse / n:7.3f} ms/molecule")
    print(f"  featurize    : {1e3 * feat / n:7.3f} ms/molecule")
    print(f"  network      : {1e3 * net / n:7.3f} ms/molecule")
    print(f"  total        : {n / (parse + feat + net):7.0f} molecules/s/core (target >= 60)")


if __name__ == "__main__":
    main()
