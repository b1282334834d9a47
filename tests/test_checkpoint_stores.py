"""Checkpoints on every kind of store: a local directory, S3 (moto's server) and GCS (the
gcp-storage-emulator), both real servers on loopback started by the tests. Object stores have
no directory rename: the manifest, written last, is the commit. A bad manifest makes its
checkpoint skipped, never a traceback; a SIGKILL during a checkpoint write loses nothing."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distgfn import checkpoint
from distgfn.metrics import read_metrics
from distgfn.runstate import RunState

STORES = ["local", "s3", "gcs"]


@pytest.fixture
def make_root(request, tmp_path):
    """kind -> a fresh checkpoint root of that kind."""
    import uuid

    def make(kind: str) -> str:
        name = f"{request.node.name.split('[')[0][5:35]}-{uuid.uuid4().hex[:8]}"
        if kind == "local":
            return str(tmp_path / name)
        return request.getfixturevalue(f"{kind}_root")(name)

    return make


def tree(root) -> dict[str, list[str]]:
    """Checkpoint directory -> its files, as the store lists them."""
    return {name: sorted(rel.split("/", 1)[1] for rel in rels)
            for name, rels in checkpoint.checkpoints(checkpoint.store_for(root)).items()}


@pytest.mark.parametrize("kind", STORES)
def test_save_keeps_the_newest_and_loads_them_back_on_every_store(make_root, kind):
    root = make_root(kind)
    for step in (10, 20, 30, 40):
        written = checkpoint.save(root, step, {"a.bin": f"a{step}".encode(), "b.bin": b"b"}, keep=2, runtime="ray")
        assert written.split("?")[0] == f"{root.split('?')[0]}/step-{step:012d}"
    assert checkpoint.complete_checkpoints(root) == ["step-000000000030", "step-000000000040"]
    assert tree(root) == {name: ["MANIFEST.json", "a.bin", "b.bin"] for name in ("step-000000000030", "step-000000000040")}
    assert checkpoint.load_latest(root) == (40, {"a.bin": b"a40", "b.bin": b"b"})


@pytest.mark.parametrize("kind", STORES)
def test_a_second_save_at_one_step_never_touches_the_committed_one(make_root, kind):
    root = make_root(kind)
    checkpoint.save(root, 10, {"a.bin": b"first"})
    checkpoint.save(root, 10, {"a.bin": b"second"})
    assert checkpoint.complete_checkpoints(root) == ["step-000000000010", "step-000000000010.1"]
    assert checkpoint.load_latest(root) == (10, {"a.bin": b"second"})


@pytest.mark.parametrize("kind", STORES)
def test_a_torn_write_is_skipped_then_cleaned_up_by_the_next_save(make_root, kind):
    root = make_root(kind)
    store = checkpoint.store_for(root)
    checkpoint.save(root, 10, {"a.bin": b"ten"})
    store.write("step-000000000020/a.bin", b"half")  # a writer killed before its manifest
    with pytest.warns(UserWarning, match=r"step-000000000020: torn: no MANIFEST.json"):
        assert checkpoint.load_latest(root) == (10, {"a.bin": b"ten"})
    checkpoint.save(root, 30, {"a.bin": b"thirty"})
    assert sorted(tree(root)) == ["step-000000000010", "step-000000000030"], "the abandoned write is gone"


@pytest.mark.parametrize("kind", STORES)
def test_a_corrupted_file_is_skipped_on_every_store(make_root, kind):
    root = make_root(kind)
    checkpoint.save(root, 10, {"a.bin": b"ten"})
    checkpoint.save(root, 20, {"a.bin": b"twenty"})
    checkpoint.store_for(root).write("step-000000000020/a.bin", b"twentx")
    with pytest.warns(UserWarning, match=r"step-000000000020: a.bin is corrupted"):
        assert checkpoint.load_latest(root) == (10, {"a.bin": b"ten"})


def good_manifest(step=20):
    return {"step": step, "runtime": "ray", "files": {"a.bin": checkpoint.sha256(b"twenty")}}


BAD_MANIFESTS = [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
    (json.dumps({**good_manifest(), "step": "20"}).encode(), "step '20' is not the step 20"),
    (json.dumps({**good_manifest(), "step": 7}).encode(), "step 7 is not the step 20"),
    (json.dumps({**good_manifest(), "step": True}).encode(), "step True is not"),
    (json.dumps({"step": 20, "runtime": "ray"}).encode(), "files must be an object"),
    (json.dumps({**good_manifest(), "files": {}}).encode(), "files must be an object of 1 to 64"),
    (json.dumps({**good_manifest(), "files": {"../step-000000000010/a.bin": "0" * 64}}).encode(), "not a plain name"),
    (json.dumps({**good_manifest(), "files": {"/etc/passwd": "0" * 64}}).encode(), "not a plain name"),
    (json.dumps({**good_manifest(), "files": {"sub/a.bin": "0" * 64}}).encode(), "not a plain name"),
    (json.dumps({**good_manifest(), "files": {"a.bin": 5}}).encode(), "not a sha256 hex digest"),
    (json.dumps({**good_manifest(), "runtime": "evil"}).encode(), "runtime 'evil' is none of"),
    (json.dumps({**good_manifest(), "files": {f"f{i}": "0" * 64 for i in range(65)}}).encode(), "1 to 64 names"),
    (b" " * (2 << 20), "more than"),
]


@pytest.mark.parametrize("data,problem", BAD_MANIFESTS, ids=[p for _, p in BAD_MANIFESTS])
def test_a_bad_manifest_skips_its_checkpoint_with_a_warning_naming_the_problem(tmp_path, data, problem):
    checkpoint.save(tmp_path, 10, {"a.bin": b"ten"})
    checkpoint.save(tmp_path, 20, {"a.bin": b"twenty"})
    (tmp_path / "step-000000000020" / checkpoint.MANIFEST).write_bytes(data)
    with pytest.warns(UserWarning, match=rf"step-000000000020: .*{problem}") as caught:
        assert checkpoint.load_latest(tmp_path) == (10, {"a.bin": b"ten"})
    assert len(caught) == 1


def test_a_truncated_manifest_is_skipped(tmp_path):
    checkpoint.save(tmp_path, 10, {"a.bin": b"ten"})
    written = Path(checkpoint.save(tmp_path, 20, {"a.bin": b"twenty"}))
    manifest = written / checkpoint.MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:30])
    with pytest.warns(UserWarning, match="not JSON"):
        assert checkpoint.load_latest(tmp_path)[0] == 10


def test_a_gcs_uri_with_an_unknown_option_is_a_clear_error():
    with pytest.raises(checkpoint.CheckpointError, match=r"unknown option 'colour'"):
        checkpoint.store_for("gs://bucket/run?colour=blue")


# A driver killed (SIGKILL) in the middle of its second checkpoint: after learner.pt, before
# the run's state and the manifest. The kill is injected here, in the test's own entry point.
KILLED_DURING_CHECKPOINT = """
import os, signal, sys
from distgfn import checkpoint, cli

