"""Verified, atomic downloads of the official data files.

Each file is streamed to a hidden temporary file in its destination folder, its md5 is compared with the
official one, and only then is it renamed into place (`os.replace` is atomic on one file system). A
failed, interrupted or mismatching download leaves nothing behind; one this disk refuses (no space, no
permission) is a WriteError naming the file and the cause.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from http.client import HTTPException
from pathlib import Path
from urllib.request import Request, urlopen

from tqdm import tqdm

from fflab import __version__
from fflab.data.paths import dataset_folder, find_file
from fflab.data.registry import DatasetSpec, FileSpec, get_spec
from fflab.errors import DataError, WriteError
from fflab.io import atomic_file

MIRROR_ENV = "FFLAB_MIRROR"
CHUNK_BYTES = 1 << 16
TIMEOUT_S = 30.0


def mirror_list(spec: DatasetSpec, mirrors: Sequence[str] | None = None) -> list[str]:
    """Base URLs to try in order: `mirrors` if given, else those in $FFLAB_MIRROR (comma or space separated)
    followed by the official ones."""
    if mirrors is not None:
        return list(mirrors)
    extra = [url for url in re.split(r"[,\s]+", os.environ.get(MIRROR_ENV, "")) if url]
    return extra + list(spec.mirrors)


def _fetch(url: str, dest: Path, md5: str, progress: bool) -> None:
    """Stream `url` into a temporary file next to `dest`, check its size and md5, then move it into place.
    A refused write (disk full, read-only folder) is a WriteError naming `dest`: no other mirror would help."""
    with (
        atomic_file(dest) as out,
        urlopen(Request(url, headers={"User-Agent": f"fflab/{__version__}"}), timeout=TIMEOUT_S) as response,
    ):
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=dest.name,
            disable=not progress,
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise DataError(f"connection closed after {received} of {total} bytes")
        if digest.hexdigest() != md5:
            raise DataError(f"md5 of the downloaded file is {digest.hexdigest()}, expected the official {md5}")


def download_file(file: FileSpec, folder: Path, mirrors: Sequence[str], *, progress: bool = True) -> Path:
    """Download one official file into `folder`, trying each mirror in turn; DataError if all fail."""
    if file.md5 is None:
        raise DataError(f"{file.name} has no official checksum, so fflab does not download it.")
    dest = folder / file.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Cannot create the data folder {folder}: {err.strerror or err}. Choose another "
            "with FFLAB_DATA or data_dir."
        ) from None
    failures = []
    for base in mirrors:
        url = f"{base.rstrip('/')}/{file.name}"
        try:
            _fetch(url, dest, file.md5, progress)
        except WriteError:
            raise  # this disk refused it: every mirror would fail the same way
        except (DataError, OSError, HTTPException, ValueError) as err:
            failures.append(f"    {url}: {err}")
        else:
            return dest
    tried = "\n".join(failures) or "    (no mirrors configured)"
    raise DataError(f"Could not download {file.name} into {folder}/; tried:\n{tried}")


def download_missing(
    spec: DatasetSpec, folder: Path, *, progress: bool = True, mirrors: Sequence[str] | None = None
) -> list[Path]:
    """Download every file of `spec` not yet in `folder`; return the paths of all its files.

    Files already present are kept as they are (a load verifies them). Every missing file is attempted
    before failing, so one bad file does not stop the others.
    """
    bases = mirror_list(spec, mirrors)
    paths: list[Path] = []
    errors: list[str] = []
    failed: list[FileSpec] = []
    for file in spec.files:
        found = find_file(folder, file)
        if found is None:
            try:
                found = download_file(file, folder, bases, progress=progress)
            except DataError as err:
                errors.append(str(err))
                failed.append(file)
                continue
        paths.append(found)
    if errors:
        wanted = ", ".join(f"{file.name} (md5 {file.md5})" for file in failed)
        raise DataError(
            "\n".join(errors) + f"\nTo fix: check your connection or set {MIRROR_ENV} to a mirror that has the "
            f"files, or download them yourself and place them in {folder}/: {wanted}."
        )
    return paths


def download_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
) -> list[Path]:
    """Download the official files of a named data set into `<data_dir>/<name>/`; return their paths.

    `mirrors` replaces the mirror list ($FFLAB_MIRROR, then the official mirrors). Embedded sets need no
    download and return [].
    """
    spec = get_spec(name)
    if spec.kind == "derived":
        return download_dataset(spec.base, data_dir, progress=progress, mirrors=mirrors)
    if spec.kind == "embedded":
        return []
    if spec.kind == "folder":
        raise DataError(f"Data set {spec.name!r} is your own folder of files; there is nothing to download.")
    if spec.reader == "cifar":
        from fflab.data.cifar import download_cifar10  # imported here: fflab.data.cifar imports this module

        return download_cifar10(spec, data_dir, progress=progress, mirrors=mirrors)
    if spec.reader == "cifar100":
        from fflab.data.cifar100 import download_cifar100

        return download_cifar100(spec, data_dir, progress=progress, mirrors=mirrors)
    return download_missing(spec, dataset_folder(spec, data_dir, None), progress=progress, mirrors=mirrors)
