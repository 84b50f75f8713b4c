"""What saving the training state (for `fflab resume`) costs each epoch: its size and the time to write it.

    python benchmarks/resume_cost.py configs/cifar10-local.toml configs/mnist-recurrent.toml [--set KEY=VALUE ...]

Builds each config's model and trainer (no data is read: the image shapes of the data sets are below),
gives every optimiser its moment buffers as after a first step, and writes the state as a run does,
into a temporary folder in --dir.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fflab.checkpoint import TRAINING_STATE, save_training_state
from fflab.config import load_config
from fflab.models import build_model
from fflab.training.trainer import make_trainer

IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
CLASSES = 10


def state_cost(config: str, overrides: list[str], folder: Path) -> tuple[float, float]:
    """(megabytes, seconds) of one save of the config's training state."""
    cfg = load_config(config, overrides)
    if cfg.data.name not in IMAGE_SHAPES:
        raise SystemExit(f"{config}: data set {cfg.data.name!r} is not one of {sorted(IMAGE_SHAPES)}")
    shape = IMAGE_SHAPES[cfg.data.name]
    model = build_model(cfg, shape[0] * shape[1] * shape[2], CLASSES, input_shape=shape)
    trainer = make_trainer(model, cfg, progress=False, image_shape=shape)
    for opt in trainer.optimizers:  # the moments Adam keeps after its first step (the largest state)
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p] = {
                    "step": torch.tensor(1.0),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p),
                }
    with tempfile.TemporaryDirectory(dir=folder) as d:
        start = time.perf_counter()
        save_training_state(d, 1, model, trainer.state_dict(), monitor_seconds=0.0, wall_seconds=0.0, resumes=[])
        seconds = time.perf_counter() - start
        return (Path(d) / TRAINING_STATE).stat().st_size / 1e6, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every config")
    parser.add_argument("--dir", default=".", help="where to write (the disk a run would use)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for config in args.configs:
        mb, seconds = state_cost(config, args.set, Path(args.dir))
        print(f"{config}: {mb:,.2f} MB in {seconds:.2f} s")


if __name__ == "__main__":
    main()
