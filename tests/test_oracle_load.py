"""The oracle server under concurrent load, on real servers on 127.0.0.1: it stays healthy,
turns away what it cannot take (the client tries elsewhere), never computes a call whose
caller gave up, drains on stop, and bounds what one request can make it hold."""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distgfn.oracle import MAX_KEY_CHARS, MAX_KEYS, METHOD, OracleClient, OracleError, RecentResponses, serve
from distgfn.rewards.errors import OracleDeadline, OracleUnavailable
from distgfn.wire import encode


class Sleeps:
    """Each call takes `seconds` (a docking run, scaled down); counts the calls it computed."""

    def __init__(self, seconds: float):
        self.seconds, self.calls, self.started = seconds, 0, threading.Event()
        self.lock = threading.Lock()

    def score(self, keys):
        self.started.set()
        time.sleep(self.seconds)
        with self.lock:
            self.calls += 1
        return np.ones(len(keys)), [None] * len(keys)


class Held:
    """Holds every call until `release`; counts the calls it computed."""

    def __init__(self):
        self.started, self.release, self.calls = threading.Event(), threading.Event(), 0

    def score(self, keys):
        self.started.set()
        self.release.wait(timeout=60)
        self.calls += 1
        return np.full(len(keys), 2.0), [None] * len(keys)


@contextlib.contextmanager
def running(oracle, **kwargs):
    server, port = serve(oracle, "127.0.0.1", 0, **kwargs)
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(timeout=10)


def health(address: str, timeout: float = 2.0) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service="distgfn.Oracle")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout).status


def in_threads(n: int, call) -> list:
    """Runs call() in n threads at once; each one's result or exception."""
    results = [None] * n

    def run(i):
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001 - the outcome is what the test looks at
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_a_busy_oracle_answers_its_health_check_and_turns_away_what_it_cannot_take():
    """12 callers with 3 s deadlines on a 1 s oracle that takes 2 calls at a time."""
    oracle = Sleeps(1.0)
    with running(oracle, max_calls=2) as (server, address):
        clients = [OracleClient([address], deadline_s=3.0, retries=0) for _ in range(12)]
        threads, results = in_threads(12, lambda: clients.pop().score(["a"]))
        assert oracle.started.wait(timeout=10)
        assert health(address, timeout=2.0) == health_pb2.HealthCheckResponse.SERVING, "healthy while busy"
        for t in threads:
            t.join(timeout=30)
        served = [r for r in results if isinstance(r, tuple)]
        busy = [r for r in results if isinstance(r, OracleUnavailable)]
        assert len(served) + len(busy) == 12, results
        assert busy and all("busy" in str(e) for e in busy), "turned away, not left to time out"
        assert oracle.calls == len(served), "nothing computed for a caller that had given up"
        with OracleClient([address], deadline_s=3.0, retries=0) as client:
            assert client.score(["b"])[0].tolist() == [1.0], "a call after the burst is answered"


def test_a_call_whose_deadline_passes_while_it_waits_is_never_computed():
    oracle = Held()
    with running(oracle) as (server, address):
        first, results = in_threads(1, lambda: OracleClient([address], deadline_s=60).score(["a"]))
        assert oracle.started.wait(timeout=10)
        with OracleClient([address], deadline_s=0.5, retries=0) as client, pytest.raises(OracleDeadline):
            client.score(["b"])
        deadline = time.monotonic() + 10
        while server.service.skipped < 1:  # its handler wakes when the deadline passes
            assert time.monotonic() < deadline, "the waiting call was not skipped"
            time.sleep(0.05)
        oracle.release.set()
        first[0].join(timeout=10)
        assert results[0][0].tolist() == [2.0]
    assert oracle.calls == 1, "the call whose caller gave up was never computed"


def test_a_busy_server_passes_the_call_to_the_next_address():
    held, idle = Held(), Sleeps(0.0)
    with running(held, max_calls=1) as (_, busy_address), running(idle) as (_, idle_address):
        first, _ = in_threads(1, lambda: OracleClient([busy_address], deadline_s=60).score(["a"]))
        assert held.started.wait(timeout=10)
        with OracleClient([busy_address, idle_address], retries=2, backoff_s=0.01) as client:
            assert client.score(["x", "y"])[0].tolist() == [1.0, 1.0]
        assert idle.calls == 1
        held.release.set()
        first[0].join(timeout=10)


