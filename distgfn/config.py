"""Typed, validated run configuration.

A config is YAML with the nested sections below; every key has a default, so a file only
states what differs. `--set a.b=c` overrides apply on top (the value is parsed as YAML).
Unknown keys, wrong types and out-of-range values raise `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from distgfn.replay import check_settings


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class EnvConfig:
    # A built-in (distgfn.tasks.ENVS: hypergrid, fragments) or an import path package.module:NAME.
    name: str = "hypergrid"
    # Keyword arguments of its constructor. hypergrid: ndim (2), height (8), terminate_at_edge
    # (false: the paper's code ends an episode when a coordinate reaches height - 1); fragments:
    # min_fragments (2), max_fragments (8) of the paper's 105 blocks.
    options: dict = field(default_factory=dict)


@dataclass
class RewardConfig:
    # A built-in (distgfn.tasks.REWARDS: hypergrid for env hypergrid; seh_proxy, vina_seh, qed,
    # sa for env fragments; custom: R = a remote oracle's output) or package.module:NAME.
    name: str = "hypergrid"
    # Keyword arguments of its constructor. hypergrid: r0 (0.1), r1 (0.5), r2 (2.0); vina_seh:
    # exhaustiveness (1) and max_evals (50000), Vina's search effort per molecule.
    options: dict = field(default_factory=dict)
    # The policy is trained towards R(x) ** beta.
    beta: float = 1.0
    # Added wait per reward call, standing in for a remote oracle in benchmarks.
    latency_ms: float = 0.0
    # The run stops when more than this fraction of the last failure_window objects failed
    # (the oracle reported an error, raised, or returned NaN, inf or R <= 0).
    max_failure_rate: float = 0.5
    failure_window: int = 1000
    # inline: the reward runs in each rollout actor (cheap rewards); pool: on `workers` reward
    # actors of `cpus_per_worker` CPUs each, shared by the rollout actors; remote: `distgfn
    # serve-reward` oracles over gRPC at `addresses`, "host:port,host:port".
    mode: Literal["inline", "pool", "remote"] = "inline"
    workers: int = 2
    cpus_per_worker: float = 1.0
    # pool and remote: batches each rollout actor keeps waiting on rewards while it samples the
    # next (so at most this many calls per reward worker from each rollout actor).
    in_flight: int = 2
    # Rewards memoized by key (canonical SMILES), shared by the run's actors, saved with
    # checkpoints; least recently used evicted beyond this many keys. 0: off; null: the reward's
    # own `cache_size` (100000 for the molecule rewards), else off (cheaper to compute than to look up).
    cache_size: Optional[int] = None
    addresses: str = ""
    # pool, remote: a call (a chunk, a batch) not answered within this fails its objects.
    deadline_s: float = 600.0
    # remote: how long the run waits, reporting it, for an oracle that is down before it stops.
    unavailable_wait_s: float = 3600.0
    # Name of the environment variable holding the oracle's token (never the token itself).
    token_env: Optional[str] = None
    # CA certificate (PEM) of a TLS oracle; null: plaintext.
    tls_ca: Optional[str] = None


@dataclass
class DataConfig:
    # Directory holding the published data files (null: $DISTGFN_DATA_DIR, else the user cache
    # that `distgfn data fetch seh` fills).
    dir: Optional[str] = None


@dataclass
class ObjectiveConfig:
    name: Literal["fm", "tb", "db"] = "fm"
    # The objective's own options, declared by it (distgfn/objectives/<name>.py, Options):
    # fm: eps (2.5e-5), leaf_coef (1.0); tb: logz_lr (0.1); db: none.
    options: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    # mlp (over the env's feature_sizes), fragment_gnn, or package.module:NAME, built as
    # NAME(env, **options); null: the env's default_model (mlp unless it declares another).
    name: Optional[str] = None
    # Keyword arguments: mlp and fragment_gnn take hidden (256) and layers (2).
    options: dict = field(default_factory=dict)


@dataclass
class SamplerConfig:
    batch_size: int = 16
    # Probability of a uniformly random valid action at each step.
    epsilon: float = 0.0
    temperature: float = 1.0


@dataclass
class LearnerConfig:
    steps: int = 1000
    lr: float = 1e-3
    # constant, or cosine: anneal the learning rate to lr * lr_final_ratio over `steps`.
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_final_ratio: float = 0.1
    device: str = "auto"
    # Ray runtime: CPUs reserved for the learner actor (a GPU is added when the cluster has one).
    cpus: float = 1.0
    # Updates between weight publications to the rollout actors.
    publish_every: int = 4
    # Ray runtime: the most records one update trains on. An update takes every record not yet
    # trained on, at least sampler.batch_size and at most this many (null: sampler.batch_size),
    # so a larger value lets the learner keep up with more actors, at the price of fewer updates
    # per trajectory (docs/benchmarks.md measures both); beyond it the replay table holds the
    # actors back.
    max_batch: Optional[int] = None
    # An explicit policy, off by default: drop records sampled more than this many policy
    # versions ago instead of training on them (counted as dropped_stale). Back-pressure
    # bounds the lag without it.
    max_policy_lag: Optional[int] = None


@dataclass
class ActorsConfig:
    num: int = 2
    cpus: float = 0.5
    # Seconds an actor samples per call from the driver before reporting (at least one batch);
    # new weights are adopted between batches either way.
    report_every_s: float = 1.0
    # Trajectories an actor samples at once (null: sampler.batch_size): one policy forward per
    # step and one reward call for all of them, so a larger batch costs less per trajectory,
    # while more are sampled with one policy version (configs/seh.yaml sets 32: faster, the
    # same learning per molecule; docs/benchmarks.md). The learner still trains on
    # sampler.batch_size records an update.
    batch_size: Optional[int] = None
    # Times Ray restarts a rollout actor (or reward worker) that died (-1: without limit).
    max_restarts: int = 10
    # Add a rollout actor (with reward.mode pool: a reward worker) while the learner waits for
    # records more than half the time and rewards take more than half of the actors' time, at
    # most one per autoscale_every_s, up to max_num. On a Ray cluster with an autoscaler,
    # workers that do not fit make it add nodes.
    autoscale: bool = False
    max_num: int = 16
    autoscale_every_s: float = 30.0


@dataclass
class ReplayConfig:
    # In trajectories (one record each).
    capacity: int = 100_000
    min_size: int = 32
    # Rate limiter: mean number of times a record is trained on (null: no limit).
    samples_per_insert: Optional[float] = 1.0
    # How far inserts and samples may drift from that ratio, in samples (null: automatic).
    error_buffer: Optional[float] = None
    # fifo: oldest first, each record trained on once (as the serial runtime does);
    # uniform: with replacement; prioritized: with replacement, P proportional to R(x) ** (beta * alpha).
    sampler: Literal["fifo", "uniform", "prioritized"] = "fifo"
    alpha: float = 1.0


@dataclass
class RayConfig:
    # Cluster to join; null: RAY_ADDRESS if set (as under `ray job submit`), else an embedded local one.
    address: Optional[str] = None
    # CPUs of an embedded local cluster (null: this machine's).
    num_cpus: Optional[int] = None
    # Seconds without any progress (no batch sampled, no update) before the run stops with an error.
    progress_timeout_s: float = 120.0
    # A custom resource that rollout actors and reward workers ask 0.001 of, so they run only on
    # nodes that advertise it (deploy/ gives CPU worker nodes {"rollout": 1000}); null: anywhere.
    worker_resource: Optional[str] = None
    # A custom resource that the learner and the replay table ask 0.001 of, so they run only on
    # nodes that advertise it (the GPU node) and never take a rollout node's CPU; null: anywhere.
    learner_resource: Optional[str] = None


@dataclass
class CheckpointConfig:
    # Learner updates between checkpoints (a multiple of log.every; 0: only at the end and on
    # a clean stop).
    every: int = 0
    keep: int = 3
    # Directory or pyarrow.fs URI (s3://bucket/run, gs://..., file:///...) for checkpoints
    # (null: RUN_DIR/checkpoints).
    path: Optional[str] = None


@dataclass
class FaultToleranceConfig:
    # Times a run recreates its learner and replay table (with every rollout actor) from the
    # newest checkpoint when one of them dies; one more failure stops the run with an error.
    max_restarts: int = 3


@dataclass
class EvalConfig:
    # Learner updates between exact evaluations (0: only at the end); a multiple of log.every.
    every: int = 100
    # Sampled objects kept for l1_empirical.
    empirical_window: int = 200_000
    # Molecules: a mode is a molecule with R(x) >= mode_reward (0.9375 is the sEH proxy's 7.5)
    # whose Tanimoto similarity to every mode found before it is < mode_similarity.
    mode_reward: float = 0.9375
    mode_similarity: float = 0.7


@dataclass
class LogConfig:
    # Learner updates between metrics rows.
    every: int = 50


@dataclass
class Config:
    seed: int = 0
    runtime: Literal["ray", "serial"] = "ray"
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    actors: ActorsConfig = field(default_factory=ActorsConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    fault_tolerance: FaultToleranceConfig = field(default_factory=FaultToleranceConfig)
    ray: RayConfig = field(default_factory=RayConfig)


# (key, test, what must hold) for values whose type alone does not make them valid.
RANGES = [
    ("seed", lambda v: 0 <= v < 2**63, "in [0, 2**63)"),
    ("ray.num_cpus", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("reward.beta", lambda v: v > 0, "> 0"),
    ("sampler.batch_size", lambda v: v >= 1, ">= 1"),
    ("sampler.epsilon", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("sampler.temperature", lambda v: v > 0, "> 0"),
    ("learner.steps", lambda v: v >= 1, ">= 1"),
    ("learner.lr", lambda v: v > 0, "> 0"),
    ("learner.lr_final_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("learner.device", lambda v: re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", v) is not None, "auto, cpu, cuda or cuda:N"),
    ("reward.latency_ms", lambda v: v >= 0, ">= 0"),
    ("reward.deadline_s", lambda v: v > 0, "> 0"),
    ("reward.max_failure_rate", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("reward.failure_window", lambda v: v >= 1, ">= 1"),
    ("reward.workers", lambda v: v >= 1, ">= 1"),
    ("reward.cpus_per_worker", lambda v: v >= 0, ">= 0"),
    ("reward.in_flight", lambda v: v >= 1, ">= 1"),
    ("reward.cache_size", lambda v: v is None or v >= 0, ">= 0 or null"),
    ("reward.unavailable_wait_s", lambda v: v >= 0, ">= 0"),
    ("actors.max_num", lambda v: v >= 1, ">= 1"),
    ("actors.autoscale_every_s", lambda v: v > 0, "> 0"),
    ("eval.mode_similarity", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("learner.cpus", lambda v: v >= 0, ">= 0"),
    ("learner.publish_every", lambda v: v >= 1, ">= 1"),
    ("learner.max_policy_lag", lambda v: v is None or v >= 0, ">= 0 or null"),
    ("learner.max_batch", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("actors.num", lambda v: v >= 1, ">= 1"),
    ("actors.cpus", lambda v: v >= 0, ">= 0"),
    ("actors.report_every_s", lambda v: v >= 0, ">= 0"),
    ("actors.max_restarts", lambda v: v >= -1, ">= -1"),
    ("fault_tolerance.max_restarts", lambda v: v >= 0, ">= 0"),
    ("replay.capacity", lambda v: v >= 1, ">= 1"),
    ("replay.min_size", lambda v: v >= 1, ">= 1"),
    ("replay.samples_per_insert", lambda v: v is None or v > 0, "> 0 or null"),
    ("replay.error_buffer", lambda v: v is None or v >= 0, ">= 0 or null"),
    ("actors.batch_size", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("replay.alpha", lambda v: v >= 0, ">= 0"),
    ("ray.progress_timeout_s", lambda v: v > 0, "> 0"),
    ("checkpoint.every", lambda v: v >= 0, ">= 0"),
    ("checkpoint.keep", lambda v: v >= 1, ">= 1"),
    ("eval.every", lambda v: v >= 0, ">= 0"),
    ("eval.empirical_window", lambda v: v >= 1, ">= 1"),
    ("log.every", lambda v: v >= 1, ">= 1"),
]


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key {key!r} is given twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str):
    return yaml.load(text, Loader=StrictLoader)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Reads a YAML file (or the defaults when path is None) and applies `a.b=value` overrides."""
    raw: dict = {}
    if path is not None:
        try:
            raw = read_yaml(Path(path).read_text()) or {}
        except ConfigError as e:
            raise ConfigError(f"config {path}: {e}") from None
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path}: top level must be a mapping of sections")
    for item in overrides:
        apply_override(raw, item)
    return from_dict(raw)


def apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key=value")
    *sections, leaf = key.strip().split(".")
    node = raw
    for name in sections:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {name} is not a section")
    node[leaf] = override_value(text)


def override_value(text: str):
    """The YAML value of an override's text, or the text itself where it is not YAML (an IPv6
    address such as [::1]:50051 is a string, not a broken list)."""
    if not text.strip():
        return ""
    try:
        return read_yaml(text)
    except yaml.YAMLError:
        return text.strip()


def from_dict(raw: dict) -> Config:
    cfg = build_section(Config, raw, "")
    for key, ok, rule in RANGES:
        value = get_key(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {rule}; got {value!r}")
    check_modes(cfg)
    objective_options(cfg)
    if cfg.eval.every % cfg.log.every:
        raise ConfigError(f"eval.every ({cfg.eval.every}) must be a multiple of log.every ({cfg.log.every})")
    if cfg.checkpoint.every % cfg.log.every:
        raise ConfigError(f"checkpoint.every ({cfg.checkpoint.every}) must be a multiple of log.every ({cfg.log.every})")
    if max_batch(cfg) < cfg.sampler.batch_size:
        raise ConfigError(f"learner.max_batch ({cfg.learner.max_batch}) < sampler.batch_size ({cfg.sampler.batch_size})")
    spi = cfg.replay.samples_per_insert
    try:
        check_settings(cfg.replay.capacity, cfg.replay.min_size, spi, error_buffer(cfg), max_batch(cfg))
    except ValueError as e:
        raise ConfigError(f"{e} (keys replay.capacity, replay.min_size, replay.samples_per_insert, "
                          f"replay.error_buffer, learner.max_batch)") from None
    return cfg


def check_modes(cfg: Config) -> None:
    """Settings that contradict each other. Which env a reward scores is checked where the
    reward is imported (tasks.check_pairing)."""
    if cfg.reward.mode == "remote" and not cfg.reward.addresses.strip():
        raise ConfigError("reward.mode remote needs reward.addresses (host:port,...) of `distgfn serve-reward` oracles")
    oracle_addresses(cfg)
    if cfg.reward.tls_ca is not None and not Path(cfg.reward.tls_ca).is_file():
        raise ConfigError(f"reward.tls_ca: no such file {cfg.reward.tls_ca!r} (the CA certificate that signed the oracles')")
    if cfg.reward.mode == "pool" and cfg.runtime == "serial":
        raise ConfigError("reward.mode pool needs runtime ray (reward actors); use inline or remote with runtime serial")
    if cfg.actors.autoscale and cfg.actors.max_num < cfg.actors.num:
        raise ConfigError(f"actors.max_num ({cfg.actors.max_num}) < actors.num ({cfg.actors.num}) with actors.autoscale")


def oracle_addresses(cfg: Config) -> list[str]:
    """reward.addresses as a list of host:port, each checked: a host name, an IPv4 address or
    a bracketed IPv6 one ([::1]:50051), and a port in 1..65535."""
    out = []
    for address in (a.strip() for a in cfg.reward.addresses.split(",")):
        if not address:
            continue
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", address)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise ConfigError(f"reward.addresses: {address!r} is not host:port (an IPv6 host in brackets: "
                              f"[::1]:50051; ports 1-65535)")
        if m.group(1).startswith("["):
            try:
                ipaddress.IPv6Address(m.group(1)[1:-1])
            except ValueError:
                raise ConfigError(f"reward.addresses: {m.group(1)} is not an IPv6 address") from None
        out.append(address)
    return out


def objective_options(cfg: Config):
    """The objective's typed Options from objective.options; errors name the key."""
    from distgfn.objectives import OBJECTIVES

    declared = OBJECTIVES[cfg.objective.name].Options
    try:
        return build_section(declared, cfg.objective.options, "objective.options.")
    except ConfigError as e:
        raise ConfigError(f"{e} (objective.name {cfg.objective.name})") from None
    except ValueError as e:  # the objective's own check of its values
        raise ConfigError(f"objective.options: {e}") from None


def cache_size(cfg: Config) -> int:
    """reward.cache_size, or by default the reward's declared `cache_size` (none if it declares none)."""
    if cfg.reward.cache_size is not None:
        return cfg.reward.cache_size
    from distgfn.tasks import reward_factory

    return getattr(reward_factory(cfg), "cache_size", 0)


def max_batch(cfg: Config) -> int:
    """learner.max_batch, or by default sampler.batch_size."""
    return cfg.learner.max_batch or cfg.sampler.batch_size


def error_buffer(cfg: Config) -> float:
    """replay.error_buffer, or by default room for a few of the largest batches of drift each way."""
    if cfg.replay.error_buffer is not None:
        return cfg.replay.error_buffer
    return 2.0 * ((cfg.replay.samples_per_insert or 0) + max_batch(cfg))


def build_section(cls, raw: Any, prefix: str):
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping; got {type(raw).__name__} {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            hint = f"; the {where}'s own settings go under {where}.options" if "options" in fields else ""
            raise ConfigError(f"unknown key '{prefix}{key}' (known in {where}: {', '.join(fields)}{hint})")
    values = {name: coerce(hints[name], raw[name], prefix + name) for name in fields if name in raw}
    return cls(**values)


def coerce(hint, value: Any, key: str):
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(map(str, typing.get_args(hint)))
            raise ConfigError(f"{key} must be one of {choices}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is dict:
        return check_options(value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number; got {value!r}")
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key} must be {hint.__name__}; got {type(value).__name__} {value!r}")
    return value


def check_options(value: Any, key: str) -> dict:
    """A free mapping of keyword arguments (a plugin's options): names must be identifiers."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping of option names to values; got {type(value).__name__} {value!r}")
    for name in value:
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{key}: option name {name!r} is not a Python identifier")
    return dict(value)


def get_key(cfg: Config, key: str):
    node = cfg
    for name in key.split("."):
        node = getattr(node, name)
    return node


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def config_text(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(config_text(cfg))
