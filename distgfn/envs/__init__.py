"""Environments, by config name."""

from distgfn.config import Config
from distgfn.envs.base import Env
from distgfn.envs.hypergrid import HyperGrid


def make_env(cfg: Config) -> Env:
    e = cfg.env
    if e.name == "hypergrid":
        return HyperGrid(e.ndim, e.height, e.terminate_at_edge)
    if e.name == "fragments":
        from distgfn import data
        from distgfn.chem.blocks import load_blocks
        from distgfn.envs.fragments import FragmentEnv

        directory = data.require("seh", data.data_dir("seh", cfg.data.dir), ["blocks_PDB_105.json"])
        return FragmentEnv(load_blocks(directory / "blocks_PDB_105.json"), e.min_fragments, e.max_fragments)
    raise ValueError(f"unknown env.name {e.name!r}")


__all__ = ["Env", "HyperGrid", "make_env"]
