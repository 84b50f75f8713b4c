"""Sequence data: sequential (row, chunk, permuted) MNIST and moving MNIST, lazy frames, seeded and cached.

Most tests use a tiny synthetic MNIST-like set; the real-data tests need FFLAB_DATA (a folder holding mnist/).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import fflab.data.sequences as sequences
from fflab.config import config_from_dict
from fflab.data import Dataset, available_datasets, load_dataset, load_sequence_dataset
from fflab.data.registry import DIGIT_NAMES
from fflab.data.sequences import MovingDigits, bounce_trajectories, moving_mnist, sequential_mnist
from fflab.errors import DataError, FFLabError

N_TRAIN, N_TEST, SIDE = 40, 15, 28


@pytest.fixture(scope="module")
def base() -> Dataset:
    """MNIST-like 28x28 set whose pixels are all > 0 (so a digit's bounding box is its whole square); train
    pixels lie in [0.5, 1], test pixels in [0.01, 0.49], so a frame shows which split its digit came from."""
    gen = torch.Generator().manual_seed(0)
    train = 0.5 + 0.5 * torch.rand(N_TRAIN, 1, SIDE, SIDE, generator=gen)
    test = 0.01 + 0.48 * torch.rand(N_TEST, 1, SIDE, SIDE, generator=gen)
    labels = torch.randint(0, 10, (N_TRAIN + N_TEST,), generator=gen)
    return Dataset("mnist", train, labels[:N_TRAIN], test, labels[N_TRAIN:], 10, DIGIT_NAMES)


def moving(base: Dataset, cache: Path, **options) -> sequences.SequenceDataset:
    """Moving MNIST with small counts unless told otherwise."""
    return moving_mnist(base, cache, **{"train_sequences": 30, "test_sequences": 12, **options})


def crops(x: MovingDigits, frames: torch.Tensor, digit: int = 0) -> torch.Tensor:
    """The h x w square at each sequence's `digit` position in every frame: [B, T, h, w] (B = first rows)."""
    c, (h, w) = x.canvas, x.images.shape[1:]
    frames = frames.view(len(frames), x.num_steps, c, c)
    return torch.stack(
        [
            torch.stack(
                [frames[b, t, y : y + h, left : left + w] for t, (y, left) in enumerate(x.positions[b, :, digit])]
            )
            for b in range(len(frames))
        ]
    )


# Sequential MNIST


def test_rows_mode_feeds_each_images_rows_in_order(base: Dataset) -> None:
    ds = sequential_mnist(base)
    assert (ds.num_steps, ds.input_shape, ds.input_dim, len(ds.train_x), len(ds.test_x)) == (28, (1, 28), 28, 40, 15)
    assert ds.train_x.shape == (40, 28, 28) and ds.train_y is base.train_y and ds.name == "seq-mnist"
    rows = torch.tensor([3, 0, -1])
    frames = ds.train_x[rows]
    assert frames.dtype == torch.float32 and frames.shape == (3, 28, 28)
    torch.testing.assert_close(frames, base.train_x[[3, 0, 39], 0], rtol=0, atol=0)
    torch.testing.assert_close(ds.test_x[2:5], base.test_x[2:5, 0], rtol=0, atol=0)
    torch.testing.assert_close(ds.test_x[7], base.test_x[7, 0], rtol=0, atol=0)
    assert ds.train_x.pixels.data_ptr() == base.train_x.data_ptr()  # a view of the loaded images, no copy


def test_chunks_mode_cuts_the_flattened_image(base: Dataset) -> None:
    ds = sequential_mnist(base, mode="chunks", chunk_size=16)
    assert (ds.num_steps, ds.input_shape, ds.input_dim) == (49, (1, 16), 16)
    torch.testing.assert_close(ds.train_x[torch.tensor([5])][0], base.train_x[5].flatten().view(49, 16))
    pixels = sequential_mnist(base, mode="chunks", chunk_size=1)
    assert pixels.test_x[torch.tensor([0, 1])].shape == (2, 784, 1)


def test_permutation_is_fixed_per_seed_and_a_true_permutation(base: Dataset) -> None:
    ds = sequential_mnist(base, mode="chunks", chunk_size=28, permute_seed=3)
    perm = ds.train_x.permutation
    assert torch.equal(perm.sort().values, torch.arange(784)) and not torch.equal(perm, torch.arange(784))
    assert torch.equal(ds.test_x.permutation, perm)  # one permutation for both splits
    torch.testing.assert_close(ds.train_x[torch.tensor([2])][0].flatten(), base.train_x[2].flatten()[perm])
    assert torch.equal(sequential_mnist(base, mode="chunks", permute_seed=3).train_x.permutation, perm)
    assert not torch.equal(sequential_mnist(base, mode="chunks", permute_seed=4).train_x.permutation, perm)


def test_bad_sequential_options_fail_clearly(base: Dataset) -> None:
    with pytest.raises(DataError, match=r"chunk_size=10 does not divide the 784 pixels.*\[1, 2, 4, 7, 8, 14, 16"):
        sequential_mnist(base, mode="chunks", chunk_size=10)
    with pytest.raises(DataError, match="mode='rows' feeds the 28-pixel rows in order.*need mode='chunks'"):
        sequential_mnist(base, permute_seed=1)
    with pytest.raises(DataError, match="mode must be one of rows, chunks, got 'cols'"):
        sequential_mnist(base, mode="cols")
    with pytest.raises(DataError, match="chunk_size must be an integer >= 1, got 0"):
        sequential_mnist(base, mode="chunks", chunk_size=0)


def test_frame_source_rejects_bad_indices(base: Dataset) -> None:
    x = sequential_mnist(base).train_x
    with pytest.raises(IndexError, match="index 40 is out of range for 40 sequences"):
        x[torch.tensor([0, 40])]
    with pytest.raises(TypeError, match="1-D integer tensor"):
        x[torch.tensor([0.0])]
    assert x[torch.tensor([], dtype=torch.int64)].shape == (0, 28, 28)


# Moving MNIST


def test_bounce_dynamics_step_and_flip() -> None:
    pos, vel = bounce_trajectories(np.random.default_rng(0), 200, 20)
    assert pos.shape == vel.shape == (200, 20, 2) and pos.min() >= 0 and pos.max() <= 1
    np.testing.assert_allclose(np.linalg.norm(vel, axis=2), 1.0)
    step = np.diff(pos, axis=1)
    at_edge = (pos[:, 1:] == 0) | (pos[:, 1:] == 1)
    free = ~at_edge.any(axis=2)  # no coordinate clamped: a full step along the previous velocity
    np.testing.assert_allclose(step[free], 0.1 * vel[:, :-1][free], atol=1e-12)
    flipped = np.sign(vel[:, 1:]) == -np.sign(vel[:, :-1])
    assert at_edge.sum() > 50  # bounces happen
    assert np.array_equal(flipped, at_edge)  # a component flips exactly when its coordinate hits an edge


def test_moving_frames_hold_the_whole_digit_inside_the_canvas(base: Dataset, tmp_path: Path) -> None:
    ds = moving(base, tmp_path)
    assert (ds.num_steps, ds.input_shape, ds.input_dim, len(ds.train_x), len(ds.test_x)) == (20, (64, 64), 4096, 30, 12)
    x = ds.train_x
    frames = x[:]
    assert frames.dtype == torch.float32 and frames.shape == (30, 20, 4096)
    digit = x.images[x.digit_indices[:, 0]]  # [B, 28, 28]
    torch.testing.assert_close(frames.sum(2), digit.sum((1, 2))[:, None].expand(30, 20), rtol=1e-5, atol=1e-3)
    # The lit pixels are exactly the 28x28 square at the recorded position, which lies inside the canvas.
    pos = x.positions.long()[:, :, 0]
    assert pos.min() >= 0 and pos.max() <= 64 - 28
    lit = frames.view(30, 20, 64, 64) > 0
    rows, cols = lit.any(3).int(), lit.any(2).int()
    assert torch.equal(rows.argmax(2), pos[..., 0]) and torch.equal(rows.sum(2), torch.full((30, 20), 28))
    assert torch.equal(cols.argmax(2), pos[..., 1]) and torch.equal(cols.sum(2), torch.full((30, 20), 28))
    # Positions follow the dynamics: at most a step of 0.1 * 36 pixels (+1 for truncation) per frame.
    assert (pos.diff(dim=1).abs() <= 4).all() and (pos.diff(dim=1).abs() >= 1).any()


def test_moving_is_deterministic_per_seed(base: Dataset, tmp_path: Path) -> None:
    first = moving(base, tmp_path / "a")
    again = moving(base, tmp_path / "b")
    rows = torch.arange(8)
    assert torch.equal(first.train_x[rows], again.train_x[rows]) and torch.equal(first.test_x[rows], again.test_x[rows])
    assert torch.equal(first.train_y, again.train_y)
    other = moving(base, tmp_path / "c", seed=1)
    assert not torch.equal(first.train_x[rows], other.train_x[rows])
    # Each split has its own stream: the training videos do not depend on how many test videos there are.
    fewer_tests = moving(base, tmp_path / "d", test_sequences=3)
    assert torch.equal(first.train_x.positions, fewer_tests.train_x.positions)


def test_train_and_test_videos_use_their_own_split(base: Dataset, tmp_path: Path) -> None:
    ds = moving(base, tmp_path)
    for x, y, images, labels in (
        (ds.train_x, ds.train_y, base.train_x, base.train_y),
        (ds.test_x, ds.test_y, base.test_x, base.test_y),
    ):
        assert x.images.data_ptr() == images.data_ptr()
        indices = x.digit_indices[:, 0]
        assert torch.equal(y, labels[indices])
        frames = x[torch.arange(6)]
        torch.testing.assert_close(crops(x, frames), images[indices[:6], 0][:, None].expand(6, 20, 28, 28))
    assert ds.train_x[:].max() > 0.5 and ds.test_x[:].max() < 0.5  # synthetic train digits are bright, test dim
    assert ds.train_labels2 is None and ds.test_labels2 is None
    assert len(set(ds.train_x.digit_indices[:, 0].tolist())) == 30  # 30 videos from 40 digits: none repeated


def test_two_digits_combine_by_max_with_both_labels(base: Dataset, tmp_path: Path) -> None:
    ds = moving(base, tmp_path, digits=2, frames=6, canvas=40)
    x = ds.train_x
    frames = x[torch.tensor([4, 1])]
    expected = torch.zeros(2, 6, 40, 40)
    for b, row in enumerate((4, 1)):
        for t in range(6):
            for k in range(2):
                top, left = x.positions[row, t, k].tolist()
                square = expected[b, t, top : top + 28, left : left + 28]
                square.copy_(torch.maximum(square, x.images[x.digit_indices[row, k]]))
    torch.testing.assert_close(frames, expected.view(2, 6, 1600), rtol=0, atol=0)
    assert ds.train_labels2.shape == (30, 2) and torch.equal(ds.train_labels2[:, 0], ds.train_y)
    assert torch.equal(ds.test_labels2, base.test_y[ds.test_x.digit_indices])


def test_bad_moving_options_fail_clearly(base: Dataset, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="digits must be 1 or 2, got 3"):
        moving(base, tmp_path, digits=3)
    with pytest.raises(DataError, match="canvas must be an integer >= 28, got 20"):
        moving(base, tmp_path, canvas=20)
    with pytest.raises(DataError, match="train_sequences must be an integer >= 1, got 0"):
        moving(base, tmp_path, train_sequences=0)


def test_cache_is_written_once_and_reused(base: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = moving(base, tmp_path)
    [cache] = tmp_path.glob("*.npz")
    assert cache.name == "v1-seed0-frames20-canvas64-digits1-img28x28-train30of40-test12of15.npz"
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temporary left behind
    mtime = cache.stat().st_mtime_ns

    def no_generation(*args: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(sequences, "_generate_split", no_generation)
    again = moving(base, tmp_path)
    assert cache.stat().st_mtime_ns == mtime
    assert torch.equal(first.train_x.positions, again.train_x.positions)
    assert torch.equal(first.test_x.digit_indices, again.test_x.digit_indices)


def _damage(cache: Path, how: str) -> None:
    if how == "garbage":
        cache.write_bytes(b"not a zip file at all")
    elif how == "truncated":
        cache.write_bytes(cache.read_bytes()[:-200])
    else:  # a well-formed file whose positions put the digit outside the canvas
        with np.load(cache) as npz:
            arrays = dict(npz)
        arrays["train_positions"][0, 0, 0, 0] = 99
        with open(cache, "wb") as file:
            np.savez(file, **arrays)


@pytest.mark.parametrize("how", ["garbage", "truncated", "out of range"])
def test_damaged_cache_is_regenerated_with_a_warning(base: Dataset, tmp_path: Path, how: str) -> None:
    first = moving(base, tmp_path)
    [cache] = tmp_path.glob("*.npz")
    _damage(cache, how)
    with pytest.warns(UserWarning, match=f"damaged moving-MNIST cache: {cache}.*regenerating it"):
        again = moving(base, tmp_path)
    assert torch.equal(first.train_x.positions, again.train_x.positions)
    assert torch.equal(first.test_x[torch.arange(4)], again.test_x[torch.arange(4)])
    with np.load(cache) as npz:  # the file was rewritten whole
        assert np.array_equal(npz["train_positions"], first.train_x.positions.numpy())


# Loader and registry


def test_sequence_sets_are_registered_and_load_dataset_points_to_the_loader() -> None:
    specs = {spec.name: spec for spec in available_datasets()}
    for name in ("seq-mnist", "moving-mnist"):
        assert specs[name].kind == "derived" and specs[name].base == "mnist" and len(specs[name].class_names) == 10
        with pytest.raises(DataError, match=f"load_sequence_dataset\\('{name}', ...\\)"):
            load_dataset(name)
    with pytest.raises(DataError, match="holds images, not sequences.*load_dataset"):
        load_sequence_dataset("mnist")


def test_loader_builds_from_mnist_and_caches_in_the_cache_dir_not_the_data_dir(
    base: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FFLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_load(name: str, **kwargs: object) -> Dataset:
        calls.append((name, kwargs))
        return base

    monkeypatch.setattr(sequences, "load_dataset", fake_load)
    ds = load_sequence_dataset("Moving_MNIST", data_dir=tmp_path, progress=False, train_sequences=5, test_sequences=3)
    assert calls == [("mnist", {"data_dir": tmp_path, "download": True, "progress": False})]
    assert ds.name == "moving-mnist" and len(ds.train_x) == 5 and ds.num_classes == 10
    assert len(list((tmp_path / "cache" / "moving-mnist").glob("*.npz"))) == 1
    assert not (tmp_path / "moving-mnist").exists(), "the data directory may be shared and read-only"
    seq = load_sequence_dataset("seq-mnist", mode="chunks", chunk_size=7)
    assert seq.num_steps == 112 and seq.input_dim == 7
    with pytest.raises(
        DataError,
        match=r"Unknown option\(s\) colour for data set 'moving-mnist'; valid options: "
        r"frames, canvas, digits, train_sequences, test_sequences, seed",
    ):
        load_sequence_dataset("moving-mnist", colour=1)
    with pytest.raises(DataError, match="Unknown option.*frames.*valid options: mode, chunk_size, permute_seed"):
        load_sequence_dataset("seq-mnist", frames=3)


# Real MNIST (needs FFLAB_DATA)


@pytest.fixture(scope="module")
def real_root(real_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary data root whose mnist/ links to the real files, so caches are not written beside them."""
    shared = real_data("mnist")
    root = tmp_path_factory.mktemp("data")
    (root / "mnist").mkdir()
    for source in (shared / "mnist").iterdir():
        (root / "mnist" / source.name).symlink_to(source.resolve())
    return root


def test_real_moving_mnist_end_to_end(real_root: Path) -> None:
    ds = load_sequence_dataset(
        "moving-mnist", data_dir=real_root, download=False, train_sequences=50, test_sequences=20
    )
    mnist = load_dataset("mnist", data_dir=real_root, download=False)
    assert len(list((Path(os.environ["FFLAB_CACHE"]) / "moving-mnist").glob("*.npz"))) >= 1
    assert not (real_root / "moving-mnist").exists()
    for x, images in ((ds.train_x, mnist.train_x), (ds.test_x, mnist.test_x)):
        frames = x[torch.arange(10)]
        digits = images[x.digit_indices[:10, 0], 0]
        torch.testing.assert_close(frames.sum(2), digits.sum((1, 2))[:, None].expand(10, 20), rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(crops(x, frames), digits[:, None].expand(10, 20, 28, 28))
    assert torch.equal(ds.test_y, mnist.test_y[ds.test_x.digit_indices[:, 0]])
    rows = sequential_mnist(mnist)
    torch.testing.assert_close(rows.test_x[torch.tensor([9])][0], mnist.test_x[9, 0], rtol=0, atol=0)


def test_unwritable_cache_warns_and_still_gives_the_same_data(
    base: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = moving(base, tmp_path / "ok")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not cache moving-MNIST trajectories"):
        again = moving(base, blocked / "moving-mnist")
    assert torch.equal(again.train_x[:5], reference.train_x[:5])


def test_head_is_a_lazy_prefix(base: Dataset, tmp_path: Path) -> None:
    ds = moving(base, tmp_path)
    head = ds.train_x.head(7)
    assert len(head) == 7 and head.shape == (7, 20, 64 * 64)
    assert torch.equal(head[torch.arange(7)], ds.train_x[:7])
    assert ds.train_x.head(10**6) is ds.train_x


def test_rows_is_a_lazy_range(base: Dataset, tmp_path: Path) -> None:
    ds = moving(base, tmp_path)
    middle = ds.train_x.rows(3, 8)
    assert len(middle) == 5 and torch.equal(middle[torch.arange(5)], ds.train_x[3:8])
    assert torch.equal(middle.rows(1, 3)[0:2], ds.train_x[4:6])  # ranges of ranges keep their offsets
    assert torch.equal(middle[-1], ds.train_x[7])
    assert len(ds.train_x.rows(len(ds.train_x) - 2, 10**6)) == 2


def test_a_recurrent_run_refuses_sequences_longer_than_its_steps(
    base: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame t is read at step t and the run stops at the window's end: later frames would be lost unread."""
    import fflab.training.data as data
    import fflab.training.run as run

    monkeypatch.setattr(data, "load_sequence_dataset", lambda name, **options: sequential_mnist(base))
    cfg = config_from_dict({"data": {"name": "seq-mnist"}, "model": {"kind": "recurrent", "hidden": [8]}})
    with pytest.raises(
        FFLabError, match=r"28 frames, but training and prediction stop at step 5, so frames 6-28 would never count"
    ):
        run.train_run(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
