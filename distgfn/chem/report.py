"""What people look at after a molecule run, made from RUN_DIR/molecules.jsonl alone.

    paths = write_report(run_dir, mode_reward=0.875)
    # run_dir/top_molecules.png  the best unique molecules, drawn by RDKit, reward as legend
    # run_dir/progress.svg       top-10 / top-100 mean reward and modes against molecules generated
    # run_dir/summary.json       the final tracker metrics and the 10 best SMILES

The chart is SVG written by hand, so a report needs nothing beyond RDKit and numpy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from rdkit.Chem.Draw import rdMolDraw2D

from distgfn.chem.tracking import MOLECULES_FILE, MoleculeTracker, read_molecules, to_mol

PANEL = 250  # pixels per molecule in the PNG grid


@dataclass
class Report:
    top_molecules: Path
    progress: Path
    summary: Path


@dataclass
class ProgressPoint:
    molecules: int
    top10: float | None
    top100: float | None
    modes: int


def write_report(run_dir: Path, mode_reward: float, mode_similarity: float = 0.7, every: int = 1000) -> Report:
    run_dir = Path(run_dir)
    path = run_dir / MOLECULES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no molecules file; was this a molecule run that generated anything?")
    rows = read_molecules(path)
    if not any("error" not in row for row in rows):
        raise ValueError(f"{path}: no scored molecules ({len(rows)} rows, all failed or none)")
    report = Report(run_dir / "top_molecules.png", run_dir / "progress.svg", run_dir / "summary.json")
    draw_top(rows, report.top_molecules)
    tracker, points = progress(rows, mode_reward, mode_similarity, every)
    report.progress.write_text(progress_svg(points, mode_reward, mode_similarity), encoding="utf-8")
    report.summary.write_text(json.dumps(_summary(tracker, rows), indent=2) + "\n", encoding="utf-8")
    return report


def summary(rows: list[dict], mode_reward: float, mode_similarity: float = 0.7) -> dict:
    """The tracker's final metrics, the failure count and the 10 best unique molecules."""
    return _summary(MoleculeTracker.from_log(rows, mode_reward, mode_similarity), rows)


def _summary(tracker: MoleculeTracker, rows: list[dict]) -> dict:
    return {
        **tracker.metrics(),
        "failed_molecules": sum("error" in row for row in rows),
        "mode_reward": tracker.mode_reward,
        "mode_similarity": tracker.mode_similarity,
        "best": tracker.best(10),
    }


def draw_top(rows: list[dict], path: Path, n: int = 16, per_row: int = 4) -> None:
    """A PNG grid of the n best unique molecules (first reward seen), reward as legend."""
    tracker = MoleculeTracker.from_log(rows, mode_reward=math.inf)  # no modes wanted: no fingerprints made
    best = tracker.best(n)
    if not best:
        raise ValueError("no scored molecules to draw")
    columns = min(per_row, len(best))
    drawer = rdMolDraw2D.MolDraw2DCairo(
        PANEL * columns, PANEL * math.ceil(len(best) / columns), PANEL, PANEL
    )
    drawer.DrawMolecules([to_mol(m["smiles"]) for m in best], legends=[f"R = {m['reward']:.4g}" for m in best])
    drawer.FinishDrawing()
    Path(path).write_bytes(drawer.GetDrawingText())


def plot_progress(rows: list[dict], path: Path, mode_reward: float, every: int = 1000,
                  mode_similarity: float = 0.7) -> None:
    """An SVG chart of top-10 / top-100 mean reward and modes against molecules generated."""
    _, points = progress(rows, mode_reward, mode_similarity, every)
    Path(path).write_text(progress_svg(points, mode_reward, mode_similarity), encoding="utf-8")


