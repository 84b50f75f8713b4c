"""Downloads against a local HTTP server: md5-verified, atomic, falling through mirrors."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from pathlib import Path

import pytest
from localhttp import QuietHandler, serve

import fflab.data.download as download_module
from fflab.data import download_dataset, get_spec, load_dataset, verify_dataset
from fflab.data.download import download_file, mirror_list
from fflab.data.registry import FileSpec
from fflab.errors import DataError

REFUSED = "http://127.0.0.1:1/"  # nothing listens on port 1: connection refused at once


class CutHandler(QuietHandler):
    """Announces the whole file (unless `send_length` is off), sends half of it, then hangs up."""

    send_length = True

    def do_GET(self) -> None:
        content = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        if self.send_length:
            self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content[: len(content) // 2])
        self.close_connection = True


class CutWithoutLength(CutHandler):
    send_length = False


@pytest.fixture
def mnist_dir(real_data) -> Path:
    return real_data("mnist") / "mnist"


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, FileSpec]:
    """A small file to serve and its spec (md5 known)."""
    served = tmp_path / "served"
    served.mkdir()
    content = gzip.compress(os.urandom(200_000))
    (served / "blob.gz").write_bytes(content)
    return served, FileSpec("blob.gz", "images", md5=hashlib.md5(content).hexdigest())


def listing(folder: Path) -> list[str]:
    """Every entry of `folder`, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_official_files_verify_and_a_mismatching_one_leaves_nothing(mnist_dir: Path, tmp_path: Path) -> None:
    with serve(mnist_dir) as url:
        with pytest.raises(DataError) as err:
            download_dataset("mnist", tmp_path, mirrors=[url], progress=False)
    folder = tmp_path / "mnist"
    # The shared train-images.gz was re-compressed: its md5 is not the official one, so it must not land.
    assert listing(folder) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    message = str(err.value)
    assert f"{url}train-images-idx3-ubyte.gz" in message and "expected the official f68b3c2dcbeaaa9f" in message
    assert f"place them in {folder}/: train-images-idx3-ubyte.gz" in message
    for file in get_spec("mnist").files[1:]:
        assert hashlib.md5((folder / file.name).read_bytes()).hexdigest() == file.md5
    checks = verify_dataset("mnist", tmp_path)
    assert [c.ok for c in checks] == [False, True, True, True] and "missing" in checks[0].detail


def test_missing_files_are_fetched_from_fflab_mirror_on_load(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(mnist_dir / name)
    with serve(mnist_dir) as url:
        monkeypatch.setenv("FFLAB_MIRROR", url)
        data = load_dataset("mnist", data_dir=tmp_path, progress=True)
    assert data.test_x.shape == (10000, 1, 28, 28)
    assert len(listing(folder)) == 4
    assert "t10k-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar was drawn


@pytest.mark.parametrize("handler", [CutHandler, CutWithoutLength])
def test_cut_connection_leaves_nothing(blob: tuple[Path, FileSpec], tmp_path: Path, handler: type) -> None:
    served, spec = blob
    dest = tmp_path / "dest"
    with serve(served, handler) as url, pytest.raises(DataError) as err:
        download_file(spec, dest, [url], progress=True)
    expected = "connection closed after 1" if handler.send_length else "md5 of the downloaded file is"
    assert expected in str(err.value) and f"{url}blob.gz" in str(err.value)
    assert listing(dest) == []


def test_falls_through_to_a_working_mirror(blob: tuple[Path, FileSpec], tmp_path: Path) -> None:
    served, spec = blob
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = tmp_path / "dest"
    with serve(served, CutHandler) as cut, serve(empty) as not_found, serve(served) as good:
        path = download_file(spec, dest, [REFUSED, cut, not_found, good], progress=False)
    assert path == dest / "blob.gz" and listing(dest) == ["blob.gz"]
    assert path.read_bytes() == (served / "blob.gz").read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # readable by others, as a plain write would be


def test_every_mirror_failing_lists_urls_and_errors(blob: tuple[Path, FileSpec], tmp_path: Path) -> None:
    served, spec = blob
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = tmp_path / "dest"
    with serve(empty) as not_found:
        with pytest.raises(DataError) as err:
            download_file(spec, dest, [REFUSED, not_found], progress=False)
    message = str(err.value)
    assert f"Could not download blob.gz into {dest}/" in message
    assert f"{REFUSED}blob.gz: " in message and "Connection refused" in message
    assert f"{not_found}blob.gz: HTTP Error 404" in message
    assert listing(dest) == []


def test_interrupted_download_leaves_no_temporary_file(
    blob: tuple[Path, FileSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class InterruptedBar(download_module.tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            raise KeyboardInterrupt

    served, spec = blob
    dest = tmp_path / "dest"
    monkeypatch.setattr(download_module, "tqdm", InterruptedBar)
    with serve(served) as url, pytest.raises(KeyboardInterrupt):
        download_file(spec, dest, [url], progress=False)
    assert listing(dest) == []


def test_mirror_order(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_spec("mnist")
    monkeypatch.delenv("FFLAB_MIRROR", raising=False)
    assert mirror_list(spec) == list(spec.mirrors)
    monkeypatch.setenv("FFLAB_MIRROR", "http://a/, http://b/")
    assert mirror_list(spec) == ["http://a/", "http://b/", *spec.mirrors]
    assert mirror_list(spec, ["http://only/"]) == ["http://only/"]


def test_sets_without_downloads(tmp_path: Path) -> None:
    assert download_dataset("digits", tmp_path) == []
    with pytest.raises(DataError, match="nothing to download"):
        download_dataset("idx", tmp_path)
