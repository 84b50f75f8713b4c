"""IDX reader: round trips and every kind of damaged file gives a DataError that names the file."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fflab.data import read_idx
from fflab.data.idx import check_images, check_labels, check_pair
from fflab.errors import DataError


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """Encode `array` as an IDX payload (big-endian, as the format requires)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_ubyte(tmp_path: Path, compress: bool) -> None:
    payload = idx_bytes(IMAGES)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    array = read_idx(path)
    assert array.dtype == np.uint8 and array.shape == (2, 3, 4)
    np.testing.assert_array_equal(array, IMAGES)


@pytest.mark.parametrize(
    ("code", "dtype"),
    [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_round_trip_other_types_in_native_byte_order(tmp_path: Path, code: int, dtype: type) -> None:
    values = np.array([[-3, 0, 7], [100, -100, 5]], dtype=dtype)
    path = tmp_path / "values.idx"
    path.write_bytes(idx_bytes(values, code))
    array = read_idx(path)
    assert array.dtype == np.dtype(dtype) and array.dtype.isnative
    np.testing.assert_array_equal(array, values)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    gz_without_suffix = tmp_path / "plain-name"
    gz_without_suffix.write_bytes(gzip.compress(idx_bytes(IMAGES)))
    raw_with_suffix = tmp_path / "raw-name.gz"
    raw_with_suffix.write_bytes(idx_bytes(IMAGES))
    np.testing.assert_array_equal(read_idx(gz_without_suffix), IMAGES)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), IMAGES)


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_data_names_expected_and_actual_bytes(tmp_path: Path, compress: bool) -> None:
    payload = idx_bytes(IMAGES)[:-5]
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message and "truncated" in message
    assert f"needs {len(payload) + 5} bytes" in message and f"holds {len(payload)}" in message
    assert "(2, 3, 4)" in message


def test_trailing_bytes_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "long-idx3-ubyte"
    path.write_bytes(idx_bytes(IMAGES) + b"\x00\x01")
    with pytest.raises(DataError, match="trailing bytes") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message and "not an IDX file" in message and "0x00 0x00" in message


def test_unknown_type_code(tmp_path: Path) -> None:
    path = tmp_path / "odd"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 2) + b"ab")
    with pytest.raises(DataError, match=r"unknown IDX type code 0x07.*0x08 = ubyte"):
        read_idx(path)


def test_header_shorter_than_its_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "cut-header"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2))
    with pytest.raises(DataError, match=r"truncated inside its header: 3 dimensions need 16 bytes, found 8"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00", bytes([0, 0, 0x08, 0])])
def test_too_short_or_zero_dimensions(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(content)
    with pytest.raises(DataError, match="too short|0 dimensions"):
        read_idx(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.arange(4000, dtype=np.uint8) % 7))
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    cases = {"flipped": bytes(damaged), "cut": good[: len(good) // 2], "trailer": good[:-4] + b"XXXX"}
    for name, content in cases.items():
        path = tmp_path / f"{name}.gz"
        path.write_bytes(content)
        with pytest.raises(DataError) as err:
            read_idx(path)
        message = str(err.value)
        assert str(path) in message and "corrupt or truncated gzip" in message, name


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Cannot read .*nowhere"):
        read_idx(tmp_path / "nowhere")


def test_images_must_be_3d_ubyte_and_non_empty() -> None:
    with pytest.raises(DataError, match=r"shape \(6, 4\); image files must have 3 dimensions"):
        check_images(IMAGES.reshape(6, 4), "x-images")
    with pytest.raises(DataError, match="ubyte pixels"):
        check_images(IMAGES.astype(np.int32), "x-images")
    with pytest.raises(DataError, match="no images"):
        check_images(np.zeros((0, 3, 4), np.uint8), "x-images")


def test_labels_range_and_dims() -> None:
    check_labels(np.array([0, 9, 3], np.uint8), "y", 10)
    with pytest.raises(DataError, match=r"y holds label 10 at index 1; this data set has 10 classes \(0..9\)"):
        check_labels(np.array([0, 10, 3, 12], np.uint8), "y", 10)
    with pytest.raises(DataError, match=r"negative label \(-1\) at index 1"):
        check_labels(np.array([0, -1], np.int8), "y")
    with pytest.raises(DataError, match="1 dimension"):
        check_labels(np.zeros((2, 2), np.uint8), "y")
    with pytest.raises(DataError, match="integers"):
        check_labels(np.zeros(2, np.float32), "y")


def test_count_mismatch_names_both_files() -> None:
    with pytest.raises(DataError) as err:
        check_pair(IMAGES, np.zeros(3, np.uint8), "a/train-images", "a/train-labels")
    message = str(err.value)
    assert "a/train-images holds 2 images" in message and "a/train-labels holds 3 labels" in message
