"""Vectorized rollouts: B trajectories advance together, one policy forward per step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Trajectories:
    # states[b, t] for t <= lengths[b]; later rows repeat the final (terminal) state.
    states: np.ndarray  # (B, max_steps + 1, width)
    actions: np.ndarray  # (B, max_steps), -1 after the end
    lengths: np.ndarray  # (B,) number of actions taken

    @property
    def final(self) -> np.ndarray:
        return self.states[np.arange(len(self.lengths)), self.lengths]

    def subset(self, keep: np.ndarray) -> "Trajectories":
        return Trajectories(self.states[keep], self.actions[keep], self.lengths[keep])


def sample_actions(logits, masks, rng, epsilon: float = 0.0, temperature: float = 1.0) -> np.ndarray:
    """Samples from (1 - epsilon) * softmax(logits / T) + epsilon * uniform, over valid actions,
    by Gumbel-max. Wide action spaces (a molecule state has 5,041 actions, a few hundred valid)
    draw noise for the valid entries only; for narrow ones the dense arrays are cheaper."""
    stuck = ~masks.any(axis=1)
    if stuck.any():
        raise ValueError(f"sample_actions: state {int(np.argmax(stuck))} has no valid action")
    if masks.shape[1] > 256:
        return sample_sparse(logits, masks, rng, epsilon, temperature)
    if temperature != 1.0:
        logits = logits / temperature
    scores = np.where(masks, logits + rng.gumbel(size=logits.shape), -np.inf)
    actions = scores.argmax(axis=1)
    if epsilon > 0:
        explore = rng.random(len(actions)) < epsilon
        if explore.any():
            noise = np.where(masks[explore], rng.random(masks[explore].shape), -1.0)
            actions[explore] = noise.argmax(axis=1)
    return actions


def sample_sparse(logits, masks, rng, epsilon: float, temperature: float) -> np.ndarray:
    rows, cols = np.nonzero(masks)
    starts = np.searchsorted(rows, np.arange(len(masks)))
    counts = np.diff(np.append(starts, len(rows)))
    scores = logits[rows, cols] / temperature + rng.gumbel(size=len(rows))
    best = np.maximum.reduceat(scores, starts)
    winners = np.flatnonzero(scores == best[rows])
    actions = cols[winners[np.searchsorted(rows[winners], np.arange(len(masks)))]]
    if epsilon > 0:
        explore = rng.random(len(actions)) < epsilon
        uniform = cols[starts + (rng.random(len(actions)) * counts).astype(np.int64)]
        actions = np.where(explore, uniform, actions)
    return actions


def sample_trajectories(env, policy, n: int, rng, epsilon: float = 0.0, temperature: float = 1.0) -> Trajectories:
    """`policy(features) -> logits` (numpy in, numpy out) is called once per step on live states."""
    state = env.initial_states(n)
    states = np.empty((n, env.max_steps + 1, state.shape[1]), dtype=state.dtype)
    actions = np.full((n, env.max_steps), -1, dtype=np.int64)
    states[:, 0] = state
    live, t = np.arange(n), 0
    while len(live) and t < env.max_steps:
        current = state[live]
        chosen = sample_actions(policy(env.featurize(current)), env.masks(current), rng, epsilon, temperature)
        actions[live, t] = chosen
        reached = env.step(current, chosen)
        state[live] = reached
        t += 1
        states[:, t] = state
        live = live[~env.is_terminal(reached)]
    if len(live):
        raise RuntimeError(f"{len(live)} trajectories did not terminate within env.max_steps={env.max_steps}")
    states[:, t + 1 :] = state[:, None]  # rows after the last step repeat the final state
    return Trajectories(states, actions, (actions >= 0).sum(axis=1))


def make_policy(model: torch.nn.Module, n_actions: int):
    """The model's numpy forward where it has one (MLP), else its torch forward; the
    model must be on the CPU."""
    if hasattr(model, "numpy_policy"):
        return model.numpy_policy(n_actions)
    return torch_policy(model, n_actions)


def torch_policy(model: torch.nn.Module, n_actions: int, device: torch.device = torch.device("cpu")):
    """Wraps a model as a numpy policy for `sample_trajectories`."""

    def policy(features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(features).to(device))
        return out[:, :n_actions].cpu().numpy()

    return policy
