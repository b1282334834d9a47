"""Cheap RDKit scores of SMILES, with the scorers' interface `score(smiles) -> (values, errors)`.

- QEDScorer: quantitative estimate of drug-likeness (Bickerton et al. 2012), in (0, 1],
  higher is more drug-like; `rdkit.Chem.QED.qed`.
- SAScorer: synthetic accessibility (Ertl and Schuffenhauer 2009), 1 (easy) .. 10 (hard);
  the reference implementation that RDKit ships in Contrib/SA_Score. `sa_reward` maps it
  to [0, 1], higher is easier.

    values, errors = QEDScorer().score(["CC(=O)Oc1ccccc1C(=O)O", "not a smiles"])
    # values: [0.550, nan]; errors: [None, "SMILES 'not a smiles': RDKit cannot parse it"]
"""

from __future__ import annotations

import functools
import importlib.util
import os
from types import ModuleType

import numpy as np
from rdkit import Chem, RDConfig
from rdkit.Chem import QED
from rdkit.rdBase import BlockLogs

SA_MIN, SA_MAX = 1.0, 10.0


class QEDScorer:
    """QED of each SMILES; one that cannot be parsed gets NaN and an error."""

    def score(self, smiles: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """(n,) QED in (0, 1] (NaN where it failed) and, per SMILES, None or why it failed."""
        return _score_each(smiles, QED.qed)


class SAScorer:
    """Synthetic accessibility of each SMILES, 1 (easy) .. 10 (hard); failures get NaN and an error."""

    def __init__(self):
        self._calculate = load_sascorer().calculateScore

    def score(self, smiles: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """(n,) SA scores in [1, 10] (NaN where it failed) and, per SMILES, None or why it failed."""
        return _score_each(smiles, self._calculate)


def sa_reward(sa: float | np.ndarray) -> np.ndarray:
    """(10 - sa) / 9: the SA score mapped linearly onto [0, 1], 1 for the easiest (sa = 1),
    0 for the hardest (sa = 10). NaN (a failed molecule) stays NaN. It can be 0, so use it as
    a factor or a term of a reward, not as R(x) alone: a GFlowNet needs R > 0."""
    return (SA_MAX - np.asarray(sa, dtype=np.float64)) / (SA_MAX - SA_MIN)


@functools.cache
def load_sascorer() -> ModuleType:
    """RDKit Contrib's sascorer.py, loaded from its file once; sys.path is left as it was.

    It reads its fragment scores (fpscores.pkl.gz) from beside itself on first use.
    """
    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    if not os.path.isfile(path):
        raise ImportError(f"RDKit's SA_Score contrib is missing ({path}): this RDKit build ships "
                          f"without Contrib; the rdkit wheel from PyPI includes it")
    spec = importlib.util.spec_from_file_location("rdkit_contrib_sascorer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score_each(smiles: list[str], fn) -> tuple[np.ndarray, list[str | None]]:
    values = np.full(len(smiles), np.nan)
    errors: list[str | None] = [None] * len(smiles)
    # Failures are reported through `errors`; RDKit's own stderr lines would be noise.
    with BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s)
            if mol is None:
                errors[i] = f"SMILES {s!r}: RDKit cannot parse it"
            elif mol.GetNumAtoms() == 0:  # "" parses to an empty molecule, which has no score
                errors[i] = f"SMILES {s!r}: molecule has no atoms"
            else:
                values[i] = fn(mol)
    return values, errors
