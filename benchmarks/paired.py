"""Paired comparisons over seeds, for the benchmark scripts: two runs with the same seed share
their random start, so the ratio per seed is steadier than a ratio of medians."""

from __future__ import annotations

import math
import statistics

# Student's t, two-sided 95%, for 1 .. 30 degrees of freedom (the last one serves beyond).
T_95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def ratio_interval(values: list[float], baseline: list[float]) -> tuple[float, float, float] | None:
    """The geometric mean over seeds of values[i] / baseline[i], with a 95% t-interval (low,
    high); None with fewer than two seeds."""
    if len(values) < 2:
        return None
    logs = [math.log(a / b) for a, b in zip(values, baseline)]
    half = T_95[min(len(logs) - 1, len(T_95)) - 1] * statistics.stdev(logs) / math.sqrt(len(logs))
    mean = statistics.fmean(logs)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)
