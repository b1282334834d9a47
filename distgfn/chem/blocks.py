"""The building blocks ("fragments") of Bengio et al. 2021's molecule environment.

`blocks_PDB_105.json` is a dict of columns (`block_name`, `block_smi`, `block_r`), each a dict
keyed "0".."104". `block_r` lists the atoms where a bond to another block may be made. Every
entry is its own block type, even when two entries share a SMILES: they differ in their stem
lists, and the paper's environment used all 105.

    blocks = load_blocks(data_dir / "blocks_PDB_105.json")
    blocks.smiles[j], blocks.stems[j], blocks.mols[j]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem
from rdkit.rdBase import BlockLogs

COLUMNS = ("block_name", "block_smi", "block_r")


@dataclass
class Blocks:
    names: list[str]
    smiles: list[str]
    stems: list[tuple[int, ...]]  # block_r: atom indices; an atom may be listed more than once
    mols: list[Chem.Mol]

    def __len__(self) -> int:
        return len(self.smiles)


def load_blocks(path: str | Path) -> Blocks:
    """Reads a block library; a malformed file is a ValueError that names it."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the block library: {e}") from e
    if not isinstance(table, dict) or any(not isinstance(table.get(c), dict) for c in COLUMNS):
        raise ValueError(f"{path}: expected a JSON object with dict columns {list(COLUMNS)}")
    n = len(table["block_smi"])
    keys = [str(i) for i in range(n)]
    for column in COLUMNS:
        if sorted(table[column], key=_as_index) != keys:
            raise ValueError(f"{path}: column {column!r} must be keyed \"0\"..\"{n - 1}\" like block_smi")
    if n == 0:
        raise ValueError(f"{path}: the block library is empty")
    names, smiles, stems, mols = [], [], [], []
    for key in keys:
        name, smi, stem = (table[c][key] for c in COLUMNS)
        mol = _parse(path, key, smi)
        if (not isinstance(stem, list) or not stem
                or any(type(a) is not int or not 0 <= a < mol.GetNumAtoms() for a in stem)):
            raise ValueError(f"{path}: block {key} ({smi}): block_r must be a non-empty list of atom "
                             f"indices below {mol.GetNumAtoms()}; got {stem!r}")
        names.append(str(name))
        smiles.append(smi)
        stems.append(tuple(stem))
        mols.append(mol)
    return Blocks(names, smiles, stems, mols)


def _as_index(key: str) -> tuple[int, str]:
    # Sorts "10" after "9" so the key check compares like with like.
    return (int(key), key) if key.isdigit() else (-1, key)


def _parse(path: Path, key: str, smi) -> Chem.Mol:
    if not isinstance(smi, str):
        raise ValueError(f"{path}: block {key}: block_smi must be a string; got {smi!r}")
    with BlockLogs():
        mol = Chem.MolFromSmiles(smi)
    if mol is None:
        raise ValueError(f"{path}: block {key}: RDKit cannot parse block_smi {smi!r}")
    return mol
