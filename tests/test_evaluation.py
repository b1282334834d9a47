import numpy as np
import pytest
import torch

from distgfn.envs.hypergrid import HyperGrid
from distgfn.evaluation import EmpiricalTracker, ObjectSpace, topological_waves
from distgfn.models import MLP
from distgfn.objectives.common import masked_logits
from distgfn.sampling import sample_trajectories, torch_policy


def random_policy(env, seed=0):
    torch.manual_seed(seed)
    model = MLP(env.feature_sizes, env.n_actions, hidden=32, layers=2)
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
    space = ObjectSpace(env)
    p = space.distribution(log_policy)
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    reachable = env.is_reachable_object(env.all_cells()).sum()
    assert len(space.keys) == reachable, "one object per reachable cell"

    n = 40_000
    trajs = sample_trajectories(env, torch_policy(model, env.n_actions), n, np.random.default_rng(1))
    index = np.array([space.index[k] for k in env.keys(trajs.final)])
    freq = np.bincount(index, minlength=len(p)) / n
    bound = 5 * np.sqrt(p * (1 - p) / n) + 1e-4
    assert (np.abs(freq - p) <= bound).all(), np.abs(freq - p) / bound
    assert p.max() > 3 / len(p), "the test policy should be far from uniform"


def test_target_distribution_is_normalized_reward():
    from distgfn.config import load_config
    from distgfn.rewards import make_reward

    cfg = load_config(None, [])
    env = HyperGrid(2, 8)
    space = ObjectSpace(env)
    t = space.target(make_reward(cfg, env), beta=1.0)
    assert t.sum() == pytest.approx(1.0)
    assert t[space.index["1,6"]] / t[space.index["0,0"]] == pytest.approx(2.6 / 0.6)


def test_topological_waves_wait_for_every_parent():
    # 0 -> 1 -> 3 and 0 -> 3 directly: 3's outgoing edge must come after both inflows.
    src, dst = np.array([0, 1, 0, 3]), np.array([1, 3, 3, 4])
    waves = topological_waves(5, src, dst)
    order = {int(e): i for i, wave in enumerate(waves) for e in wave}
    assert order[3] > order[1] and order[3] > order[2]
    with pytest.raises(ValueError, match="cycle"):
        topological_waves(3, np.array([0, 1, 2]), np.array([1, 2, 1]))


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
    a, b = MLP([4, 4], 3, hidden=8), MLP([4, 4], 3, hidden=8)
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
