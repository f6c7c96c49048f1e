"""Pure NumPy digit model and its file formats: no Celery, no Redis."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("digits-queue")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
