"""Negative data: hard labels are never the truth, hybrid images mix two different images."""

import math

import pytest
import torch

from fflab.objectives import symba_loss
from fflab.supervision import HybridPairs, hard_wrong_labels, hybrid_masks


def test_hard_negatives_never_pick_the_true_label_even_when_it_scores_best():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (5000,), generator=gen)
    scores = torch.randn(5000, 10, generator=gen)
    scores[torch.arange(5000), y] = 100.0  # the model is sure of the truth
    assert not torch.any(hard_wrong_labels(scores, y, gen) == y)
    assert not torch.any(hard_wrong_labels(scores, y) == y)


def test_hardest_takes_the_best_wrong_label_and_hard_samples_by_softmax():
    y = torch.tensor([0, 0])
    scores = torch.tensor([[9.0, 1.0, 3.0], [9.0, 2.0, 2.0 + math.log(3.0)]])
    assert hard_wrong_labels(scores, y).tolist() == [2, 2]
    gen = torch.Generator().manual_seed(1)
    draws = hard_wrong_labels(scores[1:].repeat(20000, 1), y[1:].repeat(20000), gen)
    # Label 2 has 3x the probability of label 1 among the wrong labels: 0.75.
    assert (draws == 2).float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_symba_loss_matches_hand_computation():
    g_pos, g_neg = torch.tensor([3.0, 1.0]), torch.tensor([2.5, 2.0])
    expected = (math.log1p(math.exp(-4 * 0.5)) + math.log1p(math.exp(-4 * -1.0))) / 2
    assert symba_loss(g_pos, g_neg, alpha=4.0).item() == pytest.approx(expected, rel=1e-6)
    inverted = (math.log1p(math.exp(4 * 0.5)) + math.log1p(math.exp(4 * -1.0))) / 2
    assert symba_loss(g_pos, g_neg, 4.0, "inverted").item() == pytest.approx(inverted, rel=1e-6)
    with pytest.raises(ValueError, match="one to one"):
        symba_loss(torch.ones(3), torch.ones(1))


def test_hybrid_masks_are_binary_with_large_coherent_regions():
    gen = torch.Generator().manual_seed(0)
    masks = hybrid_masks(500, (28, 28), 6, gen)
    assert masks.shape == (500, 28, 28)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    # Random bits disagree with their right-hand neighbour half the time; blurred masks rarely do.
    disagree = (masks[:, :, 1:] != masks[:, :, :-1]).float().mean().item()
    bits = torch.randint(0, 2, (500, 28, 28), generator=gen).float()
    assert (bits[:, :, 1:] != bits[:, :, :-1]).float().mean().item() > 0.45
    assert disagree < 0.15
    # Both parts of every mask are substantial on average, and no mask is uniform.
    covered = masks.flatten(1).mean(1)
    assert 0.35 < covered.mean().item() < 0.65
    assert torch.all((covered > 0) & (covered < 1))


def test_uniform_masks_are_redrawn():
    # With a 2-pixel image and many blurs, most raw masks are uniform: every returned one must not be.
    masks = hybrid_masks(200, (1, 2), 3, torch.Generator().manual_seed(0))
    assert torch.all(masks.flatten(1).sum(1) == 1)
    with pytest.raises(ValueError, match="2 pixels"):
        hybrid_masks(1, (1, 1), 1, torch.Generator())


def test_hybrid_negatives_mix_two_different_images_and_never_equal_a_positive():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, 1, 12, 12)
    both = HybridPairs((1, 12, 12), blur_steps=4).make(x, torch.zeros(64, dtype=torch.long), gen)
    pos, neg = both[:64], both[64:]
    assert torch.equal(pos, x.flatten(1))
    for i in range(64):
        assert not torch.any(torch.all(neg[i] == pos, dim=1)), "a hybrid equals a real image"
        # Every pixel of the hybrid comes from image i or from exactly one other image j.
        from_self = neg[i] == pos[i]
        others = [j for j in range(64) if j != i and torch.all((neg[i] == pos[j]) | from_self)]
        assert len(others) == 1
        assert 0 < from_self.float().mean() < 1
