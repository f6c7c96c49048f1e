"""Sentinel URLs and settings (worker.sentinel): parsing, the Celery entries, and against a
real master, replica and three sentinels on this machine: the probe, a client and the Celery
app following a failover, Flower's Broker page with the first sentinel down.
The failover of a lost host, mid-job, is drilled across hosts in tests/cluster/test_failover.py."""
import asyncio
import os
import shutil
import socket
import subprocess
import time

import pytest

from model.errors import ConfigError
from tests.conftest import wait_for
from worker import sentinel, settings

PASSWORD, SENTINEL_PASSWORD, MASTER = "redis-pw", "sentinel-pw", "digits"


def test_parse_the_comma_form_and_kombus_form():
    t = sentinel.parse("sentinel://digits:p%40ss@h1:26380,h2,10.0.0.3:26381/2")
    assert t.sentinels == (("h1", 26380), ("h2", 26379), ("10.0.0.3", 26381))
    assert (t.username, t.password, t.db, t.tls) == ("digits", "p@ss", 2, False)
    k = sentinel.parse("sentinel://:pw@h1:1/1;sentinel://:pw@h2:2/1")
    assert k.sentinels == (("h1", 1), ("h2", 2)) and (k.username, k.password, k.db) == (None, "pw", 1)
    assert sentinel.parse("sentinels://h1").tls
    assert sentinel.parse(sentinel.kombu_url(t)) == t  # kombu's form reads back the same


@pytest.mark.parametrize("url, reason", [("sentinel://", "no sentinel"), ("sentinel://h1/x", "must be a number"),
                                         ("sentinel://h1:port", "is not host:port"),
                                         ("sentinel://h1;redis://h2", "must be a sentinel:// URL")])
def test_bad_urls_are_refused_with_the_reason(url, reason):
    with pytest.raises(ConfigError, match=reason):
        sentinel.parse(url)


def test_celery_config_uses_kombus_form_and_hides_the_password(monkeypatch):
    from worker.app import celery_config
    monkeypatch.setenv("DIGITS_BROKER_URL", "sentinel://u:secret@h1:1,h2:2/0")
    monkeypatch.setenv("DIGITS_RESULT_BACKEND", "sentinel://u:secret@h1:1,h2:2/1")
    monkeypatch.setenv("DIGITS_SENTINEL_MASTER", "prod")
    monkeypatch.setenv("DIGITS_SENTINEL_PASSWORD", "spw")
    s = settings.load()
    c = celery_config(s)
    assert c["broker_url"] == "sentinel://u:secret@h1:1/0;sentinel://u:secret@h2:2/0"
    assert c["result_backend"] == "sentinel://u:secret@h1:1/1;sentinel://u:secret@h2:2/1"
    for key in ("broker_transport_options", "result_backend_transport_options"):
        assert c[key]["master_name"] == "prod" and c[key]["sentinel_kwargs"]["password"] == "spw"
        assert c[key]["visibility_timeout"] == s.visibility_timeout  # the project's own options kept
    assert "secret" not in settings.redact(c["broker_url"]) and "secret" not in settings.redact(s.broker_url)


# --------------------------------------------------------------------------- real sentinels

def _port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_exe(name):
    exe = shutil.which(name) or f"/usr/bin/{name}"
    return exe if os.path.exists(exe) else None


