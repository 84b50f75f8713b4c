"""IDX reader: the MNIST file format, gzip-compressed or raw.

Every check raises `DataError` naming the file, what was found and what was expected, so a damaged
download never surfaces as a zlib/numpy traceback.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from fflab.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_payload(path: str | os.PathLike) -> bytes:
    """Return the decompressed IDX bytes of `path`; gzip is detected by its magic bytes, not the name."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"Cannot read {path}: {err.strerror or err}.") from None
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is a corrupt or truncated gzip file ({err}). Expected a complete gzip-compressed "
            "IDX file: download it again or replace it with an intact copy."
        ) from None


def parse_idx(payload: bytes, path: str | os.PathLike) -> np.ndarray:
    """Parse decompressed IDX bytes into an array (native byte order); `path` is only used in errors."""
    if len(payload) < 4:
        raise DataError(f"{path} is too short to be an IDX file: {len(payload)} bytes, the header alone is 4.")
    if payload[0] != 0 or payload[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: its magic number starts with bytes "
            f"0x{payload[0]:02x} 0x{payload[1]:02x}, "
            "expected 0x00 0x00 (MNIST-format IDX, optionally gzip-compressed)."
        )
    code, ndim = payload[2], payload[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"{path} has unknown IDX type code 0x{code:02x}; expected one of {known} (0x08 = ubyte).")
    if ndim == 0:
        raise DataError(f"{path} declares 0 dimensions in its IDX header; expected at least 1.")
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(
            f"{path} is truncated inside its header: {ndim} dimensions need {header} bytes, found {len(payload)}."
        )
    dims = tuple(int(d) for d in np.frombuffer(payload, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(payload) != expected:
        problem = "is truncated" if len(payload) < expected else "has trailing bytes after the data"
        raise DataError(
            f"{path} {problem}: its header declares shape {dims} of {dtype.name}, which needs "
            f"{expected} bytes (decompressed), but the file holds {len(payload)}. "
            "Download it again or replace it."
        )
    array = np.frombuffer(payload, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a numpy array, checking header, dimensions and size."""
    return parse_idx(read_payload(path), path)


def check_images(images: np.ndarray, path: str | os.PathLike) -> None:
    """Images must be ubyte [count, rows, cols] with at least one image."""
    if images.ndim != 3:
        raise DataError(
            f"{path} holds an array of shape {images.shape}; image files must have 3 dimensions "
            "[count, rows, cols] (IDX magic 0x00000803)."
        )
    if images.dtype != np.uint8:
        raise DataError(f"{path} holds {images.dtype} values; image files must hold ubyte pixels (type 0x08).")
    if images.shape[0] == 0:
        raise DataError(f"{path} holds no images (count 0 in its header).")


def check_labels(labels: np.ndarray, path: str | os.PathLike, num_classes: int | None = None) -> None:
    """Labels must be a 1-d integer array in [0, num_classes) (only >= 0 when num_classes is None)."""
    if labels.ndim != 1:
        raise DataError(
            f"{path} holds an array of shape {labels.shape}; label files must have 1 dimension [count] "
            "(IDX magic 0x00000801)."
        )
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path} holds {labels.dtype} values; label files must hold integers.")
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        index = int(np.argmax(labels < 0))
        raise DataError(
            f"{path} holds a negative label ({int(labels[index])}) at index {index}; labels must be class indices >= 0."
        )
    if num_classes is not None and high >= num_classes:
        index = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{path} holds label {int(labels[index])} at index {index}; this data set has {num_classes} classes "
            f"(0..{num_classes - 1})."
        )


def check_pair(
    images: np.ndarray, labels: np.ndarray, images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> None:
    """An image file and its label file must describe the same number of samples."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels; "
            "they must agree. The two files probably come from different data sets or splits: "
            "replace them with a matching pair."
        )
