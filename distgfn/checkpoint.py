"""Checkpoint storage: one directory per checkpoint, and its manifest, written last, is the commit.

    root/step-000000000500/
        learner.pt        any number of named files (bytes)
        replay.pt
        MANIFEST.json     {"step": 500, "runtime": "ray", "files": {name: sha256}}

The root is a local or shared directory (NFS on a cluster) or a URI that `pyarrow.fs` opens
(`s3://bucket/run?endpoint_override=HOST:PORT&scheme=http&region=R`,
`gs://bucket/run?endpoint_override=HOST:PORT&scheme=http&anonymous=true`, `file:///...`).
Object stores have no directory and no rename, so nothing is moved: a save

1. writes the files into the checkpoint's own directory (a second save at a step that already
   has a complete checkpoint goes to `step-000000000500.1`: a committed one is never touched);
2. writes MANIFEST.json last, the commit (one object PUT; on a local disk a temporary file,
   fsynced and renamed within the directory, after every file was fsynced);
3. reads the checkpoint back and verifies every checksum;
4. only then deletes what is older: complete checkpoints beyond the newest `keep`, and
   abandoned partial writes (directories without a manifest, from a writer that was killed).
   A checkpoint is deleted manifest first, so one cut short is torn, never half valid.

`load_latest` returns the newest checkpoint whose manifest is valid (every field typed and
bounded, every file name confined to its directory) and whose files match their checksums; a
torn, tampered or corrupted one is skipped with a warning that names it and why, and the one
before is used.

Both runtimes checkpoint through this module (distgfn.serial, distgfn.driver).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import torch

MANIFEST = "MANIFEST.json"
NAME = re.compile(r"step-(\d{12})(?:\.(\d{1,6}))?")  # a checkpoint's directory
FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a file in it: no path, no "..", no hidden file
DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_FILES = 64
MAX_STEP = 10**12 - 1
MAX_MANIFEST_BYTES = 1 << 20
RUNTIMES = (None, "ray", "serial")


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that fails verification; the message says which and why."""


def root_for(cfg, run_dir: Path) -> str:
    """checkpoint.path (a directory or a URI), or RUN_DIR/checkpoints by default."""
    return str(cfg.checkpoint.path) if cfg.checkpoint.path else str(Path(run_dir) / "checkpoints")


def is_uri(root) -> bool:
    return "://" in str(root)


