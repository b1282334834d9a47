"""Every generated molecule, on disk and as the run's molecule metrics.

`RUN_DIR/molecules.jsonl` holds one JSON object a line, in the order molecules were scored:

    {"smiles": "...", "reward": R(x), "raw": oracle output, "step": learner step, "version": policy version}
    {"smiles": "...", "error": "why it could not be scored", "step": ..., "version": ...}

`reward` is R(x) before the beta exponent; `raw` is the oracle's own number (the proxy value).
The file is the source of truth: on resume the tracker is rebuilt from it, so the tracker
keeps no checkpoint state of its own.

    log = MoleculeLog(run_dir / MOLECULES_FILE)
    tracker = MoleculeTracker(mode_reward=0.875)
    log.write(smiles, reward, raw, step=step, version=versions)
    tracker.add(smiles, reward, raw)
    metrics_row.update(tracker.metrics())

    tracker = MoleculeTracker.from_log(read_molecules(run_dir / MOLECULES_FILE), 0.875)

Modes are counted as in the GFlowNet literature (Bengio et al. 2021): in arrival order, a new
molecule with reward >= mode_reward is a new mode when its Tanimoto similarity (Morgan,
radius 2, 2048 bits) to every mode counted so far is < mode_similarity.

SMILES are compared as strings: callers pass canonical SMILES (Chem.MolToSmiles), as the
fragment environment does.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.rdBase import BlockLogs

MOLECULES_FILE = "molecules.jsonl"
TOP_K = (10, 100, 1000)
SIMILARITY_TOP = 100

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


class MoleculeLog:
    """Appends molecules to a JSON-lines file with one write() and one flush() per batch, so a
    crash mid-write leaves at most a torn last line, which read_molecules skips."""

    def __init__(self, path: Path):
        self.path = Path(path)
        _repair_tail(self.path)
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, smiles: list[str], reward, raw, step: int, version) -> None:
        """Scored molecules; `version` is one policy version or one per molecule."""
        n = len(smiles)
        reward, raw = _column(reward, n, "reward"), _column(raw, n, "raw")
        versions = _versions(version, n)
        lines = [
            json.dumps({"smiles": s, "reward": float(r), "raw": float(w), "step": int(step), "version": v})
            for s, r, w, v in zip(smiles, reward, raw, versions)
        ]
        self._append(lines)

    def write_errors(self, smiles: list[str], errors: list[str], step: int, version) -> None:
        """Molecules the oracle could not score, with its reason for each."""
        if len(errors) != len(smiles):
            raise ValueError(f"{len(errors)} errors for {len(smiles)} molecules")
        versions = _versions(version, len(smiles))
        lines = [
            json.dumps({"smiles": s, "error": str(e), "step": int(step), "version": v})
            for s, e, v in zip(smiles, errors, versions)
        ]
        self._append(lines)

    def _append(self, lines: list[str]) -> None:
        if lines:
            self.file.write("".join(line + "\n" for line in lines))
            self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_molecules(path: Path) -> list[dict]:
    """The rows of a molecules file. A torn last line (a crash mid-write) is skipped with a
    warning; a bad line anywhere else means the file is damaged and is a ValueError."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(_parse_row(line))
        except ValueError as e:
            if i != last:
                raise ValueError(f"{path}:{i + 1}: corrupt molecule row: {e}") from e
            warnings.warn(f"{path}:{i + 1}: skipping a torn last line (a crash mid-write?)", stacklevel=2)
    return rows


