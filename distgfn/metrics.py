"""metrics.jsonl (and TensorBoard) writing and the terminal progress line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distgfn.tensorboard import EventWriter


class MetricsLog:
    """Appends one JSON object per row and flushes it, so a crash loses at most the row in flight.
    The numbers of each row also go to TensorBoard event files in `tensorboard/` beside it."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a", encoding="utf-8")
        self.events = EventWriter(path.parent / "tensorboard")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        numbers = {k: float(v) for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        self.events.scalars(row["step"], numbers)

    def restarted_at(self, step: int) -> None:
        """After a resume or recovery from a checkpoint at `step`: rows after it are redone."""
        self.events.session_start(step + 1)

    def close(self) -> None:
        self.file.close()
        self.events.close()


def drop_rows_after(path: Path, step: int) -> None:
    """Drops rows logged after `step`: a resumed run continues from a checkpoint at `step`, so
    the rows written after it would otherwise appear twice."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in rows if json.loads(line)["step"] <= step))


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def progress_line(row: dict, total_steps: int) -> str:
    """One line per metrics row: progress against the budget, speed, learning, then the health
    of the distributed parts (policy lag, replay fill, reward latency and failures, workers)."""
    parts = [f"step {row['step']}/{total_steps} ({100 * row['step'] / total_steps:.0f}%)",
             f"traj {row['trajectories']}", f"{row['traj_per_s']:.0f} traj/s", f"loss {number(row['loss'], '.4g')}"]
    parts += quality(row) + health(row)
    parts.append(f"{row['wall_s']:.0f}s{eta(row, total_steps)}")
    return " | ".join(parts)


def quality(row: dict) -> list[str]:
    parts = [f"{key} {number(row[key], '.4f')}" for key in ("l1_exact", "l1_empirical") if key in row]
    if "modes_found" in row:
        parts.append(f"modes {row['modes_found']}/{row['modes_total']}")
    if "unique_molecules" in row:
        parts += [f"unique {row['unique_molecules']}", f"top10 {number(row['top10_reward'], '.3f')}",
                  f"top100 {number(row['top100_reward'], '.3f')}", f"modes {row['modes']}"]
    return parts


def health(row: dict) -> list[str]:
    """Ray runs: what to watch when a distributed run is slow or stuck."""
    if "policy_lag_mean" not in row or "updates_per_s" not in row:
        return []
    parts = [f"lag {number(row['policy_lag_mean'], '.1f')}", f"replay {row['replay_size']}"]
    if row.get("reward_latency_ms") is not None:
        parts.append(f"reward {row['reward_latency_ms']:.0f} ms")
    hits, misses = row.get("reward_cache_hits"), row.get("reward_cache_misses")
    if hits is not None and hits + misses:
        parts.append(f"cache {hits / (hits + misses):.0%}")
    if row.get("reward_failures"):
        parts.append(f"failed {row['reward_failures']}")
    if row.get("reward_unavailable"):
        parts.append(f"ORACLE DOWN ({row['reward_unavailable']} actors waiting)")
    if "actors" in row:
        pending = f" ({row['actors_pending']} pending)" if row.get("actors_pending") else ""
        parts.append(f"actors {row['actors']}{pending}" + (f"+{row['reward_workers']}w" if "reward_workers" in row else ""))
    return parts


def eta(row: dict, total_steps: int) -> str:
    rate = row.get("updates_per_s")
    if not rate or row["step"] >= total_steps:
        return ""
    left = (total_steps - row["step"]) / rate
    return f", ~{left / 60:.0f} min left" if left >= 90 else f", ~{left:.0f}s left"


def number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_progress(row: dict, total_steps: int) -> None:
    print(progress_line(row, total_steps), file=sys.stderr, flush=True)


def mean(values: list[float]) -> float | None:
    """The mean, or None (null in metrics.jsonl) when there is nothing to average."""
    return sum(values) / len(values) if values else None
