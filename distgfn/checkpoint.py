"""Checkpoint storage: one directory per checkpoint, written whole or not at all.

    root/step-000000500/
        learner.pt        any number of named files (bytes), each fsynced
        replay.msgpack
        MANIFEST.json     {"step": 500, "files": {name: sha256}}, written last

A checkpoint is written into a hidden temporary directory, its files and manifest fsynced,
then renamed into place. `load_latest` returns the newest checkpoint whose manifest exists
and whose files match their checksums; a torn one (no manifest) or a corrupted one is
skipped with a warning that names it, and the one before is used.

Both runtimes checkpoint through this module (distgfn.serial, distgfn.driver).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import torch

MANIFEST = "MANIFEST.json"


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that fails verification; the message says which and why."""


def root_for(cfg, run_dir: Path) -> Path:
    """checkpoint.path, or RUN_DIR/checkpoints by default."""
    return Path(cfg.checkpoint.path) if cfg.checkpoint.path else Path(run_dir) / "checkpoints"


def save(root: Path, step: int, files: dict[str, bytes], keep: int = 3) -> Path:
    """Writes a complete checkpoint for `step` and keeps the newest `keep` complete ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:012d}"
    tmp = root / f".tmp-step-{step:012d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in files.items():
        write_synced(tmp / name, data)
    manifest = {"step": step, "files": {name: sha256(data) for name, data in files.items()}}
    write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    sync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    sync_dir(root)
    prune(root, keep)
    return final


def load_latest(root: Path) -> tuple[int, dict[str, bytes]]:
    """(step, files) of the newest usable checkpoint under root."""
    root = Path(root)
    candidates = sorted(root.glob("step-*"), reverse=True) if root.is_dir() else []
    problems = []
    for path in candidates:
        try:
            return read(path)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {path}: {e}", stacklevel=2)
            problems.append(f"{path.name}: {e}")
    detail = "; ".join(problems) if problems else "none found"
    raise CheckpointError(f"no usable checkpoint in {root} ({detail})")


def read(path: Path) -> tuple[int, dict[str, bytes]]:
    """A checkpoint's step and files, after checking its manifest and every checksum."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"torn: no {MANIFEST} (the write did not finish)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"unreadable {MANIFEST}: {e}") from None
    files = {}
    for name, digest in manifest["files"].items():
        try:
            data = (path / name).read_bytes()
        except OSError as e:
            raise CheckpointError(f"missing or unreadable {name}: {e}") from None
        if sha256(data) != digest:
            raise CheckpointError(f"{name} is corrupted (sha256 mismatch)")
        files[name] = data
    return int(manifest["step"]), files


def complete_checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).glob("step-*") if (p / MANIFEST).exists())


def prune(root: Path, keep: int) -> None:
    for path in complete_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(path)


def state_to_bytes(state: dict) -> bytes:
    """A role's state (tensors, arrays as tensors, plain values) as bytes for a checkpoint file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict:
    """The inverse of state_to_bytes; never unpickles arbitrary objects (weights_only)."""
    return torch.load(io.BytesIO(data), weights_only=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
