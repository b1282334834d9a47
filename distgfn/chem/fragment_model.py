"""FragmentGNN: the flow network of the fragment environment (distgfn.envs.fragments), plain torch.

Input: the env's state rows (N, 1 + 3M) = [done, block_f.., parent_f.., slot_f..]. Each
fragment is a node (embedding of its block, plus a learned root vector); tree edges carry an
embedding of the slot they use, e(block_p, k, is_root_p). `layers` rounds of message passing run
along every edge in both directions (sum over children, so the network does not depend on how
fragments are numbered). Then:

    attach logits (f, k, j) = MLP([h_f, e(block_f, k, is_root_f)])_j   for existing fragments f
    stop logit, log F(s)    = MLP(mean_f h_f + done * v_done)           (v_empty for the empty state)
    "root block j" logits   = a learned vector, for the empty state

Output (N, n_actions + 1) in the env's action order: [stop, attach (f, k, j) flattened, log F].
Columns of absent fragments (and of slots a block does not have) hold 0: the objectives mask
invalid actions, and 0 rather than -inf keeps gradients through masked entries finite.
`logits_at(states, rows, actions)` gives chosen entries of that output without the rest: flow
matching needs a few hundred valid actions of each state and one action of each parent, not 5,041.

Message passing runs on the fragments present only (a batch's trees are packed into one node
list; most states are small trees), with each Linear layer's weight split by input rather than
its inputs concatenated. tests/test_fragments.py checks it against the padded transcription.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn


def mm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T: a bias-free slice of a Linear layer."""
    return x @ weight.t()


class Tree(NamedTuple):
    """A batch of states after message passing: one row of h per fragment present."""

    n: int  # states
    h: torch.Tensor  # (V, hidden) node embeddings
    row: torch.Tensor  # (V,) state of each node
    frag: torch.Tensor  # (V,) its fragment number
    block: torch.Tensor  # (V,) its block
    is_root: torch.Tensor  # (V,) 1 for a root fragment, else 0
    node_of: torch.Tensor  # (N, M) node of (state, fragment), -1 where absent
    n_frag: torch.Tensor  # (N,) fragments of each state
    done: torch.Tensor  # (N,) bool


