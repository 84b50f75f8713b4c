"""Checkpoints round-trip exactly and fail clearly when damaged."""

import json

import pytest
import torch

from fflab.checkpoint import load_checkpoint, save_checkpoint
from fflab.config import config_from_dict
from fflab.errors import CheckpointError
from fflab.models import build_model


@pytest.fixture
def saved(tmp_path):
    cfg = config_from_dict({"model": {"hidden": [12, 9], "label": "concat", "theta": 1.5}})
    torch.manual_seed(0)
    model = build_model(cfg, input_dim=20, num_classes=4)
    save_checkpoint(tmp_path, model, cfg, input_dim=20, num_classes=4, dataset="toy")
    return tmp_path, model, cfg


def test_round_trip_gives_identical_model_and_predictions(saved):
    path, model, cfg = saved
    loaded, cfg2, meta = load_checkpoint(path)
    assert cfg2 == cfg and meta["dataset"] == "toy"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    x = torch.rand(10, 20)
    assert torch.equal(model.label_scores(x), loaded.label_scores(x))
    assert loaded.layers[0].theta == 1.5
    assert not any(p.name.endswith(".tmp") for p in path.iterdir()), "atomic writes leave no temp files"


def test_missing_files_are_named(saved, tmp_path_factory):
    path, *_ = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model.safetensors is missing"):
        load_checkpoint(path)


def test_mismatched_settings_are_reported(saved):
    path, *_ = saved
    meta = json.loads((path / "model.json").read_text())
    meta["config"]["model"]["hidden"] = [12, 10]
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"layers\.1\.\S+ has shape \(9[,)].*settings expect \(10[,)]"):
        load_checkpoint(path)


def test_corrupt_weights_and_settings_are_reported(saved):
    path, *_ = saved
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_checkpoint(path)
    (path / "model.json").write_text("{")
    with pytest.raises(CheckpointError, match="unreadable settings"):
        load_checkpoint(path)
