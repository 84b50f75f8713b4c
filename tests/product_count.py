"""Count the matrix-product FLOPs a piece of code runs, for checking the trainers' `flops_per_sample`.

torch.utils.flop_counter.FlopCounterMode misses in-place products (addmm_, which Hebbian updates use), so this
counts every dense product at the dispatcher: 2 m k n for an [m, k] x [k, n] product, per matrix of a batch.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# op -> (index of the left factor, index of the right factor) among its arguments
PRODUCTS = {
    aten.mm.default: (0, 1),
    aten.addmm.default: (1, 2),
    aten.addmm_.default: (1, 2),
    aten.bmm.default: (0, 1),
    aten.baddbmm.default: (1, 2),
}


class ProductFlops(TorchDispatchMode):
    """`with ProductFlops() as count: ...`, then `count.flops`."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in PRODUCTS:
            left, right = (args[i] for i in PRODUCTS[func])
            batch = left.shape[0] if left.dim() == 3 else 1
            self.flops += 2 * batch * left.shape[-2] * left.shape[-1] * right.shape[-1]
        return func(*args, **(kwargs or {}))
