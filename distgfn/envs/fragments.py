"""Molecules built from fragments ("blocks"), the environment of Bengio et al. 2021.

A state is a rooted tree of at most M = max_fragments fragments, numbered in insertion order.
The first action picks the root block j; its free stem slots are all of block_r[j] (slot k is
atom block_r[j][k]). "Attach block j at slot k of fragment f" adds a fragment joined by a single
bond from its atom block_r[j][0] to fragment f's slot-k atom; a non-root fragment's own slots
are block_r[j][1:] (slot k is atom block_r[j][1 + k]). Each slot takes at most one bond (two
slots may name the same atom: that atom then takes two bonds). "Stop" ends the episode.

One state is one row of an int16 array, width 1 + 3M:

    [done, block_0 .. block_{M-1}, parent_0 .. parent_{M-1}, slot_0 .. slot_{M-1}]

block_f is -1 for absent fragments; fragment f > 0 is bonded to fragment parent_f < f at its
slot slot_f; the root's parent and slot are always -1 (kept so all three columns index by f).
int16 holds block ids of libraries up to 32767 blocks at a quarter of int64's size; replay
records shrink it further (batch.pack_record), and action arithmetic is done in int64.

Actions: 0 is stop; 1 + (f * K + k) * n_blocks + j attaches block j at slot k of fragment f,
K being the largest number of stems of any block. From the empty state, 1 + j starts with root
block j. n_actions = 1 + M * K * n_blocks.

parents() is exact: the forward process only ever adds a leaf under an existing fragment, so the
parents of a tree are the trees without one of its non-root leaves (and, for one fragment, the
empty state). The same molecule can still be built as different trees (different roots, or
different slots naming the same atom); those are different states, as in the paper.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem

from distgfn.chem.blocks import Blocks
from distgfn.core import PARENTS

DTYPE = np.int16
RECENT_SMILES = 4096  # SMILES remembered per env (FragmentEnv.smiles)


def fragment_env(data_dir: str | None = None, min_fragments: int = 2, max_fragments: int = 8) -> "FragmentEnv":
    """The paper's environment over its 105 blocks (blocks_PDB_105.json in the sEH data)."""
    from distgfn import data
    from distgfn.chem.blocks import load_blocks

    directory = data.require("seh", data.data_dir("seh", data_dir), ["blocks_PDB_105.json"])
    return FragmentEnv(load_blocks(directory / "blocks_PDB_105.json"), min_fragments, max_fragments)


