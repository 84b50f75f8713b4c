"""Starting the workers of a parallel run: local processes on this machine, or ranks started by torchrun.

Workers talk over gloo on the CPU, or NCCL when each has a GPU; local workers meet on 127.0.0.1. Under
`torchrun` (one machine or many) the ranks find each other through the rendezvous torchrun sets up (the
MASTER_ADDR / RANK / WORLD_SIZE variables). In both cases a worker that dies stops the others: its
peers' next send, receive or collective fails (or times out after `timeout` seconds) and becomes a
clear error, and the launcher stops the rest.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import traceback
from collections.abc import Callable

import torch.distributed as dist
import torch.multiprocessing as mp

from fflab.errors import FFLabError

DEFAULT_TIMEOUT = 300.0  # seconds a rank waits on another before giving up


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world size, workers on this machine) when started by torchrun, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    world = int(os.environ["WORLD_SIZE"])
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_WORLD_SIZE", world))


def threads_per_worker(requested: int, workers_here: int) -> int:
    """The torch threads of each worker: the configured count, or this machine's cores shared out."""
    return requested or max(1, (os.cpu_count() or 1) // workers_here)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_rank() -> int:
    """This worker's index among the workers on its machine (0 outside a parallel run): its GPU."""
    if not dist.is_initialized():
        return 0
    return int(os.environ.get("LOCAL_RANK", dist.get_rank()))  # local workers all share one machine


def join_group(
    rank: int, world_size: int, init_method: str = "env://", timeout: float = DEFAULT_TIMEOUT, backend: str = "gloo"
) -> None:
    """Join the process group: backend gloo (CPU tensors) or nccl (CUDA tensors)."""
    try:
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    except (RuntimeError, ValueError) as e:
        raise FFLabError(f"rank {rank} could not join the {world_size} workers at {init_method}: {e}") from e


def leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _worker(
    rank: int, world_size: int, init_method: str, timeout: float, backend: str, fn: Callable, args: tuple
) -> None:
    """One local worker: join the group, run fn(*args), and report an fflab error as a message (exit 2)."""
    try:
        join_group(rank, world_size, init_method, timeout, backend)
        fn(*args)
    except FFLabError as e:
        print(f"fflab: error: worker {rank}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except BaseException:
        # Show the cause before leaving the group: leaving makes the peers fail at once, and the
        # launcher may stop this process before torch passes the traceback on.
        print(f"fflab: worker {rank} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        raise
    finally:
        leave_group()


def run_local_workers(
    fn: Callable, world_size: int, args: tuple = (), timeout: float = DEFAULT_TIMEOUT, backend: str = "gloo"
) -> None:
    """Run fn(*args) in `world_size` new processes on this machine, joined in one `backend` group.

    `fn` must be importable (a module-level function). Returns when all have finished; if any fails,
    the others are stopped and an FFLabError names the worker.
    """
    if world_size < 1:
        raise FFLabError(f"need at least one worker, got {world_size}")
    init_method = f"tcp://127.0.0.1:{free_port()}"
    try:
        mp.start_processes(
            _worker,
            args=(world_size, init_method, timeout, backend, fn, args),
            nprocs=world_size,
            start_method="spawn",
        )
    except mp.ProcessExitedException as e:
        raise FFLabError(
            f"worker {e.error_index} of {world_size} stopped ({_exit_reason(e)}); the other workers were stopped"
        ) from None
    except mp.ProcessRaisedException as e:
        raise FFLabError(f"worker {e.error_index} of {world_size} failed; the others were stopped:{e}") from None


def _exit_reason(e: mp.ProcessExitedException) -> str:
    if e.signal_name:
        return f"killed by {e.signal_name}"
    return "its error is above" if e.exit_code == 2 else f"exit code {e.exit_code}"
