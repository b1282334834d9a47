"""The sEH proxy: exact agreement with the reference implementation, batching, and failures named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rdkit import Chem

from distgfn.chem.proxy import ProxyScorer, featurize
from distgfn.data import data_dir

@pytest.fixture(scope="module")
def reference(seh_data) -> list[dict]:
    return json.loads((seh_data / "proxy_reference.json").read_text())


@pytest.fixture(scope="module")
def scorer(seh_data) -> ProxyScorer:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTGFN_DATA_DIR", str(seh_data))
        return ProxyScorer(data_dir("seh"))


def test_proxy_matches_every_reference_molecule(scorer, reference):
    values, errors = scorer.score([r["smiles"] for r in reference])
    assert errors == [None] * len(reference)
    np.testing.assert_allclose(values, [r["proxy"] for r in reference], rtol=0, atol=1e-4)


def test_invalid_smiles_get_an_error_and_the_rest_are_still_scored(scorer, reference):
    smiles = ["C1CC(", reference[0]["smiles"], "not a molecule", reference[9]["smiles"], "C[Pt]"]
    values, errors = scorer.score(smiles)
    assert errors[1] is None and errors[3] is None
    assert "'C1CC('" in errors[0] and "'not a molecule'" in errors[2]
    assert "'C[Pt]'" in errors[4] and "atomic number 78" in errors[4]
    assert np.isnan(values[[0, 2, 4]]).all()
    np.testing.assert_allclose(values[[1, 3]], [reference[0]["proxy"], reference[9]["proxy"]], rtol=0, atol=1e-4)


def test_batching_does_not_mix_molecules(scorer, reference):
    smiles = [r["smiles"] for r in reference]
    alone = [scorer.score([s])[0][0] for s in smiles]
    np.testing.assert_allclose(scorer.score(smiles[::-1])[0][::-1], alone, rtol=0, atol=1e-5)


def test_atom_features_follow_the_spec():
    x = featurize([Chem.MolFromSmiles("[NH3+]c1ccccc1")]).x
    nitrogen = np.flatnonzero(x[0])
    assert nitrogen.tolist() == [2, 12, 13, 14 + 7 - 1] and x[0, 13] == 3  # N, SP3, 3 H, Z=7
    carbon = np.flatnonzero(x[1])
    assert carbon.tolist() == [1, 9, 11, 14 + 6 - 1] and x[1, 13] == 0  # C, aromatic, SP2, no H, Z=6
    assert x[3, 13] == 1
    bromine = featurize([Chem.MolFromSmiles("Br")]).x[0]
    assert np.flatnonzero(bromine).tolist() == [5, 12, 13, 14 + 35 - 1]  # "other" element


def test_edges_are_bonds_both_ways_with_bond_type_one_hot():
    g = featurize([Chem.MolFromSmiles("C=CC#N"), Chem.MolFromSmiles("c1ccoc1")])
    pairs = {(int(s), int(t)): tuple(a) for s, t, a in zip(*g.edge_index, g.edge_attr)}
    assert pairs[(0, 1)] == pairs[(1, 0)] == (0, 1, 0, 0)
    assert pairs[(2, 3)] == pairs[(3, 2)] == (0, 0, 1, 0)
    assert pairs[(1, 2)] == (1, 0, 0, 0) and pairs[(4, 5)] == (0, 0, 0, 1)  # second molecule offset by 4 atoms
    assert g.edge_index.shape == (2, 2 * (3 + 5)) and g.graph.tolist() == [0] * 4 + [1] * 5


def test_a_molecule_without_bonds_gets_one_zero_self_edge(scorer):
    g = featurize([Chem.MolFromSmiles("CC"), Chem.MolFromSmiles("[Na+].[Cl-]")])
    assert g.edge_index.tolist() == [[0, 1, 2], [1, 0, 2]]
    assert g.edge_attr[2].tolist() == [0, 0, 0, 0]
    values, errors = scorer.score(["[Na+].[Cl-]", "C"])
    assert errors == [None, None] and np.isfinite(values).all()
