"""Checkpoint storage: one directory per checkpoint, written whole or not at all.

    root/step-000000000500/
        learner.pt        any number of named files (bytes)
        replay.pt
        MANIFEST.json     {"step": 500, "runtime": "ray", "files": {name: sha256}}, written last

The root is a local or shared directory (NFS on a cluster) or a URI that `pyarrow.fs`
understands (`s3://bucket/run`, `gs://...`, `file:///...`), as Ray's own `storage_path` is.
A checkpoint is written into a hidden temporary directory, its manifest last, then renamed
into place; on a local disk every file is fsynced first. `load_latest` returns the newest
checkpoint whose manifest exists and whose files match their checksums; a torn one (no
manifest) or a corrupted one is skipped with a warning that names it, and the one before is
used. (On object stores a rename is a copy: a move cut short leaves a directory that fails
verification and is skipped the same way.)

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


def root_for(cfg, run_dir: Path) -> str:
    """checkpoint.path (a directory or a URI), or RUN_DIR/checkpoints by default."""
    return str(cfg.checkpoint.path) if cfg.checkpoint.path else str(Path(run_dir) / "checkpoints")


def is_uri(root) -> bool:
    return "://" in str(root)


class LocalStore:
    """A local or mounted directory; files and directories are fsynced before the rename."""

    def __init__(self, root):
        self.root = Path(root)

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def dirs(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def remove(self, rel: str) -> None:
        shutil.rmtree(self.root / rel, ignore_errors=True)

    def commit(self, tmp: str, final: str) -> None:
        sync_dir(self.root / tmp)
        self.remove(final)
        os.replace(self.root / tmp, self.root / final)
        sync_dir(self.root)


class ArrowStore:
    """Any filesystem pyarrow.fs opens from a URI (S3, GCS, HDFS, file://)."""

    def __init__(self, uri: str):
        import pyarrow.fs

        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(uri)
        self.file_type = pyarrow.fs.FileType

    def write(self, rel: str, data: bytes) -> None:
        path = f"{self.root}/{rel}"
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def read(self, rel: str) -> bytes:
        with self.fs.open_input_stream(f"{self.root}/{rel}") as f:
            return f.read()

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(f"{self.root}/{rel}").type != self.file_type.NotFound

    def dirs(self) -> list[str]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.root, allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == self.file_type.Directory)

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.delete_dir(f"{self.root}/{rel}")

    def commit(self, tmp: str, final: str) -> None:
        self.remove(final)
        self.fs.move(f"{self.root}/{tmp}", f"{self.root}/{final}")


def store_for(root) -> LocalStore | ArrowStore:
    return ArrowStore(str(root)) if is_uri(root) else LocalStore(root)


def save(root, step: int, files: dict[str, bytes], keep: int = 3, runtime: str | None = None) -> str:
    """Writes a complete checkpoint for `step`, keeps the newest `keep` complete ones, and
    returns where it went. The manifest records the runtime that wrote it."""
    store = store_for(root)
    final, tmp = f"step-{step:012d}", f".tmp-step-{step:012d}-{os.getpid()}"
    store.remove(tmp)
    for name, data in files.items():
        store.write(f"{tmp}/{name}", data)
    manifest = {"step": step, "runtime": runtime, "files": {name: sha256(data) for name, data in files.items()}}
    store.write(f"{tmp}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    store.commit(tmp, final)
    for name in complete_checkpoints(root)[:-keep] if keep > 0 else []:
        store.remove(name)
    return f"{str(root).rstrip('/')}/{final}"


def load_latest(root) -> tuple[int, dict[str, bytes]]:
    """(step, files) of the newest usable checkpoint under root."""
    store = store_for(root)
    problems = []
    for name in sorted((d for d in store.dirs() if d.startswith("step-")), reverse=True):
        try:
            return read(store, name)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {str(root).rstrip('/')}/{name}: {e}", stacklevel=2)
            problems.append(f"{name}: {e}")
    detail = "; ".join(problems) if problems else "none found"
    raise CheckpointError(f"no usable checkpoint in {root} ({detail})")


def read(store, name: str) -> tuple[int, dict[str, bytes]]:
    """A checkpoint's step and files, after checking its manifest and every checksum."""
    if not store.exists(f"{name}/{MANIFEST}"):
        raise CheckpointError(f"torn: no {MANIFEST} (the write did not finish)")
    try:
        manifest = json.loads(store.read(f"{name}/{MANIFEST}"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"unreadable {MANIFEST}: {e}") from None
    files = {}
    for file, digest in manifest["files"].items():
        try:
            data = store.read(f"{name}/{file}")
        except OSError as e:
            raise CheckpointError(f"missing or unreadable {file}: {e}") from None
        if sha256(data) != digest:
            raise CheckpointError(f"{file} is corrupted (sha256 mismatch)")
        files[file] = data
    return int(manifest["step"]), files


def step_of(name: str) -> int:
    """The step a checkpoint directory is named for ("step-000000000500" -> 500)."""
    return int(name.removeprefix("step-"))


def complete_checkpoints(root) -> list[str]:
    """Names of the checkpoints under root that have a manifest, oldest first."""
    store = store_for(root)
    return [d for d in store.dirs() if d.startswith("step-") and store.exists(f"{d}/{MANIFEST}")]


def state_to_bytes(state: dict) -> bytes:
    """A role's state (tensors, arrays as tensors, plain values) as bytes for a checkpoint file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict:
    """The inverse of state_to_bytes; never unpickles arbitrary objects (weights_only). Tensors
    load on the CPU (load_state_dict moves them to the model's device), so a checkpoint a GPU
    learner wrote resumes on a CPU-only host or runtime too."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
