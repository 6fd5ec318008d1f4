"""Error types that the CLI turns into one clear line (importable without TensorFlow).

Every error the package raises on purpose derives from :class:`CovidxrayError`, so the CLI (and a
notebook) can tell "bad input, here is why" from a bug. Modules may define their own subclasses
(``config.ConfigError``, ``imageio.ImageReadError``, ...), always with this base.
"""


class CovidxrayError(Exception):
    """Base of every error the package raises on purpose: its message is one line naming the problem."""


class WeightsError(CovidxrayError, RuntimeError):
    """Backbone weights could not be obtained (offline, missing or mismatching file)."""


class UsageError(CovidxrayError, ValueError):
    """An option the command cannot use: unknown method, layer, corruption or class, empty selection."""


class DiskSpaceError(CovidxrayError, OSError):
    """Not enough free disk space for a write; nothing was written."""


class RunLockedError(CovidxrayError, RuntimeError):
    """Another process holds the run folder (training or resuming it)."""


class ConfigError(CovidxrayError, ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


class DataError(CovidxrayError, ValueError):
    """The dataset cannot be used as given (no images, missing classes, bad splits file)."""


class TableError(DataError):
    """A CSV table that cannot be used: unreadable, incomplete, or without the needed columns."""


class RunError(CovidxrayError, ValueError):
    """A run folder is incomplete or does not match what is asked of it."""


class DownloadError(CovidxrayError, RuntimeError):
    """The dataset could not be downloaded or unpacked; the message says what to do instead."""
