"""Finding a broker for a command: the configured one, a running `digits up` (its record
under DIGITS_HOME), or an embedded stack started for the command's duration (reachable,
broker_for) or in the background (start_background)."""
import contextlib
import subprocess
import sys
import time

from worker.errors import StackError
from worker.stack import supervise
from worker.stack.embedded import Stack


def broker_reachable(url, timeout=0.5, settings=None):
    """True when the Redis at url (redis://, rediss:// or the embedded redis+socket://)
    answers a PING within timeout, with no retries (a client's quick probe); settings: the
    TLS options of a rediss:// URL (Settings.redis_tls())."""
    from worker import redisconn
    return redisconn.ping(url, settings, timeout)


def find_running(s, shared_only=True, answering=True):
    """The record of a live `digits up` for settings s whose Redis answers, or None.

    shared_only=False also finds a stack a command started for its own duration (which
    others must not use, but whose jobs are running). answering=False also finds a live
    stack whose Redis does not answer right now (its supervisor is restarting it): a
    command uses that one and rides the outage out. A record whose owner no longer holds
    DIGITS_HOME's lock is stale (its stack was killed), whatever its pid says.
    """
    info = supervise.read_record(s.home)
    if not info or (shared_only and not info.get("shared")) or not supervise.HomeLock(s.home).held_by_other():
        return None
    return info if not answering or supervise.redis_ok(info["socket"]) else None


def live_broker(s):
    """URL of a broker that answers now, for a client that must not start one: the
    configured broker, or the embedded stack running under DIGITS_HOME -> str, or None."""
    if s.broker_url:
        return s.broker_url if broker_reachable(s.broker_url, settings=s) else None
    running = find_running(s, shared_only=False)
    return running["broker_url"] if running else None


def start_background(s, log=print, idle_exit=60, timeout=90):
    """Start a detached `digits up --no-flower --idle-exit` for --no-wait commands, unless a
    stack is reachable; returns once it answers. StackError, with the end of its log, as
    soon as it exits instead (not after the whole timeout)."""
    if s.broker_url or find_running(s, answering=False):
        return
    log(f"starting a background embedded stack under {s.home}; it stops when idle for {idle_exit:g}s")
    s.home.mkdir(parents=True, exist_ok=True)
    log_path = s.home / "background-up.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "up", "--no-flower", "--idle-exit",
                                 str(idle_exit)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not find_running(s):
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise StackError(f"the background stack exited ({tail[0]}); see {log_path}")
        if time.time() > deadline:
            raise StackError(f"the background stack did not start within {timeout}s; see {log_path}")
        time.sleep(0.2)


@contextlib.contextmanager
def reachable(s, log=print, flower=False):
    """Yield {"broker_url", "flower_url", "flower_user", "flower_password"} for a command:
    the configured broker (no Flower info), a running `digits up`'s, or a short-lived
    embedded stack's (with Flower when flower=True), stopped when the block ends."""
    if s.broker_url:
        yield {"broker_url": s.broker_url, "flower_url": None}
        return
    running = find_running(s, answering=False)  # a `digits up` restarting its Redis: the command rides it out
    if running:
        yield running
        return
    log(f"starting an embedded stack under {s.home} for this command "
        "(run `digits up` in another terminal to keep one running)")
    stack = Stack(s, flower=flower, record=False, log=log).start()
    try:
        yield {"broker_url": stack.url, "flower_url": stack.flower_url, "flower_user": stack.flower_user,
               "flower_password": stack.flower_password}
    finally:
        stack.stop()


@contextlib.contextmanager
def broker_for(s, log=print):
    """Yield the broker URL for a command (see reachable)."""
    with reachable(s, log) as info:
        yield info["broker_url"]
