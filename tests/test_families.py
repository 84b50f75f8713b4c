"""The model-family registry: core code asks a family, every network follows PyTorch's conventions, a new family
is one module plus its config, runs saved by earlier fflab still load, and the config schema loads no torch."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from repo import REPO

from fflab.checkpoint import load_checkpoint
from fflab.config import Config, ConfigError, config_from_dict, load_config, to_toml
from fflab.data import load_dataset
from fflab.families import family_names, family_of, get_family, register_family
from fflab.families.base import Family
from fflab.models import Predictions, build_model
from fflab.training.evaluate import evaluate
from fflab.training.run import train_run

BUILT_IN = ["ff", "spiking", "recurrent", "spiking-recurrent", "backprop", "hebbian"]
FIXTURE = Path(__file__).parent / "fixtures" / "digits-run-2026-12-06"  # saved by fflab at commit c5abee3


def test_the_config_schema_loads_without_torch():
    code = "import fflab.config, sys; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_every_built_in_family_is_registered_and_an_unknown_kind_is_named():
    assert family_names()[: len(BUILT_IN)] == BUILT_IN
    with pytest.raises(ConfigError, match=r"model.kind: expected one of \['ff', .*'hebbian'.*\], got 'hopfield'"):
        config_from_dict({"model": {"kind": "hopfield"}})


def test_core_modules_never_dispatch_on_a_kind():
    """The run pipeline, evaluation, checkpoints, analysis, the CLI and devices ask the family instead."""
    src = REPO / "src" / "fflab"
    core = [*(src / "training").glob("*.py"), *(src / "analysis").glob("*.py")]
    core += [src / name for name in ("cli.py", "devices.py", "checkpoint.py")]
    kind = "[\"'](" + "|".join(BUILT_IN) + ")[\"']"
    dispatch = re.compile(rf"isinstance\(model|(==|!=|\bin)\s*[(\[]?{kind}|{kind}\s*(==|!=)|_KINDS\b")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in core
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if dispatch.search(line)
    ]
    assert found == []


def small_config(kind: str) -> Config:
    model = {"kind": kind, "hidden": [12, 12], "label": "concat"}
    sections = {"model": model, "train": {"negatives": "random"}}
    if kind in ("spiking", "hebbian"):  # direct currents: a rate code would draw new spikes on every call
        sections["spiking"] = {"steps": 4, "encoder": "direct"}
    if kind in ("recurrent", "spiking-recurrent"):
        sections["recurrent"] = {"steps": 4, "window": [2, 3]}
    return config_from_dict(sections)


@pytest.mark.parametrize("kind", BUILT_IN)
def test_forward_scores_every_class_and_its_argmax_is_the_prediction(kind):
    torch.manual_seed(0)
    model = build_model(small_config(kind), 20, 4).eval()
    x = torch.rand(9, 20)
    with torch.no_grad():
        scores = model(x)
    assert scores.shape == (9, 4) and model.kind == kind and family_of(model).name == kind
    assert torch.equal(scores.argmax(1), model.predict(x))
    predictions = model.predictions(x)
    assert isinstance(predictions, Predictions)
    primary = get_family(kind).primary_method(small_config(kind))
    assert torch.equal(predictions[primary], model.predict(x))


def test_a_convolutional_network_takes_images_in_forward():
    cfg = config_from_dict({"model": {"architecture": "conv", "hidden": [8, 8], "label": "channels"}})
    model = build_model(cfg, 64, 3, input_shape=(1, 8, 8)).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), model.predict(x))


def test_a_family_table_belongs_to_its_kind_and_old_keys_name_their_new_place():
    with pytest.raises(ConfigError, match=r"\[recurrent\] holds the settings of model.kind 'recurrent'.*'ff'"):
        config_from_dict({"recurrent": {"steps": 3}})
    with pytest.raises(ConfigError, match=r"model.steps has moved: write it as steps in the \[recurrent\] table"):
        config_from_dict({"model": {"kind": "recurrent", "steps": 3}})
    with pytest.raises(ConfigError, match=r"train.update has moved: .*recurrent.update"):
        config_from_dict({"model": {"kind": "recurrent"}, "train": {"update": "step"}})
    with pytest.raises(ConfigError, match=r"unknown key 'recurrent.stepz'"):
        config_from_dict({"model": {"kind": "recurrent"}, "recurrent": {"stepz": 3}})
    # a run saved under the old layout: its keys move into the table, or go where its kind never read them
    old = {"model": {"kind": "recurrent", "steps": 3, "window": [2, 3]}, "train": {"update": "step"}}
    cfg = config_from_dict(old, stored=True)
    assert (cfg.family_settings.steps, cfg.family_settings.update) == (3, "step")
    assert config_from_dict({"model": {"steps": 3}, "spiking": {"neuron": "relu"}}, stored=True).family_settings is None


def test_a_family_table_round_trips_through_toml(tmp_path):
    cfg = load_config(REPO / "configs" / "mnist-recurrent.toml")
    path = tmp_path / "again.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg
    assert "[recurrent]" in to_toml(cfg, annotate=True) and "[recurrent]" not in to_toml(Config())


def test_a_run_saved_by_fflab_at_c5abee3_still_loads_and_scores_as_it_did(tmp_path):
    model, cfg, meta = load_checkpoint(FIXTURE)
    summary = json.loads((FIXTURE / "summary.json").read_text())
    ds = load_dataset("digits")
    result = evaluate(model, ds.test_x, ds.test_y, primary=summary["predict"])
    assert result["accuracy"] == summary["test_accuracy"] and meta["dataset"] == "digits"
    from fflab.cli import main

    copy = tmp_path / "run"
    copy.mkdir()
    for item in FIXTURE.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    assert main(["eval", str(copy), "--no-progress"]) == 0
    assert json.loads((copy / "eval.json").read_text())["test_accuracy"] == summary["test_accuracy"]


def load_example(name: str, monkeypatch):
    """A module from docs/examples, imported as a user's own module would be."""
    spec = importlib.util.spec_from_file_location(name, REPO / "docs" / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def layer_lr_family(monkeypatch):
    import fflab.families as registry

    module = load_example("layer_lr_family", monkeypatch)
    yield module
    monkeypatch.delitem(registry._FAMILIES, module.LayerLRFamily.name)


def test_the_architecture_walkthrough_family_is_one_module_and_trains(layer_lr_family, tmp_path):
    """docs/architecture.md's example: registered from its own module, its own table, its trainer scales each
    layer's rate, and a run trains it end to end."""
    text = (REPO / "docs" / "architecture.md").read_text()
    example = (REPO / "docs" / "examples" / "layer_lr_family.py").read_text()
    assert example.strip() in text, "docs/architecture.md shows the example module as it is"
    data = {
        "model": {"kind": "ff-layer-lr", "hidden": [64, 64], "label": "concat"},
        "ff_layer_lr": {"lr_scale": [1.0, 0.25]},
        "train": {"epochs": 6, "batch_size": 32, "lr": 0.003, "monitor_size": 0},
        "eval": {"train_accuracy": False},
    }
    cfg = config_from_dict(data)
    summary = train_run(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert summary["model"] == "ff-layer-lr" and summary["test_accuracy"] > 0.4  # chance 10%; measured 61%
    model, saved, _ = load_checkpoint(tmp_path / "run")
    assert family_of(model).name == "ff-layer-lr" and saved.family_settings.lr_scale == [1.0, 0.25]
    trainer = family_of(model).make_trainer(model, cfg, progress=False)
    trainer._set_lr(0.0)
    assert [opt.param_groups[0]["lr"] for opt in trainer.optimizers] == [0.003, 0.003 * 0.25]
    with pytest.raises(ConfigError, match="one factor per layer"):
        config_from_dict({**data, "ff_layer_lr": {"lr_scale": [1.0]}})
    with pytest.raises(ConfigError, match=r"\[ff_layer_lr\] holds the settings of model.kind 'ff-layer-lr'"):
        config_from_dict({"ff_layer_lr": {"lr_scale": [1.0]}})


def test_registering_a_second_family_under_a_taken_name_is_refused():
    class Impostor(Family):
        name = "ff"

    with pytest.raises(ValueError, match="already registered"):
        register_family(Impostor)


def test_vocabulary_names_match_the_parts_that_implement_them():
    from fflab import vocab
    from fflab.layers.dense import ACTIVATIONS
    from fflab.objectives import GOODNESS
    from fflab.spiking.neurons import SURROGATES

    assert tuple(ACTIVATIONS) == vocab.ACTIVATIONS
    assert tuple(GOODNESS) == vocab.GOODNESS
    assert tuple(SURROGATES) == vocab.SURROGATES


def test_a_package_registers_its_family_through_the_entry_point_group(monkeypatch):
    """fflab loads the `fflab.families` entry points on the first lookup of a kind it does not know."""
    import fflab.families as registry

    class PluginFamily(Family):
        name = "plugin-ff"

    class EntryPoint:
        def load(self):
            return PluginFamily

    asked = []
    monkeypatch.setattr(registry, "entry_points", lambda group: asked.append(group) or [EntryPoint()])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        assert get_family("plugin-ff").name == "plugin-ff" and asked == ["fflab.families"]
    finally:
        registry._FAMILIES.pop("plugin-ff", None)
