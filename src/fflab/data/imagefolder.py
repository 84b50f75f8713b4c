"""Image-folder data sets: `ROOT/{train,test}/<class>/*.png|jpg|jpeg`, decoded once, cached as uint8 tensors.

Classes are the class folder names (sorted, unless the caller fixes an order). Decoding tens of thousands of
small files takes seconds, so the decoded pixels are cached under the cache dir in a file keyed by a
fingerprint of the folder (relative paths, sizes, mtimes): the next load reads one file, and any added,
removed or edited image changes the key and triggers a fresh decode. A tar of such a folder is unpacked
once into the cache dir (never beside the tar, whose folder may be read-only). Nothing is skipped silently:
unreadable images, mismatched sizes and mismatched class folders are DataErrors naming the files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fflab.data.dataset import Dataset
from fflab.data.paths import resolve_cache_dir
from fflab.errors import DataError
from fflab.io import atomic_file, create_beside, describe_os_error, flush_to_disk

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
CACHE_VERSION = 2  # part of every cache key; bump it when decoding changes
SHOW_FILES = 5  # how many offending files an error lists before "... and N more"
LAYOUT = "ROOT/train/<class>/*.png|jpg|jpeg and ROOT/test/<class>/... (the same class folders in both)"

# Pillow modes decoded as one grey channel; the colour modes below become RGB. Alpha is dropped, palette
# images count as colour. Other modes (16-bit or float grey) are refused rather than silently clipped.
GREY_MODES = frozenset({"1", "L", "LA", "La"})
COLOUR_MODES = frozenset({"P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})


@dataclass(frozen=True, eq=False)
class ImageArrays:
    """A decoded image folder: x uint8 [N, C, H, W], y int64 [N] indexing `class_names`."""

    root: Path
    class_names: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _has_splits(folder: Path) -> bool:
    return all((folder / split).is_dir() for split in SPLITS)


def find_split_root(folder: Path) -> Path | None:
    """`folder` if it holds train/ and test/, else its first sub-folder (sorted by name) that does, else None."""
    if _has_splits(folder):
        return folder
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            if sub.is_dir() and not sub.name.startswith(".") and _has_splits(sub):
                return sub
    return None


def _listing(items: Sequence[str], limit: int = SHOW_FILES) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _class_folders(split_dir: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError as err:
        raise DataError(f"Cannot list {split_dir}: {err.strerror or err}.") from None


def _class_order(root: Path, classes: Sequence[str] | None, name: str) -> tuple[str, ...]:
    """The class names: the folders of train/ (which must equal those of test/), in `classes` order if given."""
    found = {split: _class_folders(root / split) for split in SPLITS}
    if found["train"] != found["test"]:
        only_train = sorted(set(found["train"]) - set(found["test"]))
        only_test = sorted(set(found["test"]) - set(found["train"]))
        raise DataError(
            f"{name}: {root}/train and {root}/test must have the same class folders; only in train: "
            f"{', '.join(only_train) or '(none)'}; only in test: {', '.join(only_test) or '(none)'}. "
            "To fix: add the missing class folders or remove the extra ones."
        )
    if not found["train"]:
        raise DataError(f"{name}: {root}/train holds no class folders; expected {LAYOUT}.")
    if classes is None:
        return tuple(found["train"])
    missing = [c for c in classes if c not in found["train"]]
    unexpected = [c for c in found["train"] if c not in classes]
    if missing or unexpected:
        raise DataError(
            f"{name}: the class folders in {root}/train and test/ must be exactly {', '.join(classes)}; "
            f"missing: {', '.join(missing) or '(none)'}; unexpected: {', '.join(unexpected) or '(none)'}."
        )
    return tuple(classes)


def _scan(root: Path, class_names: tuple[str, ...], name: str) -> tuple[dict[str, list[tuple[str, int]]], str]:
    """Every image file per split as (path relative to root, label), and the folder's fingerprint.

    Folders list images class by class; each split is put in one fixed pseudo-random order (seed 0) so that
    its first N samples (a config's train_subset / test_subset) hold every class in proportion.
    """
    digest = hashlib.sha256(f"fflab image folder v{CACHE_VERSION}\n{class_names!r}\n".encode())
    files: dict[str, list[tuple[str, int]]] = {}
    empty: list[str] = []
    for split in SPLITS:
        files[split] = []
        for label, cls in enumerate(class_names):
            try:
                entries = sorted(
                    (e for e in os.scandir(root / split / cls) if not e.name.startswith(".")), key=lambda e: e.name
                )
                images = [
                    (e.name, e.stat()) for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file()
                ]
            except OSError as err:
                raise DataError(f"Cannot list {root / split / cls}: {err.strerror or err}.") from None
            if not images:
                empty.append(f"{split}/{cls}/")
            for file_name, stat in images:
                relative = f"{split}/{cls}/{file_name}"
                files[split].append((relative, label))
                digest.update(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    if empty:
        raise DataError(
            f"{name}: {len(empty)} class folders in {root}/ hold no .png/.jpg/.jpeg images: {_listing(empty)}. "
            "Every class needs images in both train/ and test/."
        )
    rng = np.random.default_rng(0)
    files = {split: [entries[i] for i in rng.permutation(len(entries))] for split, entries in files.items()}
    return files, digest.hexdigest()


class _UnsupportedMode(ValueError):
    pass


def _decode(path: Path) -> np.ndarray:
    """One image as uint8 [H, W] (grey) or [H, W, 3] (colour)."""
    with Image.open(path) as image:
        if image.mode in GREY_MODES:
            return np.asarray(image.convert("L"))
        if image.mode in COLOUR_MODES:
            return np.asarray(image.convert("RGB"))
        raise _UnsupportedMode(f"pixel mode {image.mode!r} is not supported (use 8-bit grey or colour images)")


def _decode_all(
    root: Path, files: dict[str, list[tuple[str, int]]], name: str, progress: bool
) -> dict[str, np.ndarray]:
    """Decode every image; uint8 [N, C, H, W] per split. Collects every unreadable file before failing."""
    relatives = [relative for split in SPLITS for relative, _ in files[split]]
    decoded: list[np.ndarray] = []
    unreadable: list[str] = []
    for relative in tqdm(relatives, desc=f"decoding {root.name}", unit="img", disable=not progress):
        try:
            decoded.append(_decode(root / relative))
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            reason = str(err).replace(f" {str(root / relative)!r}", "") or type(err).__name__
            unreadable.append(f"{relative}: {reason}")
    if unreadable:
        shown = "".join(f"\n  - {line}" for line in unreadable[:SHOW_FILES])
        more = f"\n  ... and {len(unreadable) - SHOW_FILES} more" if len(unreadable) > SHOW_FILES else ""
        raise DataError(
            f"{name}: {len(unreadable)} of {len(relatives)} images in {root}/ could not be read:{shown}{more}\n"
            "To fix: replace or remove these files (fflab never skips images silently)."
        )
    sizes = [image.shape[:2] for image in decoded]
    differ = [i for i, size in enumerate(sizes) if size != sizes[0]]
    if differ:
        (h0, w0), (h, w) = sizes[0], sizes[differ[0]]
        raise DataError(
            f"{name}: the images in {root}/ differ in size: {relatives[0]} is {w0}x{h0} but {relatives[differ[0]]} "
            f"is {w}x{h} ({len(differ)} of {len(relatives)} images differ from {w0}x{h0}). All images must have "
            "the same size: resize them first."
        )
    if any(image.ndim == 3 for image in decoded):  # colour set: grey images become RGB (as Pillow's L -> RGB)
        decoded = [np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image for image in decoded]
    pixels = np.stack(decoded)
    pixels = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
    count = len(files["train"])
    return {"train_x": np.ascontiguousarray(pixels[:count]), "test_x": np.ascontiguousarray(pixels[count:])}


CACHED = ("key", "class_names", "train_x", "train_y", "test_x", "test_y")


def _read_cache(path: Path, key: str, root: Path) -> ImageArrays | None:
    """The cached folder if `path` holds a sound cache for `key`; None if absent, with a warning if damaged."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:  # zip CRCs catch flipped bits in the arrays
            a = {field: npz[field] for field in CACHED}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        warnings.warn(f"damaged image cache {path} ({err}); decoding the images again", stacklevel=4)
        return None
    classes = tuple(str(c) for c in a["class_names"].ravel())
    sound = str(a["key"]) == key and a["train_x"].shape[1:] == a["test_x"].shape[1:]
    for split in SPLITS:
        x, y = a[f"{split}_x"], a[f"{split}_y"]
        sound = sound and x.dtype == np.uint8 and x.ndim == 4 and y.dtype == np.int64 and y.shape == x.shape[:1]
        sound = sound and (y.size == 0 or 0 <= y.min() <= y.max() < len(classes))
    if not sound:
        warnings.warn(f"image cache {path} is damaged or stale; decoding the images again", stacklevel=4)
        return None
    return ImageArrays(root, classes, a["train_x"], a["train_y"], a["test_x"], a["test_y"])


def _write_cache(path: Path, key: str, arrays: ImageArrays) -> None:
    """Write the cache atomically and drop older caches of the same folder; a failure only costs speed."""
    try:
        with atomic_file(path) as file:
            fields = {field: getattr(arrays, field) for field in CACHED[2:]}
            np.savez(file, key=np.array(key), class_names=np.array(arrays.class_names), **fields)
        prefix = path.name.split("-")[0]
        for old in path.parent.glob(f"{prefix}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as err:
        warnings.warn(f"could not cache decoded images: {describe_os_error(err)}", stacklevel=4)


def read_image_folder(
    root: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    name: str = "image-folder",
    progress: bool = True,
    content_key: str | None = None,
) -> ImageArrays:
    """Read `root/{train,test}/<class>/*` into uint8 arrays, from the cache when it is current.

    The cache lives in `cache_dir` (default: `<cache dir>/image-folder`, see `resolve_cache_dir`) and is keyed
    by the relative path, size and mtime of every image. `content_key`, if given, already identifies the
    folder's content (e.g. the tar it was unpacked from) and replaces that per-file fingerprint, so a cached
    load does not even list the folder. `classes` fixes the class order (the folders must be exactly these);
    by default the sorted folder names. Within a split, images are ordered by class, then file name. `name`
    prefixes error messages.
    """
    root = Path(root).expanduser().absolute()
    if not _has_splits(root):
        raise DataError(f"{name}: {root} is not an image folder; expected {LAYOUT.replace('ROOT', str(root))}.")
    cache_dir = Path(cache_dir or resolve_cache_dir() / "image-folder")
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    if content_key is not None:
        key = hashlib.sha256(f"v{CACHE_VERSION}\n{classes!r}\n{content_key}".encode()).hexdigest()
        cached = _read_cache(cache_dir / f"{tag}-{key[:24]}.npz", key, root)
        if cached is not None:
            return cached
    class_names = _class_order(root, classes, name)
    files, fingerprint = _scan(root, class_names, name)
    key = key if content_key is not None else fingerprint
    cache = cache_dir / f"{tag}-{key[:24]}.npz"
    arrays = _read_cache(cache, key, root) if content_key is None else None
    if arrays is None:
        pixels = _decode_all(root, files, name, progress)
        labels = {split: np.array([label for _, label in files[split]], dtype=np.int64) for split in SPLITS}
        arrays = ImageArrays(root, class_names, pixels["train_x"], labels["train"], pixels["test_x"], labels["test"])
        _write_cache(cache, key, arrays)
    return arrays


def _check_members(tar_path: Path, members: list[tarfile.TarInfo]) -> None:
    """Only folders and regular files under relative paths without '..' are unpacked; anything else is refused."""
    bad = []
    for member in members:
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            bad.append(f"{member.name} (absolute path or '..')")
        elif not (member.isfile() or member.isdir()):
            bad.append(f"{member.name} (a link or special file)")
    if bad:
        raise DataError(
            f"{tar_path} holds {len(bad)} members fflab will not unpack: {_listing(bad)}. A tar of an image folder "
            "must hold only folders and image files under relative paths."
        )


def _unpack(tar_path: Path, target: Path, progress: bool) -> None:
    """Unpack into a hidden folder beside `target`, then rename it into place (so `target` is always whole)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = create_beside(target, ".partial", folder=True)
    except OSError as err:
        raise DataError(
            f"Cannot create {target.parent} to unpack {tar_path}: {err.strerror or err}. Set FFLAB_CACHE to a "
            "writable folder."
        ) from None
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            _check_members(tar_path, members)
            for member in tqdm(members, desc=f"unpacking {tar_path.name}", unit="file", disable=not progress):
                tar.extract(member, partial, filter="data")
        if hasattr(os, "sync"):
            os.sync()  # every unpacked file on disk before the folder takes its name, which marks it complete
        try:
            partial.rename(target)
            flush_to_disk(target.parent)
        except OSError:
            if not target.is_dir():  # else another process unpacked the same tar first: use theirs
                raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"Cannot unpack {tar_path} into {target.parent}: {err}. If the tar is damaged or truncated, replace "
            "it; if the cache folder is full or read-only, set FFLAB_CACHE to another folder."
        ) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def tar_key(tar_path: Path) -> str:
    """Identifies a tar's content cheaply: its resolved path, size and mtime (a replaced tar gets a new key)."""
    try:
        stat = tar_path.stat()
    except OSError as err:
        raise DataError(f"Cannot read {tar_path}: {err.strerror or err}.") from None
    return hashlib.sha256(f"{tar_path.resolve()}\n{stat.st_size}\n{stat.st_mtime_ns}".encode()).hexdigest()


def unpack_image_tar(
    tar_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *, progress: bool = True
) -> Path:
    """Unpack a tar of an image folder once into `cache_dir` (default: `<cache dir>/unpacked`); return the
    folder holding its train/ and test/.

    The unpacked copy is keyed by the tar's path, size and mtime, so a replaced tar is unpacked afresh. Members
    with absolute paths, '..' or links are refused, and extraction uses tarfile's "data" filter.
    """
    tar_path = Path(tar_path).expanduser().absolute()
    tag = tar_key(tar_path)[:16]
    target = Path(cache_dir or resolve_cache_dir() / "unpacked") / f"{tar_path.name.removesuffix('.tar')}-{tag}"
    if not target.is_dir():
        _unpack(tar_path, target, progress)
    root = find_split_root(target)
    if root is None:
        top = sorted(p.name for p in target.iterdir())
        raise DataError(
            f"{tar_path} holds no image folder: expected train/ and test/ at its top level or one folder down "
            f"(e.g. cifar10-jpeg/train/<class>/*.jpg); its top level holds: {_listing(top) or '(nothing)'}."
        )
    return root


def uint8_dataset(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    class_names: tuple[str, ...],
) -> Dataset:
    """uint8 images [N, C, H, W] -> a Dataset with float32 pixels in [0, 1] and int64 labels."""

    def scale(pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.divide(pixels, 255, dtype=np.float32))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64, copy=False))

    return Dataset(name, scale(train_x), labels(train_y), scale(test_x), labels(test_y), len(class_names), class_names)


