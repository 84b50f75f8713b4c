"""`fflab data list | download | verify` from the command line."""

import shutil
from pathlib import Path

import pytest
from localhttp import serve

from fflab.cli import main


@pytest.fixture
def shared_mnist(real_data) -> Path:
    return real_data("mnist") / "mnist"


def test_list_names_every_data_set_and_the_data_dir(tmp_path, capsys):
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out
    for name in ("digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "idx", "image-folder"):
        assert f"  {name} " in out


def test_verify_reports_ok_then_failure(shared_mnist, tmp_path, capsys):
    assert main(["data", "verify", "mnist", "--data-dir", str(shared_mnist.parent)]) == 0
    assert capsys.readouterr().out.count("ok  ") == 4
    copy = tmp_path / "mnist"
    shutil.copytree(shared_mnist, copy)
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    assert main(["data", "verify", "mnist", "--data-dir", str(tmp_path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_download_from_a_local_mirror(shared_mnist, tmp_path, monkeypatch, capsys):
    target = tmp_path / "data"
    # train-images in ../shared was re-compressed (its gzip md5 is not the official one), so it is
    # copied in by hand; the three byte-identical official files come from the local mirror.
    (target / "mnist").mkdir(parents=True)
    shutil.copy(shared_mnist / "train-images-idx3-ubyte.gz", target / "mnist")
    with serve(shared_mnist) as url:
        monkeypatch.setenv("FFLAB_MIRROR", url)
        assert main(["data", "download", "mnist", "--data-dir", str(target), "--no-progress"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["data", "verify", "mnist", "--data-dir", str(target)]) == 0


def test_downloading_a_data_set_that_ships_with_a_dependency_says_so(capsys):
    assert main(["data", "download", "digits", "--no-progress"]) == 0
    assert capsys.readouterr().out == "digits: nothing to download, it comes with fflab's dependencies\n"


def test_unknown_data_set_is_a_clear_error(capsys):
    assert main(["data", "verify", "cifar-1000"]) == 2
    err = capsys.readouterr().err
    assert "cifar-1000" in err and "Traceback" not in err
