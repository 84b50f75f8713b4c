"""Where data sets live on disk, and the messages that tell a user where to put missing files."""

from __future__ import annotations

import os
from pathlib import Path

from fflab.data.registry import DatasetSpec, FileSpec
from fflab.errors import DataError


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: `data_dir` if given, else $FFLAB_DATA, else the user cache ($XDG_CACHE_HOME/fflab or
    ~/.cache/fflab). Each named data set lives in its own sub-folder `<root>/<name>/`."""
    if data_dir is not None and str(data_dir):
        root = Path(data_dir)
    elif os.environ.get("FFLAB_DATA"):
        root = Path(os.environ["FFLAB_DATA"])
    else:
        root = user_cache_dir()
    return root.expanduser().absolute()


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/fflab, or ~/.cache/fflab (the XDG spec says relative values must be ignored)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "fflab"


def resolve_cache_dir() -> Path:
    """Where fflab writes what it derives (e.g. moving-MNIST trajectories): $FFLAB_CACHE, else the user cache.

    Kept apart from the data directory, which may be shared and read-only.
    """
    root = Path(os.environ["FFLAB_CACHE"]) if os.environ.get("FFLAB_CACHE") else user_cache_dir()
    return root.expanduser().absolute()


def dataset_folder(spec: DatasetSpec, data_dir: str | os.PathLike | None, path: str | os.PathLike | None) -> Path:
    """The folder holding a set's files: `path` itself if given, else `<data root>/<name>`."""
    if path is not None and str(path):
        return Path(path).expanduser().absolute()
    return resolve_data_dir(data_dir) / spec.name


def find_file(folder: Path, file: FileSpec) -> Path | None:
    """The first accepted name of `file` present in `folder` (gzip preferred over raw), or None."""
    for name in file.candidates:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _accepted_names(file: FileSpec) -> str:
    stem = file.name.removesuffix(".gz")
    return f"{stem}.gz (or uncompressed {stem})"


def missing_message(spec: DatasetSpec, folder: Path, missing: list[FileSpec]) -> str:
    """Say which files are missing from which folder and how to get them there."""
    lines = [f"Data set {spec.name!r}: {len(missing)} of {len(spec.files)} files missing in {folder}/:"]
    lines += [f"  - {_accepted_names(file)}" for file in missing]
    if spec.kind == "download":
        lines.append(
            f"To fix: run `fflab data download {spec.name}` (needs internet), or download these files "
            f"yourself from {spec.mirrors[0]} and place them in {folder}/. To keep data elsewhere, set "
            f"FFLAB_DATA to a folder holding {spec.name}/."
        )
    else:
        lines.append(
            f"To fix: place your MNIST-format IDX files in {folder}/ under these names (test-* may replace t10k-*)."
        )
    return "\n".join(lines)


def repair_hint(spec: DatasetSpec, folder: Path) -> str:
    """How to repair files that are present but fail verification."""
    if spec.kind == "download":
        return (
            f"To fix: delete the damaged files and run `fflab data download {spec.name}`, or place intact "
            f"official files (from {spec.mirrors[0]}) in {folder}/."
        )
    return f"To fix: replace the damaged files in {folder}/ with valid MNIST-format IDX files."


def require_path(spec: DatasetSpec, path: str | os.PathLike | None) -> None:
    """A "folder" data set ('idx', 'image-folder') has no default location: its folder must be given."""
    if (path is None or not str(path)) and spec.reader == "images":
        raise DataError(
            f"Data set {spec.name!r} reads your own folder of images, but no path was given. Give it (`--path ROOT` to "
            "`fflab data`, `--set data.path=ROOT` to `fflab train`, `path=ROOT` from Python): ROOT is the "
            "folder holding train/<class>/*.png|jpg|jpeg and test/<class>/... (the same class folders in both)."
        )
    if path is None or not str(path):
        names = ", ".join(f"{file.name}[.gz]" for file in spec.files)
        raise DataError(
            f"Data set {spec.name!r} reads your own folder of MNIST-format files, but no path was given. "
            "Give it (`--path FOLDER` to `fflab data`, `--set data.path=FOLDER` to `fflab train`, `path=FOLDER` from "
            f"Python): FOLDER is the folder holding {names} (test-* may replace t10k-*)."
        )
