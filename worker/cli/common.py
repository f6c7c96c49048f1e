"""What every command module shares: output helpers, option types, the queue context."""
import argparse
import contextlib
import json
import sys

EPILOG = """Every command reads its settings from DIGITS_* environment variables (docs/settings.md).
With no DIGITS_BROKER_URL the commands use an embedded Redis and worker processes under
DIGITS_HOME (default ./.digits): started by `digits up`, or for one command's duration."""


def eprint(*a):
    print(*a, file=sys.stderr, flush=True)


def print_json(obj):
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


@contextlib.contextmanager
def queue_app(s, keep_alive=False):
    """Yield the Celery app bound to a reachable broker, starting a stack for the block if
    none runs (keep_alive: a background stack that outlives the command, for --no-wait)."""
    from worker.stack import broker
    if keep_alive:
        broker.start_background(s, log=eprint)
    with broker.broker_for(s, log=eprint) as url:
        app = app_for(url)
        try:
            yield app
        finally:
            close_app(app)


def close_app(app):
    """Close the connections a command's Celery app opened (its broker connection pool and
    the result backend's Redis client) instead of leaving their sockets to the garbage
    collector (a ResourceWarning under `python -X dev`). Both reconnect if used again."""
    import contextlib
    with contextlib.suppress(Exception):
        app.close()
    client = getattr(app.backend, "client", None) if "backend" in getattr(app, "__dict__", {}) else None
    if client is not None:
        with contextlib.suppress(Exception):
            client.connection_pool.disconnect()


def app_for(url):
    """The Celery app bound to broker url (worker.app.configure)."""
    from worker.app import configure
    return configure(url)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def print_table(rows):
    """Rows of text cells (a header first) printed as aligned columns two spaces apart, the
    last column unpadded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]))
