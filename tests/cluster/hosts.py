"""A small cluster of "hosts" on this machine: Linux network namespaces on a private bridge.

    cluster = Cluster.create(base)      # namespaces, TLS certificates, Redis, an S3 stand-in
    cluster.start_workers(storage)      # predict + train workers on w1 and w2, the scheduler
    cluster.run("client", ["predict", ...])   # a `digits` command on a host -> CompletedProcess
    cluster.cut("w2") / cluster.heal("w2")    # pull / plug a host's network cable
    cluster.kill_host("w2")                   # SIGKILL every process of a host
    cluster.freeze_host("w2")                 # SIGSTOP them (thaw_host: SIGCONT)
    cluster.restart_redis()                   # SIGKILL Redis, start it again on its data
    cluster.destroy()                         # every process, namespace and link removed

Hosts: `redis` (Redis with TLS and an ACL user, bound to its own address only, plus the
one scheduler, which runs the watchdog), `s3` (moto's server), `w1` and `w2` (a predict
and a train worker each, each host pinned to its own core) and `client`. Each host has its
own network namespace and address in a /24 of 10.213.0.0/16 chosen per run, its own host
name (a UTS namespace per process), its own HOME and DIGITS_HOME, and a private folder
that the other hosts cannot see (their view of it is an empty tmpfs, in a mount namespace
per process): so the hosts share nothing but the network and, in shared-folder mode, one
folder that stands in for an NFS mount. Nothing is routed beyond the bridge.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), `ip`, `unshare`, `openssl` and a TLS-capable
`redis-server` (Debian's); Cluster.unavailable() says why not, for a skip.
"""
import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.certs import make_certs  # noqa: F401 (tests import it from here)

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "dgt"  # every namespace and link of these clusters starts with it
HOSTS = {"redis": 2, "s3": 3, "w1": 11, "w2": 12, "client": 20}
CORES = {"w1": "0", "w2": "1"}
REDIS_PORT, S3_PORT = 6379, 5000
BUCKET = "digits-cluster"
REDIS_USER = "digits"
TLS_REDIS = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def _sh(*argv, check=True):
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True)


def redis_server_tls():
    """Path of a redis-server built with TLS, or None. The probe gives it TLS settings that
    cannot work: one built without TLS rejects the directive, one with TLS fails to load them."""
    for exe in TLS_REDIS + tuple(filter(None, [shutil.which("redis-server")])):
        if os.path.exists(exe):
            probe = subprocess.run([exe, "--port", "0", "--tls-port", "1", "--bind", "127.0.0.1",
                                    "--tls-cert-file", "/nonexistent", "--tls-key-file", "/nonexistent"],
                                   capture_output=True, text=True, timeout=10)
            if "Failed to configure TLS" in probe.stdout + probe.stderr:
                return exe
    return None


