import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The sEH task's published files: DISTGFN_DATA_DIR when set, else a copy beside the repository
# (../shared/data/seh); the tests never download.
SEH_DATA = Path(os.environ.get("DISTGFN_DATA_DIR") or Path(__file__).parents[1].parent / "shared" / "data" / "seh")


@pytest.fixture(scope="session")
def seh_data() -> Path:
    """The shared read-only copy of the sEH data; missing files fail the test, never skip it."""
    from distgfn.data import DATASETS

    missing = [name for name in [*DATASETS["seh"], "proxy_reference.json"] if not (SEH_DATA / name).is_file()]
    if missing:
        pytest.fail(f"sEH test data missing in {SEH_DATA}: {', '.join(missing)}; the tests need the shared "
                    f"data folder beside the repository")
    return SEH_DATA


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for every test that needs one (never a bare ray.init()). It
    offers no GPU even on a host that has one, so the suite runs the same everywhere."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_root():
    """A real S3-compatible server (moto's) on loopback with one bucket; yields the checkpoint
    URI prefix of a fresh path per use (s3://bucket/<name>?endpoint_override=...)."""
    import logging

    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # moto takes any credentials
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    pyarrow.fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                            allow_bucket_creation=True).create_dir("bucket")
    yield lambda name: f"s3://bucket/{name}?{options}"
    server.stop()


@pytest.fixture(scope="session")
def gcs_root():
    """The GCS emulator (gcp-storage-emulator) on loopback with one bucket; yields the URI of a
    fresh path per use (gs://bucket/<name>?endpoint_override=...&anonymous=true)."""
    import socket

    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:  # a free port (the emulator does not report the one it got)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="bucket")
    server.start()  # returns once it listens
    yield lambda name: f"gs://bucket/{name}?endpoint_override=127.0.0.1:{port}&scheme=http&anonymous=true"
    server.stop()
