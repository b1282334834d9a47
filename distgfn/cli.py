"""The `distgfn` command: train, sample, score, serve-reward, scale, status, check, report, data fetch."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from distgfn.config import ConfigError, load_config, save_config
from distgfn.data import DataError
from distgfn.control import ControlError
from distgfn.rewards import RewardError, RewardServiceError
from distgfn.signals import stop_on_sigterm


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    stop_on_sigterm()
    try:
        return args.func(args)
    except (ConfigError, ControlError, DataError, RewardError, RewardServiceError, RunDirError, TimeoutError) as e:
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

    c = sub.add_parser("score", help="score objects, one per line (SMILES for molecules), with a reward")
    c.add_argument("file", type=Path, help="input file, one object per line ('-' for stdin)")
    c.add_argument("--reward", required=True,
                   help="reward.name: seh_proxy, vina_seh, qed, sa, hypergrid, or package.module:NAME")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    c.set_defaults(func=cmd_score)

    o = sub.add_parser("serve-reward", help="serve a reward's oracle over gRPC (see distgfn.oracle)")
    o.add_argument("--reward", required=True, metavar="NAME",
                   help="reward.name (seh_proxy, vina_seh, qed, sa, hypergrid) or a user oracle as package.module:NAME")
    o.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="oracle calls run at once (default 1; more only for thread-safe oracles that wait on I/O)")
    o.add_argument("--max-calls", type=int, metavar="N",
                   help="Score calls in progress at most (running or waiting for the oracle; default 4 x "
                        "--concurrency); more are refused at once as busy, and clients retry elsewhere")
    o.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    o.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all; default 127.0.0.1)")
    o.add_argument("--port", type=int, default=50051, help="port (0: any free one; default 50051)")
    o.add_argument("--token-env", metavar="VAR", help="require 'authorization: Bearer $VAR' on every call")
    o.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain; serve TLS (with --tls-key)")
    o.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert")
    o.set_defaults(func=cmd_serve_reward)

    sc = sub.add_parser("scale", help="change the number of rollout actors or reward workers of a running job")
    sc.add_argument("run_dir", type=Path, help="the job's run directory")
    sc.add_argument("--actors", type=int, metavar="N", help="rollout actors")
    sc.add_argument("--reward-workers", type=int, metavar="N", help="reward workers (reward.mode pool)")
    sc.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job's answer (default 120)")
    sc.set_defaults(func=cmd_scale)

    st = sub.add_parser("status", help="where a running or finished job stands (from its run directory)")
    st.add_argument("run_dir", type=Path)
    st.add_argument("--json", action="store_true", help="print the status as one JSON object")
    st.set_defaults(func=cmd_status)

    ch = sub.add_parser("check", help="validate a config, its reward, checkpoint path and resources, before launching")
    ch.add_argument("config", help="YAML config file")
    ch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ch.set_defaults(func=cmd_check)

    r = sub.add_parser("report", help="plot a run's learning curves (PNG); molecules: best molecules and progress")
    r.add_argument("run_dir", type=Path)
    r.set_defaults(func=cmd_report)

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
    from distgfn import driver, serial, tasks

    if (args.config is None) == (args.resume is None):
        raise RunDirError("give either CONFIG or --resume RUN_DIR")
    if args.resume:
        return resume(args)
    cfg = load_config(args.config, args.set)
    tasks.build(cfg)  # a plugin that does not import or build, or an env that fails its check: exit 2 now
    run_dir = args.run_dir or Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / "metrics.jsonl").exists():
        raise RunDirError(f"{run_dir} already holds a run (metrics.jsonl); choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    print(f"distgfn: training {cfg.objective.name} on {cfg.env.name} ({cfg.runtime} runtime), "
          f"run directory {run_dir}", file=sys.stderr)
    (serial if cfg.runtime == "serial" else driver).train(cfg, run_dir)
    finish(cfg, run_dir)
    return 0


def finish(cfg, run_dir: Path) -> None:
    print(f"distgfn: done; model in {run_dir / 'model.pt'}", file=sys.stderr)
    write_task_report(cfg, run_dir)


def write_task_report(cfg, run_dir: Path) -> None:
    """The report the env's evaluator writes, if it has one (molecules: best molecules)."""
    from distgfn import tasks
    from distgfn.evaluation import evaluator_class

    report = evaluator_class(tasks.make_env(cfg)).report
    if report is not None:
        print(f"distgfn: {report(cfg, run_dir)}", file=sys.stderr)


def resume(args) -> int:
    from distgfn import driver, serial, tasks
    from distgfn.checkpoint import CheckpointError

    if not (args.resume / "config.yaml").exists():
        raise RunDirError(f"{args.resume / 'config.yaml'} not found; is {args.resume} a run directory?")
    cfg = load_config(args.resume / "config.yaml", args.set)
    tasks.build(cfg)
    save_config(cfg, args.resume / "config.yaml")
    try:
        (serial if cfg.runtime == "serial" else driver).train(cfg, args.resume, resume=True)
    except CheckpointError as e:
        raise RunDirError(str(e)) from None
    finish(cfg, args.resume)
    return 0


