"""Vina docking against sEH: real scores, failures named by stage, maps computed once, seeded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import vina
from meeko import MoleculePreparation, PDBQTWriterLegacy
from rdkit import Chem
from rdkit.Chem import AllChem

from distgfn.chem.docking import RECEPTOR, LigandError, VinaDocker, reward_from_score
from distgfn.data import DataError

SMALL_BUDGET = dict(exhaustiveness=1, max_evals=10_000)
PHENOL = "c1ccccc1O"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"  # three rotatable bonds: the search has something to vary
UNEMBEDDABLE = "C1C[C@H]2CC[C@H]1C2"  # norbornane with both bridgeheads the same way: no 3D shape


@pytest.fixture(scope="module")
def seh(seh_data) -> Path:
    return seh_data


@pytest.fixture(scope="module")
def docker(seh) -> VinaDocker:
    return VinaDocker(seh, seed=0, **SMALL_BUDGET)


def test_docks_a_small_molecule_to_a_finite_negative_score(docker):
    values, errors = docker.score([PHENOL])
    assert errors == [None]
    assert np.isfinite(values[0]) and values[0] < 0


def test_invalid_and_unembeddable_smiles_are_reported_and_the_valid_one_still_scores(docker):
    values, errors = docker.score(["C1CC(", PHENOL, UNEMBEDDABLE])
    assert "'C1CC('" in errors[0] and "parse failed" in errors[0]
    assert repr(UNEMBEDDABLE) in errors[2] and "embed failed" in errors[2]
    assert errors[1] is None and values[1] < 0
    assert np.isnan(values[[0, 2]]).all()


def test_mmff_and_meeko_failures_name_their_stage(docker):
    values, errors = docker.score(["OB(O)O", "CC.CC", "[Na+]"])
    assert np.isnan(values).all()
    assert "'OB(O)O'" in errors[0] and "MMFF failed" in errors[0]
    assert "'CC.CC'" in errors[1] and "meeko preparation failed" in errors[1] and "fragments" in errors[1]
    assert "'[Na+]'" in errors[2] and "meeko preparation failed" in errors[2]


def test_docking_stage_reports_an_atom_type_vina_does_not_know(docker):
    # Boron fails MMFF first in `score`, so build its PDBQT without MMFF to reach Vina.
    mol = Chem.AddHs(Chem.MolFromSmiles("B(O)(O)c1ccccc1"))
    assert AllChem.EmbedMolecule(mol, randomSeed=0) == 0
    pdbqt, ok, _ = PDBQTWriterLegacy.write_string(MoleculePreparation().prepare(mol)[0])
    assert ok
    with pytest.raises(LigandError, match="docking failed: .*Atom type B"):
        docker.dock(pdbqt)


def test_receptor_maps_are_computed_once_per_instance(seh, monkeypatch):
    calls = []
    original = vina.Vina.compute_vina_maps

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(vina.Vina, "compute_vina_maps", counting)
    one = VinaDocker(seh, **SMALL_BUDGET)
    one.score([PHENOL])
    one.score([PHENOL, ASPIRIN])
    assert len(calls) == 1


def test_same_seed_gives_the_same_score_in_a_new_instance(seh, docker):
    # Seed 0 on purpose: Vina itself reads 0 as "random", which the docker must not pass on.
    again = VinaDocker(seh, seed=0, **SMALL_BUDGET)
    first, _ = docker.score([ASPIRIN, PHENOL])
    second, _ = again.score([ASPIRIN, PHENOL])
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_missing_receptor_is_a_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=RECEPTOR):
        VinaDocker(tmp_path)


def test_reward_is_positive_and_grows_as_the_score_falls():
    r = reward_from_score(np.array([-12.0, -8.0, -4.0, 0.0, 66.0, 5e6]))
    assert (r > 0).all()
    assert r[0] > r[1] > r[2] > 0
    assert r[1] == 1.0 and r[4] == r[5] == 1e-4
    assert math.isnan(reward_from_score(np.nan))
