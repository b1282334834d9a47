"""The sEH data layer: where the files live, checking them, fetching them, loading the proxy weights safely."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from distgfn.data import DATASETS, PROXY_NPZ, DataError, RestrictedUnpickler, data_dir, fetch, load_proxy_params, require

REPO = Path(__file__).parents[1]
PUBLISHED = list(DATASETS["seh"])


@pytest.fixture
def seh_shared(seh_data) -> Path:
    return seh_data


@pytest.fixture
def seh_copy(seh_shared, tmp_path) -> Path:
    """A writable copy of the published files."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in PUBLISHED:
        shutil.copyfile(seh_shared / f, copy / f)  # copyfile, not copy: the shared files are read-only
    return copy


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serving(directory: Path):
    """A real HTTP server on 127.0.0.1 serving `directory`; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_data_dir_prefers_config_then_env_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTGFN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_dir("seh", str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert data_dir("seh") == tmp_path / "env"
    monkeypatch.delenv("DISTGFN_DATA_DIR")
    assert data_dir("seh") == tmp_path / "cache" / "distgfn" / "seh"


def test_require_accepts_the_read_only_shared_copy_found_through_the_env_var(seh_shared, monkeypatch):
    monkeypatch.setenv("DISTGFN_DATA_DIR", str(seh_shared))
    assert require("seh", data_dir("seh")) == seh_shared


def test_require_reports_a_missing_file_and_how_to_fetch_it(seh_copy):
    (seh_copy / "lig.pdb").unlink()
    with pytest.raises(DataError) as e:
        require("seh", seh_copy)
    message = str(e.value)
    assert "lig.pdb" in message and str(seh_copy) in message and "missing" in message
    assert "distgfn data fetch seh" in message and "DISTGFN_DATA_DIR" in message and "data.dir" in message


def test_require_reports_a_corrupted_file_with_expected_and_actual_sha256(seh_copy):
    path = seh_copy / "best_params.pkl.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError) as e:
        require("seh", seh_copy)
    message = str(e.value)
    assert "best_params.pkl.gz" in message and "sha256 mismatch" in message
    assert DATASETS["seh"]["best_params.pkl.gz"][1] in message and sha256(path) in message
    assert "distgfn data fetch seh" in message


def test_restricted_unpickler_refuses_any_other_global():
    for payload, name in [([np.zeros(2), os.system], "system"), (ValueError("x"), "builtins.ValueError")]:
        with pytest.raises(DataError, match="refusing to unpickle global .*" + name):
            RestrictedUnpickler(io.BytesIO(pickle.dumps(payload, protocol=3))).load()


def test_restricted_unpickler_reads_arrays_in_both_numpy_spellings(seh_shared):
    ours = RestrictedUnpickler(io.BytesIO(pickle.dumps([np.arange(3.0)], protocol=3))).load()  # numpy._core
    np.testing.assert_array_equal(ours[0], np.arange(3.0))
    with gzip.open(seh_shared / "best_params.pkl.gz") as f:  # published with numpy.core
        arrays = RestrictedUnpickler(f).load()
    assert len(arrays) == 22 and all(a.dtype == np.float32 for a in arrays)


def test_fetch_downloads_verifies_converts_and_then_skips_present_files(seh_copy, tmp_path):
    dest, lines = tmp_path / "dest", []
    with serving(seh_copy) as url:
        fetch("seh", dest, base_url=url, progress=lines.append)
        assert all(sha256(dest / f) == DATASETS["seh"][f][1] for f in PUBLISHED)
        assert (dest / PROXY_NPZ).is_file()
        assert [line.split(":")[0] for line in lines[:4]] == PUBLISHED and "bytes" in lines[0]
        mtimes = {f: (dest / f).stat().st_mtime_ns for f in PUBLISHED}
        lines.clear()
        fetch("seh", dest, base_url=url, progress=lines.append)
    assert all("skipped" in line for line in lines[:4])
    assert mtimes == {f: (dest / f).stat().st_mtime_ns for f in PUBLISHED}


def test_fetch_refuses_a_corrupt_download_and_leaves_no_partial_file(seh_copy, tmp_path):
    served = seh_copy / "4jnc.nohet.aligned.pdbqt"
    served.write_bytes(served.read_bytes()[:-10])
    dest = tmp_path / "dest"
    with serving(seh_copy) as url, pytest.raises(DataError) as e:
        fetch("seh", dest, base_url=url, progress=lambda line: None)
    message = str(e.value)
    assert "4jnc.nohet.aligned.pdbqt" in message and "sha256 mismatch" in message
    assert DATASETS["seh"]["4jnc.nohet.aligned.pdbqt"][1] in message and sha256(served) in message
    assert not any("4jnc" in p.name for p in dest.iterdir())
    assert not any(p.name.endswith(".part") for p in dest.iterdir())


def test_proxy_params_from_npz_equal_those_from_the_pickle(seh_copy, tmp_path):
    dest = tmp_path / "dest"
    with serving(seh_copy) as url:
        fetch("seh", dest, base_url=url, progress=lambda line: None)
    (dest / "best_params.pkl.gz").unlink()  # proves the npz alone is read
    from_npz, from_pkl = load_proxy_params(dest), load_proxy_params(seh_copy)
    assert list(from_npz) == list(from_pkl) and len(from_pkl) == 18
    for name in from_pkl:
        assert from_npz[name].dtype == from_pkl[name].dtype == np.float32
        np.testing.assert_array_equal(from_npz[name], from_pkl[name])


def test_cli_data_fetch_downloads_into_dir(seh_copy, tmp_path):
    dest = tmp_path / "cli"
    with serving(seh_copy) as url:
        done = subprocess.run([sys.executable, "-m", "distgfn", "data", "fetch", "seh", "--dir", str(dest),
                               "--base-url", url], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(sha256(dest / f) == DATASETS["seh"][f][1] for f in PUBLISHED)
    assert (dest / PROXY_NPZ).is_file() and str(dest) in done.stderr


def test_cli_data_fetch_failure_is_an_error_line_and_exit_code_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "distgfn", "data", "fetch", "nosuch", "--dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "distgfn: error: unknown dataset 'nosuch'" in done.stderr
