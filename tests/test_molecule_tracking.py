"""The molecule log, the molecule metrics and the run report (distgfn.chem.tracking, .report)."""

import itertools
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from rdkit import DataStructs

from distgfn.chem.report import draw_top, summary, write_report
from distgfn.chem.tracking import (
    MoleculeLog,
    MoleculeTracker,
    drop_molecules_after,
    fingerprint,
    read_molecules,
)

IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
IBUPROFEN_HOMOLOG = "CCC(C)Cc1ccc(cc1)C(C)C(=O)O"  # Tanimoto 0.71 to IBUPROFEN
IBUPROFEN_AMIDE = "CC(C)Cc1ccc(cc1)C(C)C(=O)N"  # Tanimoto exactly 0.7 to IBUPROFEN
ISONICOTINIC_ACID = "O=C(O)c1ccncc1"
TETRADECANOL = "CCCCCCCCCCCCCCO"
SMALL_SET = [IBUPROFEN, IBUPROFEN_HOMOLOG, IBUPROFEN_AMIDE, ISONICOTINIC_ACID, TETRADECANOL,
             "c1ccccc1", "CCO", "CC(=O)Nc1ccc(O)cc1"]


def tanimoto(a: str, b: str) -> float:
    return DataStructs.TanimotoSimilarity(fingerprint(a), fingerprint(b))


def add(tracker, smiles, rewards):
    tracker.add(smiles, np.array(rewards, dtype=float), 10 * np.array(rewards, dtype=float))


def test_counts_unique_molecules_and_keeps_the_first_reward():
    tracker = MoleculeTracker(mode_reward=100.0)
    add(tracker, ["CCO", "CCN", "CCO"], [1.0, 2.0, 5.0])
    add(tracker, ["CCN", "CCC"], [9.0, 3.0])
    m = tracker.metrics()
    assert (m["molecules"], m["unique_molecules"]) == (5, 3)
    assert tracker.best(3) == [
        {"smiles": "CCC", "reward": 3.0, "raw": 30.0},
        {"smiles": "CCN", "reward": 2.0, "raw": 20.0},
        {"smiles": "CCO", "reward": 1.0, "raw": 10.0},
    ]


def test_best_breaks_reward_ties_by_arrival_order():
    tracker = MoleculeTracker(mode_reward=100.0)
    add(tracker, ["CCO", "CCN", "CCC", "CCS", "CCF"], [1.0, 2.0, 2.0, 2.0, 3.0])
    assert [m["smiles"] for m in tracker.best(3)] == ["CCF", "CCN", "CCC"]


