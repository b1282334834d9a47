"""One checkpoint layout for both runtimes, so a run resumes in either one.

    step-000000000500/
        learner.pt            the learner's state (model, optimizer, schedule, step, RNG)
        run.pt                RunState: the run's own counters, clock and evaluation window
        config.yaml           the resolved config
        replay.pt             ray: the replay table's records, counters and RNG
        pending.msgpack       ray: records the learner had taken but not trained on
        reward_cache.msgpack  when the run caches rewards
        MANIFEST.json         {"step", "runtime", "files"}, written last

A serial run resumed from a Ray checkpoint trains first on the records the replay table had
not handed out yet (and on `pending`): rewards that were paid for are trained on, never
dropped by a change of runtime. A Ray run resumed from a serial checkpoint starts with an
empty replay table, which is all a serial run has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from distgfn import checkpoint, wire
from distgfn.config import Config, config_text
from distgfn.replay import parse_record


@dataclass
class RunState:
    runtime: str  # ray | serial: the one that wrote the checkpoint
    wall_s: float  # the run's clock, continued by a resumed run
    trajectories: int  # finished objects sampled so far (serial; ray counts them in the replay table)
    evaluator: dict  # the evaluation window (distgfn.evaluation)
    sampler_rng: dict | None = None  # serial: the rollout worker's RNG state

    def to_bytes(self) -> bytes:
        return checkpoint.state_to_bytes(asdict(self))

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> "RunState":
        """The checkpoint's RunState; also reads the two layouts from before it (ray's
        driver.pt, serial's run.pt without a runtime)."""
        if "run.pt" not in files:
            old = checkpoint.state_from_bytes(files["driver.pt"])
            return cls("ray", old["wall_s"], 0, old["evaluator"])
        state = checkpoint.state_from_bytes(files["run.pt"])
        if "runtime" not in state:
            return cls("serial", state["wall_s"], state["trajectories"], state["evaluator"], state["worker_rng"])
        return cls(**state)


def save(cfg: Config, root, step: int, learner: bytes, state: RunState, replay: bytes | None = None,
         pending: list[bytes] = (), cache: dict | None = None) -> str:
    """Writes one checkpoint whole (or not at all); returns where it went."""
    files = {"learner.pt": learner, "run.pt": state.to_bytes(), "config.yaml": config_text(cfg).encode()}
    if replay is not None:
        files["replay.pt"], files["pending.msgpack"] = replay, wire.encode(list(pending))
    if cache is not None:
        files["reward_cache.msgpack"] = wire.encode(cache)
    return checkpoint.save(root, step, files, keep=cfg.checkpoint.keep, runtime=state.runtime)


def pending(files: dict[str, bytes]) -> list[bytes]:
    return wire.decode(files["pending.msgpack"]) if "pending.msgpack" in files else []


def untrained_records(files: dict[str, bytes]) -> list[bytes]:
    """The encoded records of a Ray checkpoint that no update has trained on yet: the ones the
    learner had taken (pending), then the replay table's never-sampled ones, oldest first."""
    if "replay.pt" not in files:
        return []
    table = checkpoint.state_from_bytes(files["replay.pt"])
    by_id = {r["id"]: r["data"] for r in table["records"]}
    fresh = table.get("fresh", list(by_id))  # a table from before `fresh`: fifo, all unsampled
    taken = pending(files)
    taken_ids = {parse_record(blob).id for blob in taken}
    return taken + [by_id[i] for i in fresh if i in by_id and i not in taken_ids]
