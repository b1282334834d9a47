"""Flow matching (Bengio et al. 2021, arXiv 2106.04399, eq. 12).

For every visited state s' other than s_0:

    L(s') = ( log[eps + sum over parents (s,a) with T(s,a)=s' of exp Qlog(s,a)]
            - log[eps + R(s') + sum over actions a' of s' of exp Qlog(s',a')] )^2

R(s') = 0 unless s' is terminal; a terminal state has no actions. The batch loss is
leaf_coef * mean over terminal states of L + mean over the other non-initial states of L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distgfn.objectives.common import masked_logits, scatter_logsumexp, valid_logsumexp

NEEDS_PARENTS = True


@dataclass
class Options:
    """objective.options of flow matching."""

    eps: float = 2.5e-5  # added inside both logs
    leaf_coef: float = 1.0  # weight of terminal states' terms (the original molecule runs used 10)

    def __post_init__(self):
        if self.eps < 0 or self.leaf_coef <= 0:
            raise ValueError(f"fm needs eps >= 0 and leaf_coef > 0; got eps={self.eps}, leaf_coef={self.leaf_coef}")


def loss(model, batch: dict[str, torch.Tensor], eps: float, leaf_coef: float = 1.0, **_) -> torch.Tensor:
    q_out, q_in = edge_flows(model, batch)
    n, like = len(batch["row"]), {"device": q_out.device, "dtype": q_out.dtype}

    log_eps = math.log(eps) if eps > 0 else -math.inf
    reward = torch.full((n,), -math.inf, **like)
    terminal = batch["terminal"]
    reward[terminal] = batch["log_reward"][batch["traj"][terminal]].to(q_out.dtype)
    eps_col = torch.full((n,), log_eps, **like)
    outflow = torch.logsumexp(torch.stack([eps_col, reward, q_out], dim=1), dim=1)
    inflow = torch.logaddexp(scatter_logsumexp(q_in, batch["parent_of"], n), eps_col)

    sq = (inflow - outflow).pow(2)
    inner = ~batch["first"] & ~terminal
    return leaf_coef * sq[terminal].mean() + (sq[inner].mean() if inner.any() else 0.0)


def edge_flows(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log sum over the valid actions a of each visited state s of exp Qlog(s, a), -inf where
    none is valid; Qlog(parent, action) of each parent edge)."""
    if not hasattr(model, "logits_at"):
        distinct = model(batch["feats"])
        q_out = torch.logsumexp(masked_logits(distinct[batch["row"]], batch["masks"]), dim=1)
        return q_out, distinct[batch["parent_row"], batch["parent_action"]]
    every = torch.arange(len(batch["row"]), device=batch["row"].device)
    return valid_logsumexp(model, batch, every, batch["parent_row"], batch["parent_action"])
