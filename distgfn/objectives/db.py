"""Detailed balance (Bengio et al. 2023, arXiv 2111.09266).

For every transition s -> s' of a sampled trajectory:

    L(s, s') = ( log F(s) + log P_F(s' | s) - log F(s') - log P_B(s | s') )^2

where log F(s') is replaced by log R(x) when s' is the terminal state of object x. P_F is
softmax of the model's logits over valid actions, P_B the env's backward policy or else
uniform over parents, log F(s) the model's last output. The batch loss is the mean over
transitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distgfn.objectives.common import backward_log_probs, policy_terms

NEEDS_PARENTS = False


@dataclass
class Options:
    """Detailed balance takes no options."""


def loss(model, batch: dict[str, torch.Tensor], **_) -> torch.Tensor:
    log_pf, log_flow = policy_terms(model, batch, flows=True)
    moved = batch["action"] >= 0
    # Rows are trajectory-ordered, so the state after row i is row i + 1.
    after = torch.nonzero(moved).squeeze(1) + 1
    end_flow = torch.where(
        batch["terminal"][after], batch["log_reward"][batch["traj"][after]], log_flow[after]
    )
    lhs = log_flow[moved] + log_pf
    rhs = end_flow + backward_log_probs(batch)
    return (lhs - rhs).pow(2).mean()
