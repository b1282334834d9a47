"""Trajectory balance (Malkin et al. 2022, arXiv 2201.13259).

For a complete trajectory tau = (s_0 -> s_1 -> ... -> s_n = x):

    L(tau) = ( log Z + sum_t log P_F(s_{t+1} | s_t) - log R(x) - sum_t log P_B(s_t | s_{t+1}) )^2

with a learned scalar log Z, P_F = softmax of the model's logits over valid actions and
P_B the env's backward policy, or else uniform over each state's parents. The batch loss is
the mean over trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distgfn.objectives.common import backward_log_probs, policy_terms

NEEDS_PARENTS = False


@dataclass
class Options:
    """objective.options of trajectory balance."""

    logz_lr: float = 0.1  # learning rate of log Z (it wants a larger one than the network)

    def __post_init__(self):
        if self.logz_lr <= 0:
            raise ValueError(f"tb needs logz_lr > 0; got {self.logz_lr}")


def loss(model, batch: dict[str, torch.Tensor], **_) -> torch.Tensor:
    log_pf, _ = policy_terms(model, batch)
    n_traj = len(batch["log_reward"])
    moved = batch["action"] >= 0
    not_first = ~batch["first"]
    zeros = log_pf.new_zeros(n_traj)
    sum_pf = zeros.index_add(0, batch["traj"][moved], log_pf)
    sum_pb = zeros.index_add(0, batch["traj"][not_first], backward_log_probs(batch).to(zeros.dtype))
    return (model.log_z + sum_pf - batch["log_reward"] - sum_pb).pow(2).mean()