def _locate_root(name: str, path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser().absolute()
    root = find_split_root(folder)
    if root is None:
        raise DataError(
            f"{name}: {folder} holds no image folder; expected {LAYOUT.replace('ROOT', str(folder))} "
            "(train/ and test/ may also be one folder down)."
        )
    return root


def image_folder_dataset(name: str, path: str | os.PathLike, *, progress: bool = True) -> Dataset:
    """The 'image-folder' data set at `path` (train/ and test/ in it, or one folder down)."""
    arrays = read_image_folder(_locate_root(name, path), name=name, progress=progress)
    return uint8_dataset(name, arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y, arrays.class_names)


def describe_splits(arrays: ImageArrays) -> list[tuple[Path, bool, str]]:
    """One (folder, ok, detail) per split of a decoded image folder, for `verify_dataset`."""
    checks = []
    for split in SPLITS:
        x, y = getattr(arrays, f"{split}_x"), getattr(arrays, f"{split}_y")
        counts = np.bincount(y, minlength=len(arrays.class_names))
        shape = "x".join(str(d) for d in x.shape[1:])
        detail = f"{len(x)} images {shape} in {len(arrays.class_names)} classes, {counts.min()}..{counts.max()} each"
        checks.append((arrays.root / split, True, detail))
    return checks


def describe_image_folder(name: str, path: str | os.PathLike) -> list[tuple[Path, bool, str]]:
    """Check an image folder as a load would (decoding it, or reading its current cache)."""
    try:
        return describe_splits(read_image_folder(_locate_root(name, path), name=name, progress=False))
    except DataError as err:
        return [(Path(path).expanduser().absolute(), False, str(err))]
