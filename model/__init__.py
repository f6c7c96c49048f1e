"""Pure NumPy digit model and its file formats: no Celery, no Redis."""
import functools


@functools.cache
def version():
    """The installed package's version ("0.0.0" from a source tree that is not installed);
    read on first use, since importlib.metadata costs ~15 ms to import."""
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("digits-queue")
    except PackageNotFoundError:
        return "0.0.0"


def __getattr__(name):
    if name == "__version__":
        return version()
    raise AttributeError(f"module 'model' has no attribute {name!r}")
