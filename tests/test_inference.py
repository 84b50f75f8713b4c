"""fflab.load and `fflab predict`: a run classifies image files, arrays and IDX files with its own preprocessing,
and refuses inputs of another size, channel count or scale with a message that names what it expects."""

import json
import math
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from repo import shipped_config

import fflab
from fflab.checkpoint import save_checkpoint
from fflab.cli import main
from fflab.errors import FFLabError, InputError
from fflab.inference import Model, read_inputs
from fflab.models import build_model
from fflab.training.data import load_for_config
from fflab.training.run import train_run


def saved_run(path, config, overrides, input_shape, num_classes=10, dataset="digits", seed=0):
    """An untrained network of a shipped config saved as a run directory would hold it."""
    cfg = shipped_config(config, overrides)
    torch.manual_seed(seed)
    model = build_model(cfg, math.prod(input_shape), num_classes, input_shape=tuple(input_shape))
    names = [f"class{i}" for i in range(num_classes)]
    meta = {
        "dataset": dataset,
        "input_dim": math.prod(input_shape),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "class_names": names,
    }
    save_checkpoint(path, model, cfg, **meta)
    return path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short digits-ff run and its held-out set."""
    run = tmp_path_factory.mktemp("predict") / "run"
    cfg = shipped_config("digits-ff", ["train.epochs=2", "model.hidden=[64, 64]", "train.monitor_size=0"])
    summary = train_run(cfg, run, progress=False, log=lambda s: None)
    ds = load_for_config(cfg, None, progress=False)
    return run, summary, ds


def write_idx(path, images):
    """uint8 images [N, H, W] as an IDX file (magic 0x00000803)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", *images.shape)
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def test_load_predicts_as_the_run_scored_its_test_set(digits_run):
    run, summary, ds = digits_run
    model = fflab.load(run)
    assert model.method == "goodness" and model.input_shape == (1, 8, 8)
    proba = model.predict_proba(ds.test_x)
    assert proba.shape == (len(ds.test_x), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    assert (model.predict(ds.test_x) == model.classes_[proba.argmax(1)]).all()
    # the argmax is the network's own prediction, and its accuracy the one the run reported
    assert (proba.argmax(1) == model.network.predict(ds.test_x).numpy()).all()
    assert (proba.argmax(1) == ds.test_y.numpy()).mean() == pytest.approx(summary["test_accuracy"])


def test_goodness_probabilities_are_the_softmax_of_the_scaled_mean_goodness(digits_run):
    run, _, ds = digits_run
    model = fflab.load(run)
    net = model.network
    x = ds.test_x[:50]
    with torch.no_grad():
        logits = net.layers[0].logit_scale * net(x).double() / len(net.predict_layers)
    np.testing.assert_allclose(model.logits(x), logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(x), torch.softmax(logits, 1).numpy(), atol=1e-6)


def test_cli_predicts_image_files_folders_arrays_and_idx(digits_run, tmp_path, capsys):
    run, _, ds = digits_run
    pixels = (ds.test_x[:4, 0].numpy() * 255).round().astype(np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    Image.fromarray(np.stack([pixels[0]] * 3, -1)).save(tmp_path / "grey-as-rgb.png")  # a grey picture saved as RGB
    np.save(tmp_path / "bytes.npy", pixels)
    np.save(tmp_path / "floats.npy", pixels[:, None] / 255.0)
    write_idx(tmp_path / "images-idx3-ubyte", pixels)
    expected = fflab.load(run).predict(pixels)

    inputs = [folder, tmp_path / "grey-as-rgb.png", tmp_path / "bytes.npy", tmp_path / "floats.npy"]
    inputs.append(tmp_path / "images-idx3-ubyte")
    assert main(["predict", str(run), *map(str, inputs), "--json", "--top", "3"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 4 + 1 + 4 + 4 + 4
    predicted = [r["class"] for r in records]
    assert predicted == [*expected, expected[0], *expected, *expected, *expected]
    assert records[0]["input"].endswith("0.png") and records[-1]["input"].endswith("images-idx3-ubyte[3]")
    for r in records:
        assert len(r["top"]) == 3 and r["top"][0]["class"] == r["class"]
        assert r["top"][0]["probability"] >= r["top"][1]["probability"] >= r["top"][2]["probability"]

    assert main(["predict", str(run), str(folder / "0.png")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(folder / "0.png")) and f" {expected[0]} 0." in line


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: Image.fromarray(np.zeros((9, 8), np.uint8)).save(p / "x.png"), r"is 8x9, but the run expects 8x8"),
        (
            lambda p: Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)).save(p / "x.png"),
            r"is a colour image, but the run expects 8x8 grey \(1x8x8\) images",
        ),
        (lambda p: np.save(p / "x.npy", np.full((2, 8, 8), 16.0)), r"floats from 16 to 16; .* \[0, 1\]"),
        (lambda p: np.save(p / "x.npy", np.zeros((2, 3, 8, 8))), r"shape \[2, 3, 8, 8\], which holds no images"),
        (lambda p: (p / "x.txt").write_text("hello"), r"neither an image .* nor a \.npy array, and not an IDX file"),
    ],
)
def test_inputs_that_do_not_fit_the_run_are_refused_naming_what_it_expects(digits_run, tmp_path, make, message):
    run, *_ = digits_run
    make(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(InputError, match=message):
        fflab.load(run).predict(path)
    assert main(["predict", str(run), str(path)]) == 2


def test_colour_runs_take_channels_first_or_last_and_grey_images_as_rgb(tmp_path):
    run = saved_run(tmp_path / "run", "digits-ff", ["model.hidden=[16]"], (3, 5, 4), num_classes=3)
    model = fflab.load(run)
    rgb = np.random.default_rng(1).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    first = model.predict_proba(rgb.transpose(0, 3, 1, 2))
    close = {"atol": 1e-6}  # one image or two in a batch: float sums may differ in the last bit
    np.testing.assert_allclose(model.predict_proba(rgb), first, **close)
    np.testing.assert_allclose(model.predict_proba(torch.from_numpy(rgb[0])), first[:1], **close)
    Image.fromarray(rgb[0]).save(tmp_path / "colour.png")
    np.testing.assert_allclose(model.predict_proba(tmp_path / "colour.png"), first[:1], **close)
    grey = rgb[0, :, :, 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_allclose(
        model.predict_proba(tmp_path / "grey.png"), model.predict_proba(np.stack([grey] * 3)), **close
    )
    with Image.open(tmp_path / "grey.png") as image:
        np.testing.assert_allclose(model.predict_proba(image), model.predict_proba(grey[None].repeat(3, 0)), **close)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(InputError, match=r"wide.png is 5x4, but the run expects 4x5 RGB \(3x5x4\) images"):
        model.predict(tmp_path / "wide.png")


def test_invert_maps_values_to_one_minus_value(digits_run):
    run, _, ds = digits_run
    model = fflab.load(run)
    x = ds.test_x[:5]
    np.testing.assert_array_equal(model.predict_proba(x, invert=True), model.predict_proba(1 - x))


def test_backprop_and_readout_probabilities_are_the_softmax_of_the_heads_logits(tmp_path):
    bp = fflab.load(saved_run(tmp_path / "bp", "digits-ff", ["model.kind=backprop", "model.hidden=[16]"], (1, 8, 8)))
    x = torch.rand(6, 1, 8, 8)
    torch.nn.init.normal_(bp.network.head.weight)
    with torch.no_grad():
        np.testing.assert_allclose(bp.predict_proba(x), torch.softmax(bp.network(x).double(), 1).numpy(), atol=1e-6)
    overrides = ["model.hidden=[16, 16]", "readout.enabled=true", "eval.predict=readout"]
    ro = fflab.load(saved_run(tmp_path / "ro", "digits-ff", overrides, (1, 8, 8)))
    torch.nn.init.normal_(ro.network.readout.linear.weight)
    assert ro.method == "readout"
    with torch.no_grad():
        logits = ro.network.readout(ro.network.readout_features(x)).double()
    np.testing.assert_allclose(ro.predict_proba(x), torch.softmax(logits, 1).numpy(), atol=1e-6)


def test_hebbian_probabilities_keep_the_networks_prediction(tmp_path):
    overrides = ["model.hidden=[20, 12]", "spiking.steps=6"]
    model = fflab.load(saved_run(tmp_path / "heb", "mnist-hebbian", overrides, (1, 8, 8)))
    x = torch.rand(30, 1, 8, 8)
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    assert (proba.argmax(1) == model.network.predict(x).numpy()).all()


def test_sequence_runs_are_refused_with_a_reason(tmp_path):
    run = saved_run(tmp_path / "seq", "digits-ff", ["model.hidden=[8]"], (1, 8, 8), dataset="seq-mnist")
    with pytest.raises(FFLabError, match=r"trained on sequences \(seq-mnist\): fflab predicts single images only"):
        fflab.load(run)


def test_read_inputs_names_a_missing_file_and_an_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_inputs([tmp_path / "missing.png"], (1, 8, 8))
    with pytest.raises(InputError, match="holds no image files"):
        read_inputs([tmp_path], (1, 8, 8))


def test_model_repr_says_what_the_run_is(digits_run):
    run, *_ = digits_run
    text = repr(fflab.load(run))
    assert "ff on digits" in text and "8x8 grey (1x8x8)" in text and "goodness" in text
    assert isinstance(fflab.load(run), Model)