class FragmentEnv:
    capabilities = frozenset({PARENTS})
    default_model = "fragment_gnn"
    evaluator = "distgfn.chem.evaluation:MoleculeEvaluator"
    # Masks follow from a state row (FragmentGNN.masks rebuilds them), so training batches and
    # replay records leave them out: 5041 bits a state would dwarf the rest of a record.
    masks_from_features = True

    def __init__(self, blocks: Blocks, min_fragments: int = 2, max_fragments: int = 8):
        if not 1 <= min_fragments <= max_fragments:
            raise ValueError(f"FragmentEnv needs 1 <= min_fragments <= max_fragments; got "
                             f"min_fragments={min_fragments}, max_fragments={max_fragments}")
        if len(blocks) > np.iinfo(DTYPE).max:
            raise ValueError(f"FragmentEnv stores block ids as {np.dtype(DTYPE)}; {len(blocks)} blocks is too many")
        self.blocks = blocks
        self.n_blocks = len(blocks)
        self.recent_smiles: dict[bytes, str] = {}  # state row bytes -> SMILES (see smiles)
        self.min_fragments = min_fragments
        self.max_fragments = max_fragments
        self.n_slots = max(len(s) for s in blocks.stems)
        self.width = 1 + 3 * max_fragments
        self.n_actions = 1 + max_fragments * self.n_slots * self.n_blocks
        self.stop_action = 0
        self.max_steps = max_fragments + 1
        # Atom of each slot, -1 where the block has no such slot: as root, and as non-root.
        self.root_slot_atoms = _table([s for s in blocks.stems], self.n_slots)
        self.slot_atoms = _table([s[1:] for s in blocks.stems], self.n_slots)
        self.attach_atoms = np.array([s[0] for s in blocks.stems], dtype=np.int64)
        # slot_exists[is_root, block, slot]: the table the model shares to rebuild masks.
        self.slot_exists = np.stack([self.slot_atoms >= 0, self.root_slot_atoms >= 0])
        self._is_root = (np.arange(max_fragments) == 0).astype(np.int64)

    # Columns of the state rows.

    def split(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(blocks, parents, slots), each (n, M)."""
        m = self.max_fragments
        return states[:, 1 : 1 + m], states[:, 1 + m : 1 + 2 * m], states[:, 1 + 2 * m :]

    def n_fragments(self, states: np.ndarray) -> np.ndarray:
        return (states[:, 1 : 1 + self.max_fragments] >= 0).sum(axis=1)

    # The Env protocol.

    def initial_states(self, n: int) -> np.ndarray:
        states = np.full((n, self.width), -1, dtype=DTYPE)
        states[:, 0] = 0
        return states

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return states[:, 0] == 1

    def free_slots(self, states: np.ndarray) -> np.ndarray:
        """(n, M, K) bool: the slots a block may be attached at now (slot (0, 0) of the empty state
        stands for "choose the root")."""
        blocks, parents, slots = self.split(states)
        present = blocks >= 0
        n_frag = present.sum(axis=1)
        free = self.slot_exists[self._is_root, blocks] & present[:, :, None]
        rows, child = np.nonzero(present[:, 1:])
        free[rows, parents[rows, child + 1], slots[rows, child + 1]] = False
        open_ = ~self.is_terminal(states) & (n_frag < self.max_fragments)
        free &= open_[:, None, None]
        free[open_ & (n_frag == 0), 0, 0] = True
        return free

    def masks(self, states: np.ndarray) -> np.ndarray:
        free = self.free_slots(states)
        # Every block has a stem to attach by (load_blocks checks), so a free slot takes any block.
        attach = np.broadcast_to(free[:, :, :, None], free.shape + (self.n_blocks,)).reshape(len(states), self.n_actions - 1)
        # Stop is also allowed at a dead end: a tree below min_fragments with no free slot left.
        stuck = ~free.any(axis=(1, 2)) & (self.n_fragments(states) > 0)
        stop = ~self.is_terminal(states) & ((self.n_fragments(states) >= self.min_fragments) | stuck)
        return np.concatenate([stop[:, None], attach], axis=1)

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        out = states.copy()
        actions = np.asarray(actions, dtype=np.int64)
        out[actions == self.stop_action, 0] = 1
        rows = np.nonzero(actions != self.stop_action)[0]
        block, fragment, slot = self.decode(actions[rows])
        new = self.n_fragments(states[rows])
        m = self.max_fragments
        out[rows, 1 + new] = block
        child = new > 0
        out[rows[child], 1 + m + new[child]] = fragment[child]
        out[rows[child], 1 + 2 * m + new[child]] = slot[child]
        return out

    def decode(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block, fragment, slot) of attach actions (not stop)."""
        code = np.asarray(actions, dtype=np.int64) - 1
        fk, block = np.divmod(code, self.n_blocks)
        fragment, slot = np.divmod(fk, self.n_slots)
        return block, fragment, slot

    def encode(self, block, fragment, slot) -> np.ndarray:
        """The attach action(s) "block at slot of fragment"."""
        fragment, slot, block = (np.asarray(x, dtype=np.int64) for x in (fragment, slot, block))
        return 1 + (fragment * self.n_slots + slot) * self.n_blocks + block

    def parents(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        blocks, parents, slots = self.split(states)
        done = self.is_terminal(states)
        n_frag = self.n_fragments(states)

        stop_rows = np.nonzero(done)[0]
        stop_parents = states[stop_rows].copy()
        stop_parents[:, 0] = 0

        root_rows = np.nonzero(~done & (n_frag == 1))[0]
        root_actions = self.encode(blocks[root_rows, 0], 0, 0)

        leaf_rows, leaf = np.nonzero(self.removable_leaves(states))
        leaf_actions = self.encode(blocks[leaf_rows, leaf], parents[leaf_rows, leaf], slots[leaf_rows, leaf])

        parent_states = np.concatenate([stop_parents, self.initial_states(len(root_rows)),
                                        self.remove(states[leaf_rows], leaf)])
        actions = np.concatenate([np.full(len(stop_rows), self.stop_action), root_actions, leaf_actions])
        return parent_states, actions.astype(np.int64), np.concatenate([stop_rows, root_rows, leaf_rows])

    def removable_leaves(self, states: np.ndarray) -> np.ndarray:
        """(n, M) bool: the non-root fragments without children, in non-terminal states."""
        blocks, parents, _ = self.split(states)
        present = blocks >= 0
        has_child = np.zeros_like(present)
        rows, child = np.nonzero(present[:, 1:])
        has_child[rows, parents[rows, child + 1]] = True
        leaves = present & ~has_child & ~self.is_terminal(states)[:, None]
        leaves[:, 0] = False
        return leaves

    def remove(self, states: np.ndarray, fragment: np.ndarray) -> np.ndarray:
        """Each state without its leaf `fragment[i]`; later fragments move down by one."""
        m = self.max_fragments
        g = np.arange(m)
        take = g[None, :] + (g[None, :] >= fragment[:, None])
        kept = take < m
        take = np.minimum(take, m - 1)
        out = states.copy()
        for start in (1, 1 + m, 1 + 2 * m):
            column = np.take_along_axis(states[:, start : start + m], take, axis=1)
            out[:, start : start + m] = np.where(kept, column, -1)
        pointers = out[:, 1 + m : 1 + 2 * m]
        pointers -= pointers > fragment[:, None]  # in place: a view into out
        return out

    def featurize(self, states: np.ndarray) -> np.ndarray:
        # The model builds the tree itself from the compact rows.
        return states

    def keys(self, states: np.ndarray) -> list[str]:
        # The object is the molecule, whichever tree built it.
        return self.smiles(states)

    def objects(self, states: np.ndarray) -> list:
        return self.smiles(states)

    # Trees and molecules (per state, in Python: off the sampling hot path).

    def state_keys(self, states: np.ndarray) -> list[str]:
        """One tree numbered in two ways is one state of the DAG (core.Env.state_keys)."""
        return [self.canonical_key(state) for state in states]

    def canonical_key(self, state: np.ndarray) -> str:
        """The rooted tree independent of fragment numbering: block(slot:child, ...), children sorted."""
        blocks, parents, slots = (a[0].tolist() for a in self.split(state[None]))
        n = sum(b >= 0 for b in blocks)
        parts: list[list[str]] = [[] for _ in range(n)]
        key = ""
        # Children come after their parents, so walking backwards finishes every child first.
        for f in reversed(range(n)):
            key = f"{blocks[f]}(" + ",".join(sorted(parts[f])) + ")"
            if f:
                parts[parents[f]].append(f"{slots[f]}:{key}")
        return f"{int(state[0])}|{key}"

    def to_mol(self, state: np.ndarray) -> Chem.Mol:
        """The molecule of a non-empty state; a ValueError if it does not sanitize (a bug in the
        block data or here)."""
        blocks, parents, slots = (a[0].tolist() for a in self.split(state[None]))
        n = sum(b >= 0 for b in blocks)
        if n == 0:
            raise ValueError("the empty state has no molecule")
        mol = Chem.RWMol()
        offsets = []
        for b in blocks[:n]:
            offsets.append(mol.GetNumAtoms())
            mol.InsertMol(self.blocks.mols[b])
        for f in range(1, n):
            p = parents[f]
            table = self.root_slot_atoms if p == 0 else self.slot_atoms
            ends = (offsets[f] + int(self.attach_atoms[blocks[f]]), offsets[p] + int(table[blocks[p], slots[f]]))
            mol.AddBond(*ends, Chem.BondType.SINGLE)
            for i in ends:
                # Bracket atoms ([NH3+], [PH], [nH]) keep a fixed H count: the new bond replaces one.
                atom = mol.GetAtomWithIdx(i)
                if atom.GetNumExplicitHs() > 0:
                    atom.SetNumExplicitHs(atom.GetNumExplicitHs() - 1)
        try:
            Chem.SanitizeMol(mol)
        except Chem.rdchem.MolSanitizeException as e:
            raise ValueError(f"state with blocks {blocks[:n]}, parents {parents[1:n]}, slots {slots[1:n]} "
                             f"is not a valid molecule: {e}") from e
        return mol.GetMol()

    def smiles(self, states: np.ndarray) -> list[str]:
        """Canonical SMILES of each (non-empty) state's molecule. The latest few thousand are
        remembered: a rollout actor's reward cache and its oracle ask for the same batch."""
        if len(self.recent_smiles) > RECENT_SMILES:
            self.recent_smiles = {}
        out = []
        for s in states:
            row = np.asarray(s, dtype=DTYPE).tobytes()  # one key per state, whatever the array's dtype
            smiles = self.recent_smiles.get(row)
            if smiles is None:
                smiles = self.recent_smiles[row] = Chem.MolToSmiles(self.to_mol(s))
            out.append(smiles)
        return out


def _table(rows: list, width: int) -> np.ndarray:
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
