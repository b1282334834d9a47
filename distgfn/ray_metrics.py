"""A Ray run's figures as Ray metrics, for the Ray dashboard and Prometheus.

    metrics = RayMetrics(run="seh-20261129")     # after ray.init, in the driver
    metrics.record(row)                          # each metrics.jsonl row

Each figure below is a gauge named `distgfn_<key>` with the tag `run` (the run directory's
name); Ray's metrics agent exports them with its own on the node's metrics port
(`ray metrics launch-prometheus`, or any Prometheus scraping the Ray nodes).
"""

from __future__ import annotations

GAUGES = {
    "step": "learner updates so far",
    "trajectories": "trajectories inserted in the replay table so far",
    "traj_per_s": "trajectories sampled per second",
    "updates_per_s": "learner updates per second",
    "policy_lag_mean": "mean policy versions between sampling and training",
    "replay_size": "records in the replay table",
    "learner_wait_frac": "fraction of time the learner waited for records",
    "reward_latency_ms": "mean reward call time, ms",
    "reward_failures": "objects whose reward failed so far",
    "reward_unavailable": "rollout actors waiting for a reward service that is down",
    "actors": "rollout actors",
    "loss": "training loss",
}


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
