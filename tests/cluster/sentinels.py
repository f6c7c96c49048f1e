"""The cluster of tests/cluster/hosts.py with Redis Sentinel: a master, a replica and three
sentinels, each on a host of its own, all with TLS and passwords.

    cluster = SentinelCluster.create(base)
    cluster.lose_host("redis")       # the master's host dies for good: every process SIGKILLed, cable cut
    cluster.wait_master("replica")   # until the sentinels name the replica -> seconds waited
    cluster.bring_back("redis")      # the old master's host returns, its Redis started on its own data

Hosts: `redis` (the first master), `replica` (its replica), `sen1`, `sen2`, `sen3` (one sentinel
each; `sen3` also runs the one scheduler, so that losing the master's host does not take the
watchdog with it), plus `s3`, `w1`, `w2` and `client` as in hosts.py. Every process gets
DIGITS_BROKER_URL=sentinels://digits:PASSWORD@sen1,sen2,sen3/0 (TLS to sentinels and Redis),
DIGITS_SENTINEL_MASTER and DIGITS_SENTINEL_PASSWORD.

The sentinels' timeouts are short, as a drill needs them: down-after-milliseconds 1000 and
failover-timeout 5000 (production: docs/cluster.md).
"""
import os
import time

from tests.cluster.certs import make_certs
from tests.cluster.hosts import CORES, HOSTS, REDIS_PORT, REDIS_USER, Cluster, _sh, redis_server_tls

SENTINEL_PORT = 26379
MASTER = "digits"
REDIS_HOSTS = ("redis", "replica")
SENTINELS = ("sen1", "sen2", "sen3")
DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS = 1000, 5000


