"""A locally connected product computed tile by tile, instead of as one masked dense product.

A locally connected map's weight is [n_out, n_in] and zero outside each unit's receptive field. As one dense
product it wastes most of its work on those zeros (88% for 11x11 fields on a 32x32 map), and so do its
gradient mask and, in bfloat16, the cast of the weight before every product. Here the output map is cut into
tiles of t x t positions (all channels); the units of one tile together see only a window of the input (a
(t + k - 1)-wide patch for k x k fields at stride 1), so each tile is a dense product over its window and all
tiles run as one batched product. The tiles are derived from the mask alone, so any receptive-field pattern
(strides, 'valid' grids, several sources side by side, a dense label block) tiles the same way.

The product runs features-first: the input is transposed to [n_in, N] (and, under autocast, cast) before the
windows are gathered, so the gather copies whole rows of N samples and the batched product reads the windows
as they lie. Gathering columns of [N, n_in] and transposing them for the product took 2.2-3.6x the time of
this in bfloat16, and about the same in float32 (the CIFAR-10 layer, 100-200 samples, no gradient, on an AMX
CPU shared with another run).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fflab.layers.base import confine
from fflab.layers.kept_cast import KeptCast

TILE_SIDES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Products with few output rows run well below the matrix-product rate; a tile of r rows is charged
# (1 + ROW_OVERHEAD / r) times its multiply-adds when the side is chosen. Measured on this project's CPU for
# 11x11 fields on 32x32 maps (3 and 6 input channels): 8x8 tiles ran fastest or within 10% of it.
ROW_OVERHEAD = 64


def spatial_tiles(out_shape: tuple[int, int, int], side: int) -> list[torch.Tensor]:
    """Flat indices of the units of each side x side tile of positions (every channel), in row-major order
    of tiles; units are numbered (channel, y, x) as in a [C, H, W] map."""
    c, h, w = out_shape
    units = torch.arange(c * h * w).view(c, h, w)
    return [units[:, y : y + side, x : x + side].flatten() for y in range(0, h, side) for x in range(0, w, side)]


def tile_windows(mask: torch.Tensor, out_shape: tuple[int, int, int], side: int) -> torch.Tensor:
    """[tiles, n_in] bool: the inputs that some unit of each side x side tile sees (tiles as in
    `spatial_tiles`), by max-pooling every input's map of the positions that see it."""
    c, h, w = out_shape
    seen_by = mask.view(c, h * w, -1).any(0).t().reshape(-1, h, w).float()  # [n_in, H, W]
    return F.max_pool2d(seen_by, side, ceil_mode=True).flatten(1).t() > 0


def tile_cost(mask: torch.Tensor, out_shape: tuple[int, int, int], side: int) -> float:
    """Multiply-adds per input row of the batched product with side x side tiles, charged for short tiles."""
    c, h, w = out_shape
    rows = c * min(side, h) * min(side, w)
    windows = tile_windows(mask, out_shape, side)
    return len(windows) * rows * int(windows.sum(1).max()) * (1 + ROW_OVERHEAD / rows)


def choose_tile_side(mask: torch.Tensor, out_shape: tuple[int, int, int]) -> int:
    """The cheapest tile side by `tile_cost`, up to one tile for the whole map (deterministic: the weight's
    shape depends on it)."""
    largest = max(out_shape[1:])
    sides = [s for s in TILE_SIDES if s < largest] + [largest]
    return min(sides, key=lambda s: tile_cost(mask, out_shape, s))


