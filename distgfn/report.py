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
    if cfg.env.name == "hypergrid" and cfg.env.ndim == 2 and (run_dir / "model.pt").exists():
        written.append(plot_distribution(cfg, run_dir / "model.pt", run_dir / "distribution.png"))
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


def plot_distribution(cfg: Config, model_file: Path, path: Path) -> Path:
    """The trained policy's exact terminal distribution against the target, side by side."""
    import matplotlib.pyplot as plt
    import torch

    from distgfn.envs import make_env
    from distgfn.evaluation import exact_distribution, l1, target_distribution
    from distgfn.learning import policy_log_probs
    from distgfn.models import make_model
    from distgfn.rewards.hypergrid import HyperGridReward

    env = make_env(cfg)
    model = make_model(cfg.model, env)
    model.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
    learned = exact_distribution(env, lambda s: policy_log_probs(model, env, s))
    r = cfg.reward
    target = target_distribution(env, HyperGridReward(env.height, r.r0, r.r1, r.r2), r.beta)
    side = env.height
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    top = max(learned.max(), target.max())
    for ax, grid, title in ((axes[0], learned, "learned P(x) (model.pt, exact)"), (axes[1], target, "target R(x)^beta / Z")):
        image = ax.imshow(grid.reshape(side, side).T, origin="lower", vmin=0, vmax=top, cmap="viridis")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(f"HyperGrid {side}x{side}: L1 = {l1(learned, target):.4f}", fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