class LocalStore:
    """A local or mounted directory; every file is fsynced, the manifest renamed into place."""

    def __init__(self, root):
        self.root = Path(root)

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def commit(self, rel: str, data: bytes) -> None:
        """Writes `rel` atomically: whole or absent, and durable with everything before it."""
        path = self.root / rel
        aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.write(str(aside.relative_to(self.root)), data)
        os.replace(aside, path)
        sync_dir(path.parent)

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def files(self) -> list[str]:
        """Every file under the root, as paths relative to it."""
        if not self.root.is_dir():
            return []
        return [str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()]

    def delete(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def tidy(self, directory: str) -> None:
        """Removes a directory left empty by deletes."""
        path = self.root / directory
        for sub in [*sorted(path.rglob("*"), reverse=True), path] if path.is_dir() else []:
            if sub.is_dir():
                try:
                    sub.rmdir()
                except OSError:  # not empty: a file someone else wrote stays
                    pass


class ArrowStore:
    """Any filesystem pyarrow.fs opens from a URI (S3, GCS, HDFS, file://), used as an object
    store: files are written, read, listed and deleted one by one; no directory is renamed or
    deleted as a whole (S3 and GCS have none)."""

    def __init__(self, uri: str):
        self.fs, self.root = open_filesystem(uri)
        self.object_store = self.fs.type_name in ("s3", "gcs")

    def write(self, rel: str, data: bytes) -> None:
        path = f"{self.root}/{rel}"
        if not self.object_store:  # an object needs no parent; a marker object would only be clutter
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def commit(self, rel: str, data: bytes) -> None:
        self.write(rel, data)  # one PUT: the object appears whole or not at all

    def read(self, rel: str) -> bytes:
        with self.fs.open_input_stream(f"{self.root}/{rel}") as f:
            return f.read()

    def exists(self, rel: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(f"{self.root}/{rel}").type == pyarrow.fs.FileType.File

    def files(self) -> list[str]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.root, recursive=True, allow_not_found=True)
        prefix = len(self.root.rstrip("/")) + 1
        return [i.path[prefix:] for i in self.fs.get_file_info(selector) if i.type == pyarrow.fs.FileType.File]

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(f"{self.root}/{rel}")
        except FileNotFoundError:
            pass

    def tidy(self, directory: str) -> None:
        """Removes what may stand for an emptied directory (a marker object on S3; on GCS,
        where there is none, deleting one answers 404: ignored)."""
        import pyarrow.fs

        path = f"{self.root}/{directory}"
        if self.fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
            try:
                self.fs.delete_dir(path)
            except OSError:
                pass


GCS_OPTIONS = {"endpoint_override": str, "scheme": str, "project_id": str, "default_bucket_location": str,
               "anonymous": lambda v: v.lower() in ("1", "true", "yes"),
               "retry_limit_seconds": float}


def open_filesystem(uri: str):
    """(pyarrow filesystem, root path) for a URI. gs:// URIs are parsed here, so that they take
    `anonymous=true` (an emulator; pyarrow's own parser refuses it) besides its options."""
    import pyarrow.fs

    parts = urlsplit(uri)
    if parts.scheme not in ("gs", "gcs"):
        try:
            return pyarrow.fs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as e:
            raise CheckpointError(f"checkpoint.path {uri}: {e}") from None
    options = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in GCS_OPTIONS:
            raise CheckpointError(f"checkpoint.path {uri}: unknown option {key!r} (known: {', '.join(GCS_OPTIONS)})")
        options[key] = GCS_OPTIONS[key](value)
    if "retry_limit_seconds" in options:
        import datetime

        options["retry_time_limit"] = datetime.timedelta(seconds=options.pop("retry_limit_seconds"))
    return pyarrow.fs.GcsFileSystem(**options), f"{parts.netloc}{parts.path}".rstrip("/")


def store_for(root) -> LocalStore | ArrowStore:
    return ArrowStore(str(root)) if is_uri(root) else LocalStore(root)


def save(root, step: int, files: dict[str, bytes], keep: int = 3, runtime: str | None = None) -> str:
    """Writes a checkpoint for `step`, verifies it, then keeps the newest `keep` complete ones
    and removes abandoned partial writes; returns where it went."""
    if not 0 <= step <= MAX_STEP or not all(FILE.fullmatch(name) and name != MANIFEST for name in files):
        raise ValueError(f"bad checkpoint step {step} or file names {sorted(files)}")
    store = store_for(root)
    listing = checkpoints(store)
    name = free_name(step, listing)
    for rel in listing.get(name, []):  # a write of this name that was cut short: start afresh
        store.delete(rel)
    for file, data in files.items():
        store.write(f"{name}/{file}", data)
    manifest = {"step": step, "runtime": runtime, "files": {file: sha256(data) for file, data in files.items()}}
    store.commit(f"{name}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    read(store, name)  # the commit is verified before anything older is deleted
    prune(store, name, keep)
    return where(root, name)


def where(root, name: str) -> str:
    """Checkpoint `name` under root, for messages (a URI's options left out)."""
    return f"{str(root).split('?')[0].rstrip('/')}/{name}"


def free_name(step: int, listing: dict[str, list[str]]) -> str:
    """`step-<step>`, or `step-<step>.<k>` when complete checkpoints hold the names before."""
    base, taken = f"step-{step:012d}", set(complete(listing))
    k = 0
    while (f"{base}.{k}" if k else base) in taken:
        k += 1
    return f"{base}.{k}" if k else base


def prune(store, newest: str, keep: int) -> None:
    """Deletes complete checkpoints older than the newest `keep`, directories without a
    manifest older than `newest` (partial writes whose writer is gone), and the temporary
    directories of the rename-based layout before this one; one listing of the store."""
    listing = directories(store)
    done = complete(listing)
    doomed = set(done[:-keep] if keep > 0 else [])
    doomed |= {n for n in listing if n not in done and (not NAME.fullmatch(n) or order(n) < order(newest))}
    for name in sorted(doomed):
        for rel in sorted(listing[name], key=lambda r: not r.endswith(f"/{MANIFEST}")):  # the manifest first
            store.delete(rel)
        store.tidy(name)


def directories(store) -> dict[str, list[str]]:
    """Directory name -> the files under it (relative to the root), for the checkpoints and
    the old layout's `.tmp-step-*` leftovers."""
    out: dict[str, list[str]] = {}
    for rel in store.files():
        top, sep, _ = rel.partition("/")
        if sep and (NAME.fullmatch(top) or top.startswith(".tmp-step-")):
            out.setdefault(top, []).append(rel)
    return out


def checkpoints(store) -> dict[str, list[str]]:
    """Checkpoint directory name -> the files under it (relative to the root)."""
    return {name: rels for name, rels in directories(store).items() if NAME.fullmatch(name)}


def complete(listing: dict[str, list[str]]) -> list[str]:
    """The checkpoints of a listing that have a manifest, oldest first."""
    return sorted((n for n, rels in listing.items() if NAME.fullmatch(n) and f"{n}/{MANIFEST}" in rels), key=order)


def order(name: str) -> tuple[int, int]:
    """Sort key of a checkpoint name: (step, k) for step-<step>[.<k>]."""
    m = NAME.fullmatch(name)
    return int(m.group(1)), int(m.group(2) or 0)


def load_latest(root) -> tuple[int, dict[str, bytes]]:
    """(step, files) of the newest usable checkpoint under root."""
    store = store_for(root)
    problems = []
    for name in sorted(checkpoints(store), key=order, reverse=True):
        try:
            return read(store, name)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {where(root, name)}: {e}", stacklevel=2)
            problems.append(f"{name}: {e}")
    detail = "; ".join(problems) if problems else "none found"
    raise CheckpointError(f"no usable checkpoint in {root} ({detail})")


def read(store, name: str) -> tuple[int, dict[str, bytes]]:
    """A checkpoint's step and files, after checking its manifest and every checksum."""
    if not store.exists(f"{name}/{MANIFEST}"):
        raise CheckpointError(f"torn: no {MANIFEST} (the write did not finish)")
    try:
        data = store.read(f"{name}/{MANIFEST}")
    except OSError as e:
        raise CheckpointError(f"unreadable {MANIFEST}: {e}") from None
    step, manifest = checked_manifest(data, order(name)[0])
    files = {}
    for file, digest in manifest.items():
        try:
            data = store.read(f"{name}/{file}")
        except OSError as e:
            raise CheckpointError(f"missing or unreadable {file}: {e}") from None
        if sha256(data) != digest:
            raise CheckpointError(f"{file} is corrupted (sha256 mismatch)")
        files[file] = data
    return step, files


def checked_manifest(data: bytes, step_named: int) -> tuple[int, dict[str, str]]:
    """(step, {file: sha256}) of a manifest whose every field is typed and bounded and whose
    file names stay inside the checkpoint; CheckpointError naming the first problem otherwise."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{MANIFEST} is {len(data)} bytes, more than {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise CheckpointError(f"{MANIFEST} is not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{MANIFEST} is a JSON {type(manifest).__name__}, not an object")
    step, files = manifest.get("step"), manifest.get("files")
    if type(step) is not int or step != step_named:
        raise CheckpointError(f"{MANIFEST}: step {step!r} is not the step {step_named} the directory is named for")
    if manifest.get("runtime") not in RUNTIMES:
        raise CheckpointError(f"{MANIFEST}: runtime {manifest.get('runtime')!r} is none of ray, serial")
    if not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
        raise CheckpointError(f"{MANIFEST}: files must be an object of 1 to {MAX_FILES} names")
    for file, digest in files.items():
        if not FILE.fullmatch(file) or file == MANIFEST:
            raise CheckpointError(f"{MANIFEST}: file name {file[:120]!r} is not a plain name inside the checkpoint")
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise CheckpointError(f"{MANIFEST}: the checksum of {file} is not a sha256 hex digest")
    return step, files


def step_of(name: str) -> int:
    """The step a checkpoint directory is named for ("step-000000000500" -> 500)."""
    return order(name)[0]


def complete_checkpoints(root) -> list[str]:
    """Names of the checkpoints under root that have a manifest, oldest first."""
    return complete(checkpoints(store_for(root)))


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
