"""`distgfn report RUN_DIR`: PNG plots made from a run's files alone.

    written = write_plots(run_dir, cfg)
    # run_dir/learning_curves.png  loss, throughput, policy lag and the task's quality metrics
    #                              against learner steps (metrics.jsonl)
    # run_dir/distribution.png     HyperGrid 2-D: the learned distribution (model.pt, exact) beside
    #                              the target R(x)^beta / Z, as heatmaps

Molecule runs add their own report (distgfn.chem.report: the best molecules, progress.svg).
matplotlib draws off-screen (Agg), so no display is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distgfn.config import Config
from distgfn.metrics import read_metrics

# (title, metrics keys): a panel is drawn when the run logged any of its keys.
PANELS = [
    ("loss", ["loss"]),
    ("trajectories / s", ["traj_per_s"]),
    ("policy lag (updates)", ["policy_lag_mean", "policy_lag_max"]),
    ("L1 to the target", ["l1_exact", "l1_empirical"]),
    ("mean reward of the best", ["top10_reward", "top100_reward"]),
    ("modes", ["modes_found", "modes"]),
    ("reward latency (ms)", ["reward_latency_ms"]),
    ("replay size", ["replay_size"]),
]


def write_plots(run_dir: Path, cfg: Config) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no rows yet")
    written = [plot_curves(rows, run_dir / "learning_curves.png")]
    if (run_dir / "model.pt").exists():
        grid = distribution_grid(cfg, run_dir / "model.pt")
        if grid is not None:
            written.append(plot_distribution(*grid, run_dir / "distribution.png"))
    return written


def plot_curves(rows: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    panels = [(title, [k for k in keys if any(r.get(k) is not None for r in rows)]) for title, keys in PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    cols = 2
    fig, axes = plt.subplots((len(panels) + 1) // cols, cols, figsize=(10, 2.6 * ((len(panels) + 1) // cols)),
                             squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("learner step", fontsize=8)
        if title in ("loss", "L1 to the target") and all(v > 0 for k in keys for v in values(rows, k)):
            ax.set_yscale("log")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def values(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def distribution_grid(cfg: Config, model_file: Path):
    """(learned, target) as 2-D arrays, for an enumerable env whose objects are pairs of
    non-negative integers (the 2-D HyperGrid); else None."""
    import torch

    from distgfn import tasks
    from distgfn.core import ENUMERABLE
    from distgfn.evaluation import ObjectSpace
    from distgfn.learning import policy_log_probs
    from distgfn.rewards import make_reward

    env = tasks.make_env(cfg)
    if not tasks.has(env, ENUMERABLE):
        return None
    space = ObjectSpace(env)
    cells = np.array(env.objects(space.objects), dtype=object)
    if cells.ndim != 2 or cells.shape[1] != 2 or not all(isinstance(v, int) and v >= 0 for v in cells.ravel()):
        return None
    model = tasks.make_model(cfg, env)
    model.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
    cells = cells.astype(np.int64)
    shape = tuple(cells.max(axis=0) + 1)
    grids = []
    for p in (space.distribution(lambda s: policy_log_probs(model, env, s)), space.target(make_reward(cfg, env), cfg.reward.beta)):
        grid = np.zeros(shape)
        grid[cells[:, 0], cells[:, 1]] = p
        grids.append(grid)
    return grids


def plot_distribution(learned: np.ndarray, target: np.ndarray, path: Path) -> Path:
    """The trained policy's exact terminal distribution against the target, side by side."""
    import matplotlib.pyplot as plt

    from distgfn.evaluation import l1

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    top = max(learned.max(), target.max())
    for ax, grid, title in ((axes[0], learned, "learned P(x) (model.pt, exact)"), (axes[1], target, "target R(x)^beta / Z")):
        image = ax.imshow(grid.T, origin="lower", vmin=0, vmax=top, cmap="viridis")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(f"{learned.shape[0]}x{learned.shape[1]} grid: L1 = {l1(learned, target):.4f}", fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
