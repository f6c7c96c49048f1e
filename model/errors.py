"""The project's one error hierarchy: its root, DigitsError, and the model layer's errors.
The worker layer's (the stack, the broker) are in worker/errors.py, under the same root.

Every error a user can cause derives from DigitsError, so the command line can print
one line and exit non-zero instead of showing a traceback.
"""


def describe(exc, limit=300):
    """A one-line reason for any exception: an OSError's text and path ("Permission
    denied: /data/x.csv"), else "TypeName: message", cut to `limit` characters."""
    if isinstance(exc, DigitsError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class DigitsError(Exception):
    """Base of every error the project raises on purpose."""


class DataError(DigitsError):
    """Input data that cannot be read: names the file, the row or image, and the reason."""

    def __init__(self, source, reason, row=None):
        self.source = str(source)
        self.reason = reason
        self.row = row
        where = self.source if row is None else f"{self.source}, row {row}"
        super().__init__(f"{where}: {reason}")


class CheckpointError(DigitsError):
    """A model or training-state file that is missing, corrupt or incompatible."""


class StorageError(DigitsError, OSError):
    """Shared storage that cannot be read or written: names the path and the reason."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        DigitsError.__init__(self, f"{self.path}: {reason}")

    def __str__(self):
        return f"{self.path}: {self.reason}"


class ConfigError(DigitsError):
    """A bad setting, option or hyperparameter."""


class UsageError(ConfigError):
    """A command line the program cannot run as given: a missing or unexpected argument, or
    options that do not go together (the command line exits 2, as for argparse's errors)."""


class JobError(DigitsError):
    """A queue job that is unknown, failed, or cannot be submitted."""


class RegistryError(DigitsError):
    """An unknown model name, version or alias."""
