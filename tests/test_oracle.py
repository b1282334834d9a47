"""The gRPC oracle service, against real servers on 127.0.0.1 (fake oracles inject the faults)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distgfn.oracle import METHOD, OracleClient, OracleError, serve
from distgfn.rewards.remote import score_keys
from distgfn.wire import decode, encode

REPO = Path(__file__).parents[1]


class Lengths:
    """raw = len(key); a key containing "bad" fails. Counts its calls."""

    def __init__(self):
        self.calls = 0

    def score(self, keys):
        self.calls += 1
        errors = [f"{k!r} is bad" if "bad" in k else None for k in keys]
        raw = np.array([np.nan if e else len(k) for k, e in zip(keys, errors)], dtype=np.float64)
        return raw, errors


class Slow:
    """Blocks every call until `release` is set, like a docking run that outlives the deadline."""

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def score(self, keys):
        self.started.set()
        self.release.wait(timeout=30)
        return np.ones(len(keys)), [None] * len(keys)


class Gate:
    """Holds its first call until `release`; records whether two calls were ever inside at once."""

    def __init__(self):
        self.started, self.release, self.overlapped = threading.Event(), threading.Event(), threading.Event()
        self.inside, self.calls = 0, 0
        self.lock = threading.Lock()

    def score(self, keys):
        with self.lock:
            self.inside += 1
            self.calls += 1
            first = self.calls == 1
            if self.inside > 1:
                self.overlapped.set()
        if first:
            self.started.set()
            self.release.wait(timeout=30)
        with self.lock:
            self.inside -= 1
        return np.ones(len(keys)), [None] * len(keys)


class Arrivals(grpc.ServerInterceptor):
    """Sets `second` when the second Score call reaches the server."""

    def __init__(self):
        self.count, self.second = 0, threading.Event()
        self.lock = threading.Lock()

    def intercept_service(self, continuation, details):
        if details.method == METHOD:
            with self.lock:
                self.count += 1
                if self.count == 2:
                    self.second.set()
        return continuation(details)


class Raises:
    def score(self, keys):
        raise ValueError("receptor file is corrupt")


class FailsTwiceUnavailable(grpc.ServerInterceptor):
    """Answers the first two calls of each request id with UNAVAILABLE, as a restarting server would."""

    def __init__(self):
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if details.method != METHOD:
            return handler

        def score(data, context):
            request_id = decode(data)["id"]
            with self.lock:
                self.ids.append(request_id)
                seen = self.ids.count(request_id)
            if seen <= 2:
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            return handler.unary_unary(data, context)

        return grpc.unary_unary_rpc_method_handler(score)


@contextlib.contextmanager
def running(oracle, **kwargs):
    """A started server for `oracle` and its address; stopped at exit."""
    server, port = serve(oracle, "127.0.0.1", 0, **kwargs)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(timeout=10)


@contextlib.contextmanager
def raw_call(address: str):
    """The Score method with no serializers, to send any bytes."""
    with grpc.insecure_channel(address) as channel:
        yield channel.unary_unary(METHOD)


def test_scores_a_batch_with_the_local_oracles_interface():
    with running(Lengths()) as address, OracleClient([address]) as client:
        raw, errors = client.score(["a", "bb", "a-bad-one", "cccc"])
    np.testing.assert_array_equal(raw, [1, 2, np.nan, 4])
    assert raw.dtype == np.float64 and raw.flags.writeable
    assert errors == [None, None, "'a-bad-one' is bad", None]


def test_is_a_drop_in_oracle_for_score_keys():
    with running(Lengths()) as address, OracleClient([address]) as client:
        scores = score_keys(client, lambda raw: raw / 10, ["CCO", "bad", "C"])
    np.testing.assert_allclose(scores.reward, [0.3, np.nan, 0.1])
    assert scores.failed.tolist() == [False, True, False]


def test_an_empty_batch_makes_no_call():
    oracle = Lengths()
    with running(oracle) as address, OracleClient([address]) as client:
        raw, errors = client.score([])
    assert raw.shape == (0,) and errors == [] and oracle.calls == 0


def test_spreads_batches_over_two_servers_in_turn():
    first, second = Lengths(), Lengths()
    with running(first) as a, running(second) as b, OracleClient([a, b]) as client:
        for _ in range(4):
            raw, _ = client.score(["xyz"])
            assert raw.tolist() == [3.0]
    assert (first.calls, second.calls) == (2, 2)


def test_answers_a_repeated_request_id_from_memory():
    oracle = Lengths()
    request = encode({"id": "req-1", "keys": ["a", "bb"]})
    with running(oracle) as address, raw_call(address) as call:
        replies = [call(request, timeout=5), call(request, timeout=5)]
    assert replies[0] == replies[1] and oracle.calls == 1
    assert decode(replies[0])["id"] == "req-1"


def test_a_request_id_reused_with_other_keys_is_invalid_argument():
    with running(Lengths()) as address, raw_call(address) as call:
        call(encode({"id": "req-1", "keys": ["a"]}), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            call(encode({"id": "req-1", "keys": ["b"]}), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "different keys" in e.value.details()


def test_a_call_past_its_deadline_raises_deadline_exceeded():
    oracle = Slow()
    with running(oracle) as address, OracleClient([address], deadline_s=0.2, retries=0) as client:
        try:
            with pytest.raises(OracleError, match=f"{re.escape(address)}: DEADLINE_EXCEEDED"):
                client.score(["a"])
            assert oracle.started.is_set()
        finally:
            oracle.release.set()  # lets the server's worker thread finish before the server stops


def test_retries_unavailable_with_the_same_request_id():
    oracle, flaky = Lengths(), FailsTwiceUnavailable()
    with running(oracle, interceptors=[flaky]) as address:
        with OracleClient([address], retries=3, backoff_s=0.01) as client:
            raw, errors = client.score(["abc", "de"])
    assert raw.tolist() == [3.0, 2.0] and errors == [None, None]
    assert len(flaky.ids) == 3 and len(set(flaky.ids)) == 1
    assert oracle.calls == 1


def test_runs_one_oracle_call_at_a_time():
    oracle, arrivals = Gate(), Arrivals()
    results: queue.Queue = queue.Queue()
    with running(oracle, interceptors=[arrivals]) as address, OracleClient([address]) as client:
        calls = [threading.Thread(target=lambda: results.put(client.score(["a"])[0].tolist())) for _ in range(2)]
        try:
            calls[0].start()
            assert oracle.started.wait(timeout=5)
            calls[1].start()
            assert arrivals.second.wait(timeout=5)
            # Bounded wait for what must not happen: the second call entering the busy oracle.
            assert not oracle.overlapped.wait(timeout=0.3)
        finally:
            oracle.release.set()
            for call in calls:
                call.join(timeout=10)
    assert [results.get(timeout=1), results.get(timeout=1)] == [[1.0], [1.0]] and oracle.calls == 2


def test_with_concurrency_two_calls_run_in_the_oracle_at_once():
    oracle = Gate()
    results: queue.Queue = queue.Queue()
    with running(oracle, concurrency=2) as address, OracleClient([address]) as client:
        calls = [threading.Thread(target=lambda: results.put(client.score(["a"])[0].tolist())) for _ in range(2)]
        try:
            calls[0].start()
            assert oracle.started.wait(timeout=5)
            calls[1].start()
            assert oracle.overlapped.wait(timeout=10), "the second call entered while the first was inside"
        finally:
            oracle.release.set()
            for call in calls:
                call.join(timeout=10)
    assert [results.get(timeout=1), results.get(timeout=1)] == [[1.0], [1.0]]


def test_serves_hypergrid_cells_and_names_the_bad_ones():
    from distgfn.rewards.remote import served_oracle

    oracle = served_oracle("hypergrid", ["env.options.height=8"])
    raw, errors = oracle.score(["0,0", "1,1", "7,0", "8,1", "a,b"])
    np.testing.assert_allclose(raw[:3], [0.6, 2.6, 0.6])  # a corner; the ring; an edge
    assert errors[:3] == [None] * 3 and "outside the grid" in errors[3] and "bad cell 'a,b'" in errors[4]


def test_serves_a_user_oracle_named_by_import_path_and_rejects_a_bad_path():
    from distgfn.config import ConfigError
    from distgfn.rewards.remote import served_oracle

    raw, errors = served_oracle("distgfn.chem.scores:QEDScorer", []).score(["CCO"])
    assert 0 < raw[0] < 1 and errors == [None]
    with pytest.raises(ConfigError, match="reward.name: module nowhere.at_all does not import"):
        served_oracle("nowhere.at_all:Oracle", [])


def test_a_hypergrid_run_trains_against_a_served_oracle(tmp_path):
    from distgfn import serial
    from distgfn.config import load_config
    from distgfn.metrics import read_metrics
    from distgfn.rewards.remote import served_oracle

    with running(served_oracle("hypergrid", []), concurrency=2) as address:
        cfg = load_config(None, ["runtime=serial", "reward.mode=remote", f"reward.addresses={address}",
                                 "learner.steps=300", "log.every=100", "eval.every=100"])
        serial.train(cfg, tmp_path, progress=lambda row, total: None)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [100, 200, 300] and rows[-1]["l1_exact"] < rows[0]["l1_exact"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_down_fails_after_the_retries():
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with OracleClient([address], deadline_s=2, retries=2, backoff_s=0.01) as client:
        with pytest.raises(OracleError, match=f"UNAVAILABLE or busy after 3 attempts on {re.escape(address)}"):
            client.score(["a"])
    assert time.monotonic() - start < 10


def test_a_port_already_served_is_an_error_not_a_shared_port():
    with running(Lengths()) as address:
        port = int(address.rsplit(":", 1)[1])
        with pytest.raises(OracleError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(Lengths(), "127.0.0.1", port)


def test_health_check_reports_serving():
    with running(Lengths()) as address, grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "distgfn.Oracle"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("request_bytes, named", [
    (np.random.default_rng(0).bytes(64), "not a msgpack message"),
    (encode(["a"]), "must be a map"),
    (encode({"keys": ["a"]}), "'id'"),
    (encode({"id": "r", "keys": "CCO"}), "'keys' must be a list"),
    (encode({"id": "r", "keys": ["a", 7]}), r"'keys'\[1\]"),
], ids=["random-bytes", "not-a-map", "no-id", "keys-not-a-list", "key-not-a-string"])
def test_bad_request_bytes_are_invalid_argument_and_the_server_keeps_serving(request_bytes, named):
    with running(Lengths()) as address, raw_call(address) as call:
        with pytest.raises(grpc.RpcError) as e:
            call(request_bytes, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert re.search(named, e.value.details())
        with OracleClient([address]) as client:
            assert client.score(["ab"])[0].tolist() == [2.0]


def test_a_token_is_required_when_set():
    with running(Lengths(), token="s3cret") as address:
        for token in (None, "wrong"):
            with OracleClient([address], token=token) as client:
                with pytest.raises(OracleError, match="UNAUTHENTICATED"):
                    client.score(["a"])
        with OracleClient([address], token="s3cret") as client:
            assert client.score(["a"])[0].tolist() == [1.0]


def test_an_oracle_that_raises_gives_internal_with_its_message():
    with running(Raises()) as address, OracleClient([address]) as client:
        with pytest.raises(OracleError, match="INTERNAL: oracle failed: ValueError: receptor file is corrupt"):
            client.score(["a"])


def test_a_request_over_the_size_limit_is_resource_exhausted():
    with running(Lengths(), max_message_bytes=4096) as address, OracleClient([address]) as client:
        with pytest.raises(OracleError, match="RESOURCE_EXHAUSTED"):
            client.score(["C" * 10_000])
        assert client.score(["CC"])[0].tolist() == [2.0]


def write_self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """(cert, key) PEM files for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_serves_over_tls_to_a_client_that_trusts_the_certificate(tmp_path):
    cert, key = write_self_signed_cert(tmp_path)
    with running(Lengths(), tls=(cert, key)) as address:
        with OracleClient([address], tls_ca=cert) as client:
            assert client.score(["abc"])[0].tolist() == [3.0]
        with OracleClient([address], retries=0) as plaintext:
            with pytest.raises(OracleError, match="UNAVAILABLE"):
                plaintext.score(["abc"])


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def wait_for_port(lines: queue.Queue, timeout: float) -> int:
    """The port from the server's `serving reward ... on HOST:PORT` line on stderr."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=deadline - time.monotonic())
        except queue.Empty:
            break
        seen.append(line)
        match = re.search(r"serving reward qed on 127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no 'serving' line within {timeout} s; stderr so far: {''.join(seen)}")


def test_serve_reward_command_scores_qed_and_stops_on_sigterm():
    from rdkit import Chem
    from rdkit.Chem import QED

    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O"]
    proc = subprocess.Popen([sys.executable, "-m", "distgfn", "serve-reward", "--reward", "qed", "--port", "0"],
                            cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=read_lines, args=(proc.stderr, lines), daemon=True).start()
        port = wait_for_port(lines, timeout=60)
        with OracleClient([f"127.0.0.1:{port}"], deadline_s=10) as client:
            raw, errors = client.score(smiles)
        assert errors == [None, None]
        np.testing.assert_allclose(raw, [QED.qed(Chem.MolFromSmiles(s)) for s in smiles], rtol=1e-12)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class RaisesOn:
    """Raises on any batch holding `bad`; raw = len(key) otherwise."""

    def __init__(self, bad: str):
        self.bad = bad

    def score(self, keys):
        if self.bad in keys:
            raise ValueError(f"cannot score {self.bad}")
        return np.array([len(k) for k in keys], dtype=np.float64), [None] * len(keys)


class Keys:
    """An env whose states are rows of strings, its keys."""

    def keys(self, states):
        return [str(s) for s in states]


def test_through_the_reward_an_oracle_that_raises_fails_only_the_object_it_raises_on():
    from distgfn.rewards import score_objects
    from distgfn.rewards.remote import OracleReward

    with running(RaisesOn("bad")) as address, OracleClient([address]) as client:
        reward = OracleReward(Keys(), client, lambda raw: raw)
        log_r, scores = score_objects(reward, np.array(["ab", "bad", "c"]), Keys().keys)
    assert scores.errors[0] is None and scores.errors[2] is None
    assert "INTERNAL: oracle failed: ValueError: cannot score bad" in scores.errors[1]
    np.testing.assert_allclose(np.exp(log_r[[0, 2]]), [2.0, 1.0])


def test_through_the_reward_a_call_past_its_deadline_fails_its_objects():
    from distgfn.rewards.remote import OracleReward

    oracle = Slow()
    with running(oracle) as address, OracleClient([address], deadline_s=0.2, retries=0) as client:
        try:
            scores = OracleReward(Keys(), client, lambda raw: raw)(np.array(["a", "b"]))
        finally:
            oracle.release.set()
    assert all("DEADLINE_EXCEEDED" in e for e in scores.errors) and np.isnan(scores.reward).all()
