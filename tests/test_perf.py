"""Machine settings: threads and the allocator setting that keeps freed tensors' memory for reuse."""

import platform
import sys

import pytest
import torch

from fflab.perf import keep_freed_memory, matmul_peak_gflops, set_threads


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting"
)
def test_freed_memory_is_kept_on_glibc():
    assert keep_freed_memory() is True


def test_set_threads_uses_every_core_by_default():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) == torch.get_num_threads() >= 1
    finally:
        torch.set_num_threads(before)


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak_gflops(sizes=(64,), repeats=2, rounds=1) > 0
