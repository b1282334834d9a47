"""Environments, by config name."""

from distgfn.config import EnvConfig
from distgfn.envs.base import Env
from distgfn.envs.hypergrid import HyperGrid


def make_env(cfg: EnvConfig) -> Env:
    if cfg.name == "hypergrid":
        return HyperGrid(cfg.ndim, cfg.height, cfg.terminate_at_edge)
    raise ValueError(f"unknown env.name {cfg.name!r}")


__all__ = ["Env", "HyperGrid", "make_env"]