def test_stopping_drains_health_not_serving_new_calls_refused_calls_in_flight_finish():
    oracle = Held()
    server, port = serve(oracle, "127.0.0.1", 0)
    address = f"127.0.0.1:{port}"
    in_flight, results = in_threads(1, lambda: OracleClient([address], deadline_s=60).score(["a"]))
    assert oracle.started.wait(timeout=10)
    stopping, _ = in_threads(1, lambda: server.stop(grace=30).wait(timeout=40))
    deadline = time.monotonic() + 10
    while health(address) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "health never said NOT_SERVING while draining"
        time.sleep(0.05)
    with OracleClient([address], retries=0) as client, pytest.raises(OracleUnavailable, match="draining"):
        client.score(["b"])
    oracle.release.set()
    in_flight[0].join(timeout=10)
    stopping[0].join(timeout=40)
    assert results[0][0].tolist() == [2.0], "the call in flight finished"
    assert oracle.calls == 1


@pytest.mark.parametrize("request_body, named", [
    ({"id": "r", "keys": ["C"] * (MAX_KEYS + 1)}, f"more than {MAX_KEYS}"),
    ({"id": "r", "keys": ["SECRET" * 1000]}, f"more than {MAX_KEY_CHARS}"),
    ({"id": "SECRET" * 100, "keys": ["C"]}, "1 to 128 characters"),
], ids=["too-many-keys", "key-too-long", "id-too-long"])
def test_requests_over_the_bounds_are_refused_without_echoing_them(request_body, named):
    with running(Sleeps(0.0)) as (_, address), grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as e:
            channel.unary_unary(METHOD)(encode(request_body), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in e.value.details() and "SECRET" not in e.value.details()


def test_a_reused_request_id_is_refused_without_naming_it():
    with running(Sleeps(0.0)) as (_, address), grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD)
        call(encode({"id": "SECRET-id", "keys": ["a"]}), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            call(encode({"id": "SECRET-id", "keys": ["b"]}), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "SECRET" not in e.value.details()


def test_remembered_responses_are_bounded_in_bytes_as_well_as_in_number():
    recent = RecentResponses(size=1000, max_bytes=4000)
    for i in range(20):
        recent.respond(f"r{i}", b"k", lambda: b"x" * 1000).result()
    assert len(recent.entries) <= 4 and recent.bytes <= 4000
    assert "r19" in recent.entries, "the newest is kept"


def test_serving_plaintext_beyond_loopback_is_warned_about(capsys):
    server, _ = serve(Sleeps(0.0), "0.0.0.0", 0)
    server.stop(None).wait(timeout=10)
    assert "warning: serving plaintext on 0.0.0.0" in capsys.readouterr().err
    server, _ = serve(Sleeps(0.0), "127.0.0.1", 0)
    server.stop(None).wait(timeout=10)
    assert "warning" not in capsys.readouterr().err


def test_a_server_refuses_max_calls_below_its_concurrency():
    with pytest.raises(OracleError, match=r"max_calls \(1\) must be >= concurrency \(2\)"):
        serve(Sleeps(0.0), "127.0.0.1", 0, concurrency=2, max_calls=1)


class EndsCallsCancelled(grpc.ServerInterceptor):
    """Ends every Score call with CANCELLED, as a client saw once when its oracle stopped during a
    run (CI): the server, not the client, ended the call."""

    def intercept_service(self, continuation, details):
        if details.method != METHOD:
            return continuation(details)
        return grpc.unary_unary_rpc_method_handler(lambda data, context: context.abort(grpc.StatusCode.CANCELLED,
                                                                                       "CANCELLED"))


def test_a_call_the_server_ends_as_cancelled_goes_to_the_next_address():
    idle = Sleeps(0.0)
    with running(Sleeps(0.0), interceptors=[EndsCallsCancelled()]) as (_, cancelling), \
            running(idle) as (_, idle_address):
        with OracleClient([cancelling, idle_address], retries=2, backoff_s=0.01) as client:
            assert client.score(["a"])[0].tolist() == [1.0]
    assert idle.calls == 1


def test_a_server_stopped_during_a_call_sends_it_to_the_next_address():
    """gRPC ends the calls in progress when a server stops: the client retries elsewhere with the
    same request id."""
    held, idle = Held(), Sleeps(0.0)
    stopping, port = serve(held, "127.0.0.1", 0)
    with running(idle) as (_, idle_address):
        with OracleClient([f"127.0.0.1:{port}", idle_address], retries=2, backoff_s=0.01) as client:
            call, results = in_threads(1, lambda: client.score(["a"]))
            assert held.started.wait(timeout=10)
            stopping.stop(0).wait(timeout=10)
            call[0].join(timeout=30)
            held.release.set()
    assert isinstance(results[0], tuple) and results[0][0].tolist() == [1.0], results[0]
    assert idle.calls == 1