def test_top_k_means_are_exact_and_none_below_k():
    tracker = MoleculeTracker(mode_reward=1e9)
    rewards = np.random.default_rng(0).permutation(np.arange(1.0, 1201.0))  # unique molecule i gets reward i+1
    smiles = ["C" * (i % 40 + 1) + "N" + "C" * (i // 40 + 1) for i in range(len(rewards))]  # all distinct
    tracker.add(smiles[:50], rewards[:50], rewards[:50])
    m = tracker.metrics()
    assert m["top10_reward"] == pytest.approx(np.sort(rewards[:50])[-10:].mean())
    assert m["top100_reward"] is None and m["top1000_reward"] is None
    tracker.add(smiles[50:], rewards[50:], rewards[50:])
    m = tracker.metrics()
    assert m["top10_reward"] == pytest.approx(np.mean(np.arange(1191.0, 1201.0)))
    assert m["top100_reward"] == pytest.approx(np.mean(np.arange(1101.0, 1201.0)))
    assert m["top1000_reward"] == pytest.approx(np.mean(np.arange(201.0, 1201.0)))


def test_counts_similar_high_reward_molecules_as_one_mode():
    assert tanimoto(IBUPROFEN, IBUPROFEN_HOMOLOG) >= 0.7
    assert tanimoto(IBUPROFEN, IBUPROFEN_AMIDE) == pytest.approx(0.7)  # the threshold excludes: < 0.7 is new
    assert tanimoto(IBUPROFEN, ISONICOTINIC_ACID) < 0.7 and tanimoto(IBUPROFEN_HOMOLOG, ISONICOTINIC_ACID) < 0.7
    assert max(tanimoto(TETRADECANOL, s) for s in (IBUPROFEN, ISONICOTINIC_ACID)) < 0.7
    tracker = MoleculeTracker(mode_reward=1.0, mode_similarity=0.7)
    add(tracker, [IBUPROFEN, IBUPROFEN_HOMOLOG], [2.0, 3.0])
    assert tracker.metrics()["modes"] == 1
    add(tracker, [IBUPROFEN_AMIDE, ISONICOTINIC_ACID, TETRADECANOL], [2.0, 1.0, 0.99])
    assert tracker.metrics()["modes"] == 2
    assert tracker.mode_smiles == [IBUPROFEN, ISONICOTINIC_ACID]


def test_top100_similarity_equals_brute_force():
    rewards = np.arange(len(SMALL_SET), dtype=float) + 1.0
    tracker = MoleculeTracker(mode_reward=1e9)
    add(tracker, SMALL_SET, rewards)
    pairs = list(itertools.combinations(SMALL_SET, 2))
    expected = sum(tanimoto(a, b) for a, b in pairs) / len(pairs)
    assert tracker.metrics()["top100_similarity"] == pytest.approx(expected)
    one = MoleculeTracker(mode_reward=1e9)
    add(one, ["CCO"], [1.0])
    assert one.metrics()["top100_similarity"] is None


def test_log_writes_one_row_per_molecule(tmp_path):
    log = MoleculeLog(tmp_path / "molecules.jsonl")
    log.write(["CCO", "CCN"], np.array([0.5, 0.25]), np.array([4.0, 2.0]), step=3, version=[2, 3])
    log.write_errors(["C1"], ["cannot parse"], step=4, version=3)
    log.close()
    assert read_molecules(tmp_path / "molecules.jsonl") == [
        {"smiles": "CCO", "reward": 0.5, "raw": 4.0, "step": 3, "version": 2},
        {"smiles": "CCN", "reward": 0.25, "raw": 2.0, "step": 3, "version": 3},
        {"smiles": "C1", "error": "cannot parse", "step": 4, "version": 3},
    ]


def test_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "molecules.jsonl"
    log = MoleculeLog(path)
    log.write(["CCO", "CCN"], [0.5, 0.25], [4.0, 2.0], step=1, version=0)
    log.close()
    whole = json.dumps({"smiles": "CCC", "reward": 0.1, "raw": 1.0, "step": 2, "version": 1})
    with open(path, "a") as f:
        f.write(whole[: len(whole) // 2])
    with pytest.warns(UserWarning, match=r"molecules.jsonl:3: skipping a torn last line"):
        assert [r["smiles"] for r in read_molecules(path)] == ["CCO", "CCN"]
    with pytest.warns(UserWarning, match="cutting a torn last line"):
        log = MoleculeLog(path)  # a resumed run appends after the last whole row
    log.write(["CCS"], [0.3], [3.0], step=3, version=2)
    log.close()
    assert [r["smiles"] for r in read_molecules(path)] == ["CCO", "CCN", "CCS"]


def test_log_rejects_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "molecules.jsonl"
    good = json.dumps({"smiles": "CCO", "reward": 0.5, "raw": 4.0, "step": 1, "version": 0})
    path.write_text(good + "\n" + '{"smiles": "CC' + "\n" + good + "\n")
    with pytest.raises(ValueError, match=r"molecules.jsonl:2: corrupt"):
        read_molecules(path)


def test_drops_rows_logged_after_the_resume_step(tmp_path):
    path = tmp_path / "molecules.jsonl"
    log = MoleculeLog(path)
    for step, s in enumerate(["CCO", "CCN", "CCC"]):
        log.write([s], [1.0], [1.0], step=step, version=step)
    log.close()
    drop_molecules_after(path, 1)
    assert [r["smiles"] for r in read_molecules(path)] == ["CCO", "CCN"]


def test_from_log_equals_incremental_adds(tmp_path):
    rng = np.random.default_rng(1)
    smiles = [SMALL_SET[i] for i in rng.integers(0, len(SMALL_SET), size=40)]
    rewards = rng.uniform(0.0, 2.0, size=40)
    path = tmp_path / "molecules.jsonl"
    log, tracker = MoleculeLog(path), MoleculeTracker(mode_reward=1.0, mode_similarity=0.5)
    for start in range(0, 40, 7):
        batch = slice(start, start + 7)
        log.write(smiles[batch], rewards[batch], 8 * rewards[batch], step=start, version=start)
        tracker.add(smiles[batch], rewards[batch], 8 * rewards[batch])
    log.write_errors(["xx"], ["unparsable"], step=99, version=99)
    log.close()
    rebuilt = MoleculeTracker.from_log(read_molecules(path), mode_reward=1.0, mode_similarity=0.5)
    assert rebuilt.metrics() == tracker.metrics()
    assert rebuilt.mode_smiles == tracker.mode_smiles
    assert rebuilt.best(100) == tracker.best(100)


def test_write_report_makes_png_svg_and_summary(tmp_path):
    log = MoleculeLog(tmp_path / "molecules.jsonl")
    rewards = np.linspace(0.2, 1.6, len(SMALL_SET))
    log.write(SMALL_SET[:5], rewards[:5], 8 * rewards[:5], step=1, version=0)
    log.write_errors(["C1"], ["cannot parse"], step=1, version=0)
    log.write(SMALL_SET[5:], rewards[5:], 8 * rewards[5:], step=2, version=1)
    log.close()
    report = write_report(tmp_path, mode_reward=1.0, every=3)
    assert report.top_molecules.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = ET.parse(report.progress).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert svg.findall(".//{http://www.w3.org/2000/svg}polyline")
    result = json.loads(report.summary.read_text())
    assert set(result) >= {"molecules", "unique_molecules", "top10_reward", "top100_reward", "top1000_reward",
                           "modes", "top100_similarity", "failed_molecules", "best"}
    assert (result["molecules"], result["failed_molecules"]) == (len(SMALL_SET), 1)
    assert result["best"][0] == {"smiles": SMALL_SET[-1], "reward": rewards[-1], "raw": 8 * rewards[-1]}
    assert result == summary(read_molecules(tmp_path / "molecules.jsonl"), mode_reward=1.0)


def test_draw_top_writes_a_png_grid(tmp_path):
    rows = [{"smiles": s, "reward": float(i), "raw": float(i), "step": 0, "version": 0}
            for i, s in enumerate(SMALL_SET)]
    draw_top(rows, tmp_path / "top.png", n=5, per_row=2)
    assert (tmp_path / "top.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report_needs_a_molecules_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="molecules.jsonl"):
        write_report(tmp_path, mode_reward=1.0)
    (tmp_path / "molecules.jsonl").write_text("")
    with pytest.raises(ValueError, match="no scored molecules"):
        write_report(tmp_path, mode_reward=1.0)
