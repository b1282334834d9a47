"""Pieces the objectives share.

A model either returns every action's output for every state (`model(feats)`, N x (A + 1)),
or also answers `model.logits_at(feats, rows, actions)` with only the entries asked for
(FragmentGNN: 5,041 actions, a few hundred valid). The objectives use logits_at where a model
has it and ask for the valid actions of the states they need, the actions taken, and (DB) the
state flows, in one call.
"""

from __future__ import annotations

import math

import torch


def masked_logits(out: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The first A columns of a model output, with invalid actions at -inf."""
    return out[:, : masks.shape[1]].masked_fill(~masks, -torch.inf)


def forward_log_probs(out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log P_F(a_t | s_t) of the action taken from each row that took one (action >= 0)."""
    moved = batch["action"] >= 0
    log_pf = torch.log_softmax(masked_logits(out[moved], batch["masks"][moved]), dim=1)
    return log_pf.gather(1, batch["action"][moved][:, None]).squeeze(1)


def policy_terms(model, batch: dict[str, torch.Tensor], flows: bool = False):
    """(log P_F of the action taken from each row that took one, log F(s) of every row or None)."""
    if not hasattr(model, "logits_at"):
        out = model(batch["feats"])[batch["row"]]
        return forward_log_probs(out, batch), (out[:, -1] if flows else None)
    moved = torch.nonzero(batch["action"] >= 0).squeeze(1)
    rows, actions = [batch["row"][moved]], [batch["action"][moved]]
    if flows:  # log F(s) is the output's last column, index A
        rows.append(batch["row"])
        actions.append(torch.full_like(batch["row"], batch["masks"].shape[1]))
    log_total, picked = valid_logsumexp(model, batch, moved, torch.cat(rows), torch.cat(actions))
    return picked[: len(moved)] - log_total, (picked[len(moved) :] if flows else None)


def valid_logsumexp(model, batch: dict[str, torch.Tensor], states: torch.Tensor, rows: torch.Tensor,
                    actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """With one model.logits_at call: (log sum over the valid actions a of exp output(s, a) for
    each batch row s in `states`, -inf where none is valid; the outputs at (feats rows, actions))."""
    state, action = torch.nonzero(batch["masks"][states], as_tuple=True)
    values = model.logits_at(batch["feats"], torch.cat([batch["row"][states][state], rows]),
                             torch.cat([action, actions]))
    total = scatter_logsumexp(values[: len(state)], state, len(states))
    any_valid = torch.zeros(len(states), dtype=torch.bool, device=total.device).index_fill(0, state, True)
    return total.masked_fill(~any_valid, -math.inf), values[len(state) :]


def scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[i] = log sum_{k: index[k]=i} exp values[k]; -inf-like where no k has index i."""
    top = values.new_full((size,), -math.inf)
    top = top.scatter_reduce(0, index, values.detach(), reduce="amax").nan_to_num(neginf=0.0)
    total = values.new_zeros(size).index_add(0, index, torch.exp(values - top[index]))
    # Rows with an entry have total >= 1; the clamp only keeps rows without one finite.
    return top + torch.log(total.clamp_min(1e-30))


def backward_log_probs(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log P_B(s_{t-1} | s_t) for every non-initial row: the env's backward policy when it has
    one (batch field log_pb), else uniform, -log(number of parents of s_t)."""
    if "log_pb" in batch:
        return batch["log_pb"][~batch["first"]]
    return -torch.log(batch["n_parents"][~batch["first"]].float())
