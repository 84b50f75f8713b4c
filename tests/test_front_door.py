"""The README's main command: `./scripts/demo` trains on the offline digits and ends by classifying a saved image."""

import re
import shutil
import subprocess

import pytest
from repo import REPO


def demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "scripts" / "demo"), *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture
def new_demo_runs():
    """The run directories a test's demo makes under runs/, removed afterwards (runs/ too, if it made that)."""
    runs = REPO / "runs"
    had_runs, before = runs.is_dir(), set(runs.glob("demo-*"))

    def made() -> set:
        return set(runs.glob("demo-*")) - before

    yield made
    for path in made():
        shutil.rmtree(path, ignore_errors=True)
    if not had_runs and runs.is_dir() and not any(runs.iterdir()):
        runs.rmdir()


@pytest.mark.slow
def test_the_demo_trains_then_classifies_a_png_of_a_test_digit(new_demo_runs):
    done = demo("--set", "train.epochs=2")
    assert done.returncode == 0, done.stderr[-2000:]
    run = re.search(r"-> (runs/demo-\d{8}-\d{6})$", done.stdout, re.M)
    assert run and new_demo_runs() == {REPO / run.group(1)} and (REPO / run.group(1) / "digit.png").is_file()
    label = re.search(r"digit\.png: a test image, a (\d);", done.stdout)
    # the prediction line: the file, then three (class, probability) pairs, most probable first
    fields = done.stdout.strip().splitlines()[-1].split()
    assert label and fields[0] == f"{run.group(1)}/digit.png" and len(fields) == 7
    probabilities = [float(p) for p in fields[2::2]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


@pytest.mark.parametrize("out", [["--out", "x"], ["--out=x"], ["--o", "x"]])
def test_the_demo_refuses_an_out_of_its_own(out, new_demo_runs):
    done = demo(*out)
    assert done.returncode == 2 and "--out is chosen by the demo" in done.stderr
    assert not new_demo_runs() and not (REPO / "x").exists()


def test_the_demo_with_help_prints_trains_help_and_stops_cleanly(new_demo_runs):
    done = demo("--help")
    assert done.returncode == 0 and "usage: fflab train" in done.stdout and "Traceback" not in done.stderr
