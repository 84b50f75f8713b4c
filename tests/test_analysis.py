"""Latent statistics (CKA, Hoyer sparsity, kNN separability) and `fflab analyze` on real runs."""

import json
import os

import pytest
import torch
from repo import shipped_config
from safetensors.torch import load_file

from fflab.analysis.metrics import hoyer_sparsity, knn_accuracy, linear_cka, pca_2d
from fflab.cli import main
from fflab.config import config_from_dict
from fflab.families import family_of
from fflab.models import build_model
from fflab.training.run import train_run


def test_cka_of_a_representation_with_itself_is_one_and_invariant_to_rotation_and_scale():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 20, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen))
    assert linear_cka(a, a) == pytest.approx(1.0)
    assert linear_cka(a, 3.0 * a @ q) == pytest.approx(1.0)
    assert linear_cka(a, torch.randn(300, 20, generator=gen)) < 0.2  # unrelated representations
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(a, a[:10])


def test_hoyer_sparsity_is_zero_for_flat_and_one_for_one_hot_rows():
    assert hoyer_sparsity(torch.ones(4, 9)) == pytest.approx(0.0, abs=1e-6)
    assert hoyer_sparsity(torch.eye(9)) == pytest.approx(1.0)
    assert hoyer_sparsity(torch.cat([torch.eye(9), torch.zeros(3, 9)])) == pytest.approx(1.0)  # silent rows left out


def test_knn_accuracy_separates_clusters_and_excludes_the_sample_itself():
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(3) * 10
    y = torch.arange(3).repeat_interleave(20)
    z = centres[y] + torch.randn(60, 3, generator=gen)
    assert knn_accuracy(z, y, k=5) == 1.0
    # k = 1: with itself excluded, each point's nearest neighbour is the other cluster's point here, so all
    # are wrong; counting itself would make all right.
    pairs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    assert knn_accuracy(pairs, torch.tensor([0, 0, 1, 1]), k=1) == 0.0


def test_pca_2d_finds_the_direction_of_largest_variance():
    z = torch.zeros(100, 5)
    z[:, 3] = torch.linspace(-10, 10, 100)
    z[:, 1] = torch.linspace(-1, 1, 100).flip(0) * 0.01
    p = pca_2d(z)
    assert p.shape == (100, 2) and p[:, 0].abs().max().item() == pytest.approx(10, rel=1e-3)


def test_silent_latents_count_as_wrong_in_knn():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    assert knn_accuracy(z, torch.tensor([0, 0, 0, 1, 1]), k=1) == 4 / 5


