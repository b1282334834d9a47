"""The task registry: environments, rewards and models by name or by import path.

A config names each part by a built-in name below or by `package.module:NAME` (NAME may be
dotted, `module:Class.build`), and gives its keyword arguments in `options`:

    env:    {name: mypkg.seqs:SequenceEnv, options: {length: 8}}
    reward: {name: mypkg.seqs:MotifReward, options: {motifs: ["0101"]}}
    model:  {name: mlp, options: {hidden: 128}}       # built as NAME(env, **options)

Built-in tasks load exactly as plugins do: this module holds the only table from a built-in
name to its import path, and no other code branches on a task's name. A constructor
parameter named `env`, `data_dir` or `seed` is filled by distgfn (see `core.Reward`).
Everything that can go wrong is a `PluginError` naming the config key, the import path and
what is wrong, raised before any actor starts.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from distgfn.config import Config, ConfigError
from distgfn.core import BACKWARD_POLICY, CAPABILITIES, PARENTS, Env, EnvWithBackwardPolicy, EnvWithParents, Reward
from distgfn.data import DataError

ENVS = {
    "hypergrid": "distgfn.envs.hypergrid:HyperGrid",
    "fragments": "distgfn.envs.fragments:fragment_env",
}
REWARDS = {
    "hypergrid": "distgfn.rewards.hypergrid:HyperGridOracle",
    "seh_proxy": "distgfn.rewards.molecules:SEHProxy",
    "vina_seh": "distgfn.rewards.vina:VinaSEH",
    "qed": "distgfn.rewards.molecules:QED",
    "sa": "distgfn.rewards.molecules:SA",
    # R(x) = the raw output of a remote oracle (reward.mode remote) that is not importable here.
    "custom": "distgfn.rewards.remote:RemoteOnly",
}
MODELS = {
    "mlp": "distgfn.models:mlp",
    "fragment_gnn": "distgfn.chem.fragment_model:FragmentGNN.for_env",
}
# Constructor parameters distgfn fills itself; options may not set them.
INJECTED = ("env", "data_dir", "seed")


class PluginError(ConfigError):
    """A task part cannot be imported, built, or does not follow its protocol."""


def resolve(name: str, table: dict[str, str]) -> str:
    """The import path of a built-in name, or `name` itself when it is an import path."""
    if name in table:
        return table[name]
    if ":" not in name:
        raise ValueError(f"{name!r} is neither a built-in ({', '.join(table)}) nor an import path package.module:NAME")
    return name


def load(path: str) -> Any:
    """The object at `package.module:NAME`."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path package.module:NAME")
    try:
        found = importlib.import_module(module_name)
    except Exception as e:  # a user's module may raise anything while it imports (SyntaxError too)
        raise ValueError(f"module {module_name} does not import ({type(e).__name__}: {e})") from None
    for part in attr.split("."):
        if not hasattr(found, part):
            raise ValueError(f"module {module_name} has no {attr}")
        found = getattr(found, part)
    return found


def find(key: str, name: str, table: dict[str, str]) -> Any:
    try:
        return load(resolve(name, table))
    except ValueError as e:
        raise PluginError(f"{key}: {e}") from None


def parameters(factory: Callable) -> dict:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return {}


def wants(factory: Callable, name: str) -> bool:
    """Whether a constructor asks for an injected argument (`env`, `data_dir`, `seed`)."""
    return name in parameters(factory)


def construct(key: str, name: str, factory: Callable, options: dict, context: dict) -> Any:
    """factory(**context it asks for, **options), every failure a PluginError naming `key`."""
    if not callable(factory):
        raise PluginError(f"{key}.name: {name} is a {type(factory).__name__}, not a class or function")
    params = parameters(factory)
    clash = sorted(set(options) & set(INJECTED))
    if clash:
        raise PluginError(f"{key}.options: {', '.join(clash)} is set by distgfn, not in options ({name})")
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        known = [p for p in params if p not in INJECTED and p != "self"]
        raise PluginError(f"{key}.options: {name} takes no option {unknown[0]!r} (it takes: {', '.join(known) or 'none'})")
    given = {k: v for k, v in context.items() if k in params}
    try:
        return factory(**given, **options)
    except (ConfigError, DataError):
        raise  # already names what is wrong (a missing data file, say)
    except Exception as e:  # a user's constructor may raise anything: name it, don't dump its stack
        raise PluginError(f"{key}: {name}({format_options(options)}) raised {type(e).__name__}: {e}") from None


