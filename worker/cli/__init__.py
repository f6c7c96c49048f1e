"""The `digits` command line. Run `digits --help`, or `digits COMMAND --help`.

    parser.py    every command and option (imports no NumPy, Celery or pandas)
    common.py    output helpers, option types, the queue context
    progress.py  the progress bars
    predict.py, train.py, jobs.py (status, watch, cancel, jobs, gc), models.py (models,
    promote, schedule), services.py (up, demo, worker, scheduler, flower)
"""
import json
import os
import sys

from worker.cli.common import eprint
from worker.cli.parser import build_parser


def main(argv=None):
    """Run one command -> exit code (worker.exitcodes; docs/cli.md, "Exit codes").

    Called without argv, as the program itself (the `digits` script, `python -m worker.cli`),
    it ends the process once the command has returned (see _exit_now); main(argv) returns."""
    code = _main(argv)
    if argv is None:
        _exit_now(code)
    return code


def _main(argv):
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
        if not getattr(a, "func", None):
            parser.print_help()
            return 2
        return _run(a)
    except BrokenPipeError:  # the reader went away (`digits status JOB --json | head -1`): quiet, as Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _exit_now(code):
    """End the process at once with `code`: flush stdout, stderr and logging, run the atexit
    handlers, and skip the interpreter's teardown of every module and object, which costs
    50-100 ms once NumPy, Celery and Redis are loaded (a third of a 100k-row prediction's
    client time besides its imports). Every file the commands write is closed (and fsynced)
    before they return; sockets and locks go with the process as on any exit."""
    import atexit
    import logging
    logging.shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
            pass
    os._exit(code if isinstance(code, int) else 1)


def _run(a):
    from model.errors import DigitsError, UsageError
    from worker.errors import BrokerUnreachable
    from worker import exitcodes
    from worker import settings as settings_mod
    try:
        return a.func(a, settings_mod.load()) or 0
    except BrokenPipeError:  # first: it is a ConnectionError, which BROKER_ERRORS would take for the broker's
        raise
    except UsageError as e:  # as argparse says its own: the command's usage, then the reason
        if not getattr(a, "json", False) and getattr(a, "usage", None):
            sys.stderr.write(a.usage())
        return _fail(a, str(e), exitcodes.USAGE)
    except BrokerUnreachable as e:
        return _fail(a, str(e), exitcodes.BROKER)
    except DigitsError as e:
        return _fail(a, str(e), exitcodes.FAILED)
    except _broker_errors() as e:  # a broker error no ride or waiting loop took (a refusal, say)
        s = settings_mod.load()
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        url = settings_mod.redact(s.broker_url or s.embedded_url)
        from worker.outage import refused
        if refused(e):  # a wrong password or user, an untrusted certificate: waiting won't help
            return _fail(a, f"broker {url} refused this client: {reason}", exitcodes.FAILED)
        return _fail(a, f"broker {url} unreachable: {reason}", exitcodes.BROKER)
    except OSError as e:  # an unwritable --out, a full disk, ...: the user's to fix, in one line
        return _fail(a, str(e), exitcodes.FAILED)
    except KeyboardInterrupt:
        eprint("digits: interrupted")
        return exitcodes.INTERRUPTED


def _broker_errors():
    """worker.outage.broker_errors(), looked up only when an exception is being matched."""
    from worker.outage import broker_errors
    return broker_errors()


def _fail(a, message, code):
    """Report an error: one line on stderr, and with --json one JSON object on stdout -> code."""
    if getattr(a, "json", False):
        print(json.dumps({"error": message, "exit_code": code}))
    eprint(f"digits: error: {message}")
    return code