@pytest.mark.slow
def test_analyze_compares_a_spiking_hebbian_run_with_an_analog_ff_run(tmp_path, capsys):
    def run(name, *overrides):
        cfg = shipped_config("digits-ff", ["train.epochs=1", *overrides])
        train_run(cfg, tmp_path / name, progress=False, log=lambda s: None)
        return str(tmp_path / name)

    analog = run("analog")
    spiking = run("spiking", "model.kind=hebbian", "model.hidden=[40]", "model.theta=5.0", "train.batch_size=10")
    out = tmp_path / "analysis"
    assert main(["analyze", analog, spiking, "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert json.loads(capsys.readouterr().out) == result
    by_name = {r["name"]: r for r in result["runs"]}
    assert "macs_per_sample" in by_name["analog"]
    assert by_name["spiking"]["model"] == "hebbian" and by_name["spiking"]["spiking"]
    assert by_name["spiking"]["synops_per_sample"] > 0 and by_name["spiking"]["spikes_per_sample"] > 0
    assert 0 < result["similarity"][0]["linear_cka"] <= 1
    latents = load_file(os.path.join(spiking, "latents.safetensors"))
    assert latents["latents"].shape == (by_name["spiking"]["samples"], 40)
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"latent_pca.png", "unit_activity.png", "spike_raster_spiking.png"} <= plots


def test_analyze_names_a_missing_run_without_a_traceback(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert f"no run directory {tmp_path / 'nope'}: it does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "not a checkpoint: model.safetensors is missing" in capsys.readouterr().err


@pytest.mark.parametrize("samples", ["0", "-5", "many"])
def test_analyze_takes_only_a_positive_sample_count(tmp_path, capsys, samples):
    with pytest.raises(SystemExit) as stop:  # argparse rejects it before any run is read
        main(["analyze", str(tmp_path), "--samples", samples])
    assert stop.value.code == 2 and "--samples" in capsys.readouterr().err


def train_and_analyze(tmp_path, config: str, overrides: list[str], name: str) -> dict:
    """Train a run of the shipped config with overrides, `fflab analyze` it, and return its analysis entry."""
    cfg = shipped_config(config, overrides)
    train_run(cfg, tmp_path / name, progress=False, log=lambda s: None)
    assert main(["analyze", str(tmp_path / name), "--out", str(tmp_path / "analysis"), "--no-progress"]) == 0
    (run,) = json.loads((tmp_path / "analysis" / "analysis.json").read_text())["runs"]
    return run


@pytest.mark.slow
def test_analyze_counts_spikes_of_a_surrogate_trained_spiking_run(tmp_path):
    overrides = ["model.kind=spiking", "spiking.encoder=direct", "spiking.steps=4", "spiking.slope=0.3"]
    run = train_and_analyze(tmp_path, "digits-ff", [*overrides, "train.epochs=1"], "spk")
    assert run["spiking"] and run["spikes_per_sample"] > 0
    # The first layer takes analog pixels (direct code): it costs MACs; the second layer costs synaptic ops.
    assert run["analog_macs_per_sample"] == 74 * 256 and run["synops_per_sample"] > 0
    assert (tmp_path / "analysis" / "plots" / "spike_raster_spk.png").is_file()


def test_recurrent_spike_cost_counts_each_spike_once_per_unit_it_reaches_next_step():
    cfg = config_from_dict(
        {"model": {"kind": "spiking-recurrent", "hidden": [3, 4]}, "recurrent": {"steps": 3, "window": [2, 3]}}
    )
    model = build_model(cfg, input_dim=5, num_classes=3)
    outputs = [torch.ones(3, 2, 3), torch.ones(3, 2, 4)]  # every unit fires at every step, 2 samples
    cost = family_of(model).inference_cost(model, (None, outputs), static_input=True)
    synops, macs = cost["synops_per_sample"], cost["analog_macs_per_sample"]
    # Steps 1-2 spike into step 2-3. Layer 0 (3 units) hears itself and layer 1: (2*3 + 2*4) * 3 per sample;
    # layer 1 (4 units) hears layer 0 and itself: (2*3 + 2*4) * 4.
    assert synops == (6 + 8) * 3 + (6 + 8) * 4
    assert macs == 5 * 3 + 3 * 3 * 4  # the static image once; the label into the top layer at every step
    moving = family_of(model).inference_cost(model, (None, outputs), static_input=False)
    assert moving["analog_macs_per_sample"] == 3 * 5 * 3 + 3 * 3 * 4


def test_recurrent_spike_cost_of_local_maps_counts_the_units_whose_fields_hold_the_spike():
    settings = {"kind": "spiking-recurrent", "architecture": "local", "hidden": [1, 1], "kernel": 3}
    recurrent = {"lateral": False, "steps": 3, "window": [2, 3], "source_init": ["kaiming"] * 3}
    cfg = config_from_dict({"model": settings, "recurrent": recurrent})
    model = build_model(cfg, input_dim=16, num_classes=3, input_shape=(1, 4, 4))
    outputs = [torch.ones(3, 2, 16), torch.ones(3, 2, 16)]  # two 4x4 maps, every unit firing at every step
    # a 3x3 field covers 4 pixels at a corner, 6 on an edge, 9 inside: 4*4 + 8*6 + 4*9 = 100 connections
    # between the maps each way; steps 1-2 spike into steps 2-3, no lateral source
    synops = family_of(model).inference_cost(model, (None, outputs), static_input=True)["synops_per_sample"]
    assert synops == 2 * (100 + 100)


@pytest.mark.slow
def test_analyze_reports_a_spiking_recurrent_run_as_spiking(tmp_path):
    overrides = ["data.name=digits", "model.hidden=[32, 32]", "train.epochs=1", "train.monitor_every=1"]
    run = train_and_analyze(tmp_path, "mnist-spiking-recurrent", [*overrides, "train.threads=1"], "srec")
    assert run["spiking"] and run["spikes_per_sample"] > 0 and run["synops_per_sample"] > 0
    assert (tmp_path / "analysis" / "plots" / "spike_raster_srec.png").is_file()


@pytest.mark.slow
def test_analyze_reuses_the_runs_own_test_accuracy_only_when_it_measured_the_same_thing(tmp_path):
    run_dir = tmp_path / "ff"
    train_run(shipped_config("digits-ff", ["train.epochs=1"]), run_dir, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())

    def analyze(*extra):
        assert main(["analyze", str(run_dir), "--out", str(tmp_path / "a"), "--no-progress", *extra]) == 0
        (run,) = json.loads((tmp_path / "a" / "analysis.json").read_text())["runs"]
        return run

    threads_before = torch.get_num_threads()
    try:
        stored = analyze("--threads", "1")
        assert torch.get_num_threads() == 1  # --threads reaches the analysis
    finally:
        torch.set_num_threads(threads_before)
    assert stored["accuracy_source"] == "summary.json" and stored["accuracy"] == summary["test_accuracy"]
    assert analyze("--samples", "100")["accuracy_source"] == "evaluated"  # a subset: the summary does not apply
    os.utime(run_dir / "model.safetensors")  # a model newer than its summary is evaluated afresh ...
    fresh = analyze()
    assert fresh["accuracy_source"] == "evaluated"
    assert fresh["accuracy"] == pytest.approx(summary["test_accuracy"])  # ... and agrees with what was stored


@pytest.mark.slow
def test_analyze_names_a_validation_runs_held_out_rows_and_will_not_compare_them_with_test_rows(tmp_path, capsys):
    validation_dir, test_dir = tmp_path / "val", tmp_path / "test"
    run = train_and_analyze(tmp_path, "digits-ff", ["train.epochs=1", "data.validation=300"], "val")
    train_run(shipped_config("digits-ff", ["train.epochs=1"]), test_dir, progress=False)
    summary = json.loads((validation_dir / "summary.json").read_text())
    assert run["split"] == "validation" and run["samples"] == 300
    assert run["accuracy_source"] == "summary.json" and run["accuracy"] == summary["validation_accuracy"]
    capsys.readouterr()
    assert main(["analyze", str(validation_dir), str(test_dir), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "(validation)" in err and "(test)" in err and "not evaluated on the same samples" in err
