"""Training batches: flat numpy arrays built on the sampling side, stacked by the learner.

One row per visited state, trajectory by trajectory (s_0 .. s_n of each). The network runs
once per distinct state: `feats` holds each distinct featurized state once (visited states
and parents overlap heavily, so this halves the learner's work on HyperGrid), and `row` /
`parent_row` index into it. Fields:

    log_reward   (B,)       beta * log R(x) of each trajectory's object
    feats        (U, ...)   distinct featurized states (visited ones and their parents)
    row          (N,)       the state's row in feats
    masks        (N, A)     valid actions (all False on terminal states); left out when the env
                            says its masks follow from the features (`env.masks_from_features`):
                            the learner rebuilds them with `model.masks(feats[row])`
    action       (N,)       action taken from the state, -1 on the last one
    traj         (N,)       trajectory of the row
    first        (N,)       the row is s_0
    terminal     (N,)       the row is the terminal state
    n_parents    (N,)       number of (parent, action) pairs into the state (0 for s_0)
    log_pb       (N,)       log P_B(previous state | state), 0 for s_0; only for an env with a
                            backward policy (else P_B is uniform over n_parents)
  with parents (flow matching only):
    parent_row   (P,)       row in feats of every parent of every non-initial state
    parent_action (P,)      the action from that parent
    parent_of    (P,)       the row it leads to
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distgfn import wire
from distgfn.core import BACKWARD_POLICY, PARENTS
from distgfn.sampling import Trajectories
from distgfn.tasks import has

# Index fields and the count their values are offsets into, for stacking batches.
INDEX_FIELDS = {"traj": "log_reward", "row": "feats", "parent_row": "feats", "parent_of": "row"}
STATE_FIELDS = ("row", "masks", "action", "traj", "first", "terminal", "n_parents", "log_pb")
PARENT_FIELDS = ("parent_row", "parent_action", "parent_of")


def build_batch(env, trajs: Trajectories, log_reward: np.ndarray, with_parents: bool) -> dict[str, np.ndarray]:
    steps = np.arange(trajs.states.shape[1])
    keep = steps[None, :] <= trajs.lengths[:, None]
    states = trajs.states[keep]
    action = np.concatenate([trajs.actions, np.full((len(trajs.lengths), 1), -1)], axis=1)[keep]
    traj = np.nonzero(keep)[0]
    first = steps[np.nonzero(keep)[1]] == 0
    if has(env, PARENTS):
        # Parents ordered by the state they lead to, as split_batch leaves them: then stacking a
        # batch's split parts gives back the batch array for array (the serial runtime trains
        # on the batch itself; the Ray learner on records; both must train alike).
        parents, parent_action, parent_of = by_state(*env.parents(states))
        n_parents = np.bincount(parent_of, minlength=len(states))
    elif with_parents:
        raise ValueError("flow matching needs the env's parents, and it declares no 'parents' capability")
    else:
        n_parents = (~first).astype(np.int64)  # a tree: one parent each, P_B = 1
    featurized = [env.featurize(states)] + ([env.featurize(parents)] if with_parents else [])
    feats, rows = unique_rows(np.concatenate(featurized))
    batch = {
        "log_reward": np.asarray(log_reward, dtype=np.float32),
        "feats": feats,
        "row": rows[: len(states)],
        "action": action,
        "traj": traj,
        "first": first,
        "terminal": env.is_terminal(states),
        "n_parents": n_parents,
    }
    if has(env, BACKWARD_POLICY):
        batch["log_pb"] = backward_log_probs(env, states, action, first)
    if not getattr(env, "masks_from_features", False):
        batch["masks"] = env.masks(states)
    if with_parents:
        batch.update(parent_row=rows[len(states) :], parent_action=parent_action, parent_of=parent_of)
    return batch


def by_state(parents: np.ndarray, parent_action: np.ndarray, parent_of: np.ndarray):
    """env.parents' arrays, ordered (stably) by the state each parent leads to."""
    order = np.argsort(parent_of, kind="stable")
    return parents[order], parent_action[order], parent_of[order]


def backward_log_probs(env, states: np.ndarray, action: np.ndarray, first: np.ndarray) -> np.ndarray:
    """log P_B of the step into each row from the row before it (trajectory-ordered rows)."""
    later = np.flatnonzero(~first)
    out = np.zeros(len(states), dtype=np.float32)
    out[later] = env.backward_log_probs(states[later - 1], action[later - 1], states[later])
    return out


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows of a, index of each row of a among them)."""
    flat = np.ascontiguousarray(a.reshape(len(a), -1))
    as_bytes = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, first, inverse = np.unique(as_bytes, return_index=True, return_inverse=True)
    return a[first], inverse.ravel()


def training_batch(blobs: list[bytes]) -> dict[str, np.ndarray]:
    """The learner's batch from replay records (write_record's bytes): stacked, with each
    distinct featurized state once. Trajectories share states (s_0 and the states near it),
    and the network runs once per row of feats: on HyperGrid this is a fifth fewer rows."""
    return training_batch_of([read_record(blob) for blob in blobs])


def training_batch_of(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The learner's batch from records' decoded one-trajectory batches (the serial runtime's
    records are never encoded): stacked, each distinct featurized state once."""
    return merge_feats(stack_batches(parts))


