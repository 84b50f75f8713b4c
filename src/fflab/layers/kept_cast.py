"""A weight's copy in autocast's lower dtype, kept until the weight changes (`KeptCast`)."""

from __future__ import annotations

import torch


class _StandIn(torch.autograd.Function):
    """`cast` (a copy of `weight` in another dtype) standing in for `weight` in a product. The gradient goes back
    to `weight` in its own dtype, as autocast's own cast would send it, or, where the holder collects gradients
    (`KeptCast.collect_gradient`), stays in the cast's dtype with the holder for `CastAdam` to read."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, cast: torch.Tensor, holder: KeptCast) -> torch.Tensor:
        ctx.dtype, ctx.holder = weight.dtype, holder
        return cast.view_as(cast)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        holder = ctx.holder
        if not holder.collect_gradient:
            return grad.to(ctx.dtype), None, None
        # A weight used twice in one step sums its gradients in float32, as autograd sums autocast's.
        holder.grad = grad if holder.grad is None else holder.grad.float() + grad
        return None, None, None


class KeptCast:
    """A copy of a float32 weight in a lower dtype for its products, made once per change of the weight.

    A recurrent net runs each product many times between two optimiser steps, and casting the weight every
    time took about 30% of its bfloat16 training step. A dense layer casts once per step, so it keeps a copy
    only where `CastAdam` writes it as it steps (`keep`), from the gradients this holder collects.

    The copy is current while the weight's version counter and storage are those it was made from. Torch's
    in-place operations move the counter (`load_state_dict`, the default optimisers); writes that bypass it must
    move it themselves (`mark_parameters_changed`), as fflab's fused optimisers (`make_optimizer`) and the
    layer-parallel broadcast of trained layers do.
    """

    def __init__(self) -> None:
        self.cast: torch.Tensor | None = None
        self.key: tuple | None = None
        self.collect_gradient = False  # set by CastAdam, which reads `grad` instead of the weight's .grad
        self.grad: torch.Tensor | None = None

    @staticmethod
    def _key(weight: torch.Tensor, dtype: torch.dtype) -> tuple:
        return weight._version, weight.data_ptr(), dtype

    def of(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`weight` in `dtype`, from the kept copy when it is current; its gradient flows back to `weight`."""
        if self.key != self._key(weight, dtype):
            self.keep(weight, weight.detach().to(dtype))
        if torch.is_grad_enabled() and weight.requires_grad:
            return _StandIn.apply(weight, self.cast, self)
        return self.cast

    def keep(self, weight: torch.Tensor, cast: torch.Tensor) -> None:
        """Keep `cast` as the current copy of `weight` (as `weight` is now)."""
        self.cast, self.key = cast, self._key(weight, cast.dtype)


def mark_parameters_changed(optimizer: torch.optim.Optimizer, *_) -> None:
    """Move the version counters of the parameters `optimizer` steps: fused optimisers write them without moving
    the counters, which kept copies read to know that their weight changed. A step hook of fflab's optimisers."""
    torch.autograd.graph.increment_version([p for group in optimizer.param_groups for p in group["params"]])
