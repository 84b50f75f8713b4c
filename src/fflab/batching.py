"""Running a function over a large input a chunk at a time, to bound memory."""

from __future__ import annotations

from collections.abc import Callable

import torch


def in_batches(fn: Callable[[torch.Tensor], torch.Tensor], x, batch_size: int = 1000) -> torch.Tensor:
    """fn applied to x[i : i + batch_size] for each chunk, concatenated along the first dimension (x may be a
    tensor or a lazily rendered sequence source)."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
