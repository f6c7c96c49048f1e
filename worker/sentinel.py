"""Redis Sentinel: a broker and result backend that follow the master a set of sentinels name.

    DIGITS_BROKER_URL=sentinel://[user:password@]host1:26379,host2:26379,host3:26379[/db]
    DIGITS_SENTINEL_MASTER=digits        the master's name in the sentinels' configuration
    DIGITS_SENTINEL_PASSWORD=...         the sentinels' own password (requirepass), if any

user:password are Redis's (the master's and replicas' ACL user), not the sentinels'. kombu's
own form (`sentinel://h1:26379;sentinel://h2:26379/0`) is read too. `sentinels://` is the
same with TLS to the sentinels and to Redis, with the DIGITS_REDIS_CA/CERT/KEY/VERIFY
settings of rediss://.

    celery_entries(broker, backend, s)  -> the Celery settings for broker and result backend
    connect(url, s)                     -> a redis-py client that follows the master

Every connection has short timeouts and TCP keepalive, so that a master whose host
vanished (no reset, packets going nowhere) is noticed within seconds and the next connection
asks the sentinels again: they name the promoted replica. Each sentinel listed is asked in
turn, so one that is down costs one connect timeout, not the discovery.
"""
import logging
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from model.errors import ConfigError

SCHEMES = ("sentinel://", "sentinels://")
DEFAULT_PORT = 26379
CONNECT_TIMEOUT = 2.0  # seconds to connect to the master
SENTINEL_TIMEOUT = 1.0  # seconds to connect to a sentinel, and for its reply: one that is down costs this
READ_TIMEOUT = 5.0  # seconds a command may wait for its reply (longer than BRPOP's 1 s)
HEALTH_CHECK = 3  # seconds between kombu's checks of its long-lived connections
# a peer that stops answering is dropped after about 1 + 1 x 3 s idle, or 5 s of unacked data
KEEPALIVE = {getattr(socket, name): value for name, value in
             (("TCP_KEEPIDLE", 1), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 5000))
             if hasattr(socket, name)}


@dataclass(frozen=True)
class Target:
    """A Sentinel URL read: sentinels [(host, port)], Redis's credentials and db, TLS or not."""
    sentinels: tuple
    username: str | None
    password: str | None
    db: int
    tls: bool


def is_sentinel(url):
    """True when url names Redis through sentinels (sentinel:// or sentinels://)."""
    return str(url or "").startswith(SCHEMES)


def parse(url):
    """A sentinel:// or sentinels:// URL -> Target; ConfigError naming what is wrong."""
    text = str(url)
    if not is_sentinel(text):
        raise ConfigError(f"{redact(text)}: not a Sentinel URL (sentinel://host:port,host:port/db)")
    tls = text.startswith("sentinels://")
    sentinels, username, password, db = [], None, None, 0
    for part in text.split(";"):  # kombu's form: one URL per sentinel
        part = part.strip()
        if not part:
            continue
        if not is_sentinel(part):
            raise ConfigError(f"{redact(text)}: every part between ';' must be a sentinel:// URL")
        rest = part.split("://", 1)[1]
        auth, _, hosts = rest.rpartition("@")
        hosts, _, path = hosts.partition("/")
        if auth and password is None:
            user, _, pw = auth.partition(":")
            username, password = unquote(user) or None, unquote(pw) or None
        if path.strip("/"):
            try:
                db = int(path.strip("/"))
            except ValueError:
                raise ConfigError(f"{redact(text)}: the database after '/' must be a number") from None
        for hostport in hosts.split(","):
            if not hostport:
                continue
            try:
                u = urlsplit(f"//{hostport}")
                port = u.port or DEFAULT_PORT
            except ValueError:
                raise ConfigError(f"{redact(text)}: {hostport!r} is not host:port") from None
            if not u.hostname:
                raise ConfigError(f"{redact(text)}: {hostport!r} has no host")
            sentinels.append((u.hostname, port))
    if not sentinels:
        raise ConfigError(f"{redact(text)}: no sentinel listed")
    return Target(tuple(sentinels), username, password, db, tls)


