"""Figures of the molecule task with the sEH proxy. Each part prints its own lines:

    python benchmarks/seh.py split        # ms per molecule: rollout, featurization, reward, learner
    python benchmarks/seh.py throughput   # molecules/s end to end on Ray with 1 and 2 rollout actors
    python benchmarks/seh.py learning     # top-100 reward and modes against molecules generated,
                                          # trained (configs/seh.yaml) against a uniform random policy
    python benchmarks/seh.py objectives   # FM, TB and DB on configs/seh.yaml, the same molecule
                                          # budget: top-100 reward, modes and wall time, side by side

Data: DISTGFN_DATA_DIR (or --data-dir) pointing at the sEH files, or `distgfn data fetch seh`.
One torch thread everywhere, as the actors use.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distgfn.config import load_config  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "seh.yaml"


def config(data_dir, *overrides):
    return load_config(CONFIG, ([f"data.dir={data_dir}"] if data_dir else []) + list(overrides))


def split(data_dir, batches: int = 30, batch_size: int = 16) -> None:
    """Where a molecule's time goes, measured piece by piece in one process on one core."""
    from distgfn.learning import Learner
    from distgfn.rollout import RolloutWorker
    from steps import timed_step  # benchmarks/steps.py

    cfg = config(data_dir, f"sampler.batch_size={batch_size}")
    worker, learner = RolloutWorker(cfg, seed=0), Learner(cfg)
    worker.set_weights(*learner.weights())
    s = cfg.sampler
    times = {"rollout": 0.0, "featurize": 0.0, "reward": 0.0, "learner": 0.0}
    n = 0
    for i in range(batches + 3):
        batch, (sample_s, reward_s, batch_s, update_s) = timed_step(worker, learner)
        if i >= 3:  # warm-up batches left out
            for key, dt in zip(times, (sample_s, batch_s, reward_s, update_s)):
                times[key] += dt
            n += len(batch["log_reward"])
    print(f"time split, ms per molecule (batch {s.batch_size}, FM, model {cfg.model.options}, "
          f"{n} molecules, one core)")
    for key, total in times.items():
        print(f"  {key:10s} {1000 * total / n:7.2f}")
    framework = times["rollout"] + times["featurize"]
    print(f"  rollout + featurization / reward = {framework / times['reward']:.2f}")


def throughput(data_dir, steps: int = 400) -> None:
    """Molecules per second of whole runs on an embedded Ray cluster (2 CPUs: the learner and
    the actors share this machine's two cores)."""
    import ray

    from distgfn import driver
    from distgfn.metrics import read_metrics

    print(f"throughput on Ray, sEH proxy, {steps} learner steps per run (rows after the first)")
    for actors in (1, 2):
        cfg = config(data_dir, f"learner.steps={steps}", "log.every=50", "checkpoint.every=0",
                     f"actors.num={actors}", "actors.cpus=0.5")
        with tempfile.TemporaryDirectory() as run:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
            try:
                driver.train(cfg, Path(run), progress=lambda row, total: None)
            finally:
                ray.shutdown()
            rows = read_metrics(Path(run) / "metrics.jsonl")[1:]
        rate = np.median([r["traj_per_s"] for r in rows])
        updates = np.median([r["updates_per_s"] for r in rows])
        reward_ms = np.median([r["reward_latency_ms"] for r in rows])
        print(f"  {actors} actor(s): {rate:6.1f} molecules/s, {updates:5.1f} updates/s, "
              f"reward call {reward_ms:.1f} ms per batch of {cfg.actors.batch_size or cfg.sampler.batch_size}")


def learning(data_dir, molecules: int = 100_000) -> None:
    """The trained policy against a uniform random one, on the same molecule budget."""
    trained, _ = train_for(data_dir, molecules)
    baseline = random_policy(data_dir, molecules)
    print("learning curve, sEH proxy, beta 8 (top-100 mean R and modes; mode: R >= 0.9375, i.e. proxy >= 7.5,"
          " Tanimoto < 0.7)")
    print(f"  {'molecules':>9s} | {'trained top100':>14s} {'modes':>6s} | {'random top100':>13s} {'modes':>6s}")
    for point in checkpoints(molecules):
        a, b = curve_point(trained, point), curve_point(baseline, point)
        print(f"  {point:9d} | {fmt(a[0]):>14s} {a[1]:6d} | {fmt(b[0]):>13s} {b[1]:6d}")


def fmt(value):
    return "-" if value is None else f"{value:.3f}"


def checkpoints(total: int) -> list[int]:
    return sorted({min(total, p) for p in (1000, 5000, 10_000, 25_000, 50_000, 100_000, total)})


OBJECTIVE_OPTIONS = {"fm": "objective.options={leaf_coef: 10.0}", "tb": "objective.options={}", "db": "objective.options={}"}


