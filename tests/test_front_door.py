"""The README's main command: `./scripts/demo` trains on the offline digits and ends by classifying a saved image."""

import re
import shutil
import subprocess

import pytest
from repo import REPO


@pytest.mark.slow
def test_the_demo_trains_then_classifies_a_png_of_a_test_digit():
    done = subprocess.run(
        [str(REPO / "scripts" / "demo"), "--set", "train.epochs=2"], cwd=REPO, capture_output=True, text=True
    )
    run = re.search(r"-> (runs/demo-\d{8}-\d{6})$", done.stdout, re.M)
    try:
        assert done.returncode == 0, done.stderr[-2000:]
        assert run and (REPO / run.group(1) / "digit.png").is_file()
        label = re.search(r"digit\.png: a test image, a (\d);", done.stdout)
        last = done.stdout.strip().splitlines()[-1]
        # the prediction line: the file, then three (class, probability) pairs, most probable first
        fields = last.split()
        assert label and fields[0] == f"{run.group(1)}/digit.png" and len(fields) == 7
        probabilities = [float(p) for p in fields[2::2]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    finally:
        if run:
            shutil.rmtree(REPO / run.group(1), ignore_errors=True)


def test_the_demo_refuses_an_out_of_its_own():
    done = subprocess.run([str(REPO / "scripts" / "demo"), "--out", "x"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "--out is chosen by the demo" in done.stderr