def cmd_sample(args) -> int:
    from distgfn.rollout import RolloutWorker

    for name in ("config.yaml", "model.pt"):
        if not (args.run_dir / name).exists():
            raise RunDirError(f"{args.run_dir / name} not found; is {args.run_dir} a finished run directory?")
    if args.n < 1:
        raise RunDirError(f"-n must be >= 1; got {args.n}")
    cfg = load_config(args.run_dir / "config.yaml", ["sampler.epsilon=0", "sampler.temperature=1", "sampler.batch_size=256"])
    worker = RolloutWorker(cfg, seed=args.seed)
    worker.model.load_state_dict(torch.load(args.run_dir / "model.pt", map_location="cpu", weights_only=True))
    out = open(args.out, "w") if args.out else sys.stdout
    env, left = worker.env, args.n
    while left > 0:
        rollout = worker.sample()
        objects, log_r = rollout.objects[:left], rollout.log_reward[:left]
        for i, (x, key) in enumerate(zip(env.objects(objects), env.keys(objects))):
            row = {"x": x, "key": key}
            error = rollout.scores.errors[i]
            row.update({"error": error} if error else {"log_reward": float(log_r[i]), "raw": float(rollout.scores.raw[i])})
            out.write(json.dumps(row) + "\n")
        left -= len(objects)
    if args.out:
        out.close()
    return 0


def cmd_score(args) -> int:
    """One JSON line per input line (an object's key: SMILES for molecules, "x1,x2" for
    HyperGrid): {"x", "log_reward", "raw"}, or {"x", "error"} for a line that cannot be
    scored; the other lines are still scored."""
    from distgfn import tasks
    from distgfn.rewards import log_of
    from distgfn.rewards.remote import BadAnswer, oracle_for, score_keys

    cfg = load_config(None, [f"reward.name={args.reward}", *args.set])
    oracle, transform = oracle_for(cfg), tasks.to_reward(tasks.reward_factory(cfg))
    text = sys.stdin.read() if str(args.file) == "-" else read_input(args.file)
    items = [line.strip() for line in text.splitlines() if line.strip()]
    for start in range(0, len(items), 256):
        part = items[start : start + 256]
        try:
            s = score_keys(oracle, transform, part)
        except BadAnswer as e:
            raise RewardError(f"reward {args.reward}: {e}") from None
        log_r = log_of(s, cfg.reward.beta)
        for x, lr, raw, error in zip(part, log_r.tolist(), s.raw.tolist(), s.errors):
            row = {"x": x, "error": error} if error else {"x": x, "log_reward": lr, "raw": raw}
            print(json.dumps(row), flush=True)
    return 0


def read_input(path: Path) -> str:
    if not path.exists():
        raise RunDirError(f"{path} not found")
    return path.read_text()


def cmd_serve_reward(args) -> int:
    """Serves the reward's oracle until Ctrl-C or SIGTERM; the bound address goes to stderr."""
    import os

    from distgfn.oracle import serve
    from distgfn.rewards.remote import served_oracle

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither")
    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        raise ConfigError(f"--token-env {args.token_env}: that environment variable is not set or empty")
    oracle = served_oracle(args.reward, args.set)
    server, port = serve(oracle, args.host, args.port, token=token,
                         tls=(args.tls_cert, args.tls_key) if args.tls_cert else None, concurrency=args.concurrency,
                         max_calls=args.max_calls)
    print(f"distgfn: serving reward {args.reward} on {args.host}:{port}", file=sys.stderr, flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through stop_on_sigterm
        print("distgfn: draining (health NOT_SERVING, new calls refused); calls in flight get 5 s to finish",
              file=sys.stderr, flush=True)
    finally:
        server.stop(grace=5).wait()
    return 0


def cmd_scale(args) -> int:
    """Asks a running job to scale (through its run directory) and waits for its answer."""
    from distgfn import control

    request_id = control.request_scale(args.run_dir, args.actors, args.reward_workers)
    done = control.wait_for_answer(args.run_dir, request_id, args.timeout)
    if "error" in done:
        raise ControlError(done["error"])
    pool = f" and {done['reward_workers']} reward workers" if done.get("reward_workers") else ""
    print(f"distgfn: {args.run_dir} now runs {done['actors']} rollout actors{pool} (from step {done['step']}); "
          f"leaving actors insert what they began before they go", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    from distgfn.status import format_status, run_status

    status = run_status(args.run_dir)
    print(json.dumps(status) if args.json else format_status(status))
    return 0


def cmd_check(args) -> int:
    """Prints what will run where; a problem is a ConfigError (exit status 2) naming it."""
    from distgfn.check import check

    for line in check(load_config(args.config, args.set)):
        print(line)
    print("distgfn: check passed", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    if not (args.run_dir / "config.yaml").exists():
        raise RunDirError(f"{args.run_dir / 'config.yaml'} not found; is {args.run_dir} a run directory?")
    cfg = load_config(args.run_dir / "config.yaml")
    if not (args.run_dir / "metrics.jsonl").exists():
        raise RunDirError(f"{args.run_dir / 'metrics.jsonl'} not found; the run has logged nothing yet")
    from distgfn.report import write_plots

    written = write_plots(args.run_dir, cfg)
    print(f"distgfn: plots in {', '.join(map(str, written))}", file=sys.stderr)
    write_task_report(cfg, args.run_dir)
    return 0


def cmd_data_fetch(args) -> int:
    from distgfn import data

    dest = args.dir or data.data_dir(args.name)
    data.fetch(args.name, dest, base_url=args.base_url, progress=lambda line: print(line, file=sys.stderr))
    print(f"distgfn: {args.name} data in {dest}; use it with DISTGFN_DATA_DIR={dest} or data.dir", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
