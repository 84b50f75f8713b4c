"""Config files: typed settings, clear errors naming the key, overrides, round trip."""

import dataclasses
import tomllib

import pytest
from repo import REPO, shipped_config

from fflab.cli import main
from fflab.config import Config, apply_overrides, config_from_dict, load_config, parse_value, to_toml
from fflab.errors import ConfigError


def test_defaults_are_valid():
    assert isinstance(config_from_dict({}), Config)


def test_unknown_key_names_the_key_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate'.*known keys.*'lr'"):
        config_from_dict({"train": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        config_from_dict({"trian": {}})
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch' in \[train\] \(did you mean 'train.epochs'\?\)"):
        config_from_dict({"train": {"epoch": 3}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"epochs": "ten"}}, r"train.epochs: expected an integer, got 'ten'"),
        ({"train": {"epochs": 2.5}}, r"train.epochs: expected an integer"),
        ({"train": {"epochs": True}}, r"train.epochs: expected an integer"),
        ({"train": {"lr": "fast"}}, r"train.lr: expected a number"),
        ({"model": {"hidden": 500}}, r"model.hidden: expected a list of integers, got 500"),
        ({"model": {"hidden": [500, "x"]}}, r"model.hidden\[1\]: expected an integer"),
        ({"model": {"activation": "swish"}}, r"model.activation: expected one of \[.*'relu'.*\], got 'swish'"),
        ({"train": {"epochs": 0}}, r"train.epochs: expected a value >= 1, got 0"),
        ({"train": {"momentum": 1.5}}, r"train.momentum: expected a value <= 1.0"),
        ({"model": "big"}, r"model: expected a \[model\] table"),
        ({"model": {"hidden": [10, 10], "predict_layers": [2]}}, r"model.predict_layers: layer indices \[2\]"),
        ({"data": {"name": "idx"}}, r"data.path"),
    ],
)
def test_bad_values_name_key_and_expectation(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_ints_are_accepted_for_floats():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_overrides_parse_toml_values():
    assert parse_value("0.01") == 0.01
    assert parse_value("[100, 200]") == [100, 200]
    assert parse_value("true") is True
    assert parse_value("mnist") == "mnist"
    data = apply_overrides({"train": {"lr": 0.1}}, ["train.lr=0.5", "model.hidden=[7, 8]", "data.name=mnist"])
    cfg = config_from_dict(data)
    assert (cfg.train.lr, cfg.model.hidden, cfg.data.name) == (0.5, [7, 8], "mnist")


def test_override_errors():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        config_from_dict(apply_overrides({}, ["train.lrr=1"]))


def test_load_config_file_and_round_trip(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[data]\nname = "mnist"\n[model]\nhidden = [30, 20]\n[train]\nepochs = 3\n')
    cfg = load_config(path, ["train.seed=7"])
    assert cfg.name == "exp" and cfg.model.hidden == [30, 20] and cfg.train.seed == 7
    again = tmp_path / "again.toml"
    again.write_text(to_toml(cfg))
    assert load_config(again) == cfg


def test_settings_lists_every_key_with_what_it_accepts_and_reads_back(capsys):
    assert main(["settings", str(REPO / "configs" / "cifar10-local-recurrent.toml"), "--set", "train.epochs=3"]) == 0
    text = capsys.readouterr().out
    cfg = shipped_config("cifar10-local-recurrent", ["train.epochs=3"])
    assert tomllib.loads(text) == cfg.to_dict()  # the comments change nothing a reader sees
    shown, section = {}, ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif " = " in line:
            key, rest = line.split(" = ", 1)
            shown[section + key] = rest
    tables = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config) if f.name != "family_settings"}
    tables = {name: table for name, table in tables.items() if dataclasses.is_dataclass(table)}
    tables["recurrent"] = cfg.family_settings  # the recurrent kinds' own table
    for section, table in tables.items():
        for f in dataclasses.fields(table):
            key = f"{section}.{f.name}"
            assert key in shown, f"{key} missing from `fflab settings`"
            assert "  # " in shown[key], f"{key} has no doc, choices or bounds for `fflab settings`"
    assert shown["train.epochs"] == "3  # >= 1; passes over the training set"
    assert shown["train.optimizer"] == '"adamw"  # one of adam, adamw, sgd, rmsprop'
    assert shown["model.dropout"].startswith("0.0  # 0.0 to 0.9; conv/local layers")


