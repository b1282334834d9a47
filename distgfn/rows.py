"""The metrics rows of a Ray run: what happened between two rows, and the row itself.

    rows = Rows(cfg, env, evaluator)
    rows.observe(report, lost, step)        # each rollout actor's report (None: its actor died)
    rows.add_update(stats)                  # each learner call (or update)
    row = rows.make(step, replay_stats, Counts(...), log_policy)   # a Row, then a new interval
    log.write(row.to_dict())                # one metrics.jsonl line

Both runtimes make their rows here, so they write the same keys (docs/metrics.md). `Row` is
the one definition of the keys; the Ray metrics exported (distgfn.ray_metrics) are its fields
marked with a gauge description.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

from distgfn.config import Config
from distgfn.learning import policy_log_probs
from distgfn.messages import ActorReport, TrainStats
from distgfn.metrics import mean
from distgfn.models import set_weights
from distgfn.rewards import FailureWindow, report_failures
from distgfn.tasks import make_model


@dataclass
class Counts:
    """The run's totals at a row, from the Ray driver or the serial run."""

    trajectories: int  # scored so far
    actors: int
    actors_running: int | None = None  # of them, those sampling now (the others wait for a node or restart)
    actor_failures: int = 0
    role_restarts: int = 0
    reward_unavailable: int = 0  # actors whose reward service was down at their last report
    reward_workers: int | None = None  # reward.mode pool
    cache: dict | None = None  # the reward cache's hits, misses and size, when the run has one


def gauge(text: str):
    """A row field also exported as a Ray metric (a gauge) described by `text`."""
    return field(metadata={"gauge": text})


@dataclass(kw_only=True)
class Row:
    """One metrics.jsonl row; docs/metrics.md says what each key means."""

    step: int = gauge("learner updates so far")
    trajectories: int = gauge("trajectories inserted in the replay table so far")
    wall_s: float
    lost_actor_calls: int = 0
    actors: int = gauge("rollout actors")
    actors_running: int = gauge("rollout actors sampling now")
    actors_pending: int = gauge("rollout actors waiting for a node, starting or restarting")
    actor_failures: int = 0
    role_restarts: int = 0
    reward_unavailable: int = gauge("rollout actors waiting for a reward service that is down")
    reward_workers: int | None = None
    cache: dict | None = None  # written as reward_cache_hits, reward_cache_misses, reward_cache_size
    loss: float | None = gauge("training loss")
    traj_per_s: float = gauge("trajectories sampled per second")
    policy_lag_min: int | None = None
    policy_lag_mean: float | None = gauge("mean policy versions between sampling and training")
    policy_lag_max: int | None = None
    replay_size: int = gauge("records in the replay table")
    updates_per_s: float = gauge("learner updates per second")
    batch_mean: float | None = None
    inserts_per_s: float
    samples_per_insert: float | None
    dropped_stale: int
    records_rejected: int = gauge("records the replay table refused as malformed, so far")
    fraction_trained: float = gauge("records trained on at least once / records inserted")
    actor_held_frac: float = gauge("fraction of the actors' time held by back-pressure")
    reward_latency_ms: float | None = gauge("mean reward call time, ms")
    reward_time_frac: float | None
    record_bytes_mean: float | None
    learner_wait_frac: float = gauge("fraction of time the learner waited for records")
    evaluation: dict = field(default_factory=dict)  # the evaluator's figures (l1_exact, modes...), by env

    def to_dict(self) -> dict:
        """The JSON line: the fields in order, the cache's figures and the evaluation's inline,
        reward_workers only in reward.mode pool."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("cache", "evaluation")}
        if self.reward_workers is None:
            del out["reward_workers"]
        out.update({f"reward_cache_{k}": v for k, v in (self.cache or {}).items()})
        out.update(self.evaluation)
        return out


# Row fields exported as Ray metrics: name -> description.
GAUGES = {f.name: f.metadata["gauge"] for f in dataclasses.fields(Row) if "gauge" in f.metadata}


class Rows:
    def __init__(self, cfg: Config, env, evaluator):
        self.cfg, self.env, self.evaluator = cfg, env, evaluator
        self.eval_model = None  # made for the first evaluation of published weights
        self.failure_window = FailureWindow(cfg.reward.max_failure_rate, cfg.reward.failure_window)
        self.interval = Interval()
        self.start_time = time.perf_counter()

    def wall_s(self) -> float:
        return time.perf_counter() - self.start_time

    def restart(self, step: int, replay: dict) -> None:
        """A new interval from here (after a start or a row)."""
        self.interval = Interval(step, replay)

    def observe(self, report: ActorReport | None, lost: bool, step: int) -> None:
        """An actor's report: what it sampled goes to the evaluator, the failure window (which
        raises RewardError when too many fail) and the interval's figures."""
        self.interval.lost_calls += lost
        if report is None:
            return
        if report.sampled is not None:
            self.evaluator.observe(report.sampled, step)
            report_failures(report.sampled, self.env, self.failure_window)
        self.interval.add_batch(report)

    def add_update(self, stats: TrainStats) -> None:
        self.interval.add_update(stats)

    def policy(self, weights: dict):
        """log pi(a|s) under published weights (a flat dict of numpy arrays)."""
        if self.eval_model is None:
            self.eval_model = make_model(self.cfg, self.env)
        set_weights(self.eval_model, weights)
        return lambda states: policy_log_probs(self.eval_model, self.env, states)

    def make(self, step: int, replay: dict, counts: Counts, log_policy=None) -> Row:
        """The row at `step`: the run's counts, the interval's rates, the evaluator's figures,
        and l1_exact and the like when `log_policy` (states -> log pi(a|s)) is given. The next
        interval's rates are taken before the evaluation and the next interval starts after it,
        so no rate counts the evaluation's time."""
        counts = dataclasses.asdict(counts)
        rates = self.interval.summary(replay, counts["actors"])
        evaluation = self.evaluator.sampled_metrics()
        if log_policy is not None and self.evaluator.exact:
            evaluation.update(self.evaluator.exact_metrics(log_policy))
        running = counts.pop("actors_running")
        running = counts["actors"] if running is None else running
        row = Row(step=step, wall_s=round(self.wall_s(), 3), lost_actor_calls=self.interval.lost_calls,
                  actors_running=running, actors_pending=counts["actors"] - running, **counts,
                  **rates, evaluation=evaluation)
        self.restart(step, replay)
        return row


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