class FragmentGNN(nn.Module):
    def __init__(self, n_blocks: int, max_fragments: int, slot_table, hidden: int = 128, layers: int = 3,
                 *, min_fragments: int):
        """slot_table: (2, n_blocks, K) bool, which slots block j has as a non-root fragment ([0])
        and as the root ([1]); FragmentEnv.slot_exists. min_fragments is used by masks() only."""
        super().__init__()
        table = torch.as_tensor(np.asarray(slot_table, dtype=bool))
        if table.ndim != 3 or table.shape[:2] != (2, n_blocks):
            raise ValueError(f"slot_table must be (2, n_blocks={n_blocks}, K); got {tuple(table.shape)}")
        self.n_blocks = n_blocks
        self.max_fragments = max_fragments
        self.min_fragments = min_fragments
        self.n_slots = table.shape[2]
        self.n_actions = 1 + max_fragments * self.n_slots * n_blocks
        self.register_buffer("slot_table", table, persistent=False)
        self.register_buffer("is_root", (torch.arange(max_fragments) == 0).long(), persistent=False)

        self.block_embed = nn.Embedding(n_blocks, hidden)
        self.root_embed = nn.Parameter(torch.zeros(hidden))
        # One vector per (is_root, block, slot): slot k means a different atom as root and as non-root.
        self.slot_embed = nn.Embedding(2 * n_blocks * self.n_slots, hidden)
        self.down = nn.ModuleList(nn.Linear(2 * hidden, hidden) for _ in range(layers))
        self.up = nn.ModuleList(nn.Linear(2 * hidden, hidden) for _ in range(layers))
        self.update = nn.ModuleList(nn.Linear(3 * hidden, hidden) for _ in range(layers))
        self.norm = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.slot_head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, n_blocks))
        self.readout = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 2))
        self.empty_state = nn.Parameter(torch.zeros(hidden))
        self.done_embed = nn.Parameter(torch.zeros(hidden))
        self.start_logits = nn.Parameter(torch.zeros(n_blocks))
        self.log_z = nn.Parameter(torch.zeros(()))

    @classmethod
    def for_env(cls, env, hidden: int = 128, layers: int = 3) -> "FragmentGNN":
        return cls(env.n_blocks, env.max_fragments, env.slot_exists, hidden, layers,
                   min_fragments=env.min_fragments)

    def split(self, states: torch.Tensor):
        m = self.max_fragments
        if states.ndim != 2 or states.shape[1] != 1 + 3 * m:
            raise ValueError(f"expected states of shape (N, {1 + 3 * m}) for max_fragments={m}; "
                             f"got {tuple(states.shape)}")
        states = states.long()
        return states[:, 0] == 1, states[:, 1 : 1 + m], states[:, 1 + m : 1 + 2 * m], states[:, 1 + 2 * m :]

    def slot_index(self, blocks: torch.Tensor, slots: torch.Tensor, is_root: torch.Tensor) -> torch.Tensor:
        return (is_root * self.n_blocks + blocks) * self.n_slots + slots

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(N, n_actions + 1): every action's logit, for sampling (the learner asks logits_at)."""
        tree = self.trunk(states)
        nodes, slots = torch.nonzero(self.slot_table[tree.is_root, tree.block], as_tuple=True)
        attach = tree.h.new_zeros(tree.n, self.max_fragments, self.n_slots, self.n_blocks)
        attach = attach.index_put((tree.row[nodes], tree.frag[nodes], slots), self.slot_logits(tree, nodes, slots))
        first = torch.nonzero(tree.n_frag == 0).squeeze(1)
        zero = torch.zeros_like(first)
        attach = attach.index_put((first, zero, zero), self.start_logits)
        stop_flow = self.stop_flow(tree)
        return torch.cat([stop_flow[:, :1], attach.reshape(tree.n, self.n_actions - 1), stop_flow[:, 1:]], dim=1)

    def logits_at(self, states: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """forward(states)[rows, actions], computing only those entries: the slot head runs once
        per (fragment, slot) asked for, not for every slot of every fragment."""
        tree = self.trunk(states)
        stop_flow = self.stop_flow(tree)
        out = torch.where(actions == 0, stop_flow[rows, 0], stop_flow[rows, 1])
        attach = torch.nonzero((actions > 0) & (actions < self.n_actions)).squeeze(1)
        code = actions[attach] - 1
        frag, slot, block = code // (self.n_slots * self.n_blocks), code // self.n_blocks % self.n_slots, code % self.n_blocks
        start = tree.n_frag[rows[attach]] == 0  # "root block j" from the empty state
        out = out.index_put((attach[start],), self.start_logits[block[start]])
        grow = ~start
        pairs, which = torch.unique(tree.node_of[rows[attach[grow]], frag[grow]] * self.n_slots + slot[grow],
                                    return_inverse=True)
        logits = self.slot_logits(tree, pairs // self.n_slots, pairs % self.n_slots)
        return out.index_put((attach[grow],), logits[which, block[grow]])

    def trunk(self, states: torch.Tensor) -> "Tree":
        """Message passing over the fragments present (nodes, row-major), none for padding."""
        done, blocks, parents, slots = self.split(states)
        row, frag = torch.nonzero(blocks >= 0, as_tuple=True)
        node_of = torch.full_like(blocks, -1)
        node_of[row, frag] = torch.arange(len(row), device=states.device)
        block, is_root = blocks[row, frag], self.is_root[frag]
        child = torch.nonzero(frag > 0).squeeze(1)
        parent = node_of[row[child], parents[row[child], frag[child]]]
        # Edge child -> parent is labelled with the parent's slot it uses.
        edge = self.slot_embed(self.slot_index(block[parent], slots[row[child], frag[child]], is_root[parent]))
        h = self.block_embed(block) + self.root_embed * is_root[:, None]
        width = h.shape[1]
        for down, up, update, norm in zip(self.down, self.up, self.update, self.norm):
            # down(cat[h_parent, edge]) and update(cat[h, from_parent, from_children]), with the
            # weights split by input instead of concatenating inputs; messages only on real edges.
            from_parent = torch.relu(mm(h.index_select(0, parent), down.weight[:, :width])
                                     + mm(edge, down.weight[:, width:]) + down.bias)
            to_parent = torch.relu(mm(h.index_select(0, child), up.weight[:, :width])
                                   + mm(edge, up.weight[:, width:]) + up.bias)
            mixed = torch.addmm(update.bias, h, update.weight[:, :width].t())
            mixed = mixed.index_add(0, child, mm(from_parent, update.weight[:, width : 2 * width]))
            mixed = mixed.index_add(0, parent, mm(to_parent, update.weight[:, 2 * width :]))
            h = norm(h + torch.relu(mixed))
        n_frag = torch.bincount(row, minlength=len(blocks))
        return Tree(len(blocks), h, row, frag, block, is_root, node_of, n_frag, done)

    def stop_flow(self, tree: "Tree") -> torch.Tensor:
        """(N, 2): the stop logit and log F(s) of each state."""
        summed = tree.h.new_zeros(tree.n, tree.h.shape[1]).index_add(0, tree.row, tree.h)
        pooled = (summed / tree.n_frag[:, None].clamp(min=1)).where(tree.n_frag[:, None] > 0, self.empty_state)
        return self.readout(pooled + tree.done[:, None] * self.done_embed)

    def slot_logits(self, tree: "Tree", nodes: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """(len(nodes), n_blocks): attach logits of every block at slot slots[i] of node nodes[i]."""
        slot = self.slot_embed(self.slot_index(tree.block[nodes], slots, tree.is_root[nodes]))
        return self.slot_head(torch.cat([tree.h[nodes], slot], dim=1))

    def masks(self, states: torch.Tensor) -> torch.Tensor:
        """(N, n_actions) bool, equal to FragmentEnv.masks: so a learner can rebuild masks from states."""
        done, blocks, parents, slots = self.split(states)
        present = blocks >= 0
        n_frag = present.sum(dim=1)
        free = self.slot_table[self.is_root.expand_as(blocks), blocks.clamp(min=0)] & present[:, :, None]
        rows, child = torch.nonzero(present & (self.is_root == 0), as_tuple=True)
        free[rows, parents[rows, child], slots[rows, child]] = False
        open_ = ~done & (n_frag < self.max_fragments)
        free &= open_[:, None, None]
        free[:, 0, 0] |= open_ & (n_frag == 0)
        attach = free[:, :, :, None].expand(-1, -1, -1, self.n_blocks).reshape(len(states), self.n_actions - 1)
        stuck = ~free.flatten(1).any(dim=1) & (n_frag > 0)  # a dead end below min_fragments may stop
        stop = ~done & ((n_frag >= self.min_fragments) | stuck)
        return torch.cat([stop[:, None], attach], dim=1)
