"""Sequence data derived from MNIST for recurrent FF networks: sequential MNIST and moving MNIST.

Both are generated deterministically (from a seed where anything is random) and rendered lazily: a
`FrameSource` is indexed like a float32 tensor [N, T, D] but builds only the batch asked for, so a
split of 60,000 moving-MNIST videos (about 20 GB as one tensor) costs a few megabytes of memory.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fflab.data.dataset import Dataset
from fflab.data.load import load_dataset
from fflab.data.paths import resolve_cache_dir
from fflab.data.registry import get_spec
from fflab.errors import DataError
from fflab.io import atomic_file, describe_os_error

STEP_LENGTH = 0.1  # Srivastava et al. (2015): one step is a tenth of the free range of positions
CACHE_VERSION = 1  # part of every moving-MNIST cache key; bump it when the generator changes
MODES = ("rows", "chunks")


class FrameSource(ABC):
    """N sequences of T frames of D values in [0, 1], indexed like a float32 tensor [N, T, D].

    `src[rows]` (an integer tensor [B], a slice or an int) renders just those sequences, as [B, T, D]
    (or [T, D] for an int), so a training loop can use it where it would use a tensor of inputs.
    """

    def __init__(self, count: int, num_steps: int, frame_shape: tuple[int, int]) -> None:
        self._count = count
        self.num_steps = num_steps
        self.frame_shape = frame_shape

    def __len__(self) -> int:
        return self._count

    @property
    def frame_dim(self) -> int:
        """Values in one frame, D = prod(frame_shape)."""
        return math.prod(self.frame_shape)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, T, D), the shape of the tensor this source stands for."""
        return (self._count, self.num_steps, self.frame_dim)

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        if isinstance(index, slice):
            return self._render(torch.arange(self._count)[index])
        if isinstance(index, int) and not isinstance(index, bool):
            return self[torch.tensor([index])][0]
        if (
            not isinstance(index, torch.Tensor)
            or index.dim() != 1
            or index.dtype == torch.bool
            or index.is_floating_point()
        ):
            raise TypeError(f"index sequences with a 1-D integer tensor, a slice or an int, not {index!r}")
        rows = index.long()
        if rows.numel() and (rows.min() < -self._count or rows.max() >= self._count):
            bad = rows[(rows < -self._count) | (rows >= self._count)][0].item()
            raise IndexError(f"index {bad} is out of range for {self._count} sequences")
        return self._render(torch.where(rows < 0, rows + self._count, rows))

    @abstractmethod
    def _render(self, rows: torch.Tensor) -> torch.Tensor:
        """Frames float32 [B, T, D] of the sequences `rows` (int64 [B], each in [0, N))."""

    def head(self, count: int) -> FrameSource:
        """The first `count` sequences, still rendered lazily (slicing would render them all at once)."""
        return self.rows(0, count)

    def rows(self, start: int, stop: int) -> FrameSource:
        """Sequences start..stop-1 (clipped to the source), still rendered lazily."""
        start, stop = max(0, start), min(stop, self._count)
        if start == 0 and stop == self._count:
            return self
        return _RowRange(self, start, max(stop - start, 0))


class _RowRange(FrameSource):
    """A lazy run of consecutive sequences of another frame source."""

    def __init__(self, source: FrameSource, start: int, count: int) -> None:
        super().__init__(count, source.num_steps, source.frame_shape)
        self.source, self.start = source, start

    def _render(self, rows: torch.Tensor) -> torch.Tensor:
        return self.source._render(rows + self.start)