class Interval:
    """What happened between two metrics rows."""

    def __init__(self, step: int = 0, replay: dict | None = None):
        self.start = time.perf_counter()
        self.first_step = self.step = step
        self.replay = replay or {"inserted": 0, "sampled": 0}
        self.failed = self.record_bytes = self.records = self.lost_calls = self.trained = 0
        self.held_s = 0.0  # actors' time held by back-pressure (waiting on the replay table)
        self.losses, self.lag_means, self.reward_s = [], [], []
        self.lag_min, self.lag_max, self.learner_wait_s, self.sample_s = math.inf, -math.inf, 0.0, 0.0

    def add_batch(self, r: ActorReport) -> None:
        self.failed += sum(e is not None for e in r.sampled.errors) if r.sampled is not None else 0
        self.reward_s.extend(r.reward_s)
        self.sample_s += r.sample_s
        self.record_bytes += r.record_bytes
        self.records += r.records
        self.held_s += r.insert_wait_s

    def add_update(self, s: TrainStats) -> None:
        self.step = s.step
        if not s.updates:
            return
        self.losses.append(s.loss)
        self.trained += s.records
        self.lag_means.append(s.lag_mean)
        self.lag_min, self.lag_max = min(self.lag_min, s.lag_min), max(self.lag_max, s.lag_max)
        self.learner_wait_s += s.wait_s

    def summary(self, replay: dict, actors: int) -> dict:
        dt = max(time.perf_counter() - self.start, 1e-9)
        updates = self.step - self.first_step
        inserted = replay["inserted"] - self.replay["inserted"]
        sampled = replay["sampled"] - self.replay["sampled"]
        return {
            "loss": mean(self.losses),
            # The table's own count (exact at each row), plus the objects whose reward failed.
            "traj_per_s": (inserted + self.failed) / dt,
            "policy_lag_min": self.lag_min if self.losses else None,
            "policy_lag_mean": mean(self.lag_means),
            "policy_lag_max": self.lag_max if self.losses else None,
            "replay_size": replay["size"],
            "updates_per_s": updates / dt,
            "batch_mean": self.trained / updates if updates else None,
            "inserts_per_s": inserted / dt,
            "samples_per_insert": sampled / inserted if inserted else None,
            "dropped_stale": replay["dropped_stale"],
            # Malformed records refused at insert (checked whole: the learner never sees one).
            "records_rejected": replay.get("rejected", 0),
            # Every scored trajectory is trained on: records sampled at least once / inserted.
            "fraction_trained": replay["fraction_trained"],
            # Of the actors' time, the part held by back-pressure (the learner was behind).
            "actor_held_frac": self.held_s / (actors * dt),
            "reward_latency_ms": 1000 * mean(self.reward_s) if self.reward_s else None,
            # Of the actors' time on batches, the part spent in rewards (pipelined: waiting on them).
            "reward_time_frac": sum(self.reward_s) / (sum(self.reward_s) + self.sample_s) if self.reward_s else None,
            "record_bytes_mean": self.record_bytes / self.records if self.records else None,
            "learner_wait_frac": self.learner_wait_s / dt,
        }