def drop_molecules_after(path: Path, step: int) -> None:
    """Drops rows logged after learner step `step`, as metrics.drop_rows_after does for
    metrics.jsonl: a run resumed from the checkpoint at `step` generates them again."""
    path = Path(path)
    if not path.exists():
        return
    kept = [row for row in read_molecules(path) if row["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash leaves the old file or the new one, never half of it


class MoleculeTracker:
    """The run's molecule metrics, updated batch by batch.

    Unique molecules keep the first reward seen. Rewards live in a growable numpy array in
    order of first appearance, so top-k is an np.partition over it. Fingerprints are kept
    only for modes; the top-100 fingerprints are computed when metrics() asks for them.
    """

    def __init__(self, mode_reward: float, mode_similarity: float = 0.7):
        self.mode_reward = float(mode_reward)
        self.mode_similarity = float(mode_similarity)
        self.generated = 0
        self.index: dict[str, int] = {}  # SMILES -> position in smiles / rewards
        self.smiles: list[str] = []
        self._reward = np.empty(1024)
        self._raw = np.empty(1024)
        self.mode_smiles: list[str] = []
        self.mode_fps: list = []
        self._top_fps: dict[int, object] = {}  # the last top-100's fingerprints, reused while they stay on top

    @classmethod
    def from_log(cls, rows: list[dict], mode_reward: float, mode_similarity: float = 0.7) -> MoleculeTracker:
        """The tracker a run had after logging `rows` (those of read_molecules); error rows
        were never added, so they are skipped."""
        tracker = cls(mode_reward, mode_similarity)
        scored = [row for row in rows if "error" not in row]
        tracker.add(
            [row["smiles"] for row in scored],
            np.array([row["reward"] for row in scored], dtype=np.float64),
            np.array([row["raw"] for row in scored], dtype=np.float64),
        )
        return tracker

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def rewards(self) -> np.ndarray:
        """Rewards of the unique molecules, in order of first appearance (a view)."""
        return self._reward[: len(self.smiles)]

    @property
    def raws(self) -> np.ndarray:
        return self._raw[: len(self.smiles)]

    def add(self, smiles: list[str], reward: np.ndarray, raw: np.ndarray) -> None:
        """Scored molecules in arrival order; raw is the oracle's output, kept for reports."""
        n = len(smiles)
        reward, raw = _column(reward, n, "reward"), _column(raw, n, "raw")
        if not np.isfinite(reward).all():
            raise ValueError(f"non-finite reward for {smiles[int(np.argmin(np.isfinite(reward)))]!r}")
        self.generated += n
        new = self._new_positions(smiles)
        start = len(self.smiles)
        self._grow(start + len(new))
        self.smiles.extend(smiles[i] for i in new)
        self._reward[start : start + len(new)] = reward[new]
        self._raw[start : start + len(new)] = raw[new]
        # A molecule seen before was judged when it first arrived, and the mode set only grows.
        for i in np.flatnonzero(self._reward[start : start + len(new)] >= self.mode_reward):
            self._consider_mode(self.smiles[start + i])

    def _new_positions(self, smiles: list[str]) -> np.ndarray:
        """Positions in the batch of SMILES never seen before (a repeat within the batch is not new)."""
        new = []
        for i, s in enumerate(smiles):
            if s not in self.index:
                self.index[s] = len(self.index)
                new.append(i)
        return np.array(new, dtype=np.int64)

    def _grow(self, size: int) -> None:
        if size > len(self._reward):
            capacity = max(size, 2 * len(self._reward))
            self._reward = np.resize(self._reward, capacity)
            self._raw = np.resize(self._raw, capacity)

    def _consider_mode(self, smiles: str) -> None:
        fp = fingerprint(smiles)
        if not self.mode_fps or max(DataStructs.BulkTanimotoSimilarity(fp, self.mode_fps)) < self.mode_similarity:
            self.mode_smiles.append(smiles)
            self.mode_fps.append(fp)

    def top(self, k: int) -> np.ndarray:
        """Indices of the k best unique molecules, best first; ties go to the earlier one, so
        the answer does not depend on np.partition's choices."""
        rewards = self.rewards
        k = min(k, len(rewards))
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        kth = np.partition(rewards, len(rewards) - k)[len(rewards) - k]
        above = np.flatnonzero(rewards > kth)
        at = np.flatnonzero(rewards == kth)[: k - len(above)]
        chosen = np.concatenate([above, at])
        return chosen[np.lexsort((chosen, -rewards[chosen]))]

    def best(self, n: int) -> list[dict]:
        """The n best unique molecules as {"smiles", "reward", "raw"}, best first."""
        return [
            {"smiles": self.smiles[i], "reward": float(self._reward[i]), "raw": float(self._raw[i])}
            for i in self.top(n)
        ]

    def top_k_mean(self, k: int) -> float | None:
        """Mean reward of the k best unique molecules; None until k unique exist, because a mean
        over fewer would not be comparable across runs or over time."""
        rewards = self.rewards
        if len(rewards) < k:
            return None
        return float(np.partition(rewards, len(rewards) - k)[len(rewards) - k :].mean())

    def top_similarity(self, k: int = SIMILARITY_TOP) -> float | None:
        """Mean pairwise Tanimoto similarity among the k best unique molecules (all of them
        while fewer than k exist); None below 2 molecules."""
        top = self.top(k)
        if len(top) < 2:
            return None
        cached = self._top_fps
        self._top_fps = {int(i): cached[i] if i in cached else fingerprint(self.smiles[i]) for i in top.tolist()}
        fps = list(self._top_fps.values())
        total = sum(sum(DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1 :])) for i in range(len(fps) - 1))
        return total / (len(fps) * (len(fps) - 1) / 2)

    def metrics(self) -> dict:
        row = {"molecules": self.generated, "unique_molecules": len(self.smiles)}
        for k in TOP_K:
            row[f"top{k}_reward"] = self.top_k_mean(k)
        row["modes"] = len(self.mode_fps)
        row[f"top{SIMILARITY_TOP}_similarity"] = self.top_similarity()
        return row


def to_mol(smiles: str) -> Chem.Mol:
    """The molecule of a SMILES. One that RDKit cannot sanitize (it happens when fragments are
    joined) is read unsanitized, so that it can still be fingerprinted and drawn."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            mol = Chem.MolFromSmiles(smiles, sanitize=False)
            if mol is None:
                raise ValueError(f"cannot parse SMILES {smiles!r}")
            mol.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(mol)
    return mol


def fingerprint(smiles: str):
    """Morgan fingerprint, radius 2, 2048 bits (an ExplicitBitVect)."""
    return _MORGAN.GetFingerprint(to_mol(smiles))


def _parse_row(line: str) -> dict:
    row = json.loads(line)  # json.JSONDecodeError is a ValueError
    if not isinstance(row, dict) or "smiles" not in row or ("reward" not in row and "error" not in row):
        raise ValueError("expected an object with smiles and reward or error")
    return row


def _repair_tail(path: Path) -> None:
    """Makes the file end in a newline before appending: a torn last line is cut off (it would
    otherwise become a corrupt middle line), a complete one missing its newline gets it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        try:
            _parse_row(data[cut:].decode("utf-8"))
            f.write(b"\n")
        except ValueError:  # UnicodeDecodeError and JSONDecodeError included
            warnings.warn(f"{path}: cutting a torn last line before appending", stacklevel=3)
            f.truncate(cut)


def _column(values, n: int, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"{name} has shape {values.shape} for {n} molecules")
    return values


def _versions(version, n: int) -> list[int]:
    return [int(v) for v in np.broadcast_to(np.asarray(version, dtype=np.int64), (n,))]
