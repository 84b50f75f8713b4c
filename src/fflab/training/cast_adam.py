"""Adam for bfloat16 training on the CPU with the casts fused into its step (`CastAdam`).

Under autocast every training step casts each float32 weight to bfloat16 for its products, and casts the
bfloat16 gradient the products return back to float32 for the optimiser: two passes over every weight besides
Adam's own. For the 4x2000 network those casts took about 17% of a bfloat16 step and Adam 8%. `CastAdam` reads
the bfloat16 gradient as it came out of the product and writes the bfloat16 copy of each updated weight for the
next step's products, in the same pass over memory that updates the weight and its moments. That pass is a small
C function (`SOURCE`), compiled once per machine with the system's C compiler; where there is none, or it fails,
`kernel()` is None and training keeps autocast's casts and torch's fused Adam.

The weights this applies to are those whose layers keep their bfloat16 cast (`KeptCast`, gradients collected);
every other parameter takes torch's fused Adam step, and the optimiser's state is torch's own (`step`,
`exp_avg`, `exp_avg_sq` per parameter), so checkpoints pass between the two ways unchanged.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import torch

from fflab.data.paths import resolve_cache_dir
from fflab.layers.kept_cast import KeptCast, mark_parameters_changed

# One Adam step in the order of torch's CPU kernel as its source reads (aten/src/ATen/native/cpu/FusedAdamKernel.cpp,
# commit 000510a): coefficients in double, then float; L2 decay added to the gradient (Adam; skipped at zero), or
# the weight first scaled by 1 - lr * decay (AdamW, as torch's _fused_adamw_ does); exp_avg = beta1 exp_avg +
# (1 - beta1) g, exp_avg_sq = beta2 exp_avg_sq + g g (1 - beta2), param -= step_size exp_avg / (sqrt(exp_avg_sq) /
# sqrt(bc2) + eps) with step_size = lr / bc1. torch 2.13's vectorised step computes some of these as a lerp with
# fused multiply-adds, so the two agree to float rounding (1e-6 relative over five steps, tests/test_cast_adam.py),
# not bit for bit. Then the bfloat16 copy of param, rounded to nearest even as torch rounds (finite values; the
# health checks stop a run whose weights are not finite). The elements are split over `threads` OpenMP threads.
SOURCE = r"""
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

static inline float bf16_to_float(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t float_to_bf16(float f) {
  uint32_t u; memcpy(&u, &f, 4); u += 0x7fffu + ((u >> 16) & 1u); return (uint16_t)(u >> 16);
}

/* One copy of the loop per gradient dtype and decay kind, each vectorised by the compiler. */
#define STEP_LOOP(GRAD, DECAY)                                                                     \
  for (int64_t i = begin; i < end; i++) {                                                          \
    float g = GRAD, w = p[i];                                                                      \
    DECAY;                                                                                         \
    float mi = m[i] * beta1 + g * c1;                                                              \
    float vi = v[i] * beta2 + g * g * c2;                                                          \
    w = w - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);                                         \
    m[i] = mi; v[i] = vi; p[i] = w; c[i] = float_to_bf16(w);                                       \
  }

int cast_adam(float *restrict p, const void *grad, int grad_is_bf16, float *restrict m, float *restrict v,
              uint16_t *restrict c, int64_t n, float beta1, float beta2, float c1, float c2, float eps,
              float decay, int decoupled, float step_size, float bc2_sqrt, int threads) {
  const uint16_t *restrict g16 = (const uint16_t *)grad;
  const float *restrict g32 = (const float *)grad;
  /* torch's own OpenMP threads: loaded after torch, this library shares its libgomp.so.1 and thread pool. */
  #pragma omp parallel num_threads(threads) if (n >= 65536)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    /* decoupled: `decay` is already 1 - lr * weight_decay; L2 decay 0 is skipped, as torch skips it */
    if (grad_is_bf16 && decoupled) STEP_LOOP(bf16_to_float(g16[i]), w = w * decay)
    else if (grad_is_bf16 && decay != 0.0f) STEP_LOOP(bf16_to_float(g16[i]), g = g + w * decay)
    else if (grad_is_bf16) STEP_LOOP(bf16_to_float(g16[i]), (void)0)
    else if (decoupled) STEP_LOOP(g32[i], w = w * decay)
    else if (decay != 0.0f) STEP_LOOP(g32[i], g = g + w * decay)
    else STEP_LOOP(g32[i], (void)0)
  }
  return 0;
}
"""


def cpu_signature() -> str:
    """The CPU's model and instruction sets: the library is compiled for this CPU (-march=native), so a cache
    shared by machines of different CPUs keeps one library for each."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return sys.platform
    wanted = ("model name", "flags")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


