"""Machine measurements for benchmarks: the fp32 matrix-multiply peak this process can reach."""

from __future__ import annotations

import time

import torch


def matmul_peak_gflops(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 10, rounds: int = 3) -> float:
    """Best fp32 GFLOP/s of square matrix products over `sizes` (best of `rounds` timings each).

    Measured with the current torch thread setting, so call it after set_threads, in the same
    process as the workload it is compared with.
    """
    best = 0.0
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        out = torch.empty(n, n)
        for _ in range(2):
            torch.mm(a, b, out=out)
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            seconds = time.perf_counter() - start
            best = max(best, 2 * n**3 * repeats / seconds / 1e9)
    return best
