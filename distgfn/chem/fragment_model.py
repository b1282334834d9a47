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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


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
        done, blocks, parents, slots = self.split(states)
        n = len(blocks)
        # Fragments are numbered 0..n_f-1, so columns past the batch's largest tree are padding:
        # the message passing skips them (most of a rollout's states are small trees).
        m = max(int((blocks >= 0).sum(dim=1).max()), 1) if n else 1
        blocks, parents, slots = blocks[:, :m], parents[:, :m], slots[:, :m]
        is_root = self.is_root[:m]
        present = blocks >= 0
        block = blocks.clamp(min=0)
        is_child = present & (is_root == 0)
        to_parent = parents.clamp(min=0)
        # Edge c -> parent_c is labelled with the parent's slot it uses.
        edge = self.slot_embed(self.slot_index(block.gather(1, to_parent), slots.clamp(min=0),
                                               is_root[to_parent]))
        live = present[:, :, None].float()
        child_live = is_child[:, :, None].float()
        h = (self.block_embed(block) + self.root_embed * is_root[:, None]) * live
        gather_index = to_parent[:, :, None].expand(-1, -1, h.shape[2])
        for down, up, update, norm in zip(self.down, self.up, self.update, self.norm):
            from_parent = torch.relu(down(torch.cat([h.gather(1, gather_index), edge], dim=2))) * child_live
            to_parents = torch.relu(up(torch.cat([h, edge], dim=2))) * child_live
            from_children = torch.zeros_like(h).scatter_add(1, gather_index, to_parents)
            h = norm(h + torch.relu(update(torch.cat([h, from_parent, from_children], dim=2)))) * live

        attach = self.attach_logits(h, present, block)
        empty = ~present[:, 0]
        first = torch.nonzero(empty).squeeze(1)
        zero = torch.zeros_like(first)
        attach = attach.index_put((first, zero, zero), self.start_logits)
        n_frag = present.sum(dim=1, keepdim=True)
        pooled = (h.sum(dim=1) / n_frag.clamp(min=1)).where(~empty[:, None], self.empty_state)
        stop_flow = self.readout(pooled + done[:, None] * self.done_embed)
        return torch.cat([stop_flow[:, :1], attach.reshape(n, self.n_actions - 1), stop_flow[:, 1:]], dim=1)

    def attach_logits(self, h: torch.Tensor, present: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """(N, M, K, n_blocks): the slot head on existing fragments only, zeros elsewhere."""
        rows, frags = torch.nonzero(present, as_tuple=True)
        k = torch.arange(self.n_slots, device=h.device)
        slot = self.slot_embed(self.slot_index(block[rows, frags, None], k, self.is_root[frags, None]))
        node = h[rows, frags, None].expand(-1, self.n_slots, -1)
        logits = self.slot_head(torch.cat([node, slot], dim=2))
        out = h.new_zeros(h.shape[0], self.max_fragments, self.n_slots, self.n_blocks)
        return out.index_put((rows, frags), logits)

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