def merge_feats(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same batch with duplicate rows of feats merged: trains exactly like it."""
    feats, inverse = unique_rows(batch["feats"])
    merged = dict(batch, feats=feats)
    for name, into in INDEX_FIELDS.items():
        if into == "feats" and name in batch:
            merged[name] = inverse[batch[name]]
    return merged


def stack_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenates batches, shifting index fields so they point into the stacked arrays."""
    out = {}
    for name in batches[0]:
        parts = [b[name] for b in batches]
        if name in INDEX_FIELDS:
            sizes = [len(b[INDEX_FIELDS[name]]) for b in batches]
            starts = np.cumsum([0] + sizes[:-1])
            parts = [p.astype(np.int64) + s for p, s in zip(parts, starts)]
        out[name] = np.concatenate(parts)
    return out


def split_batch(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """One batch per trajectory (replay records), each with only the feats rows it uses.

    stack_batches(split_batch(b)) trains exactly like b."""
    n_traj = len(batch["log_reward"])
    state_at = np.searchsorted(batch["traj"], np.arange(n_traj + 1))
    with_parents = "parent_of" in batch
    if with_parents:
        order = np.argsort(batch["parent_of"], kind="stable")
        parent_at = np.searchsorted(batch["traj"][batch["parent_of"][order]], np.arange(n_traj + 1))
    parts = []
    for b in range(n_traj):
        rows = slice(state_at[b], state_at[b + 1])
        part = {"log_reward": batch["log_reward"][b : b + 1]}
        part.update({name: batch[name][rows] for name in STATE_FIELDS if name in batch})
        part["traj"] = np.zeros_like(part["traj"])
        used = [part["row"]]
        if with_parents:
            picked = order[parent_at[b] : parent_at[b + 1]]
            part.update({name: batch[name][picked] for name in PARENT_FIELDS})
            part["parent_of"] = part["parent_of"] - rows.start
            used.append(part["parent_row"])
        table, inverse = np.unique(np.concatenate(used), return_inverse=True)
        part["feats"] = batch["feats"][table]
        part["row"] = inverse[: len(part["row"])]
        if with_parents:
            part["parent_row"] = inverse[len(part["row"]) :]
        parts.append(part)
    return parts


def pack_record(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The wire form of a one-trajectory batch (from split_batch): fields that follow from the
    others are left out and masks are bit-packed; unpack_record restores them exactly."""
    n_feats = len(part["feats"])
    actions = [part["action"], part.get("parent_action", part["action"])]
    n_actions = part["masks"].shape[1] if "masks" in part else 1 + max(int(a.max(initial=0)) for a in actions)
    # Integer widths from bounds known without scanning: rows index feats, actions are < n_actions.
    bounds = {"row": n_feats, "parent_row": n_feats, "action": n_actions, "parent_action": n_actions,
              "n_parents": len(part.get("parent_row", part["row"])) + n_actions}
    record = {"log_reward": part["log_reward"], "feats": part["feats"].astype(smallest_int(part["feats"]))}
    if "masks" in part:
        record.update(masks=np.packbits(part["masks"].ravel()), mask_width=np.int32(n_actions))
    if "log_pb" in part:
        record["log_pb"] = part["log_pb"].astype(np.float32, copy=False)
    for name, bound in bounds.items():
        if name in part:
            record[name] = part[name].astype(int_dtype(-1, bound), copy=False)
    return record


def unpack_record(record: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(record["row"])
    part = {k: v for k, v in record.items() if k != "mask_width"}
    if "masks" in record:
        width = int(record["mask_width"])
        part["masks"] = np.unpackbits(record["masks"], count=n * width).reshape(n, width).astype(bool)
    part["traj"] = np.zeros(n, dtype=np.int64)
    part["first"] = np.arange(n) == 0
    part["terminal"] = np.arange(n) == n - 1
    if "parent_row" in record:
        # split_batch orders parents by the state they lead to.
        part["parent_of"] = np.repeat(np.arange(n), record["n_parents"])
    return part


def write_record(record_id: str, version: int, log_reward: float, part: dict[str, np.ndarray]) -> bytes:
    """A replay record: a small header and the packed batch as nested bytes, so the replay
    table reads the header without decoding the arrays."""
    body = wire.encode(pack_record(part))
    return wire.encode({"id": record_id, "version": version, "log_reward": log_reward, "batch": body})


def read_record(blob: bytes) -> dict[str, np.ndarray]:
    """The one-trajectory batch of a record from write_record."""
    return unpack_record(wire.decode(wire.decode(blob)["batch"]))


@dataclass(frozen=True)
class RecordSpec:
    """What every record of a run holds (its env and objective decide): checked whole at
    insert, so the learner never sees a malformed record."""

    n_actions: int
    feat_shape: tuple  # of one featurized state (integers, narrowed on the wire by pack_record)
    masks: bool  # the env's masks do not follow from the features
    log_pb: bool  # the env has a backward policy
    parents: bool  # the objective trains on parents (flow matching)

    @classmethod
    def of(cls, env, with_parents: bool) -> "RecordSpec":
        feats = np.asarray(env.featurize(env.initial_states(1)))
        return cls(int(env.n_actions), tuple(feats.shape[1:]), not getattr(env, "masks_from_features", False),
                   has(env, BACKWARD_POLICY), with_parents)

    def fields(self) -> set[str]:
        return ({"log_reward", "feats", "row", "action", "n_parents"} | ({"masks", "mask_width"} if self.masks else set())
                | ({"log_pb"} if self.log_pb else set()) | ({"parent_row", "parent_action"} if self.parents else set()))

    def check(self, record) -> None:
        """Raises wire.WireError naming the first way the packed record (pack_record's form)
        breaks this spec: fields, dtypes, shapes, and every index in range."""
        if not isinstance(record, dict) or set(record) != self.fields():
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise wire.WireError(f"record body has fields {got}; expected {sorted(self.fields())}")
        feats, row, action, n_parents = (record[k] for k in ("feats", "row", "action", "n_parents"))
        n = len(row) if isinstance(row, np.ndarray) and row.ndim == 1 else 0
        check_array(record["log_reward"], "log_reward", (1,), "f")
        check_array(feats, "feats", (None, *self.feat_shape), "i")
        for name in ("row", "action", "n_parents"):
            check_array(record[name], name, (n,), "i")
        if n == 0 or len(feats) == 0:
            raise wire.WireError("record has no states")
        check_range(row, "row", 0, len(feats))
        check_range(action[:-1], "action", 0, self.n_actions)
        if action[-1] != -1 or n_parents[0] != 0 or (n_parents < 0).any():
            raise wire.WireError("record: the last action must be -1, s_0 has no parent, n_parents >= 0")
        if not np.isfinite(record["log_reward"]).all():
            raise wire.WireError("record: log_reward is not finite")
        if self.masks:
            if type(record["mask_width"]) is not int or record["mask_width"] != self.n_actions:
                raise wire.WireError(f"record: mask_width {record['mask_width']!r} != n_actions {self.n_actions}")
            check_array(record["masks"], "masks", ((n * self.n_actions + 7) // 8,), "u")
        if self.log_pb:
            check_array(record["log_pb"], "log_pb", (n,), "f")
            if not np.isfinite(record["log_pb"]).all():
                raise wire.WireError("record: log_pb is not finite")
        if self.parents:
            p = int(n_parents.sum())
            check_array(record["parent_row"], "parent_row", (p,), "i")
            check_array(record["parent_action"], "parent_action", (p,), "i")
            check_range(record["parent_row"], "parent_row", 0, len(feats))
            check_range(record["parent_action"], "parent_action", 0, self.n_actions)


def check_array(a, name: str, shape: tuple, kind: str) -> None:
    """a is an ndarray of dtype kind `kind` (i: any integer) and shape `shape` (None: any)."""
    kinds = "iu" if kind == "i" else kind
    if not isinstance(a, np.ndarray) or a.dtype.kind not in kinds or a.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(a.shape, shape)):
        what = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise wire.WireError(f"record: {name} is {what}; expected kind {kind!r}, shape {shape}")


def check_range(a: np.ndarray, name: str, lo: int, hi: int) -> None:
    if a.size and (a.min() < lo or a.max() >= hi):
        raise wire.WireError(f"record: {name} has values outside [{lo}, {hi})")


INT_RANGES = [(np.dtype(t), np.iinfo(t).min, np.iinfo(t).max) for t in (np.int8, np.int16, np.int32)]


def smallest_int(a: np.ndarray) -> np.dtype:
    return int_dtype(int(a.min()), int(a.max())) if a.size else np.dtype(np.int8)


def int_dtype(lo: int, hi: int) -> np.dtype:
    """The smallest signed integer dtype holding every value in [lo, hi]."""
    return next((t for t, tmin, tmax in INT_RANGES if tmin <= lo and hi <= tmax), np.dtype(np.int64))


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors on `device`; integers widened to int64, as torch indexing wants."""
    return {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64 if v.dtype.kind in "iu" else None))
        .to(device, non_blocking=True)
        for k, v in batch.items()
    }
