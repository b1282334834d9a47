"""Pieces the objectives share."""

from __future__ import annotations

import torch


def masked_logits(out: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The first A columns of a model output, with invalid actions at -inf."""
    return out[:, : masks.shape[1]].masked_fill(~masks, -torch.inf)


def forward_log_probs(out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log P_F(a_t | s_t) of the action taken from each row that took one (action >= 0)."""
    moved = batch["action"] >= 0
    log_pf = torch.log_softmax(masked_logits(out[moved], batch["masks"][moved]), dim=1)
    return log_pf.gather(1, batch["action"][moved][:, None]).squeeze(1)


def backward_log_probs(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log P_B(s_{t-1} | s_t) for every non-initial row: the env's backward policy when it has
    one (batch field log_pb), else uniform, -log(number of parents of s_t)."""
    if "log_pb" in batch:
        return batch["log_pb"][~batch["first"]]
    return -torch.log(batch["n_parents"][~batch["first"]].float())
