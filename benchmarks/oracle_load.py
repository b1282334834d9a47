"""The oracle server under a burst: health-check latency, what is served, turned away or
skipped, and whether a call after the burst is answered.

    python benchmarks/oracle_load.py [--callers 12] [--deadline 3] [--oracle-s 1]

One server on loopback with a slow oracle (each call sleeps --oracle-s, like a docking run),
one oracle call at a time, and --callers clients calling at once with --deadline second
deadlines and no retries; meanwhile a health check every 50 ms, each with a 1 s deadline.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distgfn.oracle import OracleClient, serve


class Sleeps:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def score(self, keys):
        time.sleep(self.seconds)
        self.calls += 1
        return np.ones(len(keys)), [None] * len(keys)


def health_latencies(address: str, stop: threading.Event) -> list[float | None]:
    """Seconds each health check took (None: it failed or timed out)."""
    out = []
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            start = time.perf_counter()
            try:
                stub.Check(health_pb2.HealthCheckRequest(service="distgfn.Oracle"), timeout=1.0)
                out.append(time.perf_counter() - start)
            except grpc.RpcError:
                out.append(None)
            stop.wait(0.05)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--callers", type=int, default=12)
    p.add_argument("--deadline", type=float, default=3.0)
    p.add_argument("--oracle-s", type=float, default=1.0)
    args = p.parse_args()
    oracle = Sleeps(args.oracle_s)
    server, port = serve(oracle, "127.0.0.1", 0)
    address = f"127.0.0.1:{port}"
    outcomes = []

    def call():
        with OracleClient([address], deadline_s=args.deadline, retries=0) as client:
            start = time.perf_counter()
            try:
                client.score(["CCO"])
                outcomes.append(("served", time.perf_counter() - start))
            except Exception as e:  # noqa: BLE001 - the outcome is the figure
                outcomes.append((type(e).__name__, time.perf_counter() - start))

    stop = threading.Event()
    latencies: list = []
    checker = threading.Thread(target=lambda: latencies.extend(health_latencies(address, stop)))
    checker.start()
    callers = [threading.Thread(target=call) for _ in range(args.callers)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    checker.join()
    ok = [x for x in latencies if x is not None]
    print(f"{args.callers} callers, {args.deadline:g} s deadlines, a {args.oracle_s:g} s oracle, one call at a time")
    print(f"  health checks: {len(ok)} of {len(latencies)} answered; median {1e3 * statistics.median(ok):.1f} ms, "
          f"max {1e3 * max(ok):.1f} ms" if ok else f"  health checks: none of {len(latencies)} answered")
    for kind in sorted({k for k, _ in outcomes}):
        times = [t for k, t in outcomes if k == kind]
        print(f"  {kind}: {len(times)} (median {statistics.median(times):.2f} s after the call)")
    print(f"  oracle calls computed: {oracle.calls}")
    with OracleClient([address], deadline_s=args.deadline, retries=0) as client:
        start = time.perf_counter()
        try:
            client.score(["CCO"])
            print(f"  a call after the burst: served in {time.perf_counter() - start:.2f} s")
        except Exception as e:  # noqa: BLE001
            print(f"  a call after the burst: {type(e).__name__} after {time.perf_counter() - start:.2f} s")
    server.stop(None)


if __name__ == "__main__":
    main()
