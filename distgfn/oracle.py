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
docked twice. The client retries only UNAVAILABLE (the server never saw the call, or is
restarting), with the same id and exponential backoff, moving to the next address each time.
Status codes: INVALID_ARGUMENT (bad request bytes), UNAUTHENTICATED (missing or wrong
`authorization: Bearer <token>`), INTERNAL (the oracle raised), RESOURCE_EXHAUSTED (a message
over the size limit), DEADLINE_EXCEEDED. The standard health service (`grpc.health.v1`, from
grpcio-health-checking) reports SERVING for "" and "distgfn.Oracle"; it needs no token, so
load balancers and Kubernetes probes can call it. A server calls its oracle one batch at a
time (a docker is not thread-safe): for parallel docking run one server per core and give the
client all their addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
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
          concurrency: int = 1, interceptors: Sequence[grpc.ServerInterceptor] = ()) -> tuple[grpc.Server, int]:
    """Starts a server for `oracle` and returns it with the port it bound (port 0: any free port).

    tls = (cert_file, key_file) in PEM serves TLS; otherwise plaintext. The oracle runs
    `concurrency` calls at a time (1 unless it is thread-safe or waits on I/O: a docker is not);
    four more threads answer health checks, retries and rejections meanwhile. `interceptors`
    wrap every call (metrics, logging, faults in tests).
    Stop it with `server.stop(grace_seconds)`. A port it cannot take raises OracleError."""
    # SO_REUSEPORT off: a second server on a taken port should fail, not silently share its calls.
    options = [*message_options(max_message_bytes), ("grpc.so_reuseport", 0)]
    if concurrency < 1:
        raise OracleError(f"concurrency must be >= 1; got {concurrency}")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=concurrency + 4), interceptors=list(interceptors),
                         options=options)
    service = OracleService(oracle, token, concurrency=concurrency)
    handler = grpc.unary_unary_rpc_method_handler(service.score)  # no (de)serializers: raw bytes
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Score": handler}),))
    add_health(server)
    bound = bind(server, host, port, tls)
    server.start()
    return server, bound


def add_health(server: grpc.Server) -> None:
    checker = health.HealthServicer()
    for name in ("", SERVICE):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)


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
                 concurrency: int = 1):
        self.oracle, self.token = oracle, token
        self.recent = RecentResponses(remember)
        # One oracle call at a time by default: a VinaDocker owns a single Vina object, so
        # concurrent calls would corrupt each other. Parallel docking comes from more servers
        # (one per core); concurrency > 1 is for oracles that wait on I/O.
        self.oracle_slots = threading.Semaphore(concurrency)

    def score(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        if self.token is not None and not has_token(context, self.token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong 'authorization: Bearer <token>' metadata")
        try:
            request = parse_request(data)
            response = self.recent.respond(request.id, digest(request.keys), lambda: self.compute(request))
        except (WireError, ReusedIdError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        # Waiting apart from reading the result keeps a TimeoutError raised by the oracle an INTERNAL error.
        if not futures.wait([response], timeout=context.time_remaining()).done:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"request {request.id} is still being computed")
        error = response.exception()
        if error is not None:
            context.abort(grpc.StatusCode.INTERNAL, f"oracle failed: {type(error).__name__}: {error}")
        return response.result()

    def compute(self, request: ScoreRequest) -> bytes:
        with self.oracle_slots:
            raw, errors = self.oracle.score(request.keys)
        raw = np.asarray(raw, dtype=np.float64)
        n = len(request.keys)
        if raw.shape != (n,) or len(errors) != n:
            raise ValueError(f"oracle returned {raw.shape} values and {len(errors)} errors for {n} keys")
        errors = [None if e is None else str(e) for e in errors]
        return encode({"id": request.id, "raw": raw, "errors": errors})


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
    if not isinstance(request_id, str) or not request_id:
        raise WireError(f"request 'id' must be a non-empty string; got {type(request_id).__name__}")
    if not isinstance(keys, list):
        raise WireError(f"request 'keys' must be a list of strings; got {type(keys).__name__}")
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise WireError(f"request 'keys'[{i}] must be a string; got {type(key).__name__}")
    return ScoreRequest(request_id, keys)


def digest(keys: list[str]) -> bytes:
    return hashlib.blake2b(encode(keys), digest_size=16).digest()


class ReusedIdError(ValueError):
    """A request id came back with different keys: a client bug that a cached answer would hide."""


@dataclass
class Pending:
    keys_digest: bytes
    response: futures.Future


class RecentResponses:
    """The last `size` responses by request id, including those still being computed.

    A retry that arrives while the first attempt is still running waits for that attempt
    instead of starting a second one: with docking, a second one would cost minutes."""

    def __init__(self, size: int):
        self.size = size
        self.entries: OrderedDict[str, Pending] = OrderedDict()
        self.lock = threading.Lock()

    def respond(self, request_id: str, keys_digest: bytes, compute) -> futures.Future:
        """The future response to `request_id`: computed here by the first caller, shared with retries."""
        entry, first = self.claim(request_id, keys_digest)
        if entry.keys_digest != keys_digest:
            raise ReusedIdError(f"request id {request_id} was used before with different keys")
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
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
            return entry, True

    def fill(self, request_id: str, entry: Pending, compute) -> None:
        try:
            entry.response.set_result(compute())
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
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    kind = {grpc.StatusCode.DEADLINE_EXCEEDED: OracleDeadline,
                            grpc.StatusCode.INTERNAL: OracleRaised}.get(e.code(), OracleError)
                    raise kind(f"oracle at {self.addresses[i]}: {e.code().name}: {e.details()}") from None
                last = f"{self.addresses[i]}: {e.details()}"
                if attempt < self.retries:
                    time.sleep(self.backoff(attempt))
                continue
            return parse_response(reply, request_id, len(keys), self.addresses[i])
        raise OracleUnavailable(f"oracle UNAVAILABLE after {self.retries + 1} attempts on "
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
