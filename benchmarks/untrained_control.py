"""The untrained control: how much does FF training add to a network's readout?

    python benchmarks/untrained_control.py configs/seqmnist-recurrent.toml [--set key=value ...] [--data-dir DIR]

Builds the config's network with its seeded random weights, trains no FF layer at all, and fits the
linear readout exactly as a training run fits it after FF training (`readout.*` settings, frozen
features). The test accuracy of that readout is the floor an FF-trained readout must beat: for recurrent
networks the random dynamics alone (a reservoir) may keep much of a sequence. Writes
benchmarks/results/<config>-untrained-<date>-<time>.json (or under --results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from records import dated_path

from fflab.config import load_config, overrides_tag
from fflab.errors import FFLabError
from fflab.io import write_json_atomic
from fflab.models import build_model
from fflab.perf import set_threads
from fflab.training.data import load_for_config
from fflab.training.readout import readout_features, train_readout

RESULTS = Path(__file__).parent / "results"


@torch.no_grad()
def readout_accuracy(model, x, y) -> float:
    """Accuracy of the readout alone (model.predictions would also score every label by goodness)."""
    return (model.readout(readout_features(model, x)).argmax(1) == y).float().mean().item()


def untrained_control(config: str, overrides: list[str], data_dir: str | None) -> dict:
    cfg = load_config(config, overrides)
    if not cfg.readout.enabled:
        raise FFLabError(f"{config}: the control measures a readout; set readout.enabled = true")
    set_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    ds = load_for_config(cfg, data_dir, progress=False)
    model = build_model(cfg, ds.input_dim, ds.num_classes, input_shape=ds.input_shape)
    start = time.perf_counter()
    history = train_readout(model, ds.train_x, ds.train_y, cfg.readout, seed=cfg.train.seed)
    model.eval()
    return {
        "config": config,
        "overrides": overrides,
        "dataset": ds.name,
        "ff_epochs": 0,
        "readout_test_accuracy": readout_accuracy(model, ds.test_x, ds.test_y),
        "readout_train_accuracy": history[-1]["train_accuracy"],
        "seconds": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args()
    try:
        result = untrained_control(args.config, args.set, args.data_dir)
    except FFLabError as e:
        raise SystemExit(f"error: {e}") from None
    write_json_atomic(dated_path(args.results, f"{Path(args.config).stem}{overrides_tag(args.set)}-untrained"), result)
    print(
        f"{Path(args.config).stem}, untrained + readout: test {result['readout_test_accuracy']:.2%} "
        f"(train {result['readout_train_accuracy']:.2%}), {result['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
