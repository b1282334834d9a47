"""A reward oracle served over gRPC, and the client that calls it like a local oracle.

Docking costs seconds to minutes a molecule, so it runs on its own machines: `serve` puts any
oracle with `score(keys) -> (raw, errors)` behind one gRPC method, and `OracleClient` has the
same `score`, so it drops in wherever a local oracle goes (`rewards.remote.score_keys`).

    server, port = serve(QEDScorer(), host="0.0.0.0", port=50051, token="s3cret")
    client = OracleClient(["dock-1:50051", "dock-2:50051"], deadline_s=600, token="s3cret")
    raw, errors = client.score(["CCO", "c1ccccc1"])   # raw: float64 (n,), NaN where errors[i]

Protocol: unary `/distgfn.Oracle/Score`, no protobuf. The bodies are msgpack (`distgfn.wire`):
request `{"id": str, "keys": [str, ...]}`, response `{"id": str, "raw": float64 array,
"errors": [str | None, ...]}`. The request id makes a call idempotent: the server remembers
the latest responses by id and answers a retry from memory, so a retried docking batch is not
docked twice. The client retries only UNAVAILABLE, CANCELLED and busy (the server never saw
the call, stopped during it, is restarting or is full), with the same id and exponential
backoff, moving to the next address each time.
Status codes: INVALID_ARGUMENT (bad request bytes, or over the bounds: MAX_KEYS keys,
MAX_KEY_CHARS a key, MAX_ID_CHARS an id), UNAUTHENTICATED (missing or wrong
`authorization: Bearer <token>`), INTERNAL (the oracle raised), RESOURCE_EXHAUSTED (a message
over the size limit; or busy: `max_calls` calls already in progress, answered at once with the
trailing metadata `distgfn-busy`, which the client retries on its next address),
DEADLINE_EXCEEDED (also for a call whose deadline passed while it waited for the oracle: it is
skipped, never computed), UNAVAILABLE (draining: the server is stopping). Error messages name
what is wrong, never the request's content. The standard health service (`grpc.health.v1`,
from grpcio-health-checking) reports SERVING for "" and "distgfn.Oracle", and NOT_SERVING
while the server drains; it needs no token, so load balancers and Kubernetes probes can call
it, and it has threads of its own (Score calls never hold more than `max_calls` of the pool),
so it answers at once however busy the oracle is. A server calls its oracle one batch at a
time (a docker is not thread-safe): for parallel docking run one server per core and give the
client all their addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
import random
import sys
import threading
import time
import uuid
from collections import OrderedDict
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from distgfn.rewards.errors import OracleDeadline, OracleError, OracleRaised, OracleUnavailable
from distgfn.wire import WireError, decode, encode

SERVICE = "distgfn.Oracle"
METHOD = f"/{SERVICE}/Score"
MAX_MESSAGE_BYTES = 64 * 2**20
# Responses remembered for retries; a retry comes within seconds, so a few hundred batches is plenty.
RECENT_RESPONSES = 256
RECENT_BYTES = 64 * 2**20  # and at most this many bytes of them
# Bounds on one request (a batch is sampler.batch_size objects; SMILES run to a few hundred chars).
MAX_KEYS = 10_000
MAX_KEY_CHARS = 4_096
MAX_ID_CHARS = 128
# Threads kept for health checks and prompt rejections, beyond the Score calls in progress.
SPARE_THREADS = 4
BUSY = "distgfn-busy"  # trailing metadata of a RESOURCE_EXHAUSTED that means "busy: try elsewhere"
# Long enough for a server restart, short enough that a dead address fails a call in seconds.
MAX_BACKOFF_S = 5.0


class Oracle(Protocol):
    def score(self, keys: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """(n,) raw outputs (NaN where it failed) and, per key, None or why it failed."""


@dataclass(frozen=True)
class ScoreRequest:
    id: str
    keys: list[str]


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


# ---------------------------------------------------------------- server


def serve(oracle: Oracle, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          tls: tuple[str | Path, str | Path] | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
          concurrency: int = 1, max_calls: int | None = None,
          interceptors: Sequence[grpc.ServerInterceptor] = ()) -> tuple[OracleServer, int]:
    """Starts a server for `oracle` and returns it with the port it bound (port 0: any free port).

    tls = (cert_file, key_file) in PEM serves TLS; otherwise plaintext (with a warning on a
    non-loopback host). The oracle runs `concurrency` calls at a time (1 unless it is
    thread-safe or waits on I/O: a docker is not); at most `max_calls` Score calls are in
    progress (running or waiting for the oracle; default 4 * concurrency) and more are refused
    at once as busy. Spare threads answer health checks and rejections meanwhile.
    `interceptors` wrap every call (metrics, logging, faults in tests). Stop it with
    `server.stop(grace_seconds)`, which drains it first. A port it cannot take raises OracleError."""
    if concurrency < 1:
        raise OracleError(f"concurrency must be >= 1; got {concurrency}")
    max_calls = max_calls or 4 * concurrency
    if max_calls < concurrency:
        raise OracleError(f"max_calls ({max_calls}) must be >= concurrency ({concurrency})")
    # SO_REUSEPORT off: a second server on a taken port should fail, not silently share its calls.
    options = [*message_options(max_message_bytes), ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_calls + SPARE_THREADS),
                         interceptors=list(interceptors), options=options)
    service = OracleService(oracle, token, concurrency=concurrency, max_calls=max_calls)
    handler = grpc.unary_unary_rpc_method_handler(service.score)  # no (de)serializers: raw bytes
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Score": handler}),))
    checker = add_health(server)
    bound = bind(server, host, port, tls)
    server.start()
    if tls is None and not is_loopback(host):
        print(f"distgfn: warning: serving plaintext on {host}: anyone on that network can read the keys, the "
              f"scores{' and the token' if token else ''}; give a TLS certificate and key (--tls-cert, --tls-key)",
              file=sys.stderr, flush=True)
    return OracleServer(server, service, checker), bound


class OracleServer:
    """A running oracle server. `stop(grace)` drains it: health answers NOT_SERVING, new Score
    calls are refused UNAVAILABLE (clients retry on their next address), and the calls in
    progress get up to `grace` seconds to finish before the server stops."""

    def __init__(self, server: grpc.Server, service: OracleService, checker: health.HealthServicer):
        self.server, self.service, self.checker = server, service, checker

    def stop(self, grace: float | None) -> threading.Event:
        """Drains, then stops; returns the event set once the server has stopped."""
        self.checker.enter_graceful_shutdown()
        self.service.draining.set()
        start = time.monotonic()
        self.service.calls.wait_idle(grace or 0)
        left = None if grace is None else max(grace - (time.monotonic() - start), 0)
        return self.server.stop(left)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def add_health(server: grpc.Server) -> health.HealthServicer:
    # Answered from the server's spare threads (see serve); non-blocking by construction.
    checker = health.HealthServicer()
    for name in ("", SERVICE):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    return checker


def bind(server: grpc.Server, host: str, port: int, tls) -> int:
    address = join_address(host, port)
    try:
        if tls is None:
            return server.add_insecure_port(address)
        cert, key = (Path(f).read_bytes() for f in tls)
        return server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    except OSError as e:
        raise OracleError(f"cannot read the TLS certificate or key: {e}") from None
    except RuntimeError as e:  # grpc's "Failed to bind to address ..."
        raise OracleError(f"cannot listen on {address}: {e}") from None


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OracleService:
    """The Score method: checks the token and the request, then answers from memory or the oracle."""

    def __init__(self, oracle: Oracle, token: str | None = None, remember: int = RECENT_RESPONSES,
                 concurrency: int = 1, max_calls: int | None = None):
        self.oracle, self.token = oracle, token
        self.recent = RecentResponses(remember)
        # One oracle call at a time by default: a VinaDocker owns a single Vina object, so
        # concurrent calls would corrupt each other. Parallel docking comes from more servers
        # (one per core); concurrency > 1 is for oracles that wait on I/O.
        self.oracle_slots = threading.Semaphore(concurrency)
        self.calls = InProgress(max_calls or 4 * concurrency)
        self.draining = threading.Event()
        self.skipped = 0  # calls whose deadline passed before the oracle was free: never computed

    def score(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        if self.draining.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining: the server is stopping")
        if self.token is not None and not has_token(context, self.token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong 'authorization: Bearer <token>' metadata")
        if not self.calls.enter():
            context.set_trailing_metadata(((BUSY, "1"),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"busy: {self.calls.limit} calls in progress")
        try:
            return self.answer(data, context)
        finally:
            self.calls.leave()

    def answer(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = parse_request(data)
            response = self.recent.respond(request.id, digest(request.keys), lambda: self.compute(request, context))
        except (WireError, ReusedIdError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        # Waiting apart from reading the result keeps a TimeoutError raised by the oracle an INTERNAL error.
        if not futures.wait([response], timeout=context.time_remaining()).done:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the request is still being computed")
        error = response.exception()
        if isinstance(error, Skipped):
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(error))
        if error is not None:
            context.abort(grpc.StatusCode.INTERNAL, f"oracle failed: {type(error).__name__}: {error}")
        return response.result()

    def compute(self, request: ScoreRequest, context: grpc.ServicerContext) -> bytes:
        """The response bytes; Skipped when the caller's deadline passes before the oracle is free."""
        remaining = context.time_remaining()
        if not self.oracle_slots.acquire(timeout=None if remaining is None else max(remaining, 0)):
            self.skipped += 1
            raise Skipped("the deadline passed while the call waited for the oracle; not computed")
        try:
            if not context.is_active():
                self.skipped += 1
                raise Skipped("the caller is gone; not computed")
            raw, errors = self.oracle.score(request.keys)
        finally:
            self.oracle_slots.release()
        raw = np.asarray(raw, dtype=np.float64)
        n = len(request.keys)
        if raw.shape != (n,) or len(errors) != n:
            raise ValueError(f"oracle returned {raw.shape} values and {len(errors)} errors for {n} keys")
        errors = [None if e is None else str(e) for e in errors]
        return encode({"id": request.id, "raw": raw, "errors": errors})


