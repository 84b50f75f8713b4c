"""TensorBoard logs of a training run (`train.tensorboard = true`; `pip install 'fflab[tensorboard]'`).

After every epoch the run hands its metrics.jsonl row to the observer, which writes, under RUN/tensorboard/:

- scalars: every number of the row (`loss`, `lr`, `train_accuracy`, `test_accuracy`, `samples_per_second`, ...)
  under its own name, and every per-layer list under `<name>/layer<i>` (`loss/layer0`, `goodness_pos/layer1`,
  `test_accuracy_per_layer/layer0`, ...);
- histograms, for networks that score labels by goodness: `goodness_true/layer<i>` and `goodness_wrong/layer<i>`,
  each layer's positive-signed goodness (a neo-Hebbian layer's P) with the true label and with every wrong one
  written in, on the first held-out samples the run monitors (at most 500). How far apart the two lie is how
  well the layer tells labels apart.

Read it with `tensorboard --logdir RUN/tensorboard` (or runs/ for every run). The step is the epoch; a resumed
run appends to the same folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from fflab.errors import FFLabError

FOLDER = "tensorboard"
HISTOGRAM_SAMPLES = 500


class NoBoard:
    """The observer of a run without TensorBoard: does nothing."""

    def epoch(self, row: dict) -> None:
        pass


class Board:
    """Writes a run's per-epoch rows (and goodness histograms of `x`, `y`) into `folder` for TensorBoard."""

    def __init__(self, folder: str | Path, model: Any = None, x: Any = None, y: Any = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FFLabError(
                "train.tensorboard = true needs the tensorboard package: pip install 'fflab[tensorboard]'"
            ) from None
        self.folder = Path(folder)
        self.writer = SummaryWriter(log_dir=str(self.folder))
        self.model, self.x, self.y = model, x, y

    def epoch(self, row: dict) -> None:
        """Write one metrics.jsonl row (its "epoch" is the step), then the goodness histograms."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch":
                continue
            if isinstance(value, Real) and not isinstance(value, bool):
                self.writer.add_scalar(key, float(value), step)
            elif isinstance(value, list | tuple):
                for i, v in enumerate(value):
                    if isinstance(v, Real) and not isinstance(v, bool):
                        self.writer.add_scalar(f"{key}/layer{i}", float(v), step)
        for name, values in self.goodness(step).items():
            self.writer.add_histogram(name, values, step)
        self.writer.flush()

    def goodness(self, step: int) -> dict[str, torch.Tensor]:
        """Per layer, the label scores of the true and of the wrong labels on the monitored samples ({} for a
        network that scores no labels: backprop, unsupervised FF)."""
        from fflab.models.feedforward import evaluating

        model, x, y = self.model, self.x, self.y
        if model is None or x is None or not len(x) or not hasattr(model, "label_scores"):
            return {}
        try:
            with evaluating(model), torch.no_grad():
                scores = model.label_scores(x).float().cpu()  # [N, C, L]
        except ValueError:  # a network that takes no label (unsupervised FF): nothing to score
            return {}
        true = torch.nn.functional.one_hot(y.cpu(), scores.shape[1]).bool()
        out = {}
        for i in range(scores.shape[2]):
            layer = scores[:, :, i]
            out[f"goodness_true/layer{i}"] = layer[true]
            out[f"goodness_wrong/layer{i}"] = layer[~true]
        return out

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def run_board(run: Any) -> Iterator[Board | NoBoard]:
    """The observer of a training run (`fflab.training.run.Run`): a Board writing RUN/tensorboard/ when the run's
    config sets train.tensorboard, else one that does nothing."""
    if not getattr(run.cfg.train, "tensorboard", False):
        yield NoBoard()
        return
    from fflab.training.data import rows

    n = min(HISTOGRAM_SAMPLES, run.cfg.train.monitor_size or HISTOGRAM_SAMPLES, len(run.ds.test_y))
    board = Board(run.run_dir / FOLDER, run.model, rows(run.ds.test_x, 0, n), run.ds.test_y[:n])
    try:
        yield board
    finally:
        board.close()