def redact(url):
    """A Sentinel URL with its password replaced by ***."""
    import re
    return re.sub(r"(://[^:/@;,]*:)[^@/;]*@", r"\1***@", str(url))


def kombu_url(target):
    """Target -> kombu's and Celery's form: sentinel://[user:password@]host:port/db per sentinel, joined by ';'."""
    from urllib.parse import quote
    auth = ""
    if target.username or target.password:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    return ";".join(f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.sentinels)


def sentinel_kwargs(target, s):
    """redis-py's options for the connections to the sentinels themselves."""
    kw = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT,
          "socket_keepalive": True, "socket_keepalive_options": dict(KEEPALIVE)}
    if s.sentinel_password:
        kw["password"] = s.sentinel_password
    if target.tls:
        kw.update(ssl=True, **s.redis_tls())
    return kw


def transport_options(target, s):
    """kombu's broker_transport_options (and Celery's result_backend_transport_options) for Target."""
    return {"master_name": s.sentinel_master, "sentinel_kwargs": sentinel_kwargs(target, s),
            "socket_timeout": READ_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_keepalive": True, "socket_keepalive_options": dict(KEEPALIVE),
            "health_check_interval": HEALTH_CHECK, "retry_on_timeout": True}


_LAST = {}  # process-wide: service name -> the master's address connected to last, and
#           ("sentinel", service name) -> the address of the sentinel that answered last