def format_options(options: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


# Environments.

def make_env(cfg: Config) -> Env:
    e = cfg.env
    env = construct("env", e.name, find("env.name", e.name, ENVS), e.options, context(cfg))
    check_env_protocol(e.name, env)
    return env


def protocol_members(protocol) -> tuple[list[str], list[str]]:
    """(methods, attributes) that a typing.Protocol class declares itself."""
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    return methods, list(vars(protocol).get("__annotations__", {}))


def check_env_protocol(name: str, env) -> None:
    """The env has every member of distgfn.core.Env (integers for its sizes)."""
    methods, sizes = protocol_members(Env)
    missing = [m for m in methods if not callable(getattr(env, m, None))]
    missing += [a for a in sizes if not isinstance(getattr(env, a, None), (int, np.integer))]
    if missing:
        raise PluginError(f"env.name: {name} ({type(env).__name__}) lacks {', '.join(missing)} of the env protocol "
                          f"(distgfn.core.Env)")
    unknown = set(capabilities(env)) - set(CAPABILITIES)
    if unknown:
        raise PluginError(f"env.name: {name} declares unknown capabilities {sorted(unknown)} (known: {', '.join(CAPABILITIES)})")
    for capability, protocol in ((PARENTS, EnvWithParents), (BACKWARD_POLICY, EnvWithBackwardPolicy)):
        missing = [m for m in protocol_members(protocol)[0] if not callable(getattr(env, m, None))]
        if capability in capabilities(env) and missing:
            raise PluginError(f"env.name: {name} declares capability {capability!r} but has no {missing[0]}() method")


def capabilities(env) -> frozenset:
    return frozenset(getattr(env, "capabilities", ()))


def has(env, capability: str) -> bool:
    return capability in capabilities(env)


# Rewards.

def reward_factory(cfg: Config) -> Callable:
    """The reward's class or factory, not built (remote mode reads its declarations only)."""
    return find("reward.name", cfg.reward.name, REWARDS)


def make_oracle(cfg: Config, env=None) -> Reward:
    """The reward object, built with reward.options (and the env when it asks for one)."""
    r = cfg.reward
    factory = reward_factory(cfg)
    if not isinstance(factory, type) and callable(getattr(factory, "score", None)):
        if r.options:
            raise PluginError(f"reward.options: {r.name} is an object, not a class or function; it takes no options")
        return factory  # an instance at module level: used as it is
    oracle = construct("reward", r.name, factory, r.options, context(cfg, env))
    if not isinstance(oracle, Reward):  # runtime_checkable: it has every method of core.Reward
        raise PluginError(f"reward.name: {r.name} ({type(oracle).__name__}) has no score(keys) method "
                          f"(distgfn.core.Reward)")
    return oracle


def to_reward(factory) -> Callable[[np.ndarray], np.ndarray]:
    """R(x) from the raw output: the reward's declared to_reward, else the raw output itself."""
    return getattr(factory, "to_reward", None) or identity


def identity(raw: np.ndarray) -> np.ndarray:
    return raw


def check_pairing(cfg: Config) -> None:
    """The one place that checks a reward scores the configured env, when the reward declares
    one (`scores_env`): the env must be that one, or a subclass of it."""
    wanted = getattr(reward_factory(cfg), "scores_env", None)
    if wanted is None:
        return
    expected, have = find("reward.scores_env", wanted, ENVS), find("env.name", cfg.env.name, ENVS)
    if have is not expected and not (isinstance(have, type) and isinstance(expected, type) and issubclass(have, expected)):
        raise PluginError(f"reward.name {cfg.reward.name!r} scores env {wanted!r}, not env.name {cfg.env.name!r}")


# Models.

def make_model(cfg: Config, env):
    """An nn.Module built as NAME(env, **model.options); model.name null: the env's default.

    Its forward maps featurize(states) to (n, n_actions + 1): log edge flows (FM) or forward
    logits (TB, DB) per action, then log F(s) (DB). A model without a scalar parameter
    `log_z` (TB's log Z) gets one here, on every copy alike."""
    import torch

    name = model_name(cfg, env)
    model = construct("model", name, find("model.name", name, MODELS), cfg.model.options, {"env": env})
    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"model.name: {name} built a {type(model).__name__}, not a torch.nn.Module")
    if not isinstance(getattr(model, "log_z", None), torch.nn.Parameter):
        model.log_z = torch.nn.Parameter(torch.zeros(()))
    return model


