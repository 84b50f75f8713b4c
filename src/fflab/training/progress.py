"""Progress of a training epoch: tqdm's bar on a terminal; in a log file, a plain line now and then."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from tqdm.auto import tqdm

HEARTBEAT_SECONDS = 300.0  # short epochs print nothing to a log; a long one says where it is every 5 minutes


class EpochProgress:
    """The steps of one epoch, shown by tqdm's bar where stderr is a terminal.

    Where it is not (a run writing to a log file, as under nohup), tqdm stays off and, every `every` seconds, a line
    goes to stderr saying how many batches are done and about how long the epoch has left: an epoch of a large
    network can take half an hour, and its log would otherwise say nothing in between.
    """

    def __init__(self, steps: int, label: str, *, enabled: bool = True, every: float = HEARTBEAT_SECONDS) -> None:
        self.steps, self.label, self.every = steps, label, every
        self.bar = tqdm(range(steps), desc=label, disable=None if enabled else True, leave=False, unit="batch")
        self.lines = enabled and self.bar.disable  # None above: tqdm turns itself off away from a terminal

    def __iter__(self) -> Iterator[int]:
        start = last = time.perf_counter()
        for i in self.bar:
            yield i
            now = time.perf_counter()
            if self.lines and now - last >= self.every and i + 1 < self.steps:
                last = now
                done, elapsed = i + 1, now - start
                left = elapsed / done * (self.steps - done)
                print(
                    f"{self.label}: {done:,}/{self.steps:,} batches after {elapsed / 60:.1f} min, "
                    f"about {left / 60:.1f} min left",
                    file=sys.stderr,
                    flush=True,
                )

    def show_loss(self, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}")