def follow_the_master_on_reconnect():
    """Teach redis-py's sentinel-managed connections (redis-py's, kombu's, Celery's) three things:

    - a connection that dropped asks the sentinels for the master when it reconnects (redis-py
      reconnected it from send_packed_command through connect_check_health, which skips
      SentinelManagedConnection.connect, so to the host it had: a client retrying a command
      through a failover kept knocking on the lost master for as long as it retried);
    - the first connection to a new master says so once per process (a warning on the
      "digits.sentinel" logger: in a worker's log, on a client's stderr);
    - a sentinel that answered is asked first by every Sentinel of the process (kombu and
      Celery make several), so one that is down costs one timeout per process, not one each."""
    from redis.exceptions import ConnectionError, ResponseError, TimeoutError
    from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection
    if getattr(SentinelManagedConnection, "_digits_follows", False):
        return
    send, connect_to = SentinelManagedConnection.send_packed_command, SentinelManagedConnection.connect_to

    def send_packed_command(self, command, check_health=True):
        if not self._sock:  # one attempt (the caller's retry policy retries): the master named now
            self._connect_retry()
        return send(self, command, check_health)

    def connect_to_and_tell(self, address):
        connect_to(self, address)
        name = self.connection_pool.service_name
        if self.connection_pool.is_master:
            old = _LAST.get(name)
            _LAST[name] = tuple(address)
            if old and old != tuple(address):
                _LAST["failovers"] = _LAST.get("failovers", 0) + 1
                logging.getLogger("digits.sentinel").warning(
                    "digits: Redis failover: the sentinels name %s:%s master of %r (was %s:%s); following it",
                    address[0], address[1], name, old[0], old[1])

    def discover_answered_first(self, service_name):
        """Sentinel.discover_master, asking first the sentinel that answered last in this
        process, and failing with one line per sentinel (host:port: reason) instead of the
        clients' reprs: a refusal (a wrong password) then reads as one (worker.outage)."""
        good = _LAST.get(("sentinel", service_name))
        for i, s in enumerate(self.sentinels):
            if i and _address(s) == good:
                self.sentinels[0], self.sentinels[i] = s, self.sentinels[0]
                break
        errors = []
        for i, s in enumerate(self.sentinels):
            where = "%s:%s" % _address(s)
            try:
                state = s.sentinel_masters().get(service_name)
            except (ConnectionError, ResponseError, TimeoutError) as e:
                errors.append(f"{where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
                continue
            if state and self.check_master_state(state, service_name):
                self.sentinels[0], self.sentinels[i] = s, self.sentinels[0]
                _LAST[("sentinel", service_name)] = _address(s)
                return getattr(self, "_force_master_ip", None) or state["ip"], state["port"]
            errors.append(f"{where}: knows no live master {service_name!r}")
        raise MasterNotFoundError(f"no sentinel names a master {service_name!r} ({'; '.join(errors)})")

    SentinelManagedConnection.send_packed_command = send_packed_command
    SentinelManagedConnection.connect_to = connect_to_and_tell
    Sentinel.discover_master = discover_answered_first
    SentinelManagedConnection._digits_follows = True


def failovers():
    """How many times this process has followed the master to a new address (0 at first)."""
    return _LAST.get("failovers", 0)


def _address(client):
    """(host, port) of a redis-py client (a sentinel's)."""
    kw = client.connection_pool.connection_kwargs
    return kw.get("host"), kw.get("port")


def celery_entries(broker, backend, s):
    """Celery settings for a broker and/or result backend given as Sentinel URLs -> dict
    (only the entries for the URLs that are Sentinel ones)."""
    out = {}
    if is_sentinel(broker) or is_sentinel(backend):
        follow_the_master_on_reconnect()
    if is_sentinel(broker):
        t = parse(broker)
        out.update(broker_url=kombu_url(t), broker_transport_options=transport_options(t, s))
        if t.tls:
            out["broker_use_ssl"] = s.redis_tls()
    if is_sentinel(backend):
        t = parse(backend)
        options = transport_options(t, s)
        out.update(result_backend=kombu_url(t),
                   result_backend_transport_options={k: options[k] for k in ("master_name", "sentinel_kwargs")},
                   redis_socket_timeout=READ_TIMEOUT, redis_socket_connect_timeout=CONNECT_TIMEOUT,
                   redis_socket_keepalive=True, redis_retry_on_timeout=True,
                   redis_backend_health_check_interval=HEALTH_CHECK)
        if t.tls:
            out["redis_backend_use_ssl"] = s.redis_tls()
    return out


def connect(url, s, timeout=None):
    """A redis-py client of the master that the sentinels of url name, for Settings s: each
    new connection asks the sentinels, so after a failover it reaches the promoted replica.
    timeout: seconds for connecting and for each reply (default CONNECT_TIMEOUT/READ_TIMEOUT)."""
    from redis.sentinel import Sentinel
    follow_the_master_on_reconnect()
    t = parse(url)
    kw = dict(db=t.db, socket_timeout=timeout or READ_TIMEOUT, socket_connect_timeout=timeout or CONNECT_TIMEOUT,
              socket_keepalive=True, socket_keepalive_options=dict(KEEPALIVE))
    if t.username:
        kw["username"] = t.username
    if t.password:
        kw["password"] = t.password
    if t.tls:
        kw.update(ssl=True, **s.redis_tls())
    skw = sentinel_kwargs(t, s)
    if timeout:
        skw.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    return Sentinel(list(t.sentinels), sentinel_kwargs=skw, **kw).master_for(s.sentinel_master)


def reachable(url, timeout=0.5):
    """True when the sentinels of url name a master that answers a PING within timeout (a
    client's quick probe; the settings are read from the environment)."""
    from redis.exceptions import RedisError
    from worker import settings
    try:
        client = connect(url, settings.load(), timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False


def flower_asks_every_sentinel(app):
    """Flower's Broker page (flower.utils.broker.RedisSentinel) asks only the first sentinel
    of the broker URL for the master, so it fails while that one is down: when Flower is
    loaded in this process, make it ask every sentinel listed, with this module's options."""
    import sys
    module = sys.modules.get("flower.utils.broker")
    if module is None or getattr(module.RedisSentinel, "_digits_patched", False):
        return

    def _get_redis_client(self, broker_options, broker_use_ssl):
        from redis.asyncio.sentinel import Sentinel
        from worker import settings
        s = settings.load()
        t = parse(app.conf.digits_broker_url)
        kw = dict(db=t.db, username=t.username, password=t.password,
                  socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_connect_timeout)
        if t.tls:
            kw.update(ssl=True, **s.redis_tls())
        return Sentinel(list(t.sentinels), sentinel_kwargs=sentinel_kwargs(t, s), **kw).master_for(self.master_name)

    module.RedisSentinel._get_redis_client = _get_redis_client
    module.RedisSentinel._digits_patched = True
