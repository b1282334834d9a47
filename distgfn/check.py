"""`distgfn check CONFIG`: everything a launch would find wrong, found before launching.

    lines = check(load_config("configs/seh.yaml"))      # raises CheckError naming the problem
    print("\n".join(lines))                              # what will run where

It validates every key (load_config), builds the reward and scores a few random objects
with it (remote oracles: their health service), checks that the checkpoint location can be
written, and compares the resources asked for with those of the cluster the run would use
(the one at ray.address or RAY_ADDRESS, joined and left; else this machine).
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np

from distgfn.config import Config, ConfigError, cache_size, oracle_addresses


class CheckError(ConfigError):
    """The config is valid but the run could not start or would fail early; the message says why."""


def check(cfg: Config, run_dir: str = "RUN_DIR") -> list[str]:
    from distgfn import tasks

    lines = [f"config: valid ({cfg.objective.name} on {cfg.env.name}, reward {cfg.reward.name}, {cfg.runtime} runtime)"]
    task = tasks.build(cfg)
    caps = ", ".join(sorted(tasks.capabilities(task.env))) or "none"
    lines.append(f"env: {cfg.env.name} passed the consistency check (capabilities: {caps}); "
                 f"model: {type(task.model).__name__}, {sum(p.numel() for p in task.model.parameters()):,} parameters")
    lines.append(check_reward(cfg, task))
    lines.append(check_checkpoints(cfg, run_dir))
    lines += check_placement(cfg, cluster_resources(cfg))
    return lines


def check_reward(cfg: Config, task) -> str:
    """Scores a few random objects with the task's reward (built by tasks.build)."""
    if cfg.reward.mode == "remote":
        return check_oracles(cfg)
    from distgfn.rewards import make_reward, score_objects

    env = task.env
    try:
        reward = make_reward(cfg, env, task.reward)
        states = random_objects(env, 4)
        _, scores = score_objects(reward, states, env.keys, cfg.reward.beta)
    except Exception as e:  # any failure to build or call a reward is what this check reports
        raise CheckError(f"reward {cfg.reward.name!r} cannot be built or called: {type(e).__name__}: {e}") from None
    ok = int((~scores.failed).sum())
    return f"reward: {cfg.reward.name} scored {ok} of {len(states)} random objects"


def random_objects(env, n: int) -> np.ndarray:
    """n terminal states from uniformly random valid actions."""
    from distgfn.sampling import sample_trajectories

    def uniform(features):  # epsilon 1: the policy's output is ignored
        return np.zeros((len(features), env.n_actions))

    return sample_trajectories(env, uniform, n, np.random.default_rng(0), epsilon=1.0).final


def check_oracles(cfg: Config) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from distgfn.oracle import SERVICE, open_channel

    addresses = oracle_addresses(cfg)
    for address in addresses:
        with open_channel(address, cfg.reward.tls_ca, 1 << 20) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE),
                                                                   timeout=5)
            except grpc.RpcError as e:
                raise CheckError(f"reward oracle at {address} does not answer its health check: "
                                 f"{e.code().name}: {e.details()}") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise CheckError(f"reward oracle at {address} is not serving (health status {reply.status})")
    return f"reward: {cfg.reward.name} from {len(addresses)} oracle(s) serving at {', '.join(addresses)}"


def check_checkpoints(cfg: Config, run_dir: str) -> str:
    from distgfn import checkpoint

    root = checkpoint.root_for(cfg, run_dir) if cfg.checkpoint.path else None
    if root is None:
        return f"checkpoints: {run_dir}/checkpoints, every {cfg.checkpoint.every or 'end-of-run'} updates"
    probe = f".distgfn-check-{uuid.uuid4().hex}"
    try:
        store = checkpoint.store_for(root)
        store.write(f"{probe}/probe", b"ok")
        read_back = store.read(f"{probe}/probe")
        store.delete(f"{probe}/probe")
        store.tidy(probe)
        store.files()
    except Exception as e:  # a filesystem, permission or credentials error, whichever store it is
        raise CheckError(f"checkpoint.path {root}: cannot write and read it back: {type(e).__name__}: {e}") from None
    if read_back != b"ok":
        raise CheckError(f"checkpoint.path {root}: a file written there read back different")
    return f"checkpoints: {root} (writable), every {cfg.checkpoint.every or 'end-of-run'} updates"


def cluster_resources(cfg: Config) -> dict:
    """{"where", "CPU", "GPU"} of the Ray cluster the run would join, else of this machine."""
    if cfg.runtime == "serial":
        return {"where": "this process", "CPU": 1, "GPU": gpus_here()}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if not address:
        return {"where": "an embedded local Ray cluster on this machine", "CPU": os.cpu_count() or 1,
                "GPU": gpus_here()}
    import ray

    ray.init(address=address, logging_level="ERROR")
    try:
        found = ray.cluster_resources()
    finally:
        ray.shutdown()
    return {"where": f"the Ray cluster at {address}", "CPU": found.get("CPU", 0), "GPU": found.get("GPU", 0)}


def gpus_here() -> int:
    import torch

    return torch.cuda.device_count()


def check_placement(cfg: Config, found: dict) -> list[str]:
    device = cfg.learner.device
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= found["GPU"]:
            raise CheckError(f"learner.device={device!r} asks for GPU {index} but {found['where']} has "
                             f"{found['GPU']:g} GPU(s); use learner.device=auto or cpu")
    on_gpu = found["GPU"] >= 1 and device != "cpu"
    lines = [f"learner: {'a GPU' if on_gpu else 'CPU'} on {found['where']}"]
    if cfg.runtime == "serial":
        return lines + ["rollouts and rewards: in the same process (serial runtime)"]
    from distgfn.scaling import cpus_needed, reward_workers

    workers = reward_workers(cfg)
    need = cpus_needed(cfg, cfg.actors.num, workers)
    where = f" on nodes offering {cfg.ray.worker_resource!r}" if cfg.ray.worker_resource else ""
    lines.append(f"rollout actors: {cfg.actors.num} x {cfg.actors.cpus:g} CPU{where}, rewards {describe_rewards(cfg)}")
    lines.append(f"replay table: capacity {cfg.replay.capacity}; reward cache: {cache_size(cfg) or 'off'}")
    if need > found["CPU"] and "embedded" not in found["where"]:
        raise CheckError(f"the run asks for {need:g} CPUs (learner.cpus + actors.num * actors.cpus"
                         f"{' + reward.workers * reward.cpus_per_worker' if workers else ''}) but {found['where']} "
                         f"has {found['CPU']:g}")
    share = "" if need <= found["CPU"] else f"; more than the {found['CPU']} cores here, so they share them"
    lines.append(f"CPUs: {need:g} reserved of {found['CPU']:g} ({math.ceil(need)} logical CPUs at least){share}")
    return lines


def describe_rewards(cfg: Config) -> str:
    r = cfg.reward
    if r.mode == "pool":
        return f"in a pool of {r.workers} workers x {r.cpus_per_worker:g} CPU"
    if r.mode == "remote":
        return f"from oracles at {r.addresses}"
    return "inline (in each rollout actor)"
