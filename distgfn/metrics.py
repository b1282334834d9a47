"""metrics.jsonl writing and the terminal progress line."""

from __future__ import annotations

import json
import sys
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per row and flushes it, so a crash loses at most the row in flight."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def drop_rows_after(path: Path, step: int) -> None:
    """Drops rows logged after `step`: a resumed run continues from a checkpoint at `step`, so
    the rows written after it would otherwise appear twice."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in rows if json.loads(line)["step"] <= step))


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def progress_line(row: dict, total_steps: int) -> str:
    parts = [f"step {row['step']}/{total_steps}", f"traj {row['trajectories']}",
             f"{row['traj_per_s']:.0f} traj/s", f"loss {number(row['loss'], '.4g')}"]
    for key in ("l1_exact", "l1_empirical"):
        if key in row:
            parts.append(f"{key} {number(row[key], '.4f')}")
    if "modes_found" in row:
        parts.append(f"modes {row['modes_found']}/{row['modes_total']}")
    if "unique_molecules" in row:
        parts += [f"unique {row['unique_molecules']}", f"top10 {number(row['top10_reward'], '.3f')}",
                  f"top100 {number(row['top100_reward'], '.3f')}", f"modes {row['modes']}"]
    parts.append(f"{row['wall_s']:.0f}s")
    return " | ".join(parts)


def number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_progress(row: dict, total_steps: int) -> None:
    print(progress_line(row, total_steps), file=sys.stderr, flush=True)


def mean(values: list[float]) -> float | None:
    """The mean, or None (null in metrics.jsonl) when there is nothing to average."""
    return sum(values) / len(values) if values else None
