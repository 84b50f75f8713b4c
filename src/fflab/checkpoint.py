"""Model checkpoints: safetensors weights plus a JSON of the settings that built them.

Loading never runs code: the JSON is parsed, the model is rebuilt from its settings and the
tensors are copied in, with a clear error if the two disagree.

A run in progress also keeps its training state (weights, optimiser moments, random streams) in
resume.pt, so that `fflab resume` can continue it; it is read with torch.load(weights_only=True),
which builds tensors and plain containers only, and removed when the run finishes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from fflab import __version__
from fflab.config import Config, config_from_dict
from fflab.errors import CheckpointError, ConfigError
from fflab.io import atomic_file, write_bytes_atomic, write_json_atomic
from fflab.models import build_model

WEIGHTS = "model.safetensors"
SETTINGS = "model.json"
FORMAT = "fflab-model/1"
TRAINING_STATE = "resume.pt"
STATE_FORMAT = "fflab-training-state/1"


def save_checkpoint(directory: str | Path, model: torch.nn.Module, cfg: Config, **meta: Any) -> None:
    """Write weights then settings, each atomically (WriteError if the disk refuses, the previous files kept).
    `meta` needs input_dim and num_classes."""
    directory = Path(directory)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # serialised here and written by fflab.io: safetensors' own file writer can miss a refused write
    write_bytes_atomic(directory / WEIGHTS, save(tensors))
    write_json_atomic(
        directory / SETTINGS,
        {"format": FORMAT, "fflab_version": __version__, "config": cfg.to_dict(), **meta},
    )


def require_run_directory(directory: Path) -> None:
    """A CheckpointError that says so where `directory` does not exist or is a file."""
    if not directory.exists():
        raise CheckpointError(f"no run directory {directory}: it does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is a file, not a run directory")


def load_checkpoint(directory: str | Path) -> tuple[torch.nn.Module, Config, dict[str, Any]]:
    """Rebuild the model saved in `directory`; returns (model, config, meta)."""
    directory = Path(directory)
    weights, settings = directory / WEIGHTS, directory / SETTINGS
    require_run_directory(directory)
    for p in (weights, settings):
        if not p.is_file():
            raise CheckpointError(f"{directory} is not a checkpoint: {p.name} is missing")
    try:
        meta = json.loads(settings.read_text())
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{settings}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
        cfg = config_from_dict(meta["config"], stored=True)
        shape = tuple(int(v) for v in meta["input_shape"]) if "input_shape" in meta else None
        model = build_model(cfg, int(meta["input_dim"]), int(meta["num_classes"]), input_shape=shape)
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{settings}: unreadable settings ({type(e).__name__}: {e})") from None
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights}: unreadable weights ({e})") from None
    try:
        upgrade_saved_state(model, tensors)
    except (KeyError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{weights} does not match {settings} ({type(e).__name__}: {e})") from None
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{weights} does not match {settings}: missing {missing}, unexpected {extra}")
    wrong = [k for k in expected if expected[k].shape != tensors[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{weights}: {k} has shape {tuple(tensors[k].shape)}, settings expect {tuple(expected[k].shape)}"
        )
    model.load_state_dict(tensors)
    model.eval()
    return model, cfg, meta


def upgrade_saved_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Rewrite, in place, a state saved by an older fflab into the layout `model` has now: every submodule that
    changed its layout converts its own entries (`upgrade_state(state, prefix)`), outer modules first.
    Returns the names of the modules whose saved weights changed layout."""
    return [
        name
        for name, module in model.named_modules()
        if hasattr(module, "upgrade_state") and module.upgrade_state(state, f"{name}." if name else "")
    ]


def save_training_state(
    directory: str | Path, epoch: int, model: torch.nn.Module, trainer_state: dict, **extra
) -> None:
    """Atomically write what resuming after `epoch` needs: the model's and the trainer's state, plus `extra`.

    A refused write (disk full: torch's own "[enforce fail at inline_container.cc] unexpected pos") is a
    WriteError naming the file and the cause; the previous epoch's state stays in place."""
    state = {"format": STATE_FORMAT, "epoch": epoch, "model": model.state_dict(), "trainer": trainer_state, **extra}
    with atomic_file(Path(directory) / TRAINING_STATE) as out:
        torch.save(state, out)


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state saved in `directory` (on the CPU: loading it into the model and optimisers moves
    it to their device), or a CheckpointError that says why there is none."""
    path = Path(directory) / TRAINING_STATE
    if not path.is_file():
        if (Path(directory) / "summary.json").is_file():
            raise CheckpointError(f"{directory} holds a finished run (summary.json); there is nothing to resume")
        raise CheckpointError(
            f"{directory} has no saved training state ({TRAINING_STATE}): it is not a run directory, or the run "
            "saved none (train.checkpoint_every = 0, layer-parallel training) or stopped before its first epoch ended"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: unpickling errors of many kinds
        raise CheckpointError(f"{path}: unreadable training state ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an fflab training state (expected format {STATE_FORMAT!r})")
    return state
