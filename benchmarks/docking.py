"""Cost of real docking against sEH on one core: receptor maps, ligand preparation, docking.

Prints the time to build a VinaDocker (receptor maps, once per worker), ligand preparation
per molecule (ETKDGv3 + MMFF94 + meeko), and Vina docking CPU seconds per molecule at each
evaluation budget with exhaustiveness 1, on 8 drug-like molecules (two of them sEH
inhibitors), with each molecule's score.

    python benchmarks/docking.py [--data-dir DIR] [--evals 50000 200000] [--exhaustiveness 1]

DIR defaults to distgfn.data.data_dir("seh") ($DISTGFN_DATA_DIR, else the user cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

from distgfn.chem.docking import VinaDocker, prepare_ligand  # noqa: E402
from distgfn.data import data_dir  # noqa: E402

MOLECULES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "ibuprofen": "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
    "caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "DCU (sEH inhibitor)": "O=C(NC1CCCCC1)NC1CCCCC1",
    "t-AUCB (sEH inhibitor)": "OC(=O)c1ccc(O[C@H]2CC[C@H](CC2)NC(=O)NC23CC4CC(CC(C4)C3)C2)cc1",
    "proxy ref. 10": "O=c1[nH]cnc2c1NC(C1CC(O)CN1)CN2",
    "blocks: pyridine-piperidine-naphthalene": "c1ccc2cc(CC(=O)N3CCC(c4ccncc4)CC3)ccc2c1",
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=None)
    p.add_argument("--evals", type=int, nargs="+", default=[50_000, 200_000])
    p.add_argument("--exhaustiveness", type=int, default=1)
    args = p.parse_args()
    directory = data_dir("seh", args.data_dir)

    docker, wall, cpu = timed(VinaDocker, directory, exhaustiveness=args.exhaustiveness, max_evals=args.evals[0])
    print(f"receptor maps (VinaDocker construction, once per worker): {cpu:.2f} s CPU ({wall:.2f} s wall)")

    ligands, prep = {}, []
    for name, smiles in MOLECULES.items():
        ligands[name], wall, cpu = timed(prepare_ligand, smiles, docker.settings.seed, docker.preparation)
        prep.append(cpu)
    print(f"ligand preparation: median {1e3 * statistics.median(prep):.0f} ms, max {1e3 * max(prep):.0f} ms "
          f"CPU per molecule ({len(prep)} molecules)")

    for evals in args.evals:
        # Same docker, same maps: only the search budget changes.
        docker.settings = replace(docker.settings, max_evals=evals)
        runs = [timed(docker.dock, pdbqt) for pdbqt in ligands.values()]
        cpu = [c for _, _, c in runs]
        print(f"docking, max_evals {evals}, exhaustiveness {args.exhaustiveness}: mean {statistics.mean(cpu):.3f} s, "
              f"median {statistics.median(cpu):.3f} s, max {max(cpu):.3f} s CPU per molecule "
              f"(wall mean {statistics.mean(w for _, w, _ in runs):.3f} s)")
        for name, (score, _, c) in zip(ligands, runs):
            print(f"  {score:7.2f} kcal/mol  {c:6.3f} s  {name}")


def timed(fn, *args, **kwargs):
    """(fn's result, wall seconds, CPU seconds of this process).

    CPU time is the cost on one core even when other work shares the machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu

if __name__ == "__main__":
    main()