class Cluster:
    """See the module docstring. Build with Cluster.create(base); always destroy()."""
    HOSTS = HOSTS  # name -> last byte of its address
    SCHEDULER_HOST = "redis"  # where the one scheduler (and its watchdog) runs

    @staticmethod
    def unavailable():
        """Why no cluster can be made here (a skip reason), or None."""
        if os.geteuid() != 0:
            return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); CI runs as root"
        for tool in ("ip", "unshare", "openssl", "taskset"):
            if not shutil.which(tool):
                return f"{tool} is not installed (apt-get install iproute2 util-linux openssl)"
        if not redis_server_tls():
            return "no redis-server with TLS (apt-get install redis-server: Debian's is built with TLS)"
        probe = f"{PREFIX}-probe-{os.getpid()}"
        r = _sh("ip", "netns", "add", probe, check=False)
        if r.returncode:
            return f"cannot make a network namespace here: {r.stderr.strip() or r.returncode}"
        _sh("ip", "netns", "del", probe, check=False)
        return None

    def __init__(self, base):
        self.base = Path(base)
        self.run_id = f"{os.getpid() % 100000:05d}"
        self.subnet = f"10.213.{os.getpid() % 200 + 20}"
        self.bridge = f"{PREFIX}b{self.run_id}"
        self.ns = {h: f"{PREFIX}-{self.run_id}-{h}" for h in self.HOSTS}
        self.links = {h: f"{PREFIX}{self.run_id}{i}" for i, h in enumerate(self.HOSTS)}
        self.ip = {h: f"{self.subnet}.{n}" for h, n in self.HOSTS.items()}
        self.password = secrets.token_hex(16)
        self.procs = {}  # name -> Popen
        self.logs = {}  # name -> log path
        self.storage = None
        self.workers = set()  # names of the worker and scheduler processes started last
        self.destroyed = False

    # ------------------------------------------------------------------ building
    @classmethod
    def create(cls, base):
        c = cls(base)
        atexit.register(c.destroy)
        try:
            c._network()
            c._folders()
            c._start_services()
        except BaseException:
            c.destroy()
            raise
        return c

    def _start_services(self):
        self.certs = make_certs(self.base / "certs", [self.ip["redis"]])
        self._start_redis()
        self._start_s3()

    def _network(self):
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "link", "set", self.bridge, "up")
        _sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)  # this process's view, for checks
        for host, ns in self.ns.items():
            peer = self.links[host] + "p"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", self.links[host], "type", "veth", "peer", "name", peer)
            _sh("ip", "link", "set", peer, "netns", ns)
            _sh("ip", "link", "set", self.links[host], "master", self.bridge, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{self.ip[host]}/24", "dev", peer)
            _sh("ip", "-n", ns, "link", "set", peer, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _folders(self):
        self.shared = self.base / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        for host in self.HOSTS:
            for sub in ("home", "digits", "logs"):
                (self.private(host) / sub).mkdir(parents=True, exist_ok=True)

    def private(self, host):
        """The host's own folder (HOME and DIGITS_HOME are under it); other hosts see it empty."""
        return self.base / "hosts" / host

    def home(self, host):
        return self.private(host) / "home"

    # ------------------------------------------------------------------ URLs and environments
    def broker_url(self, user=REDIS_USER, password=None, db=0):
        auth = "" if user is None else f"{user}:{self.password if password is None else password}@"
        return f"rediss://{auth}{self.ip['redis']}:{REDIS_PORT}/{db}"

    @property
    def s3_endpoint(self):
        return f"http://{self.ip['s3']}:{S3_PORT}"

    def env(self, host, **extra):
        """The environment of a process on host: its HOME and DIGITS_HOME, the cluster's
        broker (TLS, the ACL user), storage and S3 endpoint; extra overrides (None removes)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DIGITS_", "AWS_", "FSSPEC_", "CELERY_", "FLOWER_"))}
        env.update(HOME=str(self.home(host)), DIGITS_HOME=str(self.private(host) / "digits"),
                   PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1",
                   OMP_NUM_THREADS="1", DIGITS_BROKER_URL=self.broker_url(),
                   DIGITS_RESULT_BACKEND=self.broker_url(db=1), DIGITS_REDIS_CA=self.certs["ca"],
                   AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                   FSSPEC_S3_ENDPOINT_URL=self.s3_endpoint, DIGITS_WATCHDOG_INTERVAL="1",
                   DIGITS_WATCHDOG_GRACE="3", DIGITS_BROKER_OUTAGE="120")
        if self.storage:
            env["DIGITS_STORAGE"] = self.storage
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def wrap(self, host, argv, core=None):
        """argv run on host: in its network namespace, with its own host name (UTS namespace)
        and a mount namespace in which the other hosts' private folders are empty."""
        others = " ".join(f"'{self.private(h)}'" for h in self.HOSTS if h != host)
        script = (f'hostname "$0" && for d in {others}; do mount -t tmpfs -o size=1m tmpfs "$d"; done '
                  f'&& exec "$@"')
        pin = ["taskset", "-c", core] if core is not None else []
        return ["ip", "netns", "exec", self.ns[host], "unshare", "--uts", "--mount", "--propagation",
                "private", "sh", "-c", script, host, *pin, *map(str, argv)]

    def spawn(self, name, host, argv, core=None, **env):
        """Start a long-running process on host -> Popen; its output goes to logs/<name>.log."""
        log = self.private(host) / "logs" / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.wrap(host, argv, core), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env(host, **env),
                                    start_new_session=True, cwd=self.home(host))
        self.procs[name] = proc
        return proc

    def run(self, host, args, timeout=180, env=None, cli=True):
        """A `digits` command (cli=True) or any argv on host -> CompletedProcess (text)."""
        argv = [sys.executable, "-m", "worker.cli", *args] if cli else list(args)
        return subprocess.run(self.wrap(host, argv), capture_output=True, text=True, timeout=timeout,
                              env=self.env(host, **(env or {})), stdin=subprocess.DEVNULL, cwd=self.home(host))

    def python(self, host, code, timeout=120, env=None):
        """Run Python code on host -> CompletedProcess."""
        return self.run(host, [sys.executable, "-c", code], timeout=timeout, env=env, cli=False)

    # ------------------------------------------------------------------ services
    def _start_redis(self, fresh=True):
        data = self.private("redis") / "data"
        data.mkdir(exist_ok=True)
        conf = self.private("redis") / "redis.conf"
        if fresh:
            conf.write_text("\n".join([
                f"bind {self.ip['redis']}", "port 0", f"tls-port {REDIS_PORT}", "protected-mode yes",
                f"tls-cert-file {self.certs['server_cert']}", f"tls-key-file {self.certs['server_key']}",
                f"tls-ca-cert-file {self.certs['ca']}", "tls-auth-clients optional",
                "user default off",
                f"user {REDIS_USER} on >{self.password} ~* &* +@all",
                f"dir {data}", 'save ""', "appendonly yes", "appendfsync everysec",
                "maxmemory-policy noeviction", "daemonize no", *self.redis_conf_extra(), ""]))
            conf.chmod(0o600)
        self.spawn("redis", "redis", [redis_server_tls(), str(conf)])
        self.wait_redis()

    def redis_conf_extra(self):
        """More lines of the Redis configuration (a subclass's)."""
        return []

    def wait_redis(self, timeout=30):
        import redis
        deadline = time.time() + timeout
        while True:
            try:
                if self.redis().ping():
                    return
            except (redis.RedisError, OSError):
                if time.time() > deadline or self.procs["redis"].poll() is not None:
                    raise RuntimeError(f"Redis did not start: {self.logs['redis'].read_text()[-2000:]}")
                time.sleep(0.1)

    def redis(self, db=1):
        """A client of the cluster's Redis from this process (through the bridge)."""
        import redis
        return redis.Redis.from_url(self.broker_url(db=db), ssl_ca_certs=self.certs["ca"], socket_timeout=5,
                                    socket_connect_timeout=5)

    def restart_redis(self):
        """SIGKILL Redis and start it again on the same data (its append-only file)."""
        self.kill_redis()
        self.start_redis()

    def kill_redis(self):
        """SIGKILL Redis (start_redis brings it back on its data)."""
        self.procs["redis"].kill()
        self.procs["redis"].wait(10)

    def start_redis(self):
        """Start a killed Redis again on the same data (its append-only file)."""
        self._start_redis(fresh=False)

    def _start_s3(self):
        self.spawn("s3", "s3", [sys.executable, "-m", "moto.server", "-H", self.ip["s3"], "-p", S3_PORT])
        code = (f"import s3fs,time\nfor i in range(100):\n    try:\n"
                f"        s3fs.S3FileSystem(endpoint_url='{self.s3_endpoint}').mkdir('{BUCKET}'); break\n"
                f"    except Exception:\n        time.sleep(0.2)\nelse:\n    raise SystemExit('no S3')")
        r = self.python("client", code, timeout=60)
        if r.returncode:
            raise RuntimeError(f"the S3 stand-in did not start: {r.stderr[-2000:]}")

    def s3_storage(self, prefix):
        return f"s3://{BUCKET}/{prefix}"

    def start_workers(self, storage, hosts=("w1", "w2"), train=True, concurrency=1, **env):
        """Workers on hosts (each pinned to its core) and the one scheduler (with the watchdog)
        on the redis host, all with `storage`; returns once every worker answers a ping."""
        self.stop_workers()
        self.storage = str(storage)
        self.workers = {f"{h}-{q}" for h in hosts for q in (("predict", "train") if train else ("predict",))}
        self.workers.add("scheduler")
        for h in hosts:
            self.spawn(f"{h}-predict", h, [sys.executable, "-m", "worker.cli", "worker", "--queues", "predict", "--concurrency",
                                           concurrency], core=CORES[h], **env)
            if train:
                self.spawn(f"{h}-train", h, [sys.executable, "-m", "worker.cli", "worker", "--queues", "train", "--concurrency", 1,
                                             "--max-tasks-per-child", 1], core=CORES[h], **env)
        self.spawn("scheduler", self.SCHEDULER_HOST, [sys.executable, "-m", "worker.cli", "scheduler", "--schedule-file",
                                          self.private(self.SCHEDULER_HOST) / "beat-schedule"], **env)
        want = {f"predict@{h}" for h in hosts} | ({f"train@{h}" for h in hosts} if train else set())
        self.wait_workers(want)

    def wait_workers(self, want, timeout=90):
        code = ("import json,sys\nfrom worker.app import make_app\napp=make_app()\n"
                "print(json.dumps(sorted(n for r in (app.control.ping(timeout=1) or []) for n in r)))")
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None and name in self.workers:
                    raise RuntimeError(f"{name} exited: {self.logs[name].read_text()[-3000:]}")
            r = self.python("client", code, timeout=60)
            if r.returncode == 0:
                seen = __import__("json").loads(r.stdout.strip().splitlines()[-1])
                if set(want) <= set(seen):
                    return seen
            time.sleep(0.5)
        raise RuntimeError(f"workers {sorted(want)} did not all answer (seen {seen})")

    def stop_workers(self):
        for name in [n for n in self.procs if n in self.workers]:
            self._kill(self.procs.pop(name))

    @staticmethod
    def _kill(proc, sig=signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(Exception):
            proc.wait(10)

    def host_pids(self, host):
        r = _sh("ip", "netns", "pids", self.ns[host], check=False)
        return [int(p) for p in r.stdout.split()]

    def kill_host(self, host):
        """SIGKILL every process on host, as a machine that dies (its workers and their pools)."""
        self._signal_host(host, signal.SIGKILL)
        for name in [n for n in self.procs if n.startswith(host + "-")]:
            with contextlib.suppress(Exception):
                self.procs.pop(name).wait(10)

    def freeze_host(self, host):
        """SIGSTOP every process on host (thaw_host, or kill_host, ends it)."""
        self._signal_host(host, signal.SIGSTOP)

    def thaw_host(self, host):
        self._signal_host(host, signal.SIGCONT)

    def _signal_host(self, host, sig):
        for pid in self.host_pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def cut(self, host):
        """Pull host's cable: its link on the bridge goes down (packets go nowhere)."""
        _sh("ip", "link", "set", self.links[host], "down")

    def heal(self, host):
        _sh("ip", "link", "set", self.links[host], "up")

    def log_text(self, name):
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    # ------------------------------------------------------------------ teardown
    def destroy(self):
        """Kill every process of the cluster, remove its namespaces, links and bridge."""
        if self.destroyed:
            return
        self.destroyed = True
        for proc in list(self.procs.values()):
            self._kill(proc)
        self.procs.clear()
        for ns in self.ns.values():
            for pid in _sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _sh("ip", "netns", "del", ns, check=False)
        for link in list(self.links.values()) + [self.bridge]:
            _sh("ip", "link", "del", link, check=False)


def remove_stale():
    """Remove namespaces and links of clusters whose process is gone (a run killed hard)."""
    for line in _sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not _alive_run(parts[1]):
            for pid in _sh("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _sh("ip", "netns", "del", name, check=False)
    for line in _sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(PREFIX) and name[len(PREFIX):len(PREFIX) + 1] in "b0123456789":
            digits = name[len(PREFIX):].lstrip("b")[:5]
            if digits.isdigit() and not _alive_run(digits):
                _sh("ip", "link", "del", name, check=False)


def _alive_run(run_id):
    """True when a live process could own run_id (pid modulo 100000)."""
    return any(int(p) % 100000 == int(run_id) for p in os.listdir("/proc") if p.isdigit())
