"""Action sampling: the dense path (narrow action spaces) and the sparse one (molecules) draw
from the same distribution, never an invalid action."""

import numpy as np
import pytest

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