def progress(rows: list[dict], mode_reward: float, mode_similarity: float = 0.7,
             every: int = 1000) -> tuple[MoleculeTracker, list[ProgressPoint]]:
    """Replays the scored rows through a tracker, a point every `every` molecules and one at the end."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    scored = [row for row in rows if "error" not in row]
    tracker = MoleculeTracker(mode_reward, mode_similarity)
    points = []
    for start in range(0, len(scored), every):
        chunk = scored[start : start + every]
        tracker.add([r["smiles"] for r in chunk], np.array([r["reward"] for r in chunk]),
                    np.array([r["raw"] for r in chunk]))
        # top_k_mean and the mode count only: metrics() would also fingerprint the top 100 each time
        points.append(ProgressPoint(tracker.generated, tracker.top_k_mean(10), tracker.top_k_mean(100),
                                    len(tracker.mode_fps)))
    return tracker, points


# ---- the SVG chart: two panels sharing the x axis (molecules generated) ----

WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP = 760, 240, 80, 30, 50, 90
COLORS = {"top-10 mean reward": "#d62728", "top-100 mean reward": "#1f77b4", "modes": "#2ca02c"}


def progress_svg(points: list[ProgressPoint], mode_reward: float, mode_similarity: float) -> str:
    x_max = max((p.molecules for p in points), default=1) or 1
    x_ticks = nice_ticks(0, x_max)
    reward_panel = _panel(
        "Mean reward of the best unique molecules", TOP, x_ticks,
        {"top-10 mean reward": [(p.molecules, p.top10) for p in points],
         "top-100 mean reward": [(p.molecules, p.top100) for p in points]},
    )
    modes_panel = _panel(
        f"Modes (reward >= {mode_reward:g}, Tanimoto < {mode_similarity:g} to every earlier mode)",
        TOP + PANEL_H + GAP, x_ticks, {"modes": [(p.molecules, p.modes) for p in points]}, zero_based=True,
    )
    height = TOP + 2 * PANEL_H + GAP + 60
    x_label = _text(LEFT + (WIDTH - LEFT - RIGHT) / 2, height - 15, "molecules generated", anchor="middle")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>\n'
        + reward_panel + modes_panel + x_label + "</svg>\n"
    )


def _panel(title: str, top: float, x_ticks: list[float], series: dict[str, list], zero_based: bool = False) -> str:
    """One panel: frame, ticks, grid, a polyline per series (broken where a value is None), legend."""
    left, right, bottom = LEFT, WIDTH - RIGHT, top + PANEL_H
    values = [y for points in series.values() for _, y in points if y is not None]
    lo = 0.0 if zero_based or not values else min(values)
    y_ticks = nice_ticks(lo, max(values, default=1.0))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y):
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    parts = [_text(left, top - 28, title, weight="bold")]
    for x in x_ticks:
        parts.append(_line(sx(x), top, sx(x), bottom, "#e5e5e5"))
        parts.append(_text(sx(x), bottom + 16, _tick_label(x), anchor="middle"))
    for y in y_ticks:
        parts.append(_line(left, sy(y), right, sy(y), "#e5e5e5"))
        parts.append(_text(left - 6, sy(y) + 4, _tick_label(y), anchor="end"))
    parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{PANEL_H}" fill="none" stroke="black"/>\n')
    for name, points in series.items():
        for segment in _segments(points):
            xy = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in segment)
            parts.append(f'<polyline points="{xy}" fill="none" stroke="{COLORS[name]}" stroke-width="2"/>\n')
            if len(segment) == 1:  # a lone point draws no line
                parts.append(f'<circle cx="{sx(segment[0][0]):.1f}" cy="{sy(segment[0][1]):.1f}" r="3" '
                             f'fill="{COLORS[name]}"/>\n')
    if not values:
        parts.append(_text((left + right) / 2, (top + bottom) / 2, "not enough unique molecules yet", anchor="middle"))
    for i, name in enumerate(series):
        x = left + i * 190
        parts.append(_line(x, top - 10, x + 24, top - 10, COLORS[name], width=2))
        parts.append(_text(x + 30, top - 6, name))
    return "".join(parts)


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    segments, current = [], []
    for x, y in points:
        if y is None:
            if current:
                segments.append(current)
            current = []
        else:
            current.append((x, y))
    return segments + [current] if current else segments


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _tick_label(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1000 else f"{v:.4g}"


def _line(x1, y1, x2, y2, color: str, width: float = 1) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" stroke-width="{width}"/>\n'


def _text(x, y, text: str, anchor: str = "start", weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-weight="{weight}">'
            f"{escape(text)}</text>\n")
