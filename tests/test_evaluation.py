import numpy as np
import pytest
import torch

from distgfn.envs import HyperGrid
from distgfn.evaluation import EmpiricalTracker, exact_distribution, target_distribution
from distgfn.models import GridMLP
from distgfn.objectives.common import masked_logits
from distgfn.rewards.hypergrid import HyperGridReward
from distgfn.sampling import sample_trajectories, torch_policy


def random_policy(env, seed=0):
    torch.manual_seed(seed)
    model = GridMLP(env.ndim, env.height, env.n_actions, hidden=32, layers=2)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # a far-from-uniform policy makes the comparison meaningful

    def log_policy(states):
        with torch.no_grad():
            out = model(torch.from_numpy(env.featurize(states)))
            return torch.log_softmax(masked_logits(out, torch.from_numpy(env.masks(states))), 1).numpy()

    return model, log_policy


@pytest.mark.parametrize("terminate_at_edge", [False, True])
def test_exact_distribution_sums_to_one_and_matches_sampling(terminate_at_edge):
    env = HyperGrid(2, 5, terminate_at_edge)
    model, log_policy = random_policy(env)
    p = exact_distribution(env, log_policy)
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    assert (p[~env.is_reachable_object(env.all_cells())] == 0).all()

    n = 40_000
    trajs = sample_trajectories(env, torch_policy(model, env.n_actions), n, np.random.default_rng(1))
    freq = np.bincount(env.cell_index(trajs.final), minlength=len(p)) / n
    bound = 5 * np.sqrt(p * (1 - p) / n) + 1e-4
    assert (np.abs(freq - p) <= bound).all(), np.abs(freq - p) / bound
    assert p.max() > 3 / len(p), "the test policy should be far from uniform"


def test_target_distribution_is_normalized_reward():
    env = HyperGrid(2, 8)
    t = target_distribution(env, HyperGridReward(8), beta=1.0)
    assert t.sum() == pytest.approx(1.0)
    assert t[env.cell_index(np.array([[1, 6, 0]]))][0] / t[0] == pytest.approx(2.6 / 0.6)


def test_empirical_tracker_keeps_only_the_window_and_remembers_modes():
    target = np.array([0.25, 0.25, 0.5])
    tracker = EmpiricalTracker(target, window=4)
    tracker.add(np.array([2, 2, 0, 1]))
    assert tracker.l1_empirical() == pytest.approx(0.0)
    assert tracker.modes_found() == 1 and tracker.n_modes == 1
    tracker.add(np.array([0, 0, 0, 0, 0, 1]))  # pushes every earlier sample out of the window
    assert tracker.counts.tolist() == [3, 1, 0]
    assert tracker.l1_empirical() == pytest.approx(abs(0.75 - 0.25) + 0 + 0.5)
    assert tracker.modes_found() == 1, "a mode once seen stays found"


def test_shared_weights_are_used_in_place_and_checked():
    from distgfn.models import get_weights, share_weights

    env = HyperGrid(2, 4)
    a, b = GridMLP(2, 4, 3, hidden=8), GridMLP(2, 4, 3, hidden=8)
    weights = {k: v.copy() for k, v in get_weights(a).items()}
    for v in weights.values():
        v.setflags(write=False)  # as arrays from Ray's object store are
    share_weights(b, weights)
    x = torch.from_numpy(env.featurize(env.all_cells()))
    assert torch.equal(a(x), b(x))
    assert b.body[-1].weight.data_ptr() == weights["body.3.weight"].ctypes.data, "no copy was made"
    with pytest.raises(KeyError, match="missing"):
        share_weights(b, {k: v for k, v in weights.items() if k != "bias"})
    with pytest.raises(ValueError, match="the model has"):
        share_weights(b, {**weights, "bias": np.zeros(3, np.float32)})
