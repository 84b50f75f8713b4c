"""`fflab export`: ONNX graphs that onnxruntime runs to fflab's predictions, NIR graphs that snnTorch runs to
fflab's spikes, and a reason for every network that cannot be exported. Skipped without `fflab[export]`."""

import json
import sys

import numpy as np
import pytest
import torch
from repo import shipped_config
from test_data_registry import write_idx_set
from test_inference import saved_run

import fflab
from fflab.cli import main
from fflab.errors import ExportError
from fflab.export import check_nir, check_onnx, export_nir, export_onnx, nir_input
from fflab.training.data import load_for_config
from fflab.training.run import train_run

DIGITS = (1, 8, 8)


def needs_onnx():
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)


def needs_nir():
    for name in ("nir", "snntorch", "nirtorch"):
        pytest.importorskip(name)


def test_onnx_of_a_digits_run_predicts_the_test_set_as_fflab_does(tmp_path, capsys):
    needs_onnx()
    import onnx
    import onnxruntime as ort

    run = tmp_path / "run"
    cfg = shipped_config("digits-ff", ["train.epochs=2", "model.hidden=[64, 64]", "train.monitor_size=0"])
    train_run(cfg, run, progress=False, log=lambda s: None)
    assert main(["export", str(run), "--format", "onnx", "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(str(run / "model.onnx"))
    report = json.loads(out[out.index("{") :])
    assert report == {
        "samples": 360,
        "same_class": 360,
        "max_probability_difference": report["max_probability_difference"],
    }
    assert report["max_probability_difference"] < 1e-5

    model = fflab.load(run)
    x = load_for_config(cfg, None, progress=False).test_x
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, proba = session.run(None, {"images": x.numpy()})
    assert (proba.argmax(1) == model.network.predict(x).numpy()).all()
    # the logits are forward(x) scaled by the loss's logit scale over the voting layers
    with torch.no_grad():
        forward = model.network(x).numpy()
    np.testing.assert_allclose(
        logits, forward * model.network.layers[0].logit_scale / len(model.network.predict_layers), rtol=1e-4, atol=1e-4
    )
    props = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert json.loads(props["class_names"]) == list("0123456789") and json.loads(props["input_shape"]) == [1, 8, 8]
    assert props["method"] == "goodness" and "8x8 grey" in props["input"]


@pytest.mark.slow
def test_the_check_of_a_bfloat16_run_compares_the_graph_with_fflab_in_float32_and_in_bfloat16(tmp_path, capsys):
    needs_onnx()
    run = tmp_path / "run"
    overrides = ["train.epochs=2", "model.hidden=[64, 64]", "train.monitor_size=0", "train.precision=bfloat16"]
    train_run(shipped_config("digits-ff", overrides), run, progress=False, log=lambda s: None)
    assert main(["export", str(run), "--format", "onnx", "--check"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert report["same_class"] == 360 and report["max_probability_difference"] < 1e-5  # the graph is exact
    model = fflab.load(run)
    x = load_for_config(model.config, None, progress=False).test_x
    as_run = model.predict_proba(x)  # in bfloat16, as fflab eval scores the run
    onnx_like = model.predict_proba(x, precision="float32")
    assert report["same_class_as_fflab_in_bfloat16"] == int((as_run.argmax(1) == onnx_like.argmax(1)).sum())
    assert report["max_probability_difference_from_bfloat16"] > 1e-5  # bfloat16 products round: not the same numbers
    assert "the run computes in bfloat16" in report["note"]


def test_export_check_reads_the_data_the_run_read(tmp_path, monkeypatch, capsys):
    """As eval does: data.path = "mine" is relative to where the run started, inputs.json has the folder."""
    needs_onnx()
    start, elsewhere, run = tmp_path / "start", tmp_path / "elsewhere", tmp_path / "run"
    write_idx_set(start / "mine", n_train=40, n_test=12)
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    overrides = ["train.epochs=1", "model.hidden=[16]", "train.monitor_size=0", "train.batch_size=8"]
    cfg = shipped_config("digits-ff", [*overrides, 'data.name="idx"', 'data.path="mine"'])
    train_run(cfg, run, progress=False, log=lambda s: None)
    monkeypatch.chdir(elsewhere)
    assert main(["export", str(run), "--format", "onnx", "--check"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["samples"] == 12


@pytest.mark.parametrize(
    ("config", "overrides", "shape"),
    [
        (
            "mnist-conv",
            ["model.hidden=[10, 20]", "model.pool=[2, 1]", "model.groups=[]", "model.predict_layers=[1]"],
            (1, 12, 12),
        ),
        (
            "mnist-conv",
            [
                "model.kind=backprop",
                "model.hidden=[10, 20]",
                "model.pool=[2, 1]",
                "model.groups=[]",
                "model.predict_layers=[1]",
            ],
            (1, 12, 12),
        ),
        ("cifar10-local", ["model.hidden=[3, 3]", "model.kernel=5"], (3, 12, 12)),
        (
            "cifar10-frontier",
            [
                "model.hidden=[10, 10, 10, 20, 20]",
                "model.stride=[1, 1, 1, 2, 1]",
                "model.predict_layers=[1, 2, 3, 4]",
                'residual_ff.joins=["add", "concat"]',
            ],
            (3, 12, 12),
        ),
        (
            "cifar10-spatial-goodness",
            ["model.hidden=[10, 20]", "model.pool=[2, 1]", "model.predict_layers=[0, 1]"],
            (3, 12, 12),
        ),
    ],
    ids=["conv-ff", "conv-backprop", "local-ff", "residual-ff", "spatial-goodness"],
)
def test_onnx_of_image_networks_computes_fflabs_probabilities(tmp_path, config, overrides, shape):
    needs_onnx()
    run = saved_run(tmp_path / "run", config, [*overrides, "train.precision=float32"], shape)
    model = fflab.load(run)
    if model.kind == "backprop":
        torch.nn.init.normal_(model.network.head.weight)  # an untrained head is zero: every class alike
    path = export_onnx(model, tmp_path / "model.onnx")
    report = check_onnx(path, model, torch.rand(40, *shape))
    assert report["max_probability_difference"] < 1e-5 and report["same_class"] >= 39


def spiking_run(tmp_path, config, overrides):
    return fflab.load(saved_run(tmp_path / "run", config, [*overrides, "spiking.reset=zero"], DIGITS))


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("mnist-hebbian", ["model.hidden=[40, 24]", "spiking.steps=10"]),
        ("mnist-hebbian", ["model.hidden=[30]", "spiking.encoder=direct", "spiking.beta=1.0"]),
        ("mnist-spiking-ff", ["model.hidden=[40]"]),
        ("mnist-spiking-ff", ["model.hidden=[40]", "spiking.encoder=rate"]),
    ],
    ids=["hebbian-rate", "hebbian-direct-if", "spiking-direct", "spiking-rate"],
)
def test_nir_graph_spikes_in_snntorch_as_in_fflab(tmp_path, config, overrides):
    needs_nir()
    import nir

    model = spiking_run(tmp_path, config, overrides)
    path = export_nir(model, tmp_path / "model.nir")
    graph = nir.read(str(path))
    n_layers = len(model.network.layers)
    assert [k for k in graph.nodes if k.startswith("lif")] == [f"lif{i}" for i in range(n_layers)]
    sidecar = json.loads((tmp_path / "model.nir.json").read_text())
    assert sidecar["format"] == "fflab-nir/1" and sidecar["dt"] == 1e-4 and len(sidecar["layers"]) == n_layers

    x = torch.rand(12, *DIGITS).repeat_interleave(10, 0)
    labels = torch.arange(10).repeat(12)
    if "beta=1.0" in overrides[-1]:  # snnTorch reads a NIR IF neuron as a leaky one (beta 0.9): check the graph only
        assert isinstance(graph.nodes["lif0"], nir.IF)
        return
    report = check_nir(path, model.network, x, labels)
    for layer in report["layers"]:
        assert layer["spikes"] > 0 and layer["differing"] == 0, report


def test_nir_input_is_what_fflabs_first_layer_sees(tmp_path):
    needs_nir()
    model = spiking_run(tmp_path, "mnist-spiking-ff", ["model.hidden=[16]"])
    layer = model.network.layers[0]
    x, labels = torch.rand(5, *DIGITS), torch.arange(5)
    train = nir_input(model.network, x, labels)
    assert train.shape == (layer.steps, 5, layer.in_features)
    with torch.no_grad():
        spikes = layer(model.network.embedding.embed(x.flatten(1), labels))  # fflab's own forward pass [N, T, H]
        assert torch.equal(layer.lif.run(layer.linear(train)), spikes.transpose(0, 1))


@pytest.mark.parametrize(
    ("config", "overrides", "fmt", "message"),
    [
        (
            "mnist-spiking-ff",
            ["model.hidden=[20]"],
            "nir",
            r"reset by subtracting the threshold.*spiking.reset = 'zero'",
        ),
        (
            "mnist-spiking-ff",
            ["model.hidden=[20, 20]", "spiking.reset=zero"],
            "nir",
            r"every layer above the first rescales",
        ),
        ("mnist-hebbian", ["model.hidden=[20]", "hebbian.neuron=relu", "spiking.encoder=direct"], "nir", r"analog"),
        ("reference/hebbian-ffa-analog", ["model.hidden=[20]"], "onnx", r"analog .* as ONNX yet"),
        ("digits-ff", ["model.hidden=[20]"], "nir", r"a 'ff' network is analog: export it with --format onnx"),
        ("mnist-spiking-ff", ["model.hidden=[20]"], "onnx", r"spiking neurons .* export it with --format nir"),
        ("mnist-hebbian", ["model.hidden=[20]"], "onnx", r"export it with --format nir"),
        ("mnist-recurrent", ["model.hidden=[20, 20]"], "onnx", r"feed each other both ways.*as ONNX yet"),
        ("mnist-recurrent", ["model.hidden=[20, 20]"], "nir", r"feed each other both ways over time steps.*as NIR yet"),
        ("mnist-spiking-recurrent", ["model.hidden=[20, 20]"], "onnx", r"'spiking-recurrent'.*as ONNX yet"),
    ],
)
def test_networks_that_cannot_be_exported_say_why(tmp_path, capsys, config, overrides, fmt, message):
    run = saved_run(tmp_path / "run", config, overrides, DIGITS)
    with pytest.raises(ExportError, match=message):
        from fflab.export import export_run

        export_run(run, fmt)
    assert main(["export", str(run), "--format", fmt]) == 2
    assert "fflab: error:" in capsys.readouterr().err
    assert not (run / f"model.{fmt}").exists()


@pytest.mark.slow
def test_latency_benchmark_records_onnx_against_fflab(tmp_path):
    needs_onnx()
    import subprocess

    from repo import REPO

    run = saved_run(tmp_path / "run", "digits-ff", ["model.hidden=[16, 16]"], DIGITS)
    script = REPO / "benchmarks" / "export_latency.py"
    args = [str(run), "--images", "20", "--repeats", "1", "--results", str(tmp_path / "results")]
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (record,) = (tmp_path / "results").glob("export-latency-*.json")
    data = json.loads(record.read_text())
    assert data["benchmark"] == "export_latency" and "format" not in data  # not a training record
    (row,) = data["results"]
    assert row["images"] == 20 and row["same_class"] == 20 and row["onnxruntime_batch_s"] > 0


def test_missing_export_packages_are_named_with_the_extra_to_install(tmp_path, monkeypatch):
    run = saved_run(tmp_path / "run", "digits-ff", ["model.hidden=[8]"], DIGITS)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    with pytest.raises(ExportError, match=r"needs onnxscript, which is not installed: pip install 'fflab\[export\]'"):
        export_onnx(fflab.load(run), tmp_path / "model.onnx")
