"""Does a better-tuned linear readout change a trained run's accuracy? Model selection done honestly.

    FFLAB_DATA=../shared/datasets python benchmarks/readout_select.py RUN_DIR [--layers 3 ...] [--threads N]

Refits the readout of a saved run (FF layers frozen; with --layers, a new readout on those layers, also for
a run that has none) with a few settings on the training images less 5,000 (a tenth on smaller sets),
scores each on those held out (a fixed seeded split), then refits the config's setting and the best one on
the whole training set and scores the test set once each. The config's refit reproduces the run's own
readout accuracy, which checks the procedure. The held-out images trained the FF layers too, so validation
scores run high; they rank settings.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from fflab.checkpoint import load_checkpoint
from fflab.models.stacks import readout_head
from fflab.perf import set_threads
from fflab.training.data import load_for_config
from fflab.training.readout import readout_features, train_readout

VALIDATION = 5000  # held-out training images, at most a tenth of the set
GRID = [  # changes to the run's own readout settings; {} is the config as it stands
    {},
    {"standardize": True},
    {"epochs": 40},
    {"weight_decay": 1e-4},
    {"standardize": True, "weight_decay": 1e-3},
]


def refit(model, cfg, changes: dict, x: torch.Tensor, y: torch.Tensor, layers: list[int]):
    """A fresh zero readout on `layers`, trained with the config's settings plus `changes`."""
    settings = dataclasses.replace(cfg.readout, **changes)
    model.readout = readout_head(model.layers, layers, model.num_classes, settings.standardize)
    train_readout(model, x, y, settings, seed=cfg.train.seed)


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model.readout(readout_features(model, x)).argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a saved run directory")
    parser.add_argument("--layers", type=int, nargs="+", help="0-based layers to read out (default: the run's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()
    set_threads(args.threads)
    model, cfg, _ = load_checkpoint(args.run_dir)
    if args.layers is None and model.readout is None:
        raise SystemExit(f"{args.run_dir}: the model has no readout; name the layers to read out with --layers")
    layers = args.layers if args.layers is not None else model.readout.layers
    if not all(0 <= i < len(model.layers) for i in layers):
        raise SystemExit(f"--layers {layers}: the model has layers 0-{len(model.layers) - 1}")
    ds = load_for_config(cfg, None, progress=False)
    x, y = ds.train_x, ds.train_y
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_held = min(VALIDATION, len(x) // 10)
    fit, held = order[n_held:], order[:n_held]
    scores = []
    for changes in GRID:
        refit(model, cfg, changes, x[fit], y[fit], layers)
        scores.append(accuracy(model, x[held], y[held]))
        print(f"{changes or 'config'}: validation {scores[-1]:.2%}", flush=True)
    best = GRID[max(range(len(GRID)), key=scores.__getitem__)]
    for name, changes in (("config", {}), ("best on validation", best)):
        refit(model, cfg, changes, x, y, layers)
        print(f"{name} {changes}: test {accuracy(model, ds.test_x, ds.test_y):.2%}", flush=True)


if __name__ == "__main__":
    main()
