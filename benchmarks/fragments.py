"""Cost of the fragment environment per molecule, on one CPU thread, against the sEH proxy's
~16 ms per molecule (which should stay the bottleneck).

Prints ms per molecule for: random-policy rollouts (masks, step, sampling), parents() of every
visited state, to_mol + canonical SMILES of the terminal states, and a FragmentGNN forward
(hidden 128, 3 layers) on the visited states and on visited states plus parents (what flow
matching evaluates). Batch 16, max_fragments 8; a uniform policy over valid actions almost
always grows to 8 fragments, the worst case.

    python benchmarks/fragments.py [--blocks PATH] [--rounds 50]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distgfn.batch import unique_rows  # noqa: E402
from distgfn.chem.blocks import load_blocks  # noqa: E402
from distgfn.chem.fragment_model import FragmentGNN  # noqa: E402
from distgfn.envs.fragments import FragmentEnv  # noqa: E402
from distgfn.sampling import sample_trajectories  # noqa: E402

DEFAULT_BLOCKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "seh" / "blocks_PDB_105.json"


def timed(fn, rounds: int) -> tuple[float, object]:
    """(median seconds per call over `rounds`, the last result)."""
    times, out = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--blocks", type=Path, default=DEFAULT_BLOCKS)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-fragments", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    env = FragmentEnv(load_blocks(args.blocks), min_fragments=2, max_fragments=args.max_fragments)
    rng = np.random.default_rng(0)
    n = args.batch

    def uniform(states):
        return np.zeros((len(states), env.n_actions))

    rollout_s, trajs = timed(lambda: sample_trajectories(env, uniform, n, rng), args.rounds)
    keep = np.arange(trajs.states.shape[1])[None, :] <= trajs.lengths[:, None]
    states = trajs.states[keep]
    parents_s, (parents, _, _) = timed(lambda: env.parents(states), args.rounds)
    smiles_s, _ = timed(lambda: env.smiles(trajs.final), args.rounds)
    masks_s, _ = timed(lambda: env.masks(states), args.rounds)

    model = FragmentGNN.for_env(env).eval()
    feats, _ = unique_rows(np.concatenate([states, parents]))
    with torch.inference_mode():
        forward_s, _ = timed(lambda: model(torch.from_numpy(states)), args.rounds)
        forward_fm_s, _ = timed(lambda: model(torch.from_numpy(feats)), args.rounds)

    print(f"FragmentEnv: {env.n_blocks} blocks, max_fragments {env.max_fragments}, {env.n_actions} actions; "
          f"batch {n}, mean length {trajs.lengths.mean():.1f} actions, {len(states)} visited states, "
          f"{len(parents)} parent pairs, {len(feats)} distinct states for FM; torch threads 1")
    rows = [("rollout (masks + step + sampling)", rollout_s),
            ("masks() of visited states (recomputed once for the batch)", masks_s),
            ("parents() of visited states", parents_s),
            ("to_mol + SMILES of terminals", smiles_s),
            ("FragmentGNN forward, visited states", forward_s),
            ("FragmentGNN forward, visited + parents", forward_fm_s)]
    for name, seconds in rows:
        print(f"  {name:<58} {1000 * seconds / n:7.3f} ms/molecule")
    env_s = rollout_s + masks_s + parents_s + smiles_s
    print(f"  {'environment total (rollout + masks + parents + SMILES)':<58} {1000 * env_s / n:7.3f} ms/molecule")


if __name__ == "__main__":
    main()
