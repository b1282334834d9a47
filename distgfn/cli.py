"""The `distgfn` command: train, sample, data fetch."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from distgfn.config import ConfigError, load_config, save_config
from distgfn.data import DataError
from distgfn.rewards import RewardError
from distgfn.signals import stop_on_sigterm


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    stop_on_sigterm()
    try:
        return args.func(args)
    except (ConfigError, DataError, RewardError, RunDirError, TimeoutError) as e:
        print(f"distgfn: error: {e}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distgfn", description="Train GFlowNets against expensive rewards.")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a GFlowNet from a YAML config, or resume a run")
    t.add_argument("config", nargs="?", help="YAML config file, e.g. configs/hypergrid.yaml")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue RUN_DIR from its newest usable checkpoint (its config.yaml, plus --set)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--run-dir", type=Path, help="output directory (default runs/<config>-<time>)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw objects from a trained run's policy")
    s.add_argument("run_dir", type=Path)
    s.add_argument("-n", type=int, required=True, help="number of objects")
    s.add_argument("--out", type=Path, help="write JSON lines here instead of stdout")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)

    d = sub.add_parser("data", help="manage published data files").add_subparsers(required=True, metavar="ACTION")
    f = d.add_parser("fetch", help="download and verify a dataset (e.g. seh)")
    f.add_argument("name", help="dataset name, e.g. seh")
    f.add_argument("--dir", type=Path, help="destination (default: $DISTGFN_DATA_DIR if set, else the user cache ~/.cache/distgfn/NAME)")
    f.add_argument("--base-url", help="download from this mirror instead of the published URLs")
    f.set_defaults(func=cmd_data_fetch)
    return p


class RunDirError(ValueError):
    """A run directory is missing, incomplete, or already holds a run."""


def cmd_train(args) -> int:
    from distgfn import driver, serial

    if (args.config is None) == (args.resume is None):
        raise RunDirError("give either CONFIG or --resume RUN_DIR")
    if args.resume:
        return resume(args)
    cfg = load_config(args.config, args.set)
    run_dir = args.run_dir or Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / "metrics.jsonl").exists():
        raise RunDirError(f"{run_dir} already holds a run (metrics.jsonl); choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    print(f"distgfn: training {cfg.objective.name} on {cfg.env.name} ({cfg.runtime} runtime), "
          f"run directory {run_dir}", file=sys.stderr)
    (serial if cfg.runtime == "serial" else driver).train(cfg, run_dir)
    print(f"distgfn: done; model in {run_dir / 'model.pt'}", file=sys.stderr)
    return 0


def resume(args) -> int:
    from distgfn import driver, serial
    from distgfn.checkpoint import CheckpointError

    if not (args.resume / "config.yaml").exists():
        raise RunDirError(f"{args.resume / 'config.yaml'} not found; is {args.resume} a run directory?")
    cfg = load_config(args.resume / "config.yaml", args.set)
    save_config(cfg, args.resume / "config.yaml")
    try:
        (serial if cfg.runtime == "serial" else driver).train(cfg, args.resume, resume=True)
    except CheckpointError as e:
        raise RunDirError(str(e)) from None
    print(f"distgfn: done; model in {args.resume / 'model.pt'}", file=sys.stderr)
    return 0


def cmd_sample(args) -> int:
    from distgfn.rewards import log_rewards
    from distgfn.rollout import RolloutWorker

    for name in ("config.yaml", "model.pt"):
        if not (args.run_dir / name).exists():
            raise RunDirError(f"{args.run_dir / name} not found; is {args.run_dir} a finished run directory?")
    if args.n < 1:
        raise RunDirError(f"-n must be >= 1; got {args.n}")
    cfg = load_config(args.run_dir / "config.yaml", ["sampler.epsilon=0", "sampler.temperature=1", "sampler.batch_size=1024"])
    worker = RolloutWorker(cfg, seed=args.seed)
    worker.model.load_state_dict(torch.load(args.run_dir / "model.pt", map_location="cpu", weights_only=True))
    out = open(args.out, "w") if args.out else sys.stdout
    env, left = worker.env, args.n
    while left > 0:
        objects = worker.sample().objects[:left]
        log_r = log_rewards(worker.reward, objects, env.keys, cfg.reward.beta)
        for x, key, lr in zip(env.objects(objects), env.keys(objects), log_r.tolist()):
            out.write(json.dumps({"x": x, "key": key, "log_reward": lr}) + "\n")
        left -= len(objects)
    if args.out:
        out.close()
    return 0


def cmd_data_fetch(args) -> int:
    from distgfn import data

    dest = args.dir or data.data_dir(args.name)
    data.fetch(args.name, dest, base_url=args.base_url, progress=lambda line: print(line, file=sys.stderr))
    print(f"distgfn: {args.name} data in {dest}; use it with DISTGFN_DATA_DIR={dest} or data.dir", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
