"""Machine settings and measurements: torch threads, the allocator, the compute precision and the matmul peak."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import time

import torch

from fflab.vocab import PRECISION_SETTINGS

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
    """Use `threads` torch threads (0: one per core), keep freed memory for reuse and flush denormal numbers to
    zero (`flush_denormals`); returns the count."""
    n = threads or os.cpu_count() or 1
    flush_denormals()
    torch.set_num_threads(n)
    keep_freed_memory()
    return n


def flush_denormals() -> bool:
    """Compute float values below 1.2e-38 (denormals) as zero. On x86 CPUs each operation on a denormal takes
    a slow microcode path, and Adam's first moments of weights whose gradients are almost always zero decay
    through that range: a cifar10-local-recurrent run held 1-8% of them there by epoch 5, and its epochs
    slowed from 104 to 137 s. The flag is per thread and torch's worker threads copy it when they start, so it
    reaches them all only if set before the first parallel operation, as `fflab train`, `resume` and the
    benchmarks do (`set_threads` comes first); later it reaches the calling thread only. Returns whether the
    CPU supports it."""
    return torch.set_flush_denormal(True)


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compute_precision(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The context a run computes in, by `train.precision` ("auto" is settled first, see `settle_precision`).

    "bfloat16" autocasts matrix products and convolutions to bfloat16 (2x the float32 rate on CPUs with
    AVX-512 BF16 or AMX, and on GPUs; a fifth of it on a CPU without them); weights, gradients' accumulation,
    optimiser state and goodness stay float32. The cache of cast weights is off because the weights change
    inside one context (a whole run).
    "float32" changes nothing.
    """
    if precision == "auto":
        precision = settle_precision(precision, device)[0]
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISION_SETTINGS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision], cache_enabled=False)


BFLOAT16_MARGIN = 1.2  # "auto" takes bfloat16 on a CPU only this much faster than float32, so close timings cannot flip


def settle_precision(precision: str, device: str | torch.device) -> tuple[str, str | None]:
    """The precision a run computes in for the setting `precision`, and a line for its log (or None).

    "auto" takes bfloat16 where the device multiplies it faster than float32, else float32: on a GPU, one of
    compute capability 8.0 or more (older ones emulate bfloat16); on a CPU, where timed products of both
    (512x512, about 0.1 s) run at least BFLOAT16_MARGIN times faster in bfloat16. The instruction sets torch
    reads are not public API, hence the timing. A CPU without AVX-512 BF16 or AMX converts every bfloat16
    operand: a Xeon with AVX-512 but neither ran bfloat16 products at a fifth of the float32 rate. An explicit
    "bfloat16" on such a CPU is kept, with a warning.
    """
    if precision not in PRECISION_SETTINGS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISION_SETTINGS)}")
    device = torch.device(device)
    if precision == "float32" or (precision == "bfloat16" and device.type != "cpu"):
        return precision, None
    if device.type != "cpu":
        native = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
        chosen = "bfloat16" if native else "float32"
        return chosen, f'train.precision = "auto": {chosen} on {device}'
    rate = {p: matmul_peak_gflops(sizes=(512,), repeats=4, rounds=2, precision=p) for p in PRECISIONS}
    bf16, fp32 = rate["bfloat16"], rate["float32"]
    rates = f"this CPU multiplies bfloat16 matrices at {bf16:.0f} GFLOP/s against {fp32:.0f} in float32"
    if precision == "auto":
        chosen = "bfloat16" if bf16 >= BFLOAT16_MARGIN * fp32 else "float32"
        return chosen, f'train.precision = "auto": {chosen} ({rates})'
    if bf16 >= fp32:
        return precision, None
    return precision, (
        f'warning: {rates} (no native bfloat16 instructions), so train.precision = "bfloat16" slows this run '
        'down; a run with train.precision = "auto" (or "float32") would train faster, in float32 numerics'
    )


def matmul_peak_gflops(
    sizes: tuple[int, ...] = (1024, 2048),
    repeats: int = 10,
    rounds: int = 3,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    budget_seconds: float = 10.0,
) -> float:
    """Best GFLOP/s of square matrix products over `sizes` (best of `rounds` timings each) on `device`,
    with operands of `precision` (a `PRECISIONS` name).

    Measured with the current torch thread setting, so call it after set_threads, in the same
    process as the workload it is compared with. A GPU needs larger products to reach its peak:
    there, sizes of 4096 and 8192 are used. Where one round of a size would last more than `budget_seconds`
    (bfloat16 on a CPU that emulates it runs at about 1 GFLOP/s, so the default rounds would take minutes), the
    first product's rate stands for that size and the larger sizes are skipped.
    """
    device = torch.device(device)
    gpu = device.type == "cuda"
    sizes = (4096, 8192) if gpu else sizes
    best = 0.0
    gen = torch.Generator().manual_seed(0)

    def timed(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, times: int) -> float:
        if gpu:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(times):
            torch.mm(a, b, out=out)
        if gpu:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for n in sizes:
        a, b = (torch.randn(n, n, generator=gen).to(device, PRECISIONS[precision]) for _ in range(2))
        out = torch.empty(n, n, device=device, dtype=PRECISIONS[precision])
        first = timed(a, b, out, 1)
        best = max(best, 2 * n**3 / first / 1e9)
        if first * repeats > budget_seconds:
            break
        timed(a, b, out, 1)  # a second warm-up: the first can pay one-off costs (page faults, kernel choice)
        for _ in range(rounds):
            best = max(best, 2 * n**3 * repeats / timed(a, b, out, repeats) / 1e9)
    return best
