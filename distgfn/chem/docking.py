"""Docking SMILES into soluble epoxide hydrolase (sEH, PDB 4JNC) with AutoDock Vina.

This is the real oracle that the sEH proxy stands in for. Each molecule goes through

    parse (RDKit) -> add hydrogens -> embed (ETKDGv3, seeded) -> MMFF94 optimization
    -> meeko preparation (PDBQT) -> Vina docking in the paper's box -> best pose's energy

The receptor's affinity maps are computed once per VinaDocker (about a second) and reused
for every ligand, so keep one docker per worker process:

    docker = VinaDocker(data_dir("seh"))
    scores, errors = docker.score(["c1ccccc1O", "not a smiles"])  # kcal/mol, NaN where it failed
    rewards = reward_from_score(scores)

Where each stage fails, and how (observed with RDKit 2026.09, meeko 0.8.0, vina 1.2.7):
- parse: `Chem.MolFromSmiles` returns None (no exception).
- embed: `EmbedMolecule` returns -1 (no exception), e.g. an impossible bridgehead
  configuration such as C1C[C@H]2CC[C@H]1C2.
- MMFF: `MMFFOptimizeMolecule` returns -1 when MMFF94 has no parameters for an atom
  (boron, selenium, metals); it returns 1 when it did not converge, which is accepted.
- meeko preparation: `prepare` raises ValueError (more than one fragment, e.g. a salt),
  KeyError (an element meeko has no data for, e.g. [U]) or TypeError ([H][H]);
  RuntimeError is meeko's own error type for a bad setup. `write_string` returns ok=False
  with a message for atoms without an AutoDock type or with non-finite charges (Na+, Se, Hg).
- docking: `set_ligand_from_string` raises TypeError when Vina cannot parse the PDBQT
  (an atom type such as B that AutoDock does not know).
Nothing else is caught: any other exception is a bug and propagates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vina
from meeko import MoleculePreparation, PDBQTWriterLegacy
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.rdBase import BlockLogs

from distgfn.data import require

RECEPTOR = "4jnc.nohet.aligned.pdbqt"
BOX_CENTER = (-13.4, 26.3, -13.3)  # Angstrom, the box of the paper's code (seh data README)
BOX_SIZE = (20.013, 16.3, 18.5)
MMFF_MAX_ITERS = 2000  # RDKit's default 200 leaves larger molecules unconverged
MAX_SEED = 2**31 - 2  # Vina's seed is a C int, and it receives seed + 1

# Reward mapping: see reward_from_score.
REWARD_SCALE = 8.0
REWARD_MIN = 1e-4
REWARD_MAX = 100.0


class LigandError(Exception):
    """One molecule failed at one stage; `score` turns it into that molecule's error message."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage} failed: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class DockingSettings:
    exhaustiveness: int = 1
    max_evals: int = 50_000  # Vina's global search budget; 0 lets Vina pick (6-30 s a molecule)
    seed: int = 0
    num_poses: int = 1

    def __post_init__(self):
        if self.exhaustiveness < 1:
            raise ValueError(f"exhaustiveness must be >= 1, got {self.exhaustiveness}")
        if self.max_evals < 0:
            raise ValueError(f"max_evals must be >= 0 (0: Vina's own heuristic), got {self.max_evals}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if self.num_poses < 1:
            raise ValueError(f"num_poses must be >= 1, got {self.num_poses}")


class VinaDocker:
    """Docks SMILES into sEH; a molecule that fails gets NaN and an error, never a value.

    One Vina object per instance, its receptor maps computed once here, and one CPU thread:
    parallelism comes from running many dockers (one per worker), not from Vina's threads.
    """

    def __init__(self, directory: str | Path, exhaustiveness: int = 1, max_evals: int = 50_000,
                 seed: int = 0, num_poses: int = 1):
        self.settings = DockingSettings(exhaustiveness, max_evals, seed, num_poses)
        receptor = require("seh", directory, [RECEPTOR]) / RECEPTOR
        # Vina reads seed 0 as "pick a random seed"; shifting by one keeps every seed we accept
        # (0 included) deterministic.
        self.vina = vina.Vina(sf_name="vina", cpu=1, seed=seed + 1, verbosity=0)
        self.vina.set_receptor(str(receptor))
        # With no ligand set, Vina computes maps for every atom type, so any ligand can reuse them.
        self.vina.compute_vina_maps(center=list(BOX_CENTER), box_size=list(BOX_SIZE))
        self.preparation = MoleculePreparation()

    def score(self, smiles: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """(n,) best-pose Vina scores in kcal/mol (negative is better; NaN where it failed) and,
        per SMILES, None or which stage failed and why."""
        values = np.full(len(smiles), np.nan)
        errors: list[str | None] = [None] * len(smiles)
        for i, s in enumerate(smiles):
            try:
                values[i] = self.dock(prepare_ligand(s, self.settings.seed, self.preparation))
            except LigandError as e:
                errors[i] = f"SMILES {s!r}: {e}"
        return values, errors

    def dock(self, pdbqt: str) -> float:
        """The best pose's energy (kcal/mol) for a ligand prepared by `prepare_ligand`."""
        try:
            self.vina.set_ligand_from_string(pdbqt)
        except TypeError as e:  # Vina's binding raises TypeError for PDBQT it cannot parse
            raise LigandError("docking", _first_line(str(e))) from e
        s = self.settings
        self.vina.dock(exhaustiveness=s.exhaustiveness, n_poses=s.num_poses, max_evals=s.max_evals)
        energy = float(self.vina.energies(n_poses=1)[0, 0])  # column 0: total, Vina's reported affinity
        if not math.isfinite(energy):
            raise LigandError("docking", f"Vina returned a non-finite energy {energy}")
        return energy


def prepare_ligand(smiles: str, seed: int = 0, preparation: MoleculePreparation | None = None) -> str:
    """A PDBQT string for `smiles`: one seeded 3D conformer, MMFF94-optimized, typed by meeko.

    Raises LigandError naming the stage (parse, embed, MMFF, meeko preparation) that failed.
    """
    # RDKit reports failures through return values; its stderr lines would only be noise.
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise LigandError("parse", "RDKit cannot parse it")
        if mol.GetNumAtoms() == 0:
            raise LigandError("parse", "molecule has no atoms")
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise LigandError("embed", "ETKDGv3 found no 3D conformer")
        # 1 (not converged) is kept: Vina only fixes bond lengths and angles from this
        # geometry and searches torsions itself.
        if AllChem.MMFFOptimizeMolecule(mol, maxIters=MMFF_MAX_ITERS) == -1:
            raise LigandError("MMFF", "no MMFF94 parameters for some atom")
    return _to_pdbqt(mol, preparation or MoleculePreparation())


def _to_pdbqt(mol: Chem.Mol, preparation: MoleculePreparation) -> str:
    try:
        setups = preparation.prepare(mol)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # observed; see the module docstring
        raise LigandError("meeko preparation", f"{type(e).__name__}: {_first_line(str(e))}") from e
    pdbqt, ok, message = PDBQTWriterLegacy.write_string(setups[0])
    if not ok:
        raise LigandError("meeko preparation", _first_line(message) or "PDBQT writer refused the molecule")
    return pdbqt


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def reward_from_score(score: float | np.ndarray, scale: float = REWARD_SCALE) -> np.ndarray:
    """R = clip(-score / scale, 1e-4, 100): a positive reward from a Vina score (kcal/mol).

    Why this form: it is the proxy's own mapping, R = clip(proxy / 8, 1e-4, 100), applied to
    the negated docking score. Vina scores of drug-like molecules on sEH run about -4 to -12
    kcal/mol, so -score spans about the proxy's raw range (0-10), and R lands at about 0.5-1.5
    as the proxy's rewards do: a reward exponent beta and mode thresholds tuned on the proxy
    carry over. R is linear in -score, so a reward ratio is a score ratio before beta.

    The floor keeps R > 0 for every finite score: a ligand that clashes or does not fit the
    box scores positive (a 40-carbon chain: +66; a rigid 8-ring chain: +5e6) and gets 1e-4.
    The ceiling only guards against a nonsense score. NaN (a failed molecule) stays NaN, so
    failures remain marked as such, never turned into a reward.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return np.clip(-np.asarray(score, dtype=np.float64) / scale, REWARD_MIN, REWARD_MAX)
