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

from distgfn.objectives.common import masked_logits

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
    distinct = model(batch["feats"])
    n = len(batch["row"])
    q_out = masked_logits(distinct[batch["row"]], batch["masks"])
    q_in = distinct[batch["parent_row"], batch["parent_action"]]

    log_eps = math.log(eps) if eps > 0 else -math.inf
    reward = torch.full((n, 1), -math.inf, device=distinct.device)
    terminal = batch["terminal"]
    reward[terminal, 0] = batch["log_reward"][batch["traj"][terminal]]
    eps_col = torch.full((n, 1), log_eps, device=distinct.device)
    outflow = torch.logsumexp(torch.cat([eps_col, reward, q_out], dim=1), dim=1)
    inflow = torch.logaddexp(scatter_logsumexp(q_in, batch["parent_of"], n), eps_col[:, 0])

    sq = (inflow - outflow).pow(2)
    inner = ~batch["first"] & ~terminal
    return leaf_coef * sq[terminal].mean() + (sq[inner].mean() if inner.any() else 0.0)


def scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[i] = log sum_{k: index[k]=i} exp values[k]; -inf-like where no k has index i."""
    top = torch.full((size,), -math.inf, device=values.device)
    top = top.scatter_reduce(0, index, values.detach(), reduce="amax").nan_to_num(neginf=0.0)
    total = torch.zeros(size, device=values.device).index_add(0, index, torch.exp(values - top[index]))
    # Rows with a parent have total >= 1; the clamp only keeps s_0's unused row finite.
    return top + torch.log(total.clamp_min(1e-30))
