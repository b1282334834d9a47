"""`distgfn status RUN_DIR`: where a running or finished job stands, from its files alone.

    status = run_status(Path("runs/seh-20261129"))
    print(format_status(status))        # or json.dumps(status)

It reads the run directory (config.yaml, metrics.jsonl, model.pt, control/) and lists the
checkpoints; it needs neither Ray nor the process that runs the job, so it works on a job that
runs elsewhere as long as its run directory is readable here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from distgfn import checkpoint
from distgfn.config import ConfigError, load_config
from distgfn.metrics import progress_line, read_metrics


def run_status(run_dir: Path) -> dict:
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"{run_dir / 'config.yaml'} not found; is {run_dir} a run directory?")
    cfg = load_config(run_dir / "config.yaml")
    metrics = run_dir / "metrics.jsonl"
    rows = read_metrics(metrics) if metrics.exists() else []
    last = rows[-1] if rows else None
    return {
        "run_dir": str(run_dir),
        "what": f"{cfg.objective.name} on {cfg.env.name}, reward {cfg.reward.name} ({cfg.reward.mode}), "
                f"{cfg.runtime} runtime",
        "state": state(run_dir, cfg, last),
        "steps": cfg.learner.steps,
        "last_row": last,
        "last_row_age_s": round(time.time() - metrics.stat().st_mtime, 1) if rows else None,
        "checkpoints": checkpoints(cfg, run_dir),
        "scale_request": read_json(run_dir / "control" / "scale.json"),
        "scale_answer": read_json(run_dir / "control" / "scale-done.json"),
    }


def state(run_dir: Path, cfg, last: dict | None) -> str:
    model = run_dir / "model.pt"
    if last is None:
        return "starting (no metrics row yet)"
    if last["step"] >= cfg.learner.steps and model.exists():
        return "finished"
    if model.exists() and model.stat().st_mtime >= (run_dir / "metrics.jsonl").stat().st_mtime:
        return f"stopped at step {last['step']} (resume with `distgfn train --resume {run_dir}`)"
    return "running, or stopped without a clean exit (see the last row's age)"


def checkpoints(cfg, run_dir: Path) -> dict:
    root = checkpoint.root_for(cfg, run_dir)
    try:
        names = checkpoint.complete_checkpoints(root)
    except (OSError, checkpoint.CheckpointError) as e:
        return {"root": root, "error": f"{type(e).__name__}: {e}"}
    return {"root": root, "complete": len(names), "newest_step": checkpoint.step_of(names[-1]) if names else None}


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def format_status(s: dict) -> str:
    lines = [f"{s['run_dir']}: {s['what']}", f"  state: {s['state']}"]
    if s["last_row"] is not None:
        lines.append(f"  last row ({s['last_row_age_s']:.0f} s ago): {progress_line(s['last_row'], s['steps'])}")
    c = s["checkpoints"]
    if "error" in c:
        lines.append(f"  checkpoints in {c['root']}: cannot list them: {c['error']}")
    else:
        newest = f", newest at step {c['newest_step']}" if c["newest_step"] is not None else ""
        lines.append(f"  checkpoints in {c['root']}: {c['complete']} complete{newest}")
    request, answer = s["scale_request"], s["scale_answer"]
    if request:
        done = answer is not None and answer.get("id") == request.get("id")
        lines.append(f"  last scale request: actors {request.get('actors')}, reward workers "
                     f"{request.get('reward_workers')}: {'applied at step ' + str(answer.get('step')) if done else 'not answered yet'}")
    return "\n".join(lines)