def objectives(data_dir, molecules: int, names: list[str]) -> None:
    """Each objective on configs/seh.yaml (its FM options only for FM), the same molecule budget,
    one run after the other on the same embedded cluster settings."""
    runs = {}
    for name in names:
        rows, metrics = train_for(data_dir, molecules, f"objective.name={name}", OBJECTIVE_OPTIONS[name])
        runs[name] = (rows, metrics)
    print(f"objectives on configs/seh.yaml (Ray, 2 CPUs), {molecules} molecules each: top-100 mean R, modes "
          f"(R >= 0.9375, Tanimoto < 0.7) and wall seconds since the start of training")
    print(f"  {'molecules':>9s} | " + " | ".join(f"{n:>3s} top100  modes  wall" for n in names))
    for point in checkpoints(molecules):
        cells = []
        for name in names:
            rows, metrics = runs[name]
            top, modes = curve_point(rows, point)
            cells.append(f"{'':3s} {fmt(top):>6s} {modes:6d} {wall_at(metrics, point):5.0f}")
        print(f"  {point:9d} | " + " | ".join(cells))


def wall_at(metrics: list[dict], molecules: int) -> float:
    """Wall seconds when the run had generated `molecules`, interpolated between metrics rows."""
    points = [(0, 0.0)] + [(r["trajectories"], r["wall_s"]) for r in metrics]
    return float(np.interp(molecules, [p[0] for p in points], [p[1] for p in points]))


def train_for(data_dir, molecules: int, *overrides) -> tuple[list[dict], list[dict]]:
    """(scored molecules in the order generated, metrics rows) of one Ray run of configs/seh.yaml."""
    import ray

    from distgfn import driver
    from distgfn.chem.tracking import read_molecules
    from distgfn.metrics import read_metrics

    cfg = config(data_dir)
    steps = -(-molecules // cfg.sampler.batch_size)
    cfg = config(data_dir, f"learner.steps={steps}", "checkpoint.every=0", "log.every=100", *overrides)
    run = Path(tempfile.mkdtemp(prefix="seh-bench-"))
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        driver.train(cfg, run, progress=lambda row, total: print("   ", row["step"], row["trajectories"],
                                                                   row["top100_reward"], row["modes"], flush=True)
                     if row["step"] % 1000 == 0 else None)
    finally:
        ray.shutdown()
    print(f"  trained run ({cfg.objective.name}): {time.perf_counter() - start:.0f} s, run directory {run}")
    return [m for m in read_molecules(run / "molecules.jsonl") if "reward" in m], read_metrics(run / "metrics.jsonl")


def random_policy(data_dir, molecules: int) -> list[dict]:
    """Uniform over the valid actions at every step, scored by the same proxy."""
    from distgfn.rewards import score_objects
    from distgfn.rollout import RolloutWorker
    from distgfn.sampling import sample_trajectories

    cfg = config(data_dir)
    worker = RolloutWorker(cfg, seed=1)
    env = worker.env
    rows = []
    while len(rows) < molecules:
        trajs = sample_trajectories(env, lambda f: np.zeros((len(f), env.n_actions)), 256, worker.rng)
        log_r, scores = score_objects(worker.reward, trajs.final, env.keys, cfg.reward.beta)
        for smiles, r, raw in zip(env.objects(trajs.final), scores.reward, scores.raw):
            rows.append({"smiles": smiles, "reward": float(r), "raw": float(raw)})
    return rows[:molecules]


def curve_point(rows: list[dict], n: int) -> tuple[float | None, int]:
    from distgfn.chem.tracking import MoleculeTracker

    tracker = MoleculeTracker(mode_reward=0.9375)
    part = rows[:n]
    tracker.add([r["smiles"] for r in part], np.array([r["reward"] for r in part]), np.array([r["raw"] for r in part]))
    m = tracker.metrics()
    return m["top100_reward"], m["modes"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["split", "throughput", "learning", "objectives", "all"])
    p.add_argument("--data-dir", help="sEH data directory (default: DISTGFN_DATA_DIR or the user cache)")
    p.add_argument("--molecules", type=int, default=100_000, help="learning, objectives: molecule budget")
    p.add_argument("--objectives", nargs="+", default=["fm", "tb", "db"], choices=sorted(OBJECTIVE_OPTIONS))
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.part in ("split", "all"):
        for batch_size in (16, 64):
            split(args.data_dir, batch_size=batch_size)
    if args.part in ("throughput", "all"):
        throughput(args.data_dir)
    if args.part in ("learning", "all"):
        learning(args.data_dir, args.molecules)
    if args.part in ("objectives", "all"):
        objectives(args.data_dir, args.molecules, args.objectives)


if __name__ == "__main__":
    main()
