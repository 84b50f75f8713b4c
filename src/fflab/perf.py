"""Machine settings and measurements: torch threads, the allocator, the compute precision and the matmul peak."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import time

import torch

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the system.

    By default every tensor of more than a few MB is mapped fresh from the kernel and unmapped when
    freed, so the next step pays a page fault per 4 KB page to use it again. On the 2-core CI machine
    that cost 10 ms of an 80 ms training step of the 4x2000 network (and 9 of the 13 ms that scoring
    all labels took). Returns whether the setting was applied (False off glibc).

    The price: freed memory stays with the process, and large temporaries of varying sizes can fragment
    it, so that new ones no longer fit in the holes and the heap grows. Moving-MNIST evaluation, when it
    copied each 100-sequence chunk once per label (328 MB), grew to 24 GB over 100 chunks; malloc_trim
    gave almost all of it back. Loops over a data set should not allocate copies of that size per chunk.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    # glibc before 2.35 caps the mmap threshold at 32 MB; newer ones accept 1 GB.
    if not any(mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(size)) == 1 for size in (1 << 30, 32 << 20)):
        return False  # leave trimming alone too: setting it alone would freeze a small mmap threshold
    return mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1


def set_threads(threads: int) -> int:
    """Use `threads` torch threads (0: one per core) and keep freed memory for reuse; returns the count."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    keep_freed_memory()
    return n


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compute_precision(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The context a run computes in, by `train.precision`.

    "bfloat16" autocasts matrix products and convolutions to bfloat16 (2x the float32 rate on CPUs with
    AVX-512 BF16 or AMX, and on GPUs; slower than float32 on other CPUs, see `slow_bfloat16_warning`);
    weights, gradients' accumulation, optimiser state and goodness stay float32. The cache of cast weights is
    off because the weights change inside one context (a whole run).
    "float32" changes nothing.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision], cache_enabled=False)


def slow_bfloat16_warning(precision: str, device: str | torch.device) -> str | None:
    """A warning when `precision` is bfloat16 on a CPU that multiplies bfloat16 matrices slower than float32
    ones, else None. Without AVX-512 BF16 or AMX instructions torch converts every operand: on a Xeon with
    AVX-512 but neither, bfloat16 products ran at a fifth of the float32 rate. Measured (about 0.1 s), since
    the instruction sets torch reports on are not public API."""
    if precision != "bfloat16" or torch.device(device).type != "cpu":
        return None
    rate = {p: matmul_peak_gflops(sizes=(512,), repeats=4, rounds=2, precision=p) for p in ("bfloat16", "float32")}
    if rate["bfloat16"] >= rate["float32"]:
        return None
    return (
        f"warning: this CPU multiplies bfloat16 matrices at {rate['bfloat16']:.0f} GFLOP/s against "
        f'{rate["float32"]:.0f} in float32 (no native bfloat16 instructions), so train.precision = "bfloat16" '
        "slows this run down; --set train.precision=float32 trains faster (in float32 numerics)"
    )


def matmul_peak_gflops(
    sizes: tuple[int, ...] = (1024, 2048),
    repeats: int = 10,
    rounds: int = 3,
    device: str | torch.device = "cpu",
    precision: str = "float32",
) -> float:
    """Best GFLOP/s of square matrix products over `sizes` (best of `rounds` timings each) on `device`,
    with operands of `precision` (a `PRECISIONS` name).

    Measured with the current torch thread setting, so call it after set_threads, in the same
    process as the workload it is compared with. A GPU needs larger products to reach its peak:
    there, sizes of 4096 and 8192 are used.
    """
    device = torch.device(device)
    gpu = device.type == "cuda"
    sizes = (4096, 8192) if gpu else sizes
    best = 0.0
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        a, b = (torch.randn(n, n, generator=gen).to(device, PRECISIONS[precision]) for _ in range(2))
        out = torch.empty(n, n, device=device, dtype=PRECISIONS[precision])
        for _ in range(2):
            torch.mm(a, b, out=out)
        for _ in range(rounds):
            if gpu:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            if gpu:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            best = max(best, 2 * n**3 * repeats / seconds / 1e9)
    return best
