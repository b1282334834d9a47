"""Each objective's loss equals a brute-force transcription of its formula on a tiny DAG."""

import math

import numpy as np
import pytest
import torch

from distgfn.batch import build_batch, stack_batches, to_torch
from distgfn.envs.hypergrid import HyperGrid
from distgfn.objectives import db, fm, tb
from distgfn.rewards import log_rewards
from distgfn.rewards.hypergrid import HyperGridReward
from distgfn.sampling import sample_trajectories

BETA = 2.0


class TableModel(torch.nn.Module):
    """Hand-set outputs: one fixed row of n_actions + 1 numbers per cell."""

    def __init__(self, env, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.height = env.height
        self.table = torch.nn.Parameter(torch.randn(env.height**env.ndim, env.n_actions + 1, generator=g) * 2)
        self.log_z = torch.nn.Parameter(torch.tensor(0.7))

    def forward(self, coords):
        index = torch.zeros(len(coords), dtype=torch.long)
        for i in range(coords.shape[1]):
            index = index * self.height + coords[:, i]
        return self.table[index]


def setup(terminate_at_edge, with_parents, n=12, seed=3):
    env = HyperGrid(2, 3, terminate_at_edge)
    model = TableModel(env)
    rng = np.random.default_rng(seed)
    trajs = sample_trajectories(env, lambda f: np.zeros((len(f), env.n_actions)), n, rng)
    reward = HyperGridReward(env.height)
    log_r = log_rewards(reward, trajs.final, env.keys, BETA)
    # Built in two halves and stacked, so stacking is checked too.
    halves = [slice(0, n // 2), slice(n // 2, n)]
    batch = stack_batches([half_batch(env, trajs, log_r, h, with_parents) for h in halves])
    return env, model, trajs, log_r, to_torch(batch, torch.device("cpu"))


def half_batch(env, trajs, log_r, part, with_parents):
    from distgfn.sampling import Trajectories

    sub = Trajectories(trajs.states[part], trajs.actions[part], trajs.lengths[part])
    return build_batch(env, sub, log_r[part], with_parents)


def all_states(env):
    cells = env.all_cells()
    done = cells.copy()
    done[:, -1] = 1
    return np.concatenate([cells, done])


def brute_parents(env, state):
    pairs = []
    for parent in all_states(env):
        if env.is_terminal(parent[None])[0] or not env.is_live(parent[None])[0]:
            continue
        for a in np.nonzero(env.masks(parent[None])[0])[0]:
            if (env.step(parent[None], np.array([a]))[0] == state).all():
                pairs.append((parent, int(a)))
    return pairs


def q(model, state):
    with torch.no_grad():
        return model(torch.from_numpy(state[None, :-1]))[0].double().numpy()


def log_pf(env, model, state, action):
    valid = env.masks(state[None])[0]
    logits = q(model, state)[: env.n_actions][valid]
    return q(model, state)[action] - math.log(np.exp(logits).sum())


def trajectory(trajs, b):
    return trajs.states[b, : trajs.lengths[b] + 1], trajs.actions[b, : trajs.lengths[b]]


@pytest.mark.parametrize("terminate_at_edge", [False, True])
def test_flow_matching_equals_the_seed_formula(terminate_at_edge):
    eps, leaf_coef = 1e-3, 10.0
    env, model, trajs, log_r, batch = setup(terminate_at_edge, with_parents=True)
    leaf, inner = [], []
    for b in range(len(log_r)):
        states, _ = trajectory(trajs, b)
        for s in states[1:]:
            inflow = sum(math.exp(q(model, p)[a]) for p, a in brute_parents(env, s))
            if env.is_terminal(s[None])[0]:
                out = math.exp(log_r[b])
            else:
                valid = env.masks(s[None])[0]
                out = np.exp(q(model, s)[: env.n_actions][valid]).sum()
            term = (math.log(eps + inflow) - math.log(eps + out)) ** 2
            (leaf if env.is_terminal(s[None])[0] else inner).append(term)
    expected = leaf_coef * np.mean(leaf) + np.mean(inner)
    got = fm.loss(model, batch, eps=eps, leaf_coef=leaf_coef).item()
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("terminate_at_edge", [False, True])
def test_trajectory_balance_equals_its_formula(terminate_at_edge):
    env, model, trajs, log_r, batch = setup(terminate_at_edge, with_parents=False)
    terms = []
    for b in range(len(log_r)):
        states, actions = trajectory(trajs, b)
        forward = sum(log_pf(env, model, s, a) for s, a in zip(states[:-1], actions))
        backward = sum(-math.log(len(brute_parents(env, s))) for s in states[1:])
        terms.append((model.log_z.item() + forward - log_r[b] - backward) ** 2)
    assert tb.loss(model, batch).item() == pytest.approx(np.mean(terms), rel=1e-5)


@pytest.mark.parametrize("terminate_at_edge", [False, True])
def test_detailed_balance_equals_its_formula(terminate_at_edge):
    env, model, trajs, log_r, batch = setup(terminate_at_edge, with_parents=False)
    terms = []
    for b in range(len(log_r)):
        states, actions = trajectory(trajs, b)
        for s, a, nxt in zip(states[:-1], actions, states[1:]):
            end = log_r[b] if env.is_terminal(nxt[None])[0] else q(model, nxt)[-1]
            log_pb = -math.log(len(brute_parents(env, nxt)))
            terms.append((q(model, s)[-1] + log_pf(env, model, s, a) - end - log_pb) ** 2)
    assert db.loss(model, batch).item() == pytest.approx(np.mean(terms), rel=1e-5)


def test_flow_matching_is_zero_for_exact_flows():
    """On a 1-D grid the true edge flows are known in closed form; FM must vanish on them."""
    env = HyperGrid(1, 4)
    reward = HyperGridReward(env.height)
    r = reward(np.array([[x, 1] for x in range(4)]))
    # Flow into x from x-1 is everything that stops at x or beyond: F(x-1 -> x) = sum_{y>=x} R(y).
    table = torch.zeros(4, 3, dtype=torch.float64)
    for x in range(4):
        table[x, 1] = math.log(r[x])
        table[x, 0] = math.log(r[x + 1 :].sum()) if x < 3 else 0.0
    model = TableModel(env)
    model.table = torch.nn.Parameter(table.float())
    trajs = sample_trajectories(env, lambda f: np.zeros((len(f), 2)), 8, np.random.default_rng(0))
    batch = to_torch(build_batch(env, trajs, np.log(r[trajs.final[:, 0]]), True), torch.device("cpu"))
    assert fm.loss(model, batch, eps=0.0).item() < 1e-10


@pytest.mark.parametrize("objective", [fm, tb, db])
def test_records_through_the_wire_train_like_the_batch_they_came_from(objective):
    from distgfn.batch import read_record, split_batch, training_batch, training_batch_of, unique_rows, write_record

    env = HyperGrid(3, 4)
    model = TableModel(env)
    trajs = sample_trajectories(env, lambda f: np.zeros((len(f), env.n_actions)), 40, np.random.default_rng(5))
    log_r = log_rewards(HyperGridReward(env.height), trajs.final, env.keys)
    whole = build_batch(env, trajs, log_r, with_parents=objective.NEEDS_PARENTS)
    parts = split_batch(whole)
    assert len(parts) == 40 and all(len(p["log_reward"]) == 1 for p in parts)
    blobs = [write_record(f"r{i}", 0, 0.0, p) for i, p in enumerate(parts)]
    restacked = stack_batches([read_record(blob) for blob in blobs])
    merged = training_batch(blobs)  # what the learner trains on: each distinct state once
    assert len(merged["feats"]) == len(unique_rows(merged["feats"])[0]) < len(restacked["feats"])
    cpu = torch.device("cpu")
    expected = objective.loss(model, to_torch(whole, cpu), eps=1e-3, leaf_coef=3.0).item()
    local = training_batch_of(parts)  # the serial runtime's records, never encoded
    for batch in (restacked, merged, local):
        assert objective.loss(model, to_torch(batch, cpu), eps=1e-3, leaf_coef=3.0).item() == pytest.approx(expected, rel=1e-6)
