"""Small, well-separated synthetic classification data for fast tests."""

import torch


def toy_data(n: int = 400, d: int = 20, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n points in d dimensions around c random centres (noise 0.05), and their labels."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.rand(c, d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    return centers[y] + 0.05 * torch.randn(n, d, generator=gen), y