class TiledLocalLinear(nn.Module):
    """y = x W^T (+ b) for a weight W [n_out, n_in] held at zero outside `mask`, stored and computed per tile.

    `weight` is the dense starting weight (entries outside `mask` are dropped), `out_shape` the [C, H, W]
    layout of its rows. The parameter `weight` is [tiles, tile_rows, window]: tile i's units (`rows[i]`) see
    the inputs `cols[i]`; rows and columns that pad a tile up to the common size index a zero row/column one
    past the end and are masked. The tile side is saved with the weight (`tile_side`), and so is the order of
    its last two axes (`rows_first`), so a checkpoint stays loadable if a later build chooses other tiles;
    `upgrade_state` converts it, a weight saved window-first (before 2026-12-05), or a dense weight saved before
    the tiled layout existed.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        out_shape: tuple[int, int, int],
        *,
        bias: torch.Tensor | None = None,
        side: int | None = None,
    ) -> None:
        super().__init__()
        n_out, n_in = mask.shape
        if tuple(weight.shape) != (n_out, n_in) or math.prod(out_shape) != n_out:
            raise ValueError(
                f"a {n_out}x{n_in} mask needs a weight of that shape and {n_out} units in out_shape; got weight "
                f"{tuple(weight.shape)}, out_shape {tuple(out_shape)}"
            )
        self.dense_shape, self.out_shape = (n_out, n_in), tuple(out_shape)
        self.side = side or choose_tile_side(mask, out_shape)
        self.register_buffer("tile_side", torch.tensor(self.side))  # saved: the layout of `weight`
        self.register_buffer("rows_first", torch.tensor(True))  # saved: absent, the weight is window-first
        tiles = spatial_tiles(out_shape, self.side)
        cols = [seen.nonzero().flatten() for seen in tile_windows(mask, out_shape, self.side)]
        rows_per_tile, window = max(len(t) for t in tiles), max(len(c) for c in cols)
        pad = lambda v, size, end: torch.cat([v, v.new_full((size - len(v),), end)])  # noqa: E731
        self.register_buffer("rows", torch.stack([pad(t, rows_per_tile, n_out) for t in tiles]), persistent=False)
        self.register_buffer("cols", torch.stack([pad(c, window, n_in) for c in cols]), persistent=False)
        # What `forward` gathers: padding reads input 0 instead, against a weight held at zero (the mask is
        # False there), so it adds nothing and the input needs no padded copy.
        self.register_buffer("gather_cols", self.cols.where(self.cols < n_in, 0), persistent=False)
        where = torch.empty(n_out + 1, dtype=torch.long)  # each unit's place in the flattened tile outputs
        where[self.rows.flatten()] = torch.arange(self.rows.numel())
        self.register_buffer("unit_position", where[:n_out].clone(), persistent=False)
        self.weight = nn.Parameter(self.from_dense(weight.detach()))
        self.weight_cast = KeptCast()  # see `_weight_as`
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        confine(self, self.weight, self.from_dense(mask), "mask")

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor, out_shape: tuple[int, int, int]) -> TiledLocalLinear:
        return cls(linear.weight, mask, out_shape, bias=linear.bias)

    def from_dense(self, dense: torch.Tensor) -> torch.Tensor:
        """[n_out, n_in] -> the tiled layout [tiles, tile_rows, window] (padding entries are zero/False)."""
        padded = F.pad(dense.to(self.rows.device), (0, 1, 0, 1))
        return padded[self.rows[:, :, None], self.cols[:, None, :]].contiguous()

    def to_dense(self, tiled: torch.Tensor) -> torch.Tensor:
        """The tiled layout (the weight, its mask or its gradient) -> [n_out, n_in]."""
        n_out, n_in = self.dense_shape
        dense = tiled.new_zeros(n_out + 1, n_in + 1)
        dense[self.rows[:, :, None], self.cols[:, None, :]] = tiled
        return dense[:n_out, :n_in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = x.device.type
        autocast = torch.is_autocast_enabled(kind) and x.dtype == torch.float32  # autocast casts float32 only
        dtype = torch.get_autocast_dtype(kind) if autocast else x.dtype
        columns = x.t().to(dtype=dtype, memory_format=torch.contiguous_format)  # [n_in, N], one copy
        gathered = columns.index_select(0, self.gather_cols.flatten())
        windows = gathered.view(*self.cols.shape, len(x))  # [tiles, window, N]
        weight = self._weight_as(dtype) if autocast else self.weight
        out = torch.bmm(weight, windows).view(-1, len(x))  # [tiles * tile_rows, N]
        y = out.index_select(0, self.unit_position).t()  # a transposed view: reshape it, not view
        return y if self.bias is None else y + self.bias

    def _weight_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight for a product in `dtype`, cast once per change of the weight (`KeptCast`): a recurrent net
        runs each product many times between two optimiser steps."""
        return self.weight_cast.of(self.weight, dtype)  # float32; `forward` asks only for autocast's lower dtype

    def upgrade_state(self, state: dict, prefix: str) -> bool:
        """Bring a saved weight to this layout, in place: a dense one (fflab before the tiled layout), one tiled
        with another side, or one saved window-first. True if the weight changed layout (see
        `upgrade_saved_state`)."""
        weight = state.get(prefix + "weight")
        if weight is None:
            return False
        saved_side = int(state.setdefault(prefix + "tile_side", self.tile_side.clone()))  # absent: saved before
        window_first = not bool(state.get(prefix + "rows_first", False))
        state[prefix + "rows_first"] = self.rows_first.clone()
        if tuple(weight.shape) == self.dense_shape:
            dense = weight
        elif saved_side != self.side or window_first:
            mask = self.to_dense(self.mask).cpu()
            saved = TiledLocalLinear(torch.zeros(self.dense_shape), mask, self.out_shape, side=saved_side)
            dense = saved.to_dense(weight.cpu().transpose(1, 2) if window_first else weight.cpu())
        else:
            return False
        state[prefix + "weight"], state[prefix + "tile_side"] = self.from_dense(dense), self.tile_side.clone()
        return True

    def extra_repr(self) -> str:
        tiles, rows, window = self.weight.shape
        side = f"{self.side}x{self.side}"
        return f"dense={self.dense_shape}, tiles={tiles} of {side} positions ({rows} units x {window} inputs)"