@cache
def kernel():
    """The compiled step (a ctypes function), or None where it cannot be built or kept (no C compiler, not Linux, no
    writable cache): the library is kept in fflab's cache folder (`resolve_cache_dir`: $FFLAB_CACHE, else the user
    cache), one per source, compiler and CPU."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or not sys.platform.startswith("linux"):
        return None
    flags = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC"]
    key = hashlib.sha256("\n".join([SOURCE, compiler, *flags, cpu_signature()]).encode()).hexdigest()[:16]
    try:
        library = resolve_cache_dir() / f"cast_adam-{key}.so"
        if not library.exists():
            library.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
                source, built = Path(tmp) / "cast_adam.c", Path(tmp) / "cast_adam.so"
                source.write_text(SOURCE)
                subprocess.run([compiler, *flags, str(source), "-o", str(built)], check=True, capture_output=True)
                os.replace(built, library)  # atomic: a process beside this one sees the whole library or none
        function = ctypes.CDLL(str(library)).cast_adam
    except (OSError, RuntimeError, subprocess.CalledProcessError):  # RuntimeError: no home directory for the cache
        return None
    f32, i32, i64, ptr = ctypes.c_float, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    function.argtypes = [ptr, ptr, i32, ptr, ptr, ptr, i64, f32, f32, f32, f32, f32, f32, i32, f32, f32, i32]
    function.restype = i32
    return function


def cast_adam_step_(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    cast: torch.Tensor,
    *,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """One Adam (or, `decoupled`, AdamW) step of `param` in place, writing its bfloat16 copy into `cast`.
    `grad` is bfloat16 or float32; every tensor is contiguous, on the CPU, of `param`'s shape."""
    tensors = {"param": param, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "cast": cast, "grad": grad}
    for name, t in tensors.items():
        if t.device.type != "cpu" or not t.is_contiguous() or t.shape != param.shape:
            raise ValueError(f"cast_adam_step_: {name} must be a contiguous CPU tensor of shape {tuple(param.shape)}")
    if not (param.dtype == exp_avg.dtype == exp_avg_sq.dtype == torch.float32 and cast.dtype == torch.bfloat16):
        raise ValueError("cast_adam_step_: param and moments must be float32, cast bfloat16")
    if grad.dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"cast_adam_step_: grad must be bfloat16 or float32, not {grad.dtype}")
    function = kernel()
    if function is None:
        raise RuntimeError("the cast-Adam kernel could not be built here (see fflab.training.cast_adam.kernel)")
    beta1, beta2 = betas  # the coefficients in double, as torch computes them
    decay = 1 - lr * weight_decay if decoupled else weight_decay
    step_size = lr / (1 - beta1**step)
    bc2_sqrt = math.sqrt(1 - beta2**step)
    function(
        param.data_ptr(), grad.data_ptr(), int(grad.dtype == torch.bfloat16), exp_avg.data_ptr(),
        exp_avg_sq.data_ptr(), cast.data_ptr(), param.numel(), beta1, beta2, 1 - beta1, 1 - beta2, eps, decay,
        int(decoupled), step_size, bc2_sqrt, torch.get_num_threads(),
    )  # fmt: skip


class CastAdam(torch.optim.Adam):
    """torch's fused Adam (AdamW with `decoupled_weight_decay=True`) whose kept-cast weights (`casts`) step by
    `cast_adam_step_` from the bfloat16 gradients their casts collected; every other parameter steps as in torch.

    Building one makes the casts collect their weights' gradients (`KeptCast.collect_gradient`), which then never
    reach the weights' `.grad`; a gradient that reaches `.grad` as well (the weight also used outside autocast) is
    added to the collected one. After a step it moves the version counters of all its parameters, as
    `make_optimizer` does for torch's fused optimisers, and then marks each kept cast it wrote as current."""

    def __init__(self, params, casts: dict[torch.Tensor, KeptCast], **options) -> None:
        if options.get("amsgrad") or options.get("maximize"):
            raise ValueError("CastAdam steps plain Adam and AdamW only (no amsgrad, no maximize)")
        super().__init__(params, fused=True, **options)
        if any(p.device.type != "cpu" for p in casts):
            raise ValueError("CastAdam steps CPU weights only")
        self.casts = casts
        for cast in casts.values():
            cast.collect_gradient = True

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for cast in self.casts.values():
            cast.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("CastAdam takes no closure")
        written = []
        for group in self.param_groups:
            for param in group["params"]:
                kept = self.casts.get(param)
                if kept is None or kept.grad is None:
                    continue
                grad = kept.grad if param.grad is None else kept.grad.float() + param.grad
                state = self.state[param]
                if not state:  # torch's Adam state, so that either optimiser can load the other's
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                # A fresh copy, not the kept one rewritten: a product's saved graph may still hold that.
                cast = torch.empty_like(param, dtype=torch.bfloat16, memory_format=torch.contiguous_format)
                cast_adam_step_(
                    param, grad.contiguous(), state["exp_avg"], state["exp_avg_sq"], cast,
                    step=int(state["step"].item()) + 1, lr=group["lr"], betas=group["betas"], eps=group["eps"],
                    weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"],
                )  # fmt: skip
                state["step"] += 1
                kept.grad = param.grad = None  # stepped: torch's step below must not take it again
                written.append((param, kept, cast))
        super().step()  # the parameters with ordinary gradients
        mark_parameters_changed(self)
        for param, kept, cast in written:
            kept.keep(param, cast)
