"""Every scored trajectory trained on: whole runs (learner included), the way a user runs them.

    python benchmarks/backpressure.py throughput   # 1 vs 8 actors at 50 ms, 1 vs 16 at 200 ms
    python benchmarks/backpressure.py throughput --policies keep   # the default policy only
    python benchmarks/backpressure.py learning     # l1_exact against scored trajectories, 3 seeds
    python benchmarks/backpressure.py learning --policies keep --seeds 6

Each run is `distgfn train configs/hypergrid-4d.yaml` with `runtime: ray` (or serial), side by
side in one process on one embedded Ray cluster, so the figures compare within one sitting.
Three policies for records the learner cannot keep up with:
- keep (the default): batches of sampler.batch_size (16), every record trained on, and the
  replay table holds the actors back while the learner is behind; nothing is dropped;
- grow: the same, with the learner's batch growing with the backlog up to learner.max_batch = 64;
- drop (what distgfn did before): batches of 16, and records more than
  learner.max_policy_lag = 20 versions old dropped at sampling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray  # noqa: E402

from distgfn import driver, serial  # noqa: E402
from distgfn.config import load_config  # noqa: E402
from distgfn.metrics import read_metrics  # noqa: E402
from paired import ratio_interval  # noqa: E402  (benchmarks/paired.py)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "hypergrid-4d.yaml"
POLICIES = {"keep": [], "grow": ["learner.max_batch=64"], "drop": ["learner.max_policy_lag=20"]}
WORKER_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


class Stop(KeyboardInterrupt):
    """Ends a run between two metrics rows, as Ctrl-C would (a final checkpoint, then return)."""


def run(overrides: list[str], stop=lambda row: False) -> list[dict]:
    """One training run, ended early when stop(row) holds; its metrics rows."""
    cfg = load_config(CONFIG, overrides)
    runtime = serial if cfg.runtime == "serial" else driver

    def progress(row, total):
        if stop(row):
            raise Stop()

    with tempfile.TemporaryDirectory() as tmp:
        runtime.train(cfg, Path(tmp), progress=progress)
        return read_metrics(Path(tmp) / "metrics.jsonl")


def steady(rows: list[dict]) -> dict:
    """Rates over the rows after the first (start-up and warm-up left out)."""
    first, last = rows[0], rows[-1]
    dt = last["wall_s"] - first["wall_s"]
    later = rows[1:]
    return {"traj_per_s": (last["trajectories"] - first["trajectories"]) / dt,
            "updates_per_s": (last["step"] - first["step"]) / dt,
            "dropped": last["dropped_stale"], "fraction_trained": last["fraction_trained"],
            "lag": max(r["policy_lag_max"] or 0 for r in later),
            "held": sum(r["actor_held_frac"] for r in later) / len(later),
            "batch": sum(r["batch_mean"] or 0 for r in later) / len(later)}


def throughput(seconds: float = 45.0, policies=tuple(POLICIES)) -> None:
    """Trajectories/s of n actors against n times one actor's, learner included."""
    print(f"throughput (HyperGrid ndim 4, FM, batches of 16, learner included, {seconds:.0f} s per run, "
          f"{os.cpu_count()} cores)")
    for latency, counts in ((50, (1, 8)), (200, (1, 16))):
        base = None
        for n in counts:
            for policy in policies if n > 1 else ("keep",):
                rows = run(["runtime=ray", f"actors.num={n}", "actors.cpus=0.1", f"reward.latency_ms={latency}",
                            "learner.steps=1000000", "log.every=50", "eval.every=0"] + POLICIES[policy],
                           stop=lambda row: row["wall_s"] >= seconds)
                figures = steady(rows)
                base = base or figures["traj_per_s"]
                print(f"  {latency:3d} ms reward, {n:2d} actors, {policy}: {figures['traj_per_s']:6.0f} traj/s "
                      f"= {figures['traj_per_s'] / (n * base):.2f} x {n} x one actor; "
                      f"{figures['updates_per_s']:.0f} updates/s of {figures['batch']:.0f} records; "
                      f"dropped_stale {figures['dropped']}, fraction_trained {figures['fraction_trained']:.4f}, "
                      f"max lag {figures['lag']}, actors held {figures['held']:.0%}", flush=True)


def learning(budget: int = 100_000, target: float = 0.05, latency_ms: float = 50.0, policies=tuple(POLICIES),
             seeds=(0, 1, 2)) -> None:
    """Scored trajectories until l1_exact <= target: serial, and 8 actors with each policy, for
    each seed, then the median over the seeds of each. A constant learning rate, so that runs
    with different batch sizes compare per trajectory; the serial run has no reward latency
    (on-policy, what it learns per trajectory does not depend on it). One seed's figure moves
    by about 10% with the seed, so compare medians."""
    print(f"learning (HyperGrid ndim 4, FM, constant lr, 8 actors with a {latency_ms:g} ms reward, "
          f"to l1_exact <= {target}, budget {budget} trajectories, seeds {list(seeds)})")
    common = ["learner.steps=1000000", "learner.lr_schedule=constant", "log.every=25", "eval.every=25"]
    actors = ["runtime=ray", "actors.num=8", "actors.cpus=0.1", f"reward.latency_ms={latency_ms}"]
    runs = [("serial", ["runtime=serial"])] + [(f"8 actors, {p}", actors + POLICIES[p]) for p in policies]
    needed: dict[str, list[int]] = {name: [] for name, _ in runs}
    for seed in seeds:
        for name, extra in runs:
            rows = run(common + extra + [f"seed={seed}"],
                       stop=lambda row: row["l1_exact"] <= target or row["trajectories"] >= budget)
            hit = next((r for r in rows if r["l1_exact"] <= target), None)
            needed[name].append(hit["trajectories"] if hit else budget)
            where = f"reached after {hit['trajectories']} trajectories ({hit['wall_s']:.0f} s)" if hit else "not reached"
            last = rows[-1]
            print(f"  seed {seed}, {name:15s}: {where}; last l1_exact {last['l1_exact']:.4f} at {last['trajectories']} "
                  f"trajectories, step {last['step']}; dropped_stale {last.get('dropped_stale', 0)}, fraction_trained "
                  f"{last['fraction_trained']:.4f}", flush=True)
    serial_median = statistics.median(needed["serial"])
    for name, counts in needed.items():
        median = statistics.median(counts)
        print(f"  {name:15s}: median {median:,.0f} trajectories ({median / serial_median:.2f} x serial), "
              f"range {min(counts):,}-{max(counts):,}{paired_ratio(counts, needed['serial'])}", flush=True)


def paired_ratio(counts: list[int], serial_counts: list[int]) -> str:
    """The geometric mean over seeds of (this run's count / serial's for the same seed), with a
    95% t-interval: whether a run kind needs more scored trajectories than serial, told apart
    from the seed-to-seed spread."""
    interval = None if counts is serial_counts else ratio_interval(counts, serial_counts)
    if interval is None:
        return ""
    mean, low, high = interval
    return f"; per-seed ratio to serial: geometric mean {mean:.3f} (95% interval {low:.3f}-{high:.3f})"


PARTS = {"throughput": throughput, "learning": learning}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("parts", nargs="*", choices=[*PARTS, []], default=list(PARTS))
    p.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    p.add_argument("--seeds", type=int, default=3, help="learning: seeds 0 .. N-1")
    args = p.parse_args()
    ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env=WORKER_ENV, log_to_driver=False)
    try:
        for name in args.parts:
            if name == "throughput":
                throughput(policies=args.policies)
            else:
                learning(policies=args.policies, seeds=range(args.seeds))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
