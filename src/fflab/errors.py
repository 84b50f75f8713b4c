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
