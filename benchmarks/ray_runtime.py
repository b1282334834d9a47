"""Figures of the Ray runtime. Each part prints its own lines; run one or all:

    python benchmarks/ray_runtime.py scaling     # traj/s with 1..16 rollout actors, 50 ms reward
    python benchmarks/ray_runtime.py broadcast   # publish -> every actor holds it, 1M parameters
    python benchmarks/ray_runtime.py learning    # 2 actors vs serial to l1_exact <= 0.05, ndim 4
    python benchmarks/ray_runtime.py learner     # learner updates/s and transitions/s (CPU, GPU if any)
    python benchmarks/ray_runtime.py records     # encoded bytes per replay record, ndim 4

Each starts its own local Ray cluster (logical CPUs sized to the actors; the machine's cores
are what they are) and never joins another.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from distgfn.config import load_config  # noqa: E402
from distgfn.messages import Published  # noqa: E402
from distgfn.metrics import read_metrics  # noqa: E402

GRID4 = ["env.options.ndim=4", "env.options.height=8", "sampler.batch_size=16", "model.options.hidden=256", "model.options.layers=2"]
WORKER_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


def start_ray(num_cpus: int) -> None:
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=WORKER_ENV,
             log_to_driver=False)


def make_actors(cfg, n: int, replay, pool=None):
    from actors.rollout import RolloutActor

    actors = [RolloutActor.options(num_cpus=0).remote(cfg, seed=i + 1, name=f"a{i}", replay=replay,
                                                      insert_timeout_s=60, reward_workers=pool) for i in range(n)]
    ray.get([a.version.remote() for a in actors])  # wait until every actor is up
    return actors


def make_replay(capacity: int = 1_000_000):
    from actors.replay import ReplayActor

    return ReplayActor.options(num_cpus=0).remote(capacity=capacity)


def scaling(counts=(1, 2, 4, 8, 16), seconds: float = 10.0, objective: str = "fm") -> None:
    """Rollout throughput: actors sample, score (50 ms per batch of 16) and insert, back to back."""
    cfg = load_config(None, GRID4 + ["reward.latency_ms=50", f"objective.name={objective}"])
    start_ray(2)
    print(f"scaling ({objective}, HyperGrid ndim 4, reward latency 50 ms per batch of 16, "
          f"{seconds:.0f} s per point, no learner running)")
    print_scaling(cfg, counts, seconds)
    ray.shutdown()


def print_scaling(cfg, counts, seconds: float) -> None:
    """For each count of actors: their throughput, against that count times one actor's. As in
    a run, the actors sample with one published version of the weights (one shared copy in
    the object store, not a private model each)."""
    from distgfn.tasks import make_env
    from distgfn.models import get_weights
    from distgfn.tasks import make_model

    weights = ray.put(get_weights(make_model(cfg, make_env(cfg))))
    base = None
    for n in counts:
        replay = make_replay()
        ray.get(replay.publish.remote(Published(0, [weights])))
        actors = make_actors(cfg, n, replay)
        rate = sample_for(actors, replay, seconds)
        base = base or rate
        print(f"  {n:2d} actors: {rate:7.0f} traj/s  ideal {n * base:7.0f}  efficiency {rate / (n * base):.0%}")
        for a in actors + [replay]:
            ray.kill(a)


def sample_for(actors, replay, seconds: float, report_s: float = 1.0, warmup_s: float = 3.0) -> float:
    """Trajectories per second into the replay table (its insert counter, one record per
    trajectory), with one run call always in flight per actor, after a warm-up."""
    inflight = {a.run.remote(report_s): a for a in actors}

    def keep_sampling(until: float) -> None:
        while (left := until - time.perf_counter()) > 0:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=left)
            for ref in ready:
                actor = inflight.pop(ref)
                ray.get(ref)
                inflight[actor.run.remote(report_s)] = actor

    def inserted() -> int:
        return ray.get(replay.stats.remote())["inserted"]

    keep_sampling(time.perf_counter() + warmup_s)
    t0, n0 = time.perf_counter(), inserted()
    keep_sampling(t0 + seconds)
    return (inserted() - n0) / (time.perf_counter() - t0)


def broadcast(counts=(1, 4, 16), rounds: int = 30) -> None:
    """Time from ray.put of a new version until every actor has loaded it."""
    from distgfn.tasks import make_env
    from distgfn.models import get_weights
    from distgfn.tasks import make_model

    cfg = load_config(None, GRID4 + ["model.options.hidden=700", "model.options.layers=3"])
    model = make_model(cfg, make_env(cfg))
    params = sum(p.numel() for p in model.parameters())
    start_ray(2)
    print(f"broadcast ({params / 1e6:.2f}M parameters, {4 * params / 1e6:.1f} MB float32, median of {rounds})")
    for n in counts:
        actors = make_actors(cfg, n, make_replay())
        times = []
        for version in range(1, rounds + 1):
            for p in model.parameters():
                p.data.add_(0.001)
            weights = get_weights(model)
            start = time.perf_counter()
            ref = ray.put(weights)
            held = ray.get([a.adopt.remote(Published(version, [ref])) for a in actors])
            times.append(time.perf_counter() - start)
            assert held == [version] * n
        floor = fetch_floor(n, weights, rounds)
        print(f"  {n:2d} actors: {1000 * np.median(times):6.1f} ms  (p90 {1000 * np.percentile(times, 90):.1f} ms); "
              f"Ray floor (put + fetch by a bare actor) {1000 * floor:.1f} ms")
        for a in actors:
            ray.kill(a)
    ray.shutdown()


@ray.remote(num_cpus=0)
class BareFetcher:
    def fetch(self, refs: list) -> int:
        return len(ray.get(refs[0]))


def fetch_floor(n: int, weights: dict, rounds: int) -> float:
    """The same put and fetch by actors that do nothing else: what Ray itself costs here."""
    fetchers = [BareFetcher.remote() for _ in range(n)]
    ray.get([f.fetch.remote([ray.put({})]) for f in fetchers])
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        ref = ray.put(weights)
        ray.get([f.fetch.remote([ref]) for f in fetchers])
        times.append(time.perf_counter() - start)
    for f in fetchers:
        ray.kill(f)
    return float(np.median(times))


def learning(budget: int = 100_000, target: float = 0.05, latency_ms: float = 0.0) -> None:
    """Serial against 2 rollout actors: trajectories and wall time until l1_exact <= target."""
    from distgfn import driver, serial

    common = GRID4 + [f"learner.steps={budget // 16}", "log.every=125", "eval.every=125",
                      f"reward.latency_ms={latency_ms}"]
    print(f"learning (FM, HyperGrid ndim 4, reward latency {latency_ms:g} ms per batch, "
          f"to l1_exact <= {target}, budget {budget} trajectories)")
    for name, runtime, extra in [("serial", serial, ["runtime=serial"]),
                                 ("2 actors", driver, ["runtime=ray", "actors.num=2", "ray.num_cpus=2"])]:
        cfg = load_config(None, common + extra)
        with tempfile.TemporaryDirectory() as tmp:
            runtime.train(cfg, Path(tmp), progress=lambda row, total: None)
            rows = read_metrics(Path(tmp) / "metrics.jsonl")
        hit = next((r for r in rows if r.get("l1_exact", 1) <= target), None)
        final = rows[-1]
        where = (f"reached after {hit['trajectories']} trajectories, {hit['wall_s']:.1f} s wall"
                 if hit else "not reached")
        print(f"  {name:8s}: {where}; final l1_exact {final['l1_exact']:.4f} after "
              f"{final['trajectories']} trajectories, {final['wall_s']:.1f} s")


def learner_speed(updates: int = 300) -> None:
    """Learner updates/s and transitions/s on stacked replay records (decode + stack + update)."""
    from distgfn.batch import read_record, stack_batches
    from distgfn.learning import Learner
    from distgfn.rollout import RolloutWorker, encode_records

    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for batch_size in (16, 256):
        cfg = load_config(None, GRID4 + [f"sampler.batch_size={batch_size}"])
        worker = RolloutWorker(cfg, seed=0)
        records = [r for _ in range(8) for r in encode_records(worker.sample(), "b")]
        for device in devices:
            learner = Learner(load_config(None, GRID4 + [f"sampler.batch_size={batch_size}",
                                                         f"learner.device={device}"]))
            rng = np.random.default_rng(0)
            batches = [[records[i] for i in rng.integers(0, len(records), batch_size)] for _ in range(updates)]
            rows, start = 0, None
            for i, chosen in enumerate(batches):
                if i == 20:  # warm-up done
                    if device == "cuda":
                        torch.cuda.synchronize()
                    start, rows = time.perf_counter(), 0
                batch = stack_batches([read_record(b) for b in chosen])
                rows += len(batch["row"])
                learner.update(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - start
            n = updates - 20
            print(f"learner on {device}, batch {batch_size}: {n / dt:7.1f} updates/s, "
                  f"{rows / dt:9.0f} transitions/s, {n * batch_size / dt:8.0f} trajectories/s")


def record_size(steps: int = 1500) -> None:
    """Encoded bytes per trajectory record, under a policy trained for `steps` updates (trained
    policies take longer trajectories than the near-uniform initial one)."""
    from distgfn import serial
    from distgfn.rollout import RolloutWorker, encode_records

    for objective in ("fm", "tb"):
        cfg = load_config(None, GRID4 + [f"objective.name={objective}", f"learner.steps={steps}",
                                         f"log.every={steps}", "eval.every=0"])
        with tempfile.TemporaryDirectory() as tmp:
            learner = serial.train(cfg, Path(tmp), progress=lambda row, total: None)
        worker = RolloutWorker(cfg, seed=0, model=learner.model)
        sizes, lengths = [], []
        for _ in range(50):
            rollout = worker.sample()
            sizes += [len(r) for r in encode_records(rollout, "x")]
            lengths.append(len(rollout.batch["row"]) / len(rollout.objects))
        print(f"records ({objective}, ndim 4, policy after {steps} updates, mean trajectory length "
              f"{np.mean(lengths) - 1:.1f}): mean {np.mean(sizes):.0f} bytes, max {max(sizes)} bytes, "
              f"over {len(sizes)} records")


PARTS = {"scaling": scaling, "broadcast": broadcast, "learning": learning, "learner": learner_speed,
         "records": record_size}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("parts", nargs="*", choices=[*PARTS, []], default=list(PARTS))
    p.add_argument("--budget", type=int, default=100_000, help="learning: trajectories per run")
    p.add_argument("--latency-ms", type=float, default=0.0, help="learning: reward latency per batch")
    args = p.parse_args()
    for name in args.parts:
        if name == "learning":
            learning(args.budget, latency_ms=args.latency_ms)
        else:
            PARTS[name]()


if __name__ == "__main__":
    main()
