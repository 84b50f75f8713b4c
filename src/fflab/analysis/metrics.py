"""Statistics of latent representations: sparsity, class separability, similarity between networks."""

from __future__ import annotations

import math

import torch


def hoyer_sparsity(z: torch.Tensor) -> float:
    """Mean Hoyer sparsity of the rows of z [N, D]: (sqrt(D) - |z|_1 / |z|_2) / (sqrt(D) - 1).

    0 for a row with all entries equal in size, 1 for a row with a single non-zero entry; all-zero
    rows (silent networks) have no direction and are left out (NaN if every row is zero).
    """
    d = z.shape[1]
    if d < 2:
        raise ValueError(f"Hoyer sparsity needs at least two units, got {d}")
    l1, l2 = z.abs().sum(1), z.pow(2).sum(1).sqrt()
    active = l2 > 0
    if not active.any():
        return float("nan")
    ratio = l1[active] / l2[active]
    return ((math.sqrt(d) - ratio) / (math.sqrt(d) - 1)).mean().item()


def knn_accuracy(z: torch.Tensor, y: torch.Tensor, k: int = 5, chunk: int = 1000) -> float:
    """Leave-one-out k-nearest-neighbour accuracy of labels y from latents z by cosine similarity:
    how well the classes separate without training anything on top. A silent (all-zero) latent has
    no direction and counts as wrong."""
    if not 1 <= k < len(z):
        raise ValueError(f"k must be in 1..{len(z) - 1} for {len(z)} samples, got {k}")
    unit = torch.nn.functional.normalize(z.float(), dim=1)
    classes = int(y.max()) + 1
    correct = 0
    for start in range(0, len(z), chunk):
        sim = unit[start : start + chunk] @ unit.t()
        rows = torch.arange(len(sim))
        sim[rows, rows + start] = -float("inf")  # not its own neighbour
        neighbours = y[sim.topk(k, dim=1).indices]  # [chunk, k]
        votes = torch.zeros(len(sim), classes).scatter_add_(
            1, neighbours, torch.ones_like(neighbours, dtype=torch.float)
        )
        silent = unit[start : start + chunk].abs().sum(1) == 0
        correct += ((votes.argmax(1) == y[start : start + chunk]) & ~silent).sum().item()
    return correct / len(z)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same samples [N, p], [N, q]
    (Kornblith et al. 2019): 1 for identical representations, invariant to orthogonal transforms and
    isotropic scaling of either."""
    if len(a) != len(b):
        raise ValueError(f"CKA compares representations of the same samples: {len(a)} rows vs {len(b)}")
    a = (a - a.mean(0)).double()
    b = (b - b.mean(0)).double()
    cross = (b.t() @ a).pow(2).sum()
    norm = (a.t() @ a).pow(2).sum().sqrt() * (b.t() @ b).pow(2).sum().sqrt()
    return (cross / norm).item() if norm > 0 else float("nan")


def pca_2d(z: torch.Tensor) -> torch.Tensor:
    """The first two principal components of z [N, D] -> [N, 2]."""
    centred = z.double() - z.double().mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].t()).float()
