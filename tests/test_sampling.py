"""Action sampling: the dense path (narrow action spaces) and the sparse one (molecules) draw
from the same distribution, never an invalid action; the numpy policy rollouts use computes
what the model does."""

import numpy as np
import pytest
import torch

from distgfn.models import get_weights, share_weights
from distgfn.sampling import sample_actions


@pytest.mark.parametrize("width", [6, 600])
def test_samples_softmax_over_valid_actions_mixed_with_uniform(width):
    rng = np.random.default_rng(0)
    valid = np.zeros(width, dtype=bool)
    valid[[0, 2, 5]] = True
    logits = np.full(width, 9.0)  # invalid actions carry the largest logits: they must never win
    logits[[0, 2, 5]] = np.log([1.0, 2.0, 5.0])
    n, epsilon = 40_000, 0.3
    actions = sample_actions(np.tile(logits, (n, 1)), np.tile(valid, (n, 1)), rng, epsilon=epsilon)
    freq = np.bincount(actions, minlength=width) / n
    expected = (1 - epsilon) * np.array([1, 2, 5]) / 8 + epsilon / 3
    assert freq[~valid].sum() == 0
    np.testing.assert_allclose(freq[[0, 2, 5]], expected, atol=0.01)


@pytest.mark.parametrize("width", [6, 600])
def test_temperature_flattens_the_policy(width):
    rng = np.random.default_rng(1)
    logits, masks = np.zeros((20_000, width)), np.zeros((20_000, width), dtype=bool)
    logits[:, :2], masks[:, :2] = [0.0, np.log(4.0)], True
    freq = np.bincount(sample_actions(logits, masks, rng, temperature=2.0), minlength=2)[:2] / 20_000
    np.testing.assert_allclose(freq, [1 / 3, 2 / 3], atol=0.01)  # softmax(log[1, 4] / 2) = [1, 2] / 3


@pytest.mark.parametrize("width", [6, 600])
def test_a_state_without_valid_actions_is_an_error(width):
    masks = np.zeros((2, width), dtype=bool)
    masks[0, 3] = True
    with pytest.raises(ValueError, match="state 1 has no valid action"):
        sample_actions(np.zeros((2, width)), masks, np.random.default_rng(0))


def grid_model(layers: int):
    from distgfn.models import MLP

    torch.manual_seed(0)
    return MLP([5, 5, 5], n_actions=4, hidden=32, layers=layers)


def torch_logits(model, coords):
    with torch.no_grad():
        return model(torch.from_numpy(coords))[:, :4].numpy()


@pytest.mark.parametrize("layers", [1, 3])
def test_numpy_policy_matches_the_model_through_training_and_new_weights(layers):
    model = grid_model(layers)
    coords = np.random.default_rng(0).integers(0, 5, (16, 3))
    policy = model.numpy_policy(4)
    before = torch_logits(model, coords)
    np.testing.assert_allclose(policy(coords), before, rtol=1e-5, atol=1e-6)
    # A policy is a snapshot: an optimizer step (in place) leaves it as it was; a new one sees the step.
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.from_numpy(coords)).square().sum().backward()
    optimizer.step()
    np.testing.assert_allclose(policy(coords), before, rtol=1e-5, atol=1e-6)
    assert not np.allclose(torch_logits(model, coords), before, atol=1e-3)
    np.testing.assert_allclose(model.numpy_policy(4)(coords), torch_logits(model, coords), rtol=1e-5, atol=1e-6)
    # Weights shared from elsewhere (a rollout actor's published copy) need a new policy.
    other = grid_model(layers)
    for p in other.parameters():
        p.data.add_(1.0)
    share_weights(model, get_weights(other))
    np.testing.assert_allclose(model.numpy_policy(4)(coords), torch_logits(other, coords), rtol=1e-5, atol=1e-6)


def test_mlp_first_layer_as_matmul_or_embedding_gives_the_same_outputs_and_gradients(monkeypatch):
    from distgfn import models

    coords = torch.from_numpy(np.random.default_rng(1).integers(0, 5, (64, 3)))
    results = []
    for largest in (0, 1024):  # 0: embedding lookups; 1024: the multi-hot matmul
        monkeypatch.setattr(models, "MULTI_HOT_MAX", largest)
        model = grid_model(2)
        out = model(coords)
        out.square().sum().backward()
        results.append((out.detach(), model.embed.weight.grad.clone(), model.bias.grad.clone()))
    for dense, sparse in zip(*results):
        torch.testing.assert_close(dense, sparse, rtol=1e-5, atol=1e-5)


def test_rollout_worker_samples_with_the_weights_it_was_given():
    from distgfn.config import load_config
    from distgfn.rollout import RolloutWorker

    cfg = load_config(None, ["env.options.ndim=2", "env.options.height=6", "model.options.hidden=16", "sampler.epsilon=0"])
    worker = RolloutWorker(cfg, seed=0)
    weights = get_weights(worker.model)
    weights["body.3.bias"] = np.array([-50, -50, 50, 0], np.float32)  # the stop logit dominates
    worker.set_weights(1, weights, share=True)
    assert (worker.sample().objects[:, :-1] == 0).all()  # every trajectory stops at once
