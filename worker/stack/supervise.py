"""Processes of the embedded stack: children that die with their parent, the lock that says
which process owns a DIGITS_HOME, and the cleanup of what a killed owner left behind.

    spawn(argv, log, env, death_signal)  -> Popen in its own session; it receives
                                            death_signal when its parent dies, even by SIGKILL
    HomeLock(home)                       -> .acquire() / .held_by_other() / .release()
    cleanup_stale(home, sock, log)       -> kills the recorded children of a dead owner,
                                            shuts down an orphaned Redis, removes the socket
"""
import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from worker import redisconn

PR_SET_PDEATHSIG = 1  # linux/prctl.h
RECORD = "stack.json"
LOCK = "stack.lock"

try:  # loaded in the parent: a forked child should not dlopen before exec
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not Linux: children are stopped by stop() only
    _LIBC = None


def _die_with(parent_pid, death_signal):
    """A preexec_fn: new session (Ctrl-C in a terminal reaches the parent only, which stops
    its children in order), and death_signal when the parent dies."""
    def preexec():
        os.setsid()
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)
    return preexec


def spawn(argv, log_path, env, death_signal=signal.SIGKILL):
    """Start argv with stdout and stderr appended to log_path -> Popen.

    The child gets death_signal when this process dies (PR_SET_PDEATHSIG; note it is tied
    to the thread that forks, so call this from the main thread). Celery's prefork pool
    processes set their own SIGKILL-on-parent-death, so a worker takes its pool with it.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, preexec_fn=_die_with(os.getpid(), death_signal))


def identity(pid):
    """[pid, create time] of a live process (what tells it from a later one with its pid)."""
    return [pid, psutil.Process(pid).create_time()]


def alive(ident):
    """True while the process [pid, create time] from identity() still runs."""
    pid, created = ident
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class HomeLock:
    """An exclusive flock on DIGITS_HOME/stack.lock, held while a stack owns that home.

    The kernel drops it when the owner dies, however it dies, so a lock that can be taken
    means any socket, record or process left under the home is stale. The descriptor is
    not inherited by children (Python's default), so orphans cannot keep it held.
    """

    def __init__(self, home):
        self.path = Path(home) / LOCK
        self.fd = None

    def acquire(self):
        """Take the lock -> True, or False when another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return True

    def held_by_other(self):
        """True when a live process other than this object holds the lock."""
        if self.fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def quick_redis(sock, timeout=1.0):
    """A redis-py client of the Redis on unix socket sock that fails at once instead of
    retrying (redis-py retries a refused connection for seconds by default)."""
    return redisconn.connect(str(sock), timeout=timeout)


def redis_ok(sock, timeout=1.0):
    """True when the Redis on unix socket sock answers a PING within timeout."""
    return redisconn.ping(str(sock), timeout=timeout)


def read_record(home):
    try:
        return json.loads((Path(home) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def cleanup_stale(home, sock, log=print):
    """Remove what a stack killed without stopping left under home (call with the HomeLock
    held): its recorded children (by pid and create time, never by name), an orphaned Redis
    on sock (shut down, which flushes its AOF, so queued work is kept) and the socket file."""
    record = read_record(home) or {}
    stale = [(name, ident) for name, ident in (record.get("children") or {}).items() if alive(ident)]
    for name, (pid, _) in stale:
        log(f"stopping {name} (pid {pid}) left by a stack that was killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL) if name != "redis" else os.kill(pid, signal.SIGTERM)
    if redis_ok(sock):
        log(f"shutting down an orphaned Redis on {sock}")
        import redis
        r = quick_redis(sock, 10)
        with contextlib.suppress(OSError, redis.RedisError):
            r.shutdown()  # SHUTDOWN fsyncs the AOF; its reply is a dropped connection
        r.close()
    deadline = time.time() + 20
    while (redis_ok(sock) or any(alive(i) for _, i in stale)) and time.time() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        (Path(home) / RECORD).unlink()
    with contextlib.suppress(FileNotFoundError):
        Path(sock).unlink()
