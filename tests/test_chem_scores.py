"""QED and SA scores of known molecules, and failures reported per SMILES."""

from __future__ import annotations

import sys

import numpy as np

from distgfn.chem.scores import QEDScorer, SAScorer, load_sascorer, sa_reward

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
IBUPROFEN = "CC(C)Cc1ccc(C(C)C(=O)O)cc1"


def test_qed_of_aspirin_and_ibuprofen_match_published_values():
    # Bickerton et al. 2012 and RDKit's own QED: aspirin 0.550, ibuprofen 0.822.
    values, errors = QEDScorer().score([ASPIRIN, IBUPROFEN])
    assert errors == [None, None]
    np.testing.assert_allclose(values, [0.550, 0.822], atol=1e-3)


def test_sa_matches_the_reference_values_shipped_with_sa_score():
    # Rows of RDKit Contrib/SA_Score/data/zim.100.txt (printed to 3 decimals).
    reference = {"COc1ccccc1OC(=O)c1ccccc1": 1.342, "Nc1ccc(S(=O)(=O)Nc2ccccc2)cc1": 1.529,
                 "CC12CCC3C(CCC4CC(=O)CCC43C)C1CCC2=O": 3.912, "CCC(C)SSc1ncc[nH]1": 3.983}
    values, errors = SAScorer().score(list(reference))
    assert errors == [None] * len(reference)
    np.testing.assert_allclose(values, list(reference.values()), atol=5e-4)


def test_sa_orders_benzene_before_a_stereo_rich_cage():
    values, _ = SAScorer().score(["c1ccccc1", "C[C@H]1C[C@@]23C[C@@H]1[C@@H]1[C@H](C2)[C@@]3(C)C1"])
    assert 1 <= values[0] < values[1] <= 10


def test_invalid_and_empty_smiles_are_reported_and_the_rest_scored():
    for scorer in (QEDScorer(), SAScorer()):
        values, errors = scorer.score(["C1CC(", ASPIRIN, ""])
        assert "'C1CC('" in errors[0] and "cannot parse" in errors[0]
        assert errors[1] is None and np.isfinite(values[1])
        assert "''" in errors[2] and "no atoms" in errors[2]
        assert np.isnan(values[[0, 2]]).all()


def test_sascorer_is_loaded_without_touching_sys_path():
    before = list(sys.path)
    module = load_sascorer.__wrapped__()  # past the cache, so the load itself runs here
    assert callable(module.calculateScore)
    assert sys.path == before


def test_sa_reward_maps_1_to_1_and_10_to_0():
    np.testing.assert_allclose(sa_reward(np.array([1.0, 5.5, 10.0])), [1.0, 0.5, 0.0])
