"""Label embeddings and negative data: the label sits where it should and negatives never carry the truth."""

import pytest
import torch

from fflab.supervision import LabelEmbedding, SupervisedPairs, random_wrong_labels


def test_overlay_writes_one_hot_into_first_pixels_and_keeps_the_rest():
    x = torch.rand(4, 1, 5, 5) + 0.1
    y = torch.tensor([0, 3, 9, 5])
    emb = LabelEmbedding("overlay", 10, 25)
    out = emb.embed(x, y)
    assert out.shape == (4, 25)
    expected_label = torch.nn.functional.one_hot(y, 10).float()
    assert torch.equal(out[:, :10], expected_label)
    assert torch.equal(out[:, 10:], x.flatten(1)[:, 10:])
    assert torch.all(x > 0.1 - 1e-6), "embedding must not modify its input in place"


def test_concat_appends_one_hot_and_keeps_the_whole_image():
    x = torch.rand(3, 12)
    y = torch.tensor([1, 0, 2])
    emb = LabelEmbedding("concat", 3, 12, value=2.0)
    out = emb.embed(x, y)
    assert emb.input_dim == 15 and out.shape == (3, 15)
    assert torch.equal(out[:, :12], x)
    assert torch.equal(out[:, 12:], 2.0 * torch.nn.functional.one_hot(y, 3).float())


def test_neutral_label_is_uniform():
    emb = LabelEmbedding("overlay", 10, 30)
    out = emb.neutral(torch.rand(2, 30))
    assert torch.allclose(out[:, :10], torch.full((2, 10), 0.1))


def test_overlay_wider_than_input_is_rejected():
    with pytest.raises(ValueError, match="overlay"):
        LabelEmbedding("overlay", 10, 8)


def test_random_wrong_labels_never_true_and_cover_all_others():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (50_000,), generator=gen)
    wrong = random_wrong_labels(y, 10, gen)
    assert not torch.any(wrong == y)
    # Uniform over the 9 wrong labels: each offset 1..9 appears about 1/9 of the time.
    offsets = torch.bincount((wrong - y) % 10, minlength=10)
    assert offsets[0] == 0
    share = offsets[1:].float() / len(y)
    assert torch.all((share - 1 / 9).abs() < 0.01)


def test_supervised_pairs_negatives_carry_a_wrong_label_on_the_same_image():
    gen = torch.Generator().manual_seed(1)
    emb = LabelEmbedding("overlay", 10, 784)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    both = SupervisedPairs(emb).make(x, y, gen)
    pos, neg = both[:64], both[64:]
    assert torch.equal(pos[:, :10].argmax(1), y)
    assert not torch.any(neg[:, :10].argmax(1) == y)
    assert torch.equal(pos[:, 10:], neg[:, 10:])
