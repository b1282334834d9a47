"""Figures of expensive rewards at scale. Each part prints its own lines; run one or all:

    python benchmarks/rewards.py oracle   # traj/s, 1 vs 16 rollout actors on a gRPC oracle of 200 ms per batch
    python benchmarks/rewards.py vina     # traj/s, 1 vs 2 reward workers docking with Vina (~1 s a call)
    python benchmarks/rewards.py cache    # reward cache hit rate along a long sEH proxy run

`oracle` and `vina` measure sampling alone (rollout actors into a replay table with no rate
limit, no learner), as `ray_runtime.py scaling` does; `cache` trains. Each starts its own
local Ray cluster and never joins another. The sEH data comes from $DISTGFN_DATA_DIR or
--data-dir.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray  # noqa: E402

from distgfn.config import load_config  # noqa: E402
from distgfn.metrics import read_metrics  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ray_runtime import GRID4, make_actors, make_replay, print_scaling, sample_for, start_ray  # noqa: E402


def serve_reward(args: list[str]) -> tuple[subprocess.Popen, str]:
    """A `distgfn serve-reward` process and its address (it prints the port it bound)."""
    proc = subprocess.Popen([sys.executable, "-m", "distgfn", "serve-reward", "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(r"on (127\.0\.0\.1:\d+)", line)
        if found:
            return proc, found.group(1)
    raise RuntimeError(f"serve-reward exited with {proc.wait()}")


def oracle(counts=(1, 16), seconds: float = 20.0, latency_ms: float = 200.0) -> None:
    """HyperGrid ndim 4 (batches of 16), rewards from a served HyperGrid oracle that waits
    `latency_ms` per batch; one server process answering up to 64 calls at once."""
    proc, address = serve_reward(["--reward", "hypergrid", "--concurrency", "64", "--set", "env.options.ndim=4",
                                  "--set", f"reward.latency_ms={latency_ms}"])
    start_ray(2)
    try:
        for in_flight in (1, 2):
            cfg = load_config(None, GRID4 + ["reward.mode=remote", f"reward.addresses={address}",
                                             f"reward.in_flight={in_flight}"])
            print(f"gRPC oracle, {latency_ms:.0f} ms per batch of 16, reward.in_flight {in_flight}, "
                  f"{seconds:.0f} s per point:")
            print_scaling(cfg, counts, seconds)
    finally:
        ray.shutdown()
        proc.terminate()
        proc.wait()


def vina(data_dir: str, workers=(1, 2), seconds: float = 120.0, max_evals: int = 600_000, in_flight: int = 4) -> None:
    """Docking in a reward pool: one rollout actor (batches of 2 molecules, `in_flight` batches
    waiting) feeding 1 or 2 reward workers of one CPU each; no cache, so every molecule is docked.
    Docking times vary from molecule to molecule, so a worker whose queue runs dry waits for the
    other: a deeper queue (in_flight) keeps both busy."""
    from actors.reward import RewardActor

    cfg = load_config(None, ["env.name=fragments", "env.options.max_fragments=4", "reward.name=vina_seh", "reward.mode=pool",
                             f"reward.options.max_evals={max_evals}", "reward.cache_size=0", f"reward.in_flight={in_flight}",
                             "sampler.batch_size=2", f"data.dir={data_dir}", "model.options.hidden=128", "model.options.layers=3"])
    start_ray(2)
    print(f"Vina docking (max_evals {max_evals:,}), 1 rollout actor, batches of 2, reward.in_flight {in_flight}, "
          f"{seconds:.0f} s per point:")
    base = None
    try:
        for w in workers:
            pool = [RewardActor.options(num_cpus=1).remote(cfg) for _ in range(w)]
            replay = make_replay()
            actors = make_actors(cfg, 1, replay, pool)
            rate = sample_for(actors, replay, seconds, report_s=5.0, warmup_s=15.0)  # receptor maps first
            base = base or rate
            print(f"  {w} reward workers: {rate:6.3f} traj/s  ({rate / base:.2f}x one worker)")
            for a in actors + pool + [replay]:
                ray.kill(a)
    finally:
        ray.shutdown()


def cache(data_dir: str, steps: int = 4000) -> None:
    """`distgfn train configs/seh.yaml` for `steps` updates; the hit rate per metrics row."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "distgfn", "train", "configs/seh.yaml", "--run-dir", str(run_dir),
                        "--set", f"learner.steps={steps}", "--set", f"data.dir={data_dir}"], check=True,
                       stdout=subprocess.DEVNULL)
        rows = read_metrics(run_dir / "metrics.jsonl")
    print(f"reward cache along configs/seh.yaml ({steps} updates, {rows[-1]['trajectories']} trajectories, "
          f"{rows[-1]['wall_s']:.0f} s):")
    previous = {"reward_cache_hits": 0, "reward_cache_misses": 0}
    shown = rows[:: max(len(rows) // 10, 1)]
    for row in shown + ([rows[-1]] if shown[-1] is not rows[-1] else []):
        hits, misses = row["reward_cache_hits"], row["reward_cache_misses"]
        new = hits - previous["reward_cache_hits"] + misses - previous["reward_cache_misses"]
        recent = (hits - previous["reward_cache_hits"]) / new if new else 0.0
        print(f"  step {row['step']:5d}: {hits + misses:7d} lookups, hit rate {hits / max(hits + misses, 1):.1%} "
              f"overall, {recent:.1%} since the previous line; {row['reward_cache_size']} molecules cached")
        previous = row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("parts", nargs="*", default=["oracle", "vina", "cache"])
    p.add_argument("--data-dir", default=os.environ.get("DISTGFN_DATA_DIR"), help="sEH data (vina, cache)")
    p.add_argument("--seconds", type=float, help="seconds per measured point (oracle 20, vina 120)")
    p.add_argument("--steps", type=int, default=4000, help="cache: learner updates")
    p.add_argument("--in-flight", type=int, default=4, help="vina: reward.in_flight")
    args = p.parse_args()
    if {"vina", "cache"} & set(args.parts) and not args.data_dir:
        p.error("vina and cache need the sEH data: --data-dir or DISTGFN_DATA_DIR")
    for part in args.parts:
        if part == "oracle":
            oracle(seconds=args.seconds or 20.0)
        elif part == "vina":
            vina(args.data_dir, seconds=args.seconds or 120.0, in_flight=args.in_flight)
        elif part == "cache":
            cache(args.data_dir, steps=args.steps)
        else:
            p.error(f"unknown part {part!r}")


if __name__ == "__main__":
    main()
