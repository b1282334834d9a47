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
