"""Errors fflab raises at its boundaries (files, configs, user input).

The CLI prints these as one clear message instead of a traceback; anything else is a bug.
"""


class FFLabError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class ConfigError(FFLabError, ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


class DataError(FFLabError):
    """A data set is missing, corrupt, truncated or does not match what was expected."""


class CheckpointError(FFLabError):
    """A run directory or checkpoint is missing files or does not match its settings."""


class InputError(DataError, ValueError):
    """An input given to a trained run (an image file, an array) does not fit it: the message names the input
    and what the run expects (size, channels, value range)."""


class ExportError(FFLabError):
    """A trained network cannot be written in the requested format; the message says why and what can be."""


class WriteError(FFLabError, OSError):
    """A file could not be written: the message names the path and the cause (no space left, no permission,
    read-only file system) and what was kept. Also an OSError, with the cause's errno, so that code which
    tolerates a failed write (a cache) still does."""

    def __str__(self) -> str:  # the message alone: OSError's own would be "[Errno 28] ...: 'path'"
        return str(self.args[0]) if self.args else ""


class DivergedError(FFLabError):
    """Training stopped because a loss, a goodness or a weight became non-finite or ran away (see
    fflab.training.health). The message names the epoch, the layer and the quantity; `epoch`, `layer` (0-based,
    None where the quantity is not one layer's) and `quantity` say the same for code."""

    def __init__(
        self, message: str, *, epoch: int = 0, layer: int | None = None, quantity: str = "", value: float = 0.0
    ) -> None:  # defaults: an exception is unpickled (from a parallel worker) as cls(message), then its __dict__
        super().__init__(message)
        self.epoch, self.layer, self.quantity, self.value = epoch, layer, quantity, value