def test_settings_without_a_config_shows_the_defaults_and_names_bad_keys(capsys):
    assert main(["settings"]) == 0
    assert tomllib.loads(capsys.readouterr().out) == Config().to_dict()
    assert main(["settings", "--set", "train.epoch=3"]) == 2
    assert "unknown key 'train.epoch'" in capsys.readouterr().err


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.toml"))
    assert configs, "no configs found"
    for path in configs:
        load_config(path)


REC = {"kind": "recurrent"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": {"loss": "symba", "theta": 5.0}}, r"model.theta: the threshold belongs to the softplus loss"),
        ({"model": {"alpha": 8.0}}, r"model.alpha: alpha sharpens the symba loss"),
        ({"model": {**REC, "predict_layers": [1]}}, r"model.predict_layers: recurrent networks predict from every"),
        ({"model": {"kind": "hebbian", "predict_layers": [0]}}, r"model.predict_layers: hebbian networks"),
        ({"model": REC, "train": {"schedule": "greedy"}}, r"train.schedule: recurrent networks train every layer"),
        ({"model": {**REC, "input_norm": "length", "init": "xavier"}}, r"model.input_norm, model.init: .*RMS"),
        ({"model": {"kind": "spiking", "activation": "tanh"}}, r"model.activation: multi-layer spiking FF"),
        ({"model": {"kind": "spiking"}, "spiking": {"neuron": "relu"}}, r"spiking.neuron has moved: .*\[hebbian\]"),
        ({"model": {"kind": "spiking-recurrent"}, "spiking": {"beta": 0.5}}, r"spiking.beta: .*recurrent.damping"),
        ({"model": {"kind": "hebbian"}, "train": {"optimizer": "sgd"}}, r"train.optimizer: the Hebbian rule"),
        ({"train": {"momentum": 0.5}}, r"train.momentum: 'adam' keeps its own moment estimates"),
        ({"train": {"hard_temperature": 2.0}}, r"train.hard_temperature: .*negatives = 'random' draws none"),
        ({"train": {"negatives": "hard", "refresh_every": 2}}, r"train.refresh_every: only the 'refreshed' bank"),
        ({"train": {"hybrid_blur_steps": 3}}, r"train.hybrid_blur_steps: the blur shapes the masks of 'hybrid'"),
        (
            {"model": {"pool": [2, 2], "batch_norm": True}},
            r"model.pool, model.batch_norm: .*which a dense ff network does not have",
        ),
        ({"data": {"chunk_size": 14}}, r"data.chunk_size: seq-mnist settings; leave it at its default"),
        ({"data": {"name": "seq-mnist", "frames": 30}, "model": REC}, r"data.frames: moving-mnist settings"),
        ({"data": {"name": "moving-mnist", "path": "/x"}, "model": REC}, r"data.path: moving-mnist is built from"),
    ],
)
def test_settings_the_run_would_ignore_are_refused_by_name(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)
    config_from_dict(data, stored=True)  # a run saved before these checks existed stays readable


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs").glob("*.toml")))
def test_baselines_of_shipped_configs_keep_their_settings(name):
    """The backprop baseline (and an analog twin) of a shipped config keeps the FF-only settings it never reads."""
    kind = shipped_config(name).model.kind
    twins = {"ff": ["backprop"], "spiking": ["backprop", "ff"], "spiking-recurrent": ["recurrent"]}
    for other in twins.get(kind, []):
        assert shipped_config(name, [f"model.kind={other}"]).model.kind == other
