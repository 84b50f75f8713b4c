"""Results as data: the records under benchmarks/results/, results.csv and the generated results tables."""

import importlib.util
import json
import shutil
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from repo import REPO


def load(name):
    """benchmarks/<name>.py as module `name`, without putting benchmarks/ on sys.path for the other tests."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


records = load("records")  # before results, which imports it
results = load("results")


def test_results_csv_benchmarks_and_readme_are_current_with_the_records(capsys):
    status = results.main(["--check"])
    assert status == 0, capsys.readouterr().err + "(regenerate with: python benchmarks/results.py)"


@pytest.fixture
def copy(tmp_path):
    """The records, published figures, results.csv, BENCHMARKS.md and README.md, copied to tmp_path."""
    shutil.copytree(REPO / "benchmarks" / "results", tmp_path / "results")
    for name in ("benchmarks/results.csv", "benchmarks/published.toml", "BENCHMARKS.md", "README.md"):
        shutil.copy(REPO / name, tmp_path / name.split("/")[-1])
    return tmp_path


def run(copy, *flags):
    args = ["--results", copy / "results", "--published", copy / "published.toml"]
    args += ["--benchmarks", copy / "BENCHMARKS.md", "--readme", copy / "README.md"]
    return results.main([*map(str, args), *flags])


def test_a_new_record_makes_the_check_fail_until_the_tables_are_regenerated(copy, capsys):
    assert run(copy, "--check") == 0
    seed4 = json.loads((copy / "results/imported/mnist-recurrent-seed4.json").read_text())
    seed8 = {**seed4, "seed": 8, "imported": False, "source": None, "date": "2026-12-07T10:00:00Z"}
    seed8["overrides"] = [*seed4["overrides"][:-1], "train.seed=8"]
    seed8["metrics"] = {"test_accuracy": 0.9866, "test_accuracy_by_method": {"goodness": 0.9866}}
    (copy / "results" / records.record_name(seed8)).write_text(json.dumps(seed8))
    before = {name: (copy / name).read_text() for name in ("BENCHMARKS.md", "README.md")}

    assert run(copy, "--check") == 1
    stale = capsys.readouterr().err
    assert "results.csv is out of date" in stale and "BENCHMARKS.md is out of date" in stale
    assert "README.md" not in stale  # the new seed is in no row the README shows (seeds 4-7), only all eight seeds

    assert run(copy) == 0 and run(copy, "--check") == 0
    benchmarks = (copy / "BENCHMARKS.md").read_text()
    assert "| 9 runs, seeds 0-8; 8 imported |" in benchmarks
    head, tail = before["BENCHMARKS.md"].split(results.BEGIN)[0], before["BENCHMARKS.md"].split(results.END)[1]
    assert benchmarks.startswith(head) and benchmarks.endswith(tail)  # nothing outside the markers moved


def test_the_check_names_a_hand_edited_table(copy, capsys):
    text = (copy / "README.md").read_text()
    (copy / "README.md").write_text(text.replace("98.725%", "98.80%", 1))
    assert run(copy, "--check") == 1
    assert "README.md is out of date" in capsys.readouterr().err


def test_every_headline_row_names_a_shipped_config_and_has_a_record():
    published = results.load_published()
    own = [row for row in published["row"] if "config_file" not in row]
    assert {row["config"] for row in own} <= {path.stem for path in (REPO / "configs").glob("*.toml")}
    measured = {row["config"] for row in own if not row.get("pending")}
    assert len(measured) == 21  # every config shipped when the tables began has a headline figure
    table = results.csv_text(records.load_records())
    csv_rows = list(results.csv.DictReader(results.io.StringIO(table)))
    for row, summary in results.summaries(published, csv_rows):
        if "config_file" in row:  # a reference preset (configs/reference/), whose long run may not have been made
            assert (REPO / row["config_file"]).is_file() and Path(row["config_file"]).stem == row["config"]
            continue
        if row.get("pending"):  # a long run not made yet: it must not pose as measured
            assert summary["n"] == 0, f"{row['config']} is pending but has a record: drop `pending`"
            assert row.get("readme") is False, f"{row['config']} is pending: keep it out of the README (readme = false)"
            continue
        assert summary["n"] > 0, f"no record for {row['config']} {row.get('label', '')}"


def test_headline_rows_average_the_records_they_name():
    published = results.load_published()
    csv_rows = list(results.csv.DictReader(results.io.StringIO(results.csv_text(records.load_records()))))
    by_config = {}
    for row, summary in results.summaries(published, csv_rows):
        by_config.setdefault(row["config"], []).append(summary)
    recurrent = by_config["mnist-recurrent"][0]  # registered seeds 4-7, by goodness: 98.78, 98.55, 98.75, 98.82
    assert recurrent["seeds"] == [4, 5, 6, 7] and recurrent["mean"] == Decimal("98.725") and recurrent["met"]
    assert recurrent["sd"] == Decimal("0.12") and recurrent["imported"] == 4
    assert by_config["mnist-recurrent"][1]["mean"] == Decimal("98.645")  # seeds 0-3 by readout
    conv = by_config["mnist-conv"][0]  # five pre-registered seeds
    assert conv["seeds"] == [0, 1, 2, 3, 4] and conv["mean"] == Decimal("99.532")
    # mnist-hinton before masking noise (the 11-22 record of the paper's schedule) is not today's config
    assert by_config["mnist-hinton"][0]["n"] == 3 and by_config["mnist-hinton"][0]["mean"] == Decimal("98.737")


def test_records_say_where_they_come_from():
    found = records.load_records()
    assert len(found) > 60
    for path, record in found:
        if record["imported"]:
            assert record["source"].startswith("BENCHMARKS.md at commit "), path
            assert path.parent.name == "imported", path
        else:
            assert record["commit"] or record.get("committed_in"), path


def test_a_training_result_outside_the_record_format_is_refused(tmp_path):
    old = {"config": "mnist-ff", "overrides": [], "epochs": 18, "test_accuracy": 0.98}  # train.py's old format
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="old.json: a training result that is not a record"):
        records.load_records(tmp_path)
    (tmp_path / "old.json").write_text(json.dumps({"format": records.FORMAT, "config": "mnist-ff"}))
    with pytest.raises(ValueError, match="old.json: missing overrides, seed, metrics"):
        records.load_records(tmp_path)
    (tmp_path / "old.json").write_text(json.dumps({"config": "speed", "train_samples_per_second": 7000}))
    assert records.load_records(tmp_path) == []  # other benchmarks' outputs are not records


def test_record_helpers(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum\n")
    assert records.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Platinum"
    assert records.cpu_model(tmp_path / "missing")  # falls back to what platform knows
    summary = {"test_accuracy": 0.9, "test_accuracy_by_method": {"goodness": 0.9}, "train_accuracy": None}
    summary |= {"epochs": 2, "threads": 1, "device": "cpu", "precision": "float32", "torch": "2", "config": "x"}
    metrics, run = records.split_summary(summary)
    assert metrics == {"test_accuracy": 0.9, "test_accuracy_by_method": {"goodness": 0.9}} and run == {"epochs": 2}
    named = {"config": "mnist-ff", "overrides": ["model.hidden=[500, 500]"], "date": "2026-12-07T10:01:02Z"}
    assert records.record_name(named) == "mnist-ff-model.hidden_[500,500]-20261207-100102.json"
    first = records.record_path(tmp_path, named)
    first.write_text("{}")  # a second run of the same config in the same second gets a name of its own
    assert [first.name, records.record_path(tmp_path, named).name] == [
        "mnist-ff-model.hidden_[500,500]-20261207-100102.json",
        "mnist-ff-model.hidden_[500,500]-20261207-100102-2.json",
    ]
    commit, dirty = records.git_commit()
    assert commit is None or (len(commit) == 40 and isinstance(dirty, bool))


def test_neutral_overrides_do_not_split_a_row():
    assert results.meaningful(["train.threads=1", "train.seed=3", "model.hidden=[3, 3]"]) == {"model.hidden": "[3,3]"}


def test_a_row_with_until_keeps_only_the_records_of_its_dates():
    row = {"config": "mnist-conv", "since": "2026-11-27", "until": "2026-12-06"}
    record = {"config": "mnist-conv", "overrides": "[]", "test_goodness": "0.995", "seed": "0"}
    assert results.matches(row, {**record, "date": "2026-12-06T23:59:00Z"})
    assert not results.matches(row, {**record, "date": "2026-12-07T00:00:01Z"})
    assert not results.matches(row, {**record, "date": "2026-11-26T12:00:00Z"})
    assert results.matches({k: v for k, v in row.items() if k != "until"}, {**record, "date": "2027-01-01T00:00:00Z"})