class SentinelCluster(Cluster):
    """See the module docstring."""
    HOSTS = {**HOSTS, "replica": 4, "sen1": 5, "sen2": 6, "sen3": 7}
    SCHEDULER_HOST = "sen3"

    def __init__(self, base):
        super().__init__(base)
        self.sentinel_password = os.urandom(12).hex()

    def _start_services(self):
        self.certs = make_certs(self.base / "certs", [self.ip[h] for h in REDIS_HOSTS + SENTINELS])
        self._start_redis()
        self.start_redis_on("replica", fresh=True)
        for host in SENTINELS:
            self.start_sentinel(host)
        self._start_s3()
        self.wait_group()

    # ------------------------------------------------------------------ URLs and environments
    def sentinel_url(self, db=0, first=None):
        """sentinels://digits:PASSWORD@sen1,sen2,sen3/db (first: the sentinel listed first)."""
        order = ([first] if first else []) + [h for h in SENTINELS if h != first]
        hosts = ",".join(f"{self.ip[h]}:{SENTINEL_PORT}" for h in order)
        return f"sentinels://{REDIS_USER}:{self.password}@{hosts}/{db}"

    def env(self, host, **extra):
        base = {"DIGITS_BROKER_URL": self.sentinel_url(0), "DIGITS_RESULT_BACKEND": self.sentinel_url(1),
                "DIGITS_SENTINEL_MASTER": MASTER, "DIGITS_SENTINEL_PASSWORD": self.sentinel_password}
        return super().env(host, **{**base, **extra})

    def settings(self):
        """worker.settings for this process (the bridge's side), with the cluster's sentinels."""
        from worker import settings
        saved = {k: os.environ.get(k) for k in ("DIGITS_SENTINEL_MASTER", "DIGITS_SENTINEL_PASSWORD",
                                                  "DIGITS_REDIS_CA", "DIGITS_BROKER_URL")}
        os.environ.update(DIGITS_SENTINEL_MASTER=MASTER, DIGITS_SENTINEL_PASSWORD=self.sentinel_password,
                          DIGITS_REDIS_CA=self.certs["ca"], DIGITS_BROKER_URL=self.sentinel_url())
        try:
            return settings.load()
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    def redis(self, db=1):
        """A client of the master the sentinels name, from this process (through the bridge)."""
        from worker import sentinel
        return sentinel.connect(self.sentinel_url(db), self.settings(), timeout=2)

    def sentinel_client(self, host):
        import redis
        return redis.Redis(host=self.ip[host], port=SENTINEL_PORT, password=self.sentinel_password, ssl=True,
                           ssl_ca_certs=self.certs["ca"], socket_timeout=2, socket_connect_timeout=2)

    # ------------------------------------------------------------------ services
    def _tls_lines(self, port_line):
        return [port_line, "port 0", "tls-replication yes", f"tls-cert-file {self.certs['server_cert']}",
                f"tls-key-file {self.certs['server_key']}", f"tls-ca-cert-file {self.certs['ca']}",
                "tls-auth-clients optional"]

    def start_redis_on(self, host, fresh=False):
        """Redis on host: the master's configuration of hosts.py plus what a replica needs to
        follow a master over TLS; the replica starts as one of `redis`."""
        if host == "redis":
            return self._start_redis(fresh=fresh)
        data = self.private(host) / "data"
        data.mkdir(exist_ok=True)
        conf = self.private(host) / "redis.conf"
        if fresh:
            conf.write_text("\n".join([
                f"bind {self.ip[host]}", *self._tls_lines(f"tls-port {REDIS_PORT}"), "protected-mode yes",
                "user default off", f"user {REDIS_USER} on >{self.password} ~* &* +@all",
                f"masteruser {REDIS_USER}", f"masterauth {self.password}",
                f"replicaof {self.ip['redis']} {REDIS_PORT}", f"replica-announce-ip {self.ip[host]}",
                f"dir {data}", 'save ""', "appendonly yes", "appendfsync everysec",
                "maxmemory-policy noeviction", "daemonize no", ""]))
            conf.chmod(0o600)
        self.spawn(f"{host}-redis", host, [redis_server_tls(), str(conf)])

    def redis_conf_extra(self):
        """The first master's extra lines: what it needs to follow the replica once that is
        promoted and it comes back (a replica of it, over TLS, as the ACL user)."""
        return ["tls-replication yes", f"masteruser {REDIS_USER}", f"masterauth {self.password}",
                f"replica-announce-ip {self.ip['redis']}"]

    def wait_redis(self, timeout=30):
        """Until the first master answers (asked directly: the sentinels may not run yet)."""
        import redis
        deadline = time.time() + timeout
        while True:
            try:
                self.role("redis")
                return
            except (redis.RedisError, OSError):
                if time.time() > deadline or self.procs["redis"].poll() is not None:
                    raise RuntimeError(f"Redis did not start: {self.log_text('redis')[-2000:]}")
                time.sleep(0.1)

    def start_sentinel(self, host):
        conf = self.private(host) / "sentinel.conf"
        conf.write_text("\n".join([
            f"bind {self.ip[host]}", *self._tls_lines(f"tls-port {SENTINEL_PORT}"), f"dir {self.private(host)}",
            f"sentinel announce-ip {self.ip[host]}",
            f"sentinel monitor {MASTER} {self.ip['redis']} {REDIS_PORT} 2",
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER} 1",
            f"sentinel auth-user {MASTER} {REDIS_USER}", f"sentinel auth-pass {MASTER} {self.password}",
            f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}",
            "daemonize no", ""]))
        conf.chmod(0o600)
        self.spawn(f"{host}-sentinel", host, [redis_server_tls(), str(conf), "--sentinel"])

    def wait_group(self, timeout=60):
        """Until every live sentinel knows a replica and the other live sentinels (a failover
        needs both; sentinels learn of replicas from the master's INFO every 10 s)."""
        import redis
        live = [h for h in SENTINELS if f"{h}-sentinel" in self.procs and self.procs[f"{h}-sentinel"].poll() is None]
        deadline = time.time() + timeout
        while True:
            try:
                infos = [self.sentinel_client(h).sentinel_master(MASTER) for h in live]
                if all(m["num-slaves"] >= 1 and m["num-other-sentinels"] >= len(live) - 1 for m in infos):
                    return
            except (redis.RedisError, OSError):
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the sentinels did not find each other: {self.log_text('sen1-sentinel')[-2000:]}")
            time.sleep(0.2)

    def master_host(self):
        """The host whose Redis the sentinels name master now (asked of any live sentinel)."""
        import redis
        by_ip = {self.ip[h]: h for h in REDIS_HOSTS}
        for h in SENTINELS:
            try:
                ip, _ = self.sentinel_client(h).sentinel_get_master_addr_by_name(MASTER)
                return by_ip.get(ip.decode() if isinstance(ip, bytes) else ip)
            except (redis.RedisError, OSError, TypeError):
                continue
        return None

    def wait_master(self, host, timeout=60):
        """Until the sentinels name host's Redis master -> seconds waited."""
        start = time.time()
        while self.master_host() != host:
            if time.time() - start > timeout:
                raise AssertionError(f"the sentinels did not name {host} master within {timeout}s")
            time.sleep(0.1)
        return time.time() - start

    def lose_host(self, host):
        """host dies for good: its cable is cut and every process on it SIGKILLed."""
        self.cut(host)
        self.kill_host(host)  # and the processes named "<host>-..."
        if host == "redis" and "redis" in self.procs:
            self._kill(self.procs.pop("redis"))

    def stall_replication(self, host):
        """From now on nothing host sends reaches the other Redis host (a blackhole route in
        host's namespace): its replica falls behind, the tail of writes that a failover loses."""
        other = next(h for h in REDIS_HOSTS if h != host)
        _sh("ip", "-n", self.ns[host], "route", "add", "blackhole", f"{self.ip[other]}/32")

    def bring_back(self, host):
        """host's cable plugged again (routes cleared) and its Redis started on its own data,
        with the configuration it had (a master's): the sentinels turn it into a replica."""
        for other in REDIS_HOSTS:
            _sh("ip", "-n", self.ns[host], "route", "del", "blackhole", f"{self.ip[other]}/32", check=False)
        self.heal(host)
        self.start_redis_on(host)

    def stop_worker_processes(self):
        """SIGKILL every worker (the scheduler and its watchdog go on)."""
        for name in [n for n in self.workers if n != "scheduler" and n in self.procs]:
            self._kill(self.procs.pop(name))

    def start_worker_processes(self, hosts=("w1", "w2")):
        """Start the workers that stop_worker_processes stopped (not the scheduler) -> once they answer."""
        import sys
        for h in hosts:
            for q in ("predict", "train"):
                argv = [sys.executable, "-m", "worker.cli", "worker", "--queues", q, "--concurrency", 1]
                self.spawn(f"{h}-{q}", h, argv + (["--max-tasks-per-child", 1] if q == "train" else []),
                           core=CORES[h])
        self.wait_workers({f"{q}@{h}" for h in hosts for q in ("predict", "train")})

    def role(self, host):
        """ROLE of host's Redis, asked directly (not through the sentinels) -> "master"/"slave"."""
        import redis
        r = redis.Redis(host=self.ip[host], port=REDIS_PORT, username=REDIS_USER, password=self.password,
                        ssl=True, ssl_ca_certs=self.certs["ca"], socket_timeout=2, socket_connect_timeout=2)
        role = r.execute_command("ROLE")[0]
        return role.decode() if isinstance(role, bytes) else role