def model_name(cfg: Config, env) -> str:
    return cfg.model.name or getattr(env, "default_model", "mlp")


def check_model_output(cfg: Config, env, model) -> None:
    """One forward pass on s0: the output must be a tensor of shape (n, n_actions + 1)."""
    import torch

    name = model_name(cfg, env)
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(env.featurize(env.initial_states(2))))
    except Exception as e:  # a user's forward may raise anything: name it
        raise PluginError(f"model: {name} forward raised {type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, env.n_actions + 1):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"model: {name} returned {shape} for 2 states; it must return (n, n_actions + 1) = "
                          f"(2, {env.n_actions + 1})")
    if hasattr(model, "logits_at"):
        check_logits_at(name, env, model, out)


def check_logits_at(name: str, env, model, out) -> None:
    """A model's optional logits_at(features, rows, actions) must equal its forward's entries
    (the objectives use it instead of the forward): checked on s0's valid actions and log F."""
    import torch

    states = env.initial_states(2)
    rows, actions = np.nonzero(np.concatenate([env.masks(states), np.ones((2, 1), dtype=bool)], axis=1))
    rows, actions = torch.from_numpy(rows), torch.from_numpy(actions)
    try:
        with torch.no_grad():
            picked = model.logits_at(torch.from_numpy(env.featurize(states)), rows, actions)
    except Exception as e:
        raise PluginError(f"model: {name} logits_at raised {type(e).__name__}: {e}") from None
    if not isinstance(picked, torch.Tensor) or picked.shape != rows.shape or not torch.allclose(
            picked, out[rows, actions], rtol=1e-4, atol=1e-5):
        raise PluginError(f"model: {name} logits_at(features, rows, actions) differs from forward(features)[rows, "
                          f"actions] on s0's valid actions; it must return the same entries")


def context(cfg: Config, env=None) -> dict:
    return {"env": env, "data_dir": cfg.data.dir, "seed": cfg.seed}


@dataclass
class Task:
    env: Env
    reward: Reward | None  # None in remote mode: the oracle is elsewhere
    model: Any


def build(cfg: Config) -> Task:
    """Imports and builds every part of the task, as the driver does before any actor starts."""
    from distgfn.objectives import OBJECTIVES

    check_pairing(cfg)
    env = make_env(cfg)
    if OBJECTIVES[cfg.objective.name].NEEDS_PARENTS and not has(env, PARENTS):
        raise PluginError(f"objective.name {cfg.objective.name}: flow matching needs the parents of each state, and "
                          f"env {cfg.env.name} declares no 'parents' capability; use objective.name tb or db")
    check_consistency(cfg.env.name, env)
    reward = None if cfg.reward.mode == "remote" else make_oracle(cfg, env)
    model = make_model(cfg, env)
    check_model_output(cfg, env, model)
    return Task(env, reward, model)


def check_consistency(name: str, env) -> None:
    from distgfn.envcheck import check_env

    problems = check_env(env)
    if problems:
        raise PluginError(f"env.name: {name} ({type(env).__name__}) fails the consistency check: "
                          + "\n  ".join(problems))
