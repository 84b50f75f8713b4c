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
    for split in ("train", "validation", "test"):
        key, label = f"{split}_accuracy", f"{split} (monitor subset)"
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
        p, q = pos[j].float().cpu().numpy(), neg[j].float().cpu().numpy()
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


def plot_goodness_over_time(
    pos, neg, path: str | Path, window: tuple[int, int] | None = None, hidden_steps: int = 0
) -> None:
    """Mean goodness per time step and layer for positive and negative data (tensors [T, L])."""
    steps = range(1, pos.shape[0] + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for j in range(pos.shape[1]):
        line = ax.plot(steps, pos[:, j].numpy(), marker="o", label=f"layer {j} positive")[0]
        ax.plot(
            steps, neg[:, j].numpy(), marker="x", linestyle="--", color=line.get_color(), label=f"layer {j} negative"
        )
    if window is not None:
        ax.axvspan(window[0] - 0.5, window[1] + 0.5, color="grey", alpha=0.15, label="counted window")
    if hidden_steps:
        ax.axvline(hidden_steps + 0.5, color="k", linestyle=":", linewidth=1, label="label clamped after")
    ax.set(xlabel="time step", ylabel="mean goodness", title="goodness over time")
    ax.legend(fontsize=7)
    _save(fig, Path(path))


def plot_activity_over_time(activities: Sequence[Sequence], path: str | Path, units: int = 64) -> None:
    """Heat maps of the first `units` units of each layer over time for a few samples.

    `activities[t][j]` is layer j's activity [samples, width] at step t + 1.
    """
    n_samples, n_layers = activities[0][0].shape[0], len(activities[0])
    fig, axes = plt.subplots(
        n_samples, n_layers, figsize=(3.2 * n_layers, 2.2 * n_samples), squeeze=False, layout="constrained"
    )
    for s in range(n_samples):
        for j in range(n_layers):
            grid = [step[j][s, :units].numpy() for step in activities]  # [T, units]
            ax = axes[s][j]
            steps, shown = len(grid), len(grid[0])
            ax.imshow(
                list(zip(*grid, strict=True)),
                aspect="auto",
                cmap="viridis",
                interpolation="nearest",
                extent=(0.5, steps + 0.5, shown - 0.5, -0.5),  # x axis in 1-based time steps
            )
            ax.set(xlabel="time step" if s == n_samples - 1 else None, ylabel=f"sample {s}\nunit" if j == 0 else None)
            if s == 0:
                ax.set_title(f"layer {j}")
    _save(fig, Path(path))


def plot_latent_pca(runs: Sequence[tuple[str, Sequence, Sequence]], path: str | Path) -> None:
    """Side by side, each run's latents projected on their first two principal components, coloured by
    class: runs = [(name, points [N, 2], labels [N])]."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.5), squeeze=False)
    for ax, (name, points, labels) in zip(axes[0], runs, strict=True):
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, alpha=0.6)
        ax.set(xlabel="PC 1", ylabel="PC 2")
        ax.set_title(f"{name}: latent PCA", fontsize=9)
    fig.colorbar(sc, ax=axes[0].tolist(), label="class")
    _save(fig, Path(path))


def plot_unit_activity_histograms(runs: Sequence[tuple[str, Sequence, str]], path: str | Path) -> None:
    """Side by side, the distribution over units of each run's mean activity on its held-out samples:
    runs = [(name, per-unit values, what the values are, e.g. "firing rate (spikes/step)")]."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, (name, values, what) in zip(axes[0], runs, strict=True):
        ax.hist(values, bins=40, color="tab:purple", alpha=0.8)
        ax.set(title=name, xlabel=what, ylabel="units")
    _save(fig, Path(path))


def plot_spike_raster(spikes: Sequence, path: str | Path, title: str = "spike raster") -> None:
    """Spike raster of one sample: spikes [T, units] as dots (unit against time step)."""
    import numpy as np

    t, unit = np.nonzero(np.asarray(spikes))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(t, unit, marker="|", s=30, color="black")
    ax.set(xlabel="time step", ylabel="unit", title=title, xlim=(-0.5, len(spikes) - 0.5))
    _save(fig, Path(path))
