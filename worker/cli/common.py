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
def queue_app(s, keep_alive=False, light=False):
    """Yield a Celery app bound to a reachable broker, starting a stack for the block if
    none runs (keep_alive: a background stack that outlives the command, for --no-wait).
    light: a worker.lightapp.LightApp instead when broker and backend are Redis (enough to
    submit and follow a prediction, and ~200 ms faster to start)."""
    from worker import stack
    if keep_alive:
        stack.start_background(s, log=eprint)
    with stack.broker_for(s, log=eprint) as url:
        app = app_for(url, s, light)
        try:
            yield app
        finally:
            close_app(app)


def close_app(app):
    """Close the Redis connections a command's light app opened (its broker and backend
    clients), instead of leaving their sockets to the garbage collector (a ResourceWarning
    under `python -X dev`). The Celery app is the process's current app: it keeps its pools."""
    if getattr(app, "is_light", False):
        for client in {id(c): c for c in (app.broker, app.backend.client)}.values():
            client.close()


def app_for(url, s, light=True):
    """A worker.lightapp.LightApp for broker url when light and it serves url (Redis broker
    and backend), else the Celery app bound to url."""
    from worker import lightapp
    if light and lightapp.supports(url, s):
        return lightapp.LightApp(url, s)
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
