"""Published data files: where they come from, where they live, and checking them.

The project never ships data. `DATASETS` names each file's published URL and sha256;
`data_dir` says where a dataset lives on this machine; `require` checks it is there and
intact (and says how to fix it when not); `fetch` downloads it. Typical use:

    directory = require("seh", data_dir("seh", cfg.data.dir))  # cfg.data.dir may be None
    params = load_proxy_params(directory)
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

_GFN = "https://github.com/GFNOrg/gflownet/raw/master/mols/data"

DATASETS: dict[str, dict[str, tuple[str, str]]] = {
    "seh": {
        "blocks_PDB_105.json": (
            f"{_GFN}/blocks_PDB_105.json",
            "0fcc09130c2e03046ecf3ccc6cb5f903abdb912a541b3f9f2d4578ab01453b88"),
        "best_params.pkl.gz": (
            f"{_GFN}/pretrained_proxy/best_params.pkl.gz",
            "f76ab480b62e23dda04fd45fefe0e7ae2374b3f8c3f18fb7e00651cad05b9e1f"),
        "4jnc.nohet.aligned.pdbqt": (
            f"{_GFN}/seh/4jnc/4jnc.nohet.aligned.pdbqt",
            "8cb486ad58eb4f2554adbf27d6f06fc9fc676e325ace4b240f4e1d0b5f068d71"),
        "lig.pdb": (
            f"{_GFN}/seh/4jnc/lig.pdb",
            "f5d575db3a5f400df9dc78baefd29761cb048e7195a347983c34d756ce84eede"),
    },
}

PROXY_NPZ = "seh_proxy.npz"
PROXY_PKL = "best_params.pkl.gz"

# Index in best_params.pkl.gz -> (name, shape). Indices 12-15 are a head the proxy never uses.
PROXY_ARRAYS: dict[int, tuple[str, tuple[int, ...]]] = {
    0: ("lin0.weight", (64, 71)),
    1: ("lin0.bias", (64,)),
    2: ("conv.root.weight", (64, 64)),
    3: ("conv.bias", (64,)),
    4: ("conv.edge_net.0.weight", (128, 4)),
    5: ("conv.edge_net.0.bias", (128,)),
    6: ("conv.edge_net.2.weight", (4096, 128)),
    7: ("conv.edge_net.2.bias", (4096,)),
    8: ("gru.weight_ih", (192, 64)),
    9: ("gru.weight_hh", (192, 64)),
    10: ("gru.bias_ih", (192,)),
    11: ("gru.bias_hh", (192,)),
    16: ("set2set.lstm.weight_ih", (256, 128)),
    17: ("set2set.lstm.weight_hh", (256, 64)),
    18: ("set2set.lstm.bias_ih", (256,)),
    19: ("set2set.lstm.bias_hh", (256,)),
    20: ("out.weight", (1, 128)),
    21: ("out.bias", (1,)),
}
PROXY_LIST_LEN = 22


class DataError(ValueError):
    """A data file is missing, corrupt or unsafe, or a download failed."""


def data_dir(name: str, configured: str | os.PathLike | None = None) -> Path:
    """Where dataset `name` lives: the config key `data.dir`, else $DISTGFN_DATA_DIR, else the user cache.

    $DISTGFN_DATA_DIR holds the dataset's files directly (e.g. a shared read-only copy);
    the cache is per dataset, `$XDG_CACHE_HOME/distgfn/<name>` (default ~/.cache).
    """
    _files(name)
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("DISTGFN_DATA_DIR"):
        return Path(os.environ["DISTGFN_DATA_DIR"]).expanduser()
    return cache_dir(name)


def cache_dir(name: str) -> Path:
    """The user cache for dataset `name`, where `distgfn data fetch` puts it by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "distgfn" / name


def _files(name: str) -> dict[str, tuple[str, str]]:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _fix_hint(name: str, directory: Path) -> str:
    return (f"fix: `distgfn data fetch {name} --dir {directory}`, or `distgfn data fetch {name}` "
            f"(into {data_dir(name)}), or set DISTGFN_DATA_DIR or the config key data.dir "
            f"to a directory that holds the files")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# (resolved path, size, mtime_ns) -> sha256; hashing 2.6 MB on every call would add up.
_verified: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_of(path)
    return _verified[key]


def _problem(path: Path, expected: str) -> str | None:
    """What is wrong with one file, or None when it is present and intact."""
    if not path.is_file():
        return "missing"
    actual = _cached_sha256(path)
    if actual != expected:
        return f"sha256 mismatch: expected {expected}, got {actual}"
    return None


