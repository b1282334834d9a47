"""A Ray run's figures as Ray metrics, for the Ray dashboard and Prometheus.

    metrics = RayMetrics(run="seh-20261129")     # after ray.init, in the driver
    metrics.record(row)                          # each metrics.jsonl row

Each figure in GAUGES (the metrics row's fields marked as gauges in distgfn.rows.Row) is a
gauge named `distgfn_<key>` with the tag `run` (the run directory's name); Ray's metrics agent exports them with its own on the node's metrics port
(`ray metrics launch-prometheus`, or any Prometheus scraping the Ray nodes).
"""

from __future__ import annotations

from distgfn.rows import GAUGES as ROW_GAUGES

# A Row's gauge fields, and one figure every evaluator reports.
GAUGES = {**ROW_GAUGES, "reward_failures": "objects whose reward failed so far"}


class RayMetrics:
    def __init__(self, run: str):
        from ray.util.metrics import Gauge

        self.tags = {"run": run}
        self.gauges = {key: Gauge(f"distgfn_{key}", description=text, tag_keys=("run",))
                       for key, text in GAUGES.items()}

    def record(self, row: dict) -> None:
        for key, gauge in self.gauges.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauge.set(float(value), tags=self.tags)