class Skipped(Exception):
    """A call the oracle never computed: its caller's deadline passed first."""


class InProgress:
    """Counts the Score calls in progress, up to `limit`."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0
        self.changed = threading.Condition()

    def enter(self) -> bool:
        with self.changed:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self.changed:
            self.count -= 1
            self.changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count == 0, timeout=timeout)


def has_token(context: grpc.ServicerContext, token: str) -> bool:
    sent = dict(context.invocation_metadata()).get("authorization", "")
    # Constant-time, so the comparison's timing does not reveal the token.
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def parse_request(data: bytes) -> ScoreRequest:
    """The request in `data`, or WireError naming what is wrong with it."""
    try:
        msg = decode(data)
    except WireError as e:
        raise WireError(f"request is not a msgpack message: {e}") from None
    if not isinstance(msg, dict):
        raise WireError(f"request must be a map with 'id' and 'keys'; got {type(msg).__name__}")
    request_id, keys = msg.get("id"), msg.get("keys")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_CHARS:
        raise WireError(f"request 'id' must be a string of 1 to {MAX_ID_CHARS} characters")
    if not isinstance(keys, list):
        raise WireError(f"request 'keys' must be a list of strings; got {type(keys).__name__}")
    if len(keys) > MAX_KEYS:
        raise WireError(f"request has {len(keys)} keys, more than {MAX_KEYS}; send smaller batches")
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise WireError(f"request 'keys'[{i}] must be a string; got {type(key).__name__}")
        if len(key) > MAX_KEY_CHARS:
            raise WireError(f"request 'keys'[{i}] has {len(key)} characters, more than {MAX_KEY_CHARS}")
    return ScoreRequest(request_id, keys)


def digest(keys: list[str]) -> bytes:
    return hashlib.blake2b(encode(keys), digest_size=16).digest()


class ReusedIdError(ValueError):
    """A request id came back with different keys: a client bug that a cached answer would hide."""


@dataclass
class Pending:
    keys_digest: bytes
    response: futures.Future
    size: int = 0  # bytes of the response, once computed


class RecentResponses:
    """The last `size` responses by request id, including those still being computed.

    A retry that arrives while the first attempt is still running waits for that attempt
    instead of starting a second one: with docking, a second one would cost minutes."""

    def __init__(self, size: int, max_bytes: int = RECENT_BYTES):
        self.size, self.max_bytes = size, max_bytes
        self.entries: OrderedDict[str, Pending] = OrderedDict()
        self.bytes = 0  # of the responses held
        self.lock = threading.Lock()

    def respond(self, request_id: str, keys_digest: bytes, compute) -> futures.Future:
        """The future response to `request_id`: computed here by the first caller, shared with retries."""
        entry, first = self.claim(request_id, keys_digest)
        if entry.keys_digest != keys_digest:
            raise ReusedIdError("the request id was used before with different keys")
        if first:
            self.fill(request_id, entry, compute)
        return entry.response

    def claim(self, request_id: str, keys_digest: bytes) -> tuple[Pending, bool]:
        with self.lock:
            entry = self.entries.get(request_id)
            if entry is not None:
                self.entries.move_to_end(request_id)
                return entry, False
            entry = self.entries[request_id] = Pending(keys_digest, futures.Future())
            self.evict()
            return entry, True

    def evict(self) -> None:
        """Forgets the oldest responses beyond `size` of them or `max_bytes` (lock held)."""
        while len(self.entries) > self.size or (self.bytes > self.max_bytes and len(self.entries) > 1):
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.size

    def fill(self, request_id: str, entry: Pending, compute) -> None:
        try:
            result = compute()
            with self.lock:
                if self.entries.get(request_id) is entry:
                    entry.size = len(result)
                    self.bytes += entry.size
                    self.evict()
            entry.response.set_result(result)
        except Exception as e:
            # Waiters get the same error; a later retry computes afresh (the failure may be transient).
            entry.response.set_exception(e)
            with self.lock:
                if self.entries.get(request_id) is entry:
                    del self.entries[request_id]


# ---------------------------------------------------------------- client


class OracleClient:
    """Scores keys on remote oracle servers; `score` has the local oracles' interface.

    Calls go to the addresses in turn (one channel each, opened once); a call that finds its
    server UNAVAILABLE is retried on the next address with the same request id. Thread-safe."""

    def __init__(self, addresses: list[str], deadline_s: float = 30.0, retries: int = 5, backoff_s: float = 0.1,
                 token: str | None = None, tls_ca: str | Path | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        if not addresses:
            raise ValueError("OracleClient needs at least one address")
        if retries < 0:
            raise ValueError(f"retries must be >= 0; got {retries}")
        self.addresses = list(addresses)
        self.deadline_s, self.retries, self.backoff_s = deadline_s, retries, backoff_s
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.channels = [open_channel(a, tls_ca, max_message_bytes) for a in self.addresses]
        self.calls = [channel.unary_unary(METHOD) for channel in self.channels]  # raw bytes both ways
        self.turns = itertools.count()
        self.turn_lock = threading.Lock()

    def score(self, keys: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """(n,) float64 raw outputs (NaN where it failed) and, per key, None or why it failed."""
        keys = list(keys)
        if not keys:
            return np.zeros(0), []
        request_id = uuid.uuid4().hex
        data = encode({"id": request_id, "keys": keys})
        with self.turn_lock:
            first = next(self.turns)
        for attempt in range(self.retries + 1):
            i = (first + attempt) % len(self.addresses)
            try:
                reply = self.calls[i](data, timeout=self.deadline_s, metadata=self.metadata)
            except grpc.RpcError as e:
                if not retryable(e):
                    kind = {grpc.StatusCode.DEADLINE_EXCEEDED: OracleDeadline,
                            grpc.StatusCode.INTERNAL: OracleRaised}.get(e.code(), OracleError)
                    raise kind(f"oracle at {self.addresses[i]}: {e.code().name}: {e.details()}") from None
                last = f"{self.addresses[i]}: {e.details()}"
                if attempt < self.retries:
                    time.sleep(self.backoff(attempt))
                continue
            return parse_response(reply, request_id, len(keys), self.addresses[i])
        raise OracleUnavailable(f"oracle UNAVAILABLE or busy after {self.retries + 1} attempts on "
                          f"{', '.join(self.addresses)}; last: {last}")

    def backoff(self, attempt: int) -> float:
        # Jitter spreads the retries of many rollout actors hitting one restarting server.
        return min(self.backoff_s * 2**attempt, MAX_BACKOFF_S) * random.uniform(0.5, 1.0)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def __enter__(self) -> OracleClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def retryable(error: grpc.RpcError) -> bool:
    """UNAVAILABLE (never reached the oracle, or draining), CANCELLED (the server stopped
    during the call: this client never cancels) and busy RESOURCE_EXHAUSTED: another address,
    or the same one a little later, may take the call; the same request id keeps it from
    being computed twice."""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return True
    busy = any(key == BUSY for key, _ in (error.trailing_metadata() or ()))
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and busy


def open_channel(address: str, tls_ca: str | Path | None, max_message_bytes: int) -> grpc.Channel:
    options = message_options(max_message_bytes)
    if tls_ca is None:
        return grpc.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
    return grpc.secure_channel(address, credentials, options=options)


def parse_response(data: bytes, request_id: str, n: int, address: str) -> tuple[np.ndarray, list[str | None]]:
    try:
        msg = decode(data)
    except WireError as e:
        raise OracleError(f"oracle at {address}: bad response: {e}") from None
    if not isinstance(msg, dict) or msg.get("id") != request_id:
        raise OracleError(f"oracle at {address}: response is not a map for request {request_id}")
    raw, errors = msg.get("raw"), msg.get("errors")
    if not isinstance(raw, np.ndarray) or raw.shape != (n,) or not isinstance(errors, list) or len(errors) != n:
        raise OracleError(f"oracle at {address}: response does not hold {n} raw values and {n} errors")
    return raw.astype(np.float64), errors  # astype copies: frombuffer arrays are read-only