class ChunkedImages(FrameSource):
    """Images [N, C, H, W] fed as sequences: each flattened image, permuted by `permutation` if given, cut into
    consecutive chunks of `chunk_size` values. Reads the image tensor in place; only a batch is copied."""

    def __init__(self, images: torch.Tensor, chunk_size: int, permutation: torch.Tensor | None = None) -> None:
        self.pixels = images.flatten(1)  # a view of the loaded images
        self.permutation = permutation
        super().__init__(len(images), self.pixels.shape[1] // chunk_size, (1, chunk_size))

    def _render(self, rows: torch.Tensor) -> torch.Tensor:
        batch = self.pixels[rows]
        if self.permutation is not None:
            batch = batch[:, self.permutation]
        return batch.view(len(rows), self.num_steps, self.frame_dim)


class MovingDigits(FrameSource):
    """Videos of digits moving on a blank `canvas` x `canvas` frame, rendered per batch.

    Sequence n shows images[digit_indices[n, k]] with its top-left corner at positions[n, t, k] = (top, left)
    in frame t, for each of its K digits; overlapping digits combine by pixel-wise max.
    """

    def __init__(self, images: torch.Tensor, digit_indices: torch.Tensor, positions: torch.Tensor, canvas: int) -> None:
        self.images = images  # [M, h, w]
        self.digit_indices = digit_indices  # int64 [N, K]
        self.positions = positions  # int32 [N, T, K, 2]
        self.canvas = canvas
        super().__init__(len(digit_indices), positions.shape[1], (canvas, canvas))

    def _render(self, rows: torch.Tensor) -> torch.Tensor:
        # One scatter for the whole batch: every digit pixel's flat index in the [B, T, canvas, canvas] output.
        b, t, c = len(rows), self.num_steps, self.canvas
        h, w = self.images.shape[1:]
        pos = self.positions[rows].long()  # [B, T, K, 2]
        frame = torch.arange(b * t).view(b, t, 1, 1, 1) * (c * c)
        top = pos[..., 0, None, None] + torch.arange(h).view(h, 1)  # [B, T, K, h, 1]
        left = pos[..., 1, None, None] + torch.arange(w)  # [B, T, K, 1, w]
        index = frame + top * c + left  # [B, T, K, h, w]
        values = self.images[self.digit_indices[rows]].unsqueeze(1).expand_as(index)
        out = torch.zeros(b * t * c * c)
        out.scatter_reduce_(0, index.flatten(), values.flatten(), reduce="amax")
        return out.view(b, t, c * c)


@dataclass(frozen=True, eq=False)
class SequenceDataset:
    """A sequence data set: x are FrameSources [N, T, D], y int64 [N] in [0, num_classes).

    `train_labels2`/`test_labels2` are int64 [N, 2] with the classes of both digits of two-digit moving
    MNIST (column 0 is y, the first digit's class); None for every other set.
    """

    name: str
    train_x: FrameSource = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: FrameSource = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    class_names: tuple[str, ...]
    train_labels2: torch.Tensor | None = field(default=None, repr=False)
    test_labels2: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != len(x):
                raise DataError(
                    f"{self.name}: {split}_y must be int64 [N] with N = {len(x)}, got {y.dtype} {tuple(y.shape)}."
                )
        if (self.train_x.num_steps, self.train_x.frame_shape) != (self.test_x.num_steps, self.test_x.frame_shape):
            raise DataError(f"{self.name}: train and test sequences differ in length or frame shape.")
        if len(self.class_names) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes.")

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one frame, e.g. (1, 28) for rows of MNIST or (64, 64) for moving MNIST."""
        return self.train_x.frame_shape

    @property
    def input_dim(self) -> int:
        """Values in one frame, D."""
        return self.train_x.frame_dim

    @property
    def num_steps(self) -> int:
        """Frames per sequence, T."""
        return self.train_x.num_steps


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def sequential_mnist(
    base: Dataset, *, mode: str = "rows", chunk_size: int = 28, permute_seed: int | None = None
) -> SequenceDataset:
    """Each image of `base` as a sequence: its rows top to bottom (mode "rows"), or its flattened pixels cut
    into chunks of `chunk_size` (mode "chunks"; chunk_size=1 is pixel by pixel), first shuffled by the fixed
    permutation drawn from `permute_seed` if one is given (permuted sequential MNIST)."""
    width, pixels = base.input_shape[-1], base.input_dim
    if mode not in MODES:
        raise DataError(f"seq-mnist: mode must be one of {', '.join(MODES)}, got {mode!r}.")
    _check_int("chunk_size", chunk_size, 1)
    if permute_seed is not None:
        _check_int("permute_seed", permute_seed, 0)
    if mode == "rows" and (chunk_size != width or permute_seed is not None):
        raise DataError(
            f"seq-mnist: mode='rows' feeds the {width}-pixel rows in order; chunk_size={chunk_size} and "
            f"permute_seed={permute_seed} need mode='chunks' (chunk_size={width} gives permuted rows)."
        )
    if pixels % chunk_size:
        divisors = [d for d in range(1, pixels + 1) if pixels % d == 0]
        raise DataError(
            f"seq-mnist: chunk_size={chunk_size} does not divide the {pixels} pixels of an image; "
            f"use one of {divisors}."
        )
    permutation = (
        None if permute_seed is None else torch.from_numpy(np.random.default_rng(permute_seed).permutation(pixels))
    )
    return SequenceDataset(
        "seq-mnist",
        ChunkedImages(base.train_x, chunk_size, permutation),
        base.train_y,
        ChunkedImages(base.test_x, chunk_size, permutation),
        base.test_y,
        base.num_classes,
        base.class_names,
    )


def bounce_trajectories(
    rng: np.random.Generator, count: int, frames: int, step_length: float = STEP_LENGTH
) -> tuple[np.ndarray, np.ndarray]:
    """Positions [count, frames, 2] as (y, x) in [0, 1], and the velocities [count, frames, 2] after each frame.

    The dynamics of Srivastava et al.'s moving_mnist generator: start uniform in [0, 1)^2, direction theta
    uniform in [0, 2 pi), velocity (sin, cos)(theta); each frame first takes a step of `step_length`, then every
    coordinate at or past an edge is clamped to it and its velocity component flips (a bounce).
    """
    y, x, theta = rng.random(count), rng.random(count), rng.random(count) * 2 * np.pi
    position = np.stack([y, x], axis=1)
    velocity = np.stack([np.sin(theta), np.cos(theta)], axis=1)
    positions, velocities = np.empty((2, count, frames, 2))
    for t in range(frames):
        position = position + velocity * step_length
        velocity = np.where((position <= 0) | (position >= 1), -velocity, velocity)
        position = np.clip(position, 0, 1)
        positions[:, t], velocities[:, t] = position, velocity
    return positions, velocities


def _cycled_permutations(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """`count` indices into n items: fresh random permutations laid end to end, so each is used evenly."""
    return np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])[:count]


def _generate_split(
    seed: int, split: int, count: int, digits: int, frames: int, n_images: int, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Digit indices int64 [count, digits] and top-left corners int32 [count, frames, digits, 2] of one split.

    Each split draws from its own stream (seed, split), so its sequences do not depend on the other's count.
    """
    rng = np.random.default_rng([seed, split])
    indices = np.stack([_cycled_permutations(rng, n_images, count) for _ in range(digits)], axis=1)
    unit, _ = bounce_trajectories(rng, count * digits, frames)
    # As the original generator: positions scaled by the free range and truncated to ints.
    corners = (unit.reshape(count, digits, frames, 2).transpose(0, 2, 1, 3) * free).astype(np.int32)
    return indices, corners


def _read_cache(path: Path, key: str, limits: dict[str, tuple[tuple[int, ...], np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of a cache file, after checking its key, names, shapes and value ranges; DataError if damaged."""
    try:
        with np.load(path, allow_pickle=False) as npz:  # zip CRCs catch flipped bits in the arrays
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a readable cache file ({err})") from err
    if set(arrays) != {"key", *limits} or str(arrays["key"]) != key:
        raise DataError(f"{path} holds {sorted(arrays)} for key {arrays.get('key')!s}; expected {key}")
    for name, (shape, high) in limits.items():
        array = arrays[name]
        if array.shape != shape or array.dtype.kind not in "iu" or (array < 0).any() or (array > high).any():
            raise DataError(
                f"{path}: {name} is {array.dtype} {array.shape}; expected integers {shape} in 0..{high.tolist()}"
            )
    return arrays


def _cached(
    path: Path, key: str, limits: dict[str, tuple[tuple[int, ...], np.ndarray]], generate: Callable[[], dict]
) -> dict[str, np.ndarray]:
    """Read the arrays from `path`, or generate and write them atomically. A damaged file is regenerated
    with a warning (generation is deterministic, so the result is what the file should have held)."""
    if path.is_file():
        try:
            return _read_cache(path, key, limits)
        except DataError as err:
            warnings.warn(f"damaged moving-MNIST cache: {err}; regenerating it", stacklevel=3)
    arrays = generate()
    try:
        with atomic_file(path) as file:
            np.savez(file, key=np.array(key), **arrays)
    except OSError as err:  # a read-only cache still gives correct (regenerated) data, just slower next time
        warnings.warn(f"could not cache moving-MNIST trajectories: {describe_os_error(err)}", stacklevel=3)
    return arrays


def moving_mnist(
    base: Dataset,
    cache_dir: str | os.PathLike,
    *,
    frames: int = 20,
    canvas: int = 64,
    digits: int = 1,
    train_sequences: int = 60000,
    test_sequences: int = 10000,
    seed: int = 0,
) -> SequenceDataset:
    """Moving MNIST (Srivastava et al. 2015): `digits` digits bouncing in a `canvas` x `canvas` frame.

    Training videos show digits from `base`'s train split, test videos digits from its test split. The label y
    is the class of the (first) digit; with two digits, `*_labels2` hold both classes. Trajectories and digit
    choices depend only on the arguments and the split sizes; they are cached in `cache_dir/<key>.npz`.
    """
    for name, value, minimum in (
        ("frames", frames, 1),
        ("train_sequences", train_sequences, 1),
        ("test_sequences", test_sequences, 1),
        ("seed", seed, 0),
    ):
        _check_int(name, value, minimum)
    if digits not in (1, 2) or isinstance(digits, bool):
        raise DataError(f"moving-mnist: digits must be 1 or 2, got {digits!r}.")
    channels, height, width = base.input_shape
    _check_int("canvas", canvas, max(height, width))
    if channels != 1:
        raise DataError(f"moving-mnist needs grey images [N, 1, H, W]; {base.name} has {channels} channels.")
    free = np.array([canvas - height, canvas - width])
    n_train, n_test = len(base.train_x), len(base.test_x)
    key = (
        f"v{CACHE_VERSION}-seed{seed}-frames{frames}-canvas{canvas}-digits{digits}-img{height}x{width}"
        f"-train{train_sequences}of{n_train}-test{test_sequences}of{n_test}"
    )
    limits = {}
    for split, count, n_images in (("train", train_sequences, n_train), ("test", test_sequences, n_test)):
        limits[f"{split}_indices"] = ((count, digits), np.array(n_images - 1))
        limits[f"{split}_positions"] = ((count, frames, digits, 2), free)

    def generate() -> dict[str, np.ndarray]:
        train = _generate_split(seed, 0, train_sequences, digits, frames, n_train, free)
        test = _generate_split(seed, 1, test_sequences, digits, frames, n_test, free)
        return {
            "train_indices": train[0],
            "train_positions": train[1],
            "test_indices": test[0],
            "test_positions": test[1],
        }

    arrays = _cached(Path(cache_dir) / f"{key}.npz", key, limits, generate)
    parts = {}
    for split, images, labels in (("train", base.train_x, base.train_y), ("test", base.test_x, base.test_y)):
        indices = torch.from_numpy(arrays[f"{split}_indices"].astype(np.int64))
        positions = torch.from_numpy(arrays[f"{split}_positions"].astype(np.int32))
        parts[split] = (MovingDigits(images[:, 0], indices, positions, canvas), labels[indices])
    (train_x, train_both), (test_x, test_both) = parts["train"], parts["test"]
    two = digits == 2
    return SequenceDataset(
        "moving-mnist",
        train_x,
        train_both[:, 0],
        test_x,
        test_both[:, 0],
        base.num_classes,
        base.class_names,
        train_both if two else None,
        test_both if two else None,
    )


_OPTIONS: dict[str, tuple[str, ...]] = {
    "seq-mnist": ("mode", "chunk_size", "permute_seed"),
    "moving-mnist": ("frames", "canvas", "digits", "train_sequences", "test_sequences", "seed"),
}


def load_sequence_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
    **options: object,
) -> SequenceDataset:
    """Load a sequence data set by name ("seq-mnist" or "moving-mnist"), built from its base set (MNIST),
    which is found, downloaded and verified like any other data set under `data_dir`.

    Options, seq-mnist: mode="rows" | "chunks", chunk_size=28, permute_seed=None. moving-mnist: frames=20,
    canvas=64, digits=1, train_sequences=60000, test_sequences=10000, seed=0 (its trajectories are cached in
    `<data dir>/moving-mnist/`).
    """
    spec = get_spec(name)
    if spec.kind != "derived":
        raise DataError(
            f"Data set {spec.name!r} holds images, not sequences: load it with fflab.data.load_dataset. "
            f"Sequence data sets: {', '.join(_OPTIONS)}."
        )
    unknown = sorted(set(options) - set(_OPTIONS[spec.name]))
    if unknown:
        raise DataError(
            f"Unknown option(s) {', '.join(unknown)} for data set {spec.name!r}; valid options: "
            f"{', '.join(_OPTIONS[spec.name])}."
        )
    base = load_dataset(spec.base, data_dir=data_dir, download=download, progress=progress)
    if spec.name == "seq-mnist":
        return sequential_mnist(base, **options)
    return moving_mnist(base, resolve_cache_dir() / spec.name, **options)
