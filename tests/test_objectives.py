"""Goodness and FF losses against hand computations."""

import math

import pytest
import torch

from fflab.objectives import mean_squares, probability_positive, softplus_loss, sum_squares


def sp(v: float) -> float:
    return math.log1p(math.exp(v))


def test_goodness_matches_hand_computation():
    h = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    assert sum_squares(h).tolist() == pytest.approx([5.0, 10.25])
    assert mean_squares(h).tolist() == pytest.approx([5.0 / 3, 10.25 / 3])


def test_goodness_sums_over_all_non_batch_dims():
    h = torch.arange(8.0).view(2, 2, 2)
    assert sum_squares(h).tolist() == pytest.approx([0 + 1 + 4 + 9, 16 + 25 + 36 + 49])


def test_softplus_loss_standard_matches_hand_computation():
    g_pos, g_neg, theta = torch.tensor([3.0, 1.0]), torch.tensor([0.5, 4.0]), 2.0
    expected = 0.5 * ((sp(2 - 3) + sp(2 - 1)) / 2 + (sp(0.5 - 2) + sp(4 - 2)) / 2)
    assert softplus_loss(g_pos, g_neg, theta).item() == pytest.approx(expected, rel=1e-6)


def test_softplus_loss_inverted_swaps_roles():
    g_pos, g_neg, theta = torch.tensor([3.0, 1.0]), torch.tensor([0.5, 4.0]), 2.0
    expected = 0.5 * ((sp(3 - 2) + sp(1 - 2)) / 2 + (sp(2 - 0.5) + sp(2 - 4)) / 2)
    assert softplus_loss(g_pos, g_neg, theta, "inverted").item() == pytest.approx(expected, rel=1e-6)
    # Inverted equals standard with positive and negative goodness exchanged.
    assert softplus_loss(g_pos, g_neg, theta, "inverted").item() == pytest.approx(
        softplus_loss(g_neg, g_pos, theta).item()
    )


def test_loss_is_logistic_loss_of_ff_probability():
    g_pos, g_neg, theta = torch.tensor([2.5]), torch.tensor([1.2]), 2.0
    p_pos, p_neg = probability_positive(g_pos, theta), probability_positive(g_neg, theta)
    expected = 0.5 * (-torch.log(p_pos) - torch.log(1 - p_neg))
    assert softplus_loss(g_pos, g_neg, theta).item() == pytest.approx(expected.item(), rel=1e-6)


def test_unknown_objective_is_rejected():
    with pytest.raises(ValueError, match="objective"):
        softplus_loss(torch.ones(1), torch.ones(1), 1.0, "sideways")