seen = []
def killing(write):
    def wrapped(self, rel, data):
        if rel.endswith("/run.pt"):
            seen.append(rel)
            if len(seen) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return write(self, rel, data)
    return wrapped

for store in (checkpoint.LocalStore, checkpoint.ArrowStore):
    store.write = killing(store.write)
sys.exit(cli.main(sys.argv[1:]))
"""


def distgfn(args: list[str], kill_in_checkpoint: bool = False) -> subprocess.CompletedProcess:
    code = KILLED_DURING_CHECKPOINT if kill_in_checkpoint else "import sys; from distgfn import cli; sys.exit(cli.main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("runtime", ["serial", "ray"])
@pytest.mark.parametrize("kind", STORES)
def test_sigkill_during_a_checkpoint_write_then_resume_loses_nothing(make_root, tmp_path, kind, runtime, request):
    root = make_root(kind)
    run_dir = tmp_path / "run"
    sets = [f"runtime={runtime}", "env.options.height=5", "model.options.hidden=32", "learner.steps=40",
            "log.every=10", "eval.every=0", "checkpoint.every=10", f"checkpoint.path={root}"]
    if runtime == "ray":
        ray = request.getfixturevalue("ray_cluster")
        sets += [f"ray.address={ray.get_runtime_context().gcs_address}", "actors.num=1", "actors.cpus=0.5",
                 "learner.cpus=0.5"]
    config = Path(__file__).parents[1] / "configs" / "hypergrid.yaml"
    args = ["train", str(config), "--run-dir", str(run_dir)] + [a for s in sets for a in ("--set", s)]

    killed = distgfn(args, kill_in_checkpoint=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # A Ray learner takes its snapshot between two updates: at step 10 or a little after.
    complete = checkpoint.complete_checkpoints(root)
    assert len(complete) == 1, f"one checkpoint before the kill: {tree(root)}\n{killed.stderr[-3000:]}"
    first = complete[0]
    torn = [name for name in tree(root) if name != first]
    assert len(torn) == 1 and checkpoint.step_of(torn[0]) >= 20, f"the second one was cut short: {tree(root)}"

    with pytest.warns(UserWarning, match="torn"):
        step, files = checkpoint.load_latest(root)
    counted = RunState.from_files(files).trajectories

    resumed = distgfn(["train", "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "skipping checkpoint" in resumed.stderr and f"{torn[0]}: torn" in resumed.stderr
    assert f"checkpoint at step {checkpoint.step_of(first)} in" in resumed.stderr
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20, 30, 40], "each step once, in order, to the budget"
    # Counting goes on from the checkpoint's count: nothing sampled after it is counted twice.
    after = [r["trajectories"] for r in rows if r["step"] > step]
    assert counted <= min(after) and after == sorted(after), (counted, rows)
    if runtime == "serial":  # a Ray learner's snapshot may land after a later row was logged
        assert max(r["trajectories"] for r in rows if r["step"] <= step) <= counted, (counted, rows)
    assert checkpoint.load_latest(root)[0] == 40
    assert all("MANIFEST.json" in files for files in tree(root).values()), f"partial writes left: {tree(root)}"