class Group:
    """A master, a replica and three sentinels on 127.0.0.1, each a process of its own."""

    def __init__(self, base):
        self.base, self.procs = base, {}
        self.ports = {n: _port() for n in ("m", "r", "s1", "s2", "s3")}

    def start(self, name, lines, exe="redis-server"):
        conf = self.base / f"{name}.conf"
        if not conf.exists():
            (self.base / name).mkdir(exist_ok=True)
            conf.write_text("\n".join([f"port {self.ports[name]}", "bind 127.0.0.1", f"dir {self.base / name}",
                                       'save ""', "daemonize no", *lines, ""]))
        self.procs[name] = subprocess.Popen([_redis_exe(exe), str(conf)], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)

    def start_redis(self, name, replica_of=None):
        lines = ["user default off", f"user digits on >{PASSWORD} ~* &* +@all", "masteruser digits",
                 f"masterauth {PASSWORD}"]
        if replica_of:
            lines.append(f"replicaof 127.0.0.1 {self.ports[replica_of]}")
        self.start(name, lines)

    def start_sentinel(self, name):
        self.start(name, [f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['m']} 2",
                          f"sentinel down-after-milliseconds {MASTER} 1000",
                          f"sentinel failover-timeout {MASTER} 3000",
                          f"sentinel auth-user {MASTER} digits", f"sentinel auth-pass {MASTER} {PASSWORD}",
                          f"requirepass {SENTINEL_PASSWORD}"], exe="redis-sentinel")

    def url(self, db=0, order=("s1", "s2", "s3")):
        return f"sentinel://digits:{PASSWORD}@" + ",".join(f"127.0.0.1:{self.ports[n]}" for n in order) + f"/{db}"

    def kill(self, name):
        self.procs[name].kill()
        self.procs[name].wait(10)

    def stop(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait(10)


@pytest.fixture
def group(tmp_path, monkeypatch):
    if not (_redis_exe("redis-server") and _redis_exe("redis-sentinel")):
        pytest.skip("redis-server and redis-sentinel are needed (apt-get install redis-server redis-sentinel)")
    g = Group(tmp_path)
    g.start_redis("m")
    g.start_redis("r", replica_of="m")
    for name in ("s1", "s2", "s3"):
        g.start_sentinel(name)
    monkeypatch.setenv("DIGITS_BROKER_URL", g.url(0))
    monkeypatch.setenv("DIGITS_RESULT_BACKEND", g.url(1))
    monkeypatch.setenv("DIGITS_SENTINEL_MASTER", MASTER)
    monkeypatch.setenv("DIGITS_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
    try:
        wait_for(lambda: sentinel.reachable(g.url(), timeout=1), 20, "the sentinels to name the master")
        wait_for(lambda: all(_knows_the_group(g.ports[n]) for n in ("s1", "s2", "s3")), 30,
                 "every sentinel to know the replica and the other two")
        yield g
    finally:
        g.stop()


def _knows_the_group(port):
    """True when the sentinel at port knows the master's replica and the other two sentinels
    (a failover needs both: sentinels learn of replicas from the master's INFO, every 10 s)."""
    import redis
    try:
        m = redis.Redis(port=port, password=SENTINEL_PASSWORD).sentinel_master(MASTER)
    except redis.RedisError:
        return False
    return m["num-slaves"] >= 1 and m["num-other-sentinels"] >= 2


def _master_port(client):
    return client.connection_pool.get_master_address()[1]


def test_a_client_and_the_celery_app_follow_a_failover(group):
    from worker.app import make_app
    s = settings.load()
    client = sentinel.connect(group.url(1), s)
    client.set("before", "failover")
    app = make_app(s)
    app.backend.client.set("via", "celery")
    with app.connection_for_write() as conn:
        conn.default_channel.client.lpush("probe-queue", "x")
    assert _master_port(client) == group.ports["m"]
    wait_for(lambda: client.info("replication")["connected_slaves"] >= 1, 20, "the replica to attach")
    client.wait(1, 5000)  # both writes are on the replica before the master goes
    group.kill("m")
    start = time.time()
    wait_for(lambda: sentinel.reachable(group.url(), timeout=0.5), 30, "a promoted replica")
    print(f"failover: the sentinels named the replica {time.time() - start:.1f}s after the master was killed")
    assert sentinel.connect(group.url(1), s).get("before") == b"failover"
    assert _master_port(client) == group.ports["r"]
    assert app.backend.client.get("via") == b"celery"  # the backend's pool asks the sentinels again
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        assert conn.default_channel.client.lrange("probe-queue", 0, -1) == [b"x"]


def test_the_first_sentinel_down_costs_nothing(group):
    from worker.app import make_app
    group.kill("s1")
    s = settings.load()
    assert sentinel.reachable(group.url(), timeout=1)
    app = make_app(s)
    assert app.backend.client.ping()
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.ping()


def test_flowers_broker_page_asks_every_sentinel(group):
    """Flower's RedisSentinel asks the first sentinel only; with the app's patch, the others."""
    pytest.importorskip("flower")
    from flower.utils.broker import Broker
    from worker import app as app_mod
    group.kill("s1")
    app = app_mod.make_app(settings.load())
    sentinel.flower_asks_every_sentinel(app)
    broker = Broker(app.connection().as_uri(include_password=True),
                    broker_options=app.conf.broker_transport_options, broker_use_ssl=app.conf.broker_use_ssl)
    sync = sentinel.connect(group.url(0), settings.load())
    sync.lpush("predict", "a", "b")
    queues = asyncio.run(broker.queues(["predict"]))
    assert queues == [{"name": "predict", "messages": 2}]


def test_a_wrong_sentinel_password_is_unreachable_not_a_crash(group, monkeypatch):
    """A wrong sentinel password: the probe says unreachable, and a client's error names each
    sentinel with the refusal, which worker.outage reads as one (no waiting for an outage)."""
    import redis
    from worker import outage
    monkeypatch.setenv("DIGITS_SENTINEL_PASSWORD", "wrong")
    assert sentinel.reachable(group.url(), timeout=1) is False
    with pytest.raises(redis.ConnectionError) as e:
        sentinel.connect(group.url(), settings.load()).ping()
    assert f"127.0.0.1:{group.ports['s1']}" in str(e.value) and outage.refused(str(e.value)), str(e.value)


def test_a_command_in_flight_when_the_master_goes_silent_lands_on_the_new_master(group, caplog):
    """The master stops answering without closing its connections (SIGSTOP: as a host whose
    cable was cut) and is promoted away from: a worker's result-backend client (its retries as
    worker.app.ride_out_outages sets them) times out, asks the sentinels, writes to the new
    master, and says the failover once."""
    import logging
    import signal
    from worker import app as app_mod
    app = app_mod.make_app(settings.load())
    app_mod._bound["app"], saved = app, app_mod._bound["app"]
    try:
        app_mod.ride_out_outages()
        client = app.backend.client
        client.set("before", 1)
        os.kill(group.procs["m"].pid, signal.SIGSTOP)
        try:
            with caplog.at_level(logging.WARNING, logger="digits.sentinel"):
                client.set("during", "failover")  # blocks until it lands somewhere
        finally:
            os.kill(group.procs["m"].pid, signal.SIGCONT)
    finally:
        app_mod._bound["app"] = saved
    assert _master_port(client) == group.ports["r"]
    assert sentinel.connect(group.url(1), settings.load()).get("during") == b"failover"
    said = [r.getMessage() for r in caplog.records if "failover" in r.getMessage()]
    assert len(said) == 1 and str(group.ports["r"]) in said[0], said
