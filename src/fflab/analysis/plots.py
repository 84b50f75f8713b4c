"""PNG plots written into run directories (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fflab.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_training_curves(history: Sequence[dict], path: str | Path) -> None:
    """Per-layer FF loss and monitored accuracy per epoch, side by side."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    n_layers = len(history[0]["loss"])
    for j in range(n_layers):
        values = [float("nan") if h["loss"][j] is None else h["loss"][j] for h in history]
        ax_loss.plot(epochs, values, marker="o", label=f"layer {j}" if n_layers > 1 else "loss")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss" + (" per layer" if n_layers > 1 else ""))
    ax_loss.legend()
    for key, label in (
        ("train_accuracy", "train (monitor subset)"),
        ("test_accuracy", "test (monitor subset)"),
    ):
        points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if points:
            ax_acc.plot(*zip(*points, strict=True), marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.grid(alpha=0.3)
    if ax_acc.lines:
        ax_acc.legend()
    _save(fig, Path(path))


def plot_goodness_histograms(pos: Sequence, neg: Sequence, path: str | Path, theta: float | None = None) -> None:
    """Per layer: goodness of positive versus negative data (top) and, since each negative is the
    same image with a wrong label, the per-image margin g_pos - g_neg (bottom; > 0 is right)."""
    n = len(pos)
    fig, axes = plt.subplots(2, n, figsize=(4.5 * n, 7), squeeze=False, layout="constrained")
    for j in range(n):
        p, q = pos[j].float().numpy(), neg[j].float().numpy()
        top, bottom = axes[0][j], axes[1][j]
        hi = float(max(p.max(), q.max()))
        top.hist(p, bins=60, range=(0, hi), alpha=0.6, label="positive", color="tab:green")
        top.hist(q, bins=60, range=(0, hi), alpha=0.6, label="negative", color="tab:red")
        if theta is not None:
            top.axvline(theta, color="k", linestyle="--", linewidth=1, label="theta")
        top.set(title=f"layer {j}", xlabel="goodness", ylabel="samples")
        top.legend()
        margin = p - q
        bottom.hist(margin, bins=60, color="tab:blue", alpha=0.8)
        bottom.axvline(0, color="k", linestyle="--", linewidth=1)
        bottom.set(
            xlabel="g_pos - g_neg (same image)",
            ylabel="samples",
            title=f"{(margin > 0).mean():.1%} pairs ordered right",
        )
    _save(fig, Path(path))