def require(name: str, directory: str | os.PathLike, files: list[str] | None = None) -> Path:
    """`directory`, after checking the named files of dataset `name` (default all) are intact.

    Only reads: the directory may be a shared read-only copy.
    """
    directory = Path(directory)
    registry = _files(name)
    for fname in files if files is not None else list(registry):
        if fname not in registry:
            raise DataError(f"{fname!r} is not a file of dataset {name!r}; known: {', '.join(registry)}")
        problem = _problem(directory / fname, registry[fname][1])
        if problem:
            raise DataError(f"data file {fname} in {directory}: {problem}; {_fix_hint(name, directory)}")
    return directory


def fetch(name: str, dest: str | os.PathLike, base_url: str | None = None,
          progress: Callable[[str], None] = print) -> Path:
    """Download dataset `name` into `dest`, verify it, and convert what needs converting.

    Files already present and intact are skipped. `base_url`, when given, replaces
    everything before the file name in each published URL (a mirror, or a test server).
    """
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create data directory {dest}: {e}") from e
    for fname, (url, sha) in _files(name).items():
        if _problem(dest / fname, sha) is None:
            progress(f"{fname}: present and verified, skipped")
            continue
        if base_url:
            url = base_url.rstrip("/") + "/" + fname
        size = _download(url, dest / fname, sha)
        progress(f"{fname}: {size} bytes from {url}")
    if name == "seh":
        _write_npz(dest / PROXY_NPZ, _proxy_from_pickle(dest / PROXY_PKL))
        progress(f"{PROXY_NPZ}: proxy weights converted from {PROXY_PKL}")
    return dest


def _download(url: str, path: Path, expected: str) -> int:
    """Download `url` to `path` through a temporary file beside it, renamed into place once verified.

    A failed or corrupt download leaves nothing behind, so `path` is either absent or intact.
    """
    tmp = _temp_beside(path)
    try:
        actual, size = _stream(url, tmp)
        if actual != expected:
            raise DataError(f"downloaded {path.name} from {url} is corrupt: "
                            f"sha256 mismatch: expected {expected}, got {actual}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def _stream(url: str, tmp: Path) -> tuple[str, int]:
    """(sha256, size) of `url`, written to `tmp`."""
    h, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
                h.update(chunk)
                size += len(chunk)
    except (OSError, http.client.HTTPException) as e:  # URLError and HTTPError are OSErrors
        raise DataError(f"downloading {url} failed: {e}; set DISTGFN_DATA_DIR or the config key data.dir "
                        f"to a directory that already holds the files") from e
    return h.hexdigest(), size


def _temp_beside(path: Path) -> Path:
    """An empty temporary file in `path`'s directory, so that os.replace onto `path` is atomic."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as e:
        raise DataError(f"cannot write {path}: {e}") from e
    os.close(fd)
    return Path(tmp)


def _write_npz(path: Path, params: dict[str, np.ndarray]) -> None:
    tmp = _temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **params)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_proxy_params(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """The sEH proxy's weights by name: from seh_proxy.npz if present, else from the verified pickle."""
    directory = Path(directory)
    if (directory / PROXY_NPZ).is_file():
        with np.load(directory / PROXY_NPZ, allow_pickle=False) as npz:
            params = {k: npz[k] for k in npz.files}
        _check_shapes(params, directory / PROXY_NPZ)
        return params
    require("seh", directory, [PROXY_PKL])
    return _proxy_from_pickle(directory / PROXY_PKL)


def _proxy_from_pickle(path: Path) -> dict[str, np.ndarray]:
    with gzip.open(path, "rb") as f:
        arrays = RestrictedUnpickler(f).load()
    if not isinstance(arrays, list) or len(arrays) != PROXY_LIST_LEN:
        raise DataError(f"{path}: expected a list of {PROXY_LIST_LEN} arrays, got {type(arrays).__name__}"
                        + (f" of length {len(arrays)}" if isinstance(arrays, list) else ""))
    params = {name: np.asarray(arrays[i], dtype=np.float32) for i, (name, _) in PROXY_ARRAYS.items()}
    _check_shapes(params, path)
    return params


def _check_shapes(params: dict[str, np.ndarray], source: Path) -> None:
    for name, shape in PROXY_ARRAYS.values():
        if name not in params:
            raise DataError(f"{source}: proxy array {name} is missing")
        if params[name].shape != shape:
            raise DataError(f"{source}: proxy array {name} has shape {params[name].shape}, expected {shape}")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else: any other global could run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return _numpy_reconstruct()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise DataError(f"refusing to unpickle global {module}.{name}: "
                        f"only numpy arrays (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) are allowed")
