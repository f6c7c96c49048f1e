"""A minimal Redis client: RESP2 over a unix socket or TCP (TLS for rediss://, an ACL user
or password, a database number), no retries. It serves the commands that must start
fast (`digits status` PINGs the stack and reads one key; `digits predict` submits and
follows a job through worker.lightapp): redis-py costs 40 to 90 ms to import, this nothing.
Workers and everything else use redis-py or Celery.

    with LightRedis("/path/redis.sock", timeout=1.0) as r:
        r.ping(); r.get("key"); r.set("key", "value", nx=True, ex=60)
    r = LightRedis.from_url("rediss://user:password@host:6379/1", tls=settings.redis_tls())

The methods used here of redis-py's client have its names and replies. Failures raise
ConnectionError (the server is gone, slower than the timeout, or answers nonsense); an
error reply raises ReplyError. A connection that failed is dropped, and
the next command connects anew (a client lives through a Redis restart).
"""
import select
import socket
import time


class ReplyError(Exception):
    """An error reply from Redis ("-ERR ...")."""


class BusyError(ConnectionError):
    """Redis is up but cannot answer yet ("-LOADING" while it reads its append-only file
    after a restart, and the like): counted as an outage, as redis-py counts it."""


BUSY = (b"LOADING", b"BUSY", b"MASTERDOWN", b"TRYAGAIN", b"CLUSTERDOWN")


def _arg(a):
    if isinstance(a, bytes):
        return a
    return (a if isinstance(a, str) else str(a)).encode()


class LightRedis:
    """address: a unix socket's path, or (host, port); tls: redis-py's ssl_* options
    (worker.settings.Settings.redis_tls()) to speak TLS; auth: (user or None, password)."""

    def __init__(self, address, timeout=1.0, connect=True, tls=None, auth=None, db=0):
        address = address if isinstance(address, tuple) else str(address)
        self.address, self.timeout, self.tls, self.auth, self.db = address, timeout, tls, auth, int(db)
        self.path = address if isinstance(address, str) else "%s:%s" % tuple(address)  # for messages
        self.sock, self.buf, self.answered = None, b"", False
        if connect:
            self._connect()

    @classmethod
    def from_url(cls, url, timeout=1.0, tls=None, connect=False):
        """A client for redis+socket:///path, unix:///path, redis:// or rediss://[user:password@]host[:port][/db]."""
        from urllib.parse import unquote, urlsplit
        url = str(url)
        for prefix in ("redis+socket://", "unix://"):
            if url.startswith(prefix):
                return cls(url[len(prefix):].split("?")[0], timeout, connect)
        u = urlsplit(url)
        if u.scheme not in ("redis", "rediss") or not u.hostname:
            raise ValueError(f"not a Redis URL: {url}")
        auth = (unquote(u.username) if u.username else None, unquote(u.password)) if u.password else None
        db = (u.path or "/0").strip("/") or 0
        return cls((u.hostname, u.port or 6379), timeout, connect, (tls or {}) if u.scheme == "rediss" else None,
                   auth, int(db))

    def _connect(self):
        try:
            if isinstance(self.address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.address)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(self.address, self.timeout)
                sock.settimeout(self.timeout)
            if self.tls is not None:
                sock = _tls_context(self.tls).wrap_socket(sock, server_hostname=self.address[0])
        except OSError as e:
            raise ConnectionError(f"cannot connect to Redis at {self.path}: {e.strerror or e}") from None
        self.sock, self.buf, self.answered = sock, b"", False
        try:
            if self.auth:
                self.execute("AUTH", *([self.auth[0]] if self.auth[0] else []), self.auth[1])
            if self.db:
                self.execute("SELECT", self.db)
        except ReplyError as e:  # a wrong user or password: said like redis-py says it
            self.close()
            raise ConnectionError(f"Redis at {self.path} refused this client: {e}") from None
        except BaseException:
            self.close()
            raise

    def execute(self, *args):
        """Send one command (str, bytes or number arguments) -> its reply: bytes, int, None, list."""
        parts = [b"*%d\r\n" % len(args)]
        for a in map(_arg, args):
            parts += [b"$%d\r\n" % len(a), a, b"\r\n"]
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(b"".join(parts))
            reply = self._reply()
        except ReplyError:  # an answer, if not the hoped-for one
            self.answered = True
            raise
        except TimeoutError:
            self.close()  # a later command connects anew
            raise ConnectionError(f"Redis at {self.path} did not answer within {self.timeout:g}s") from None
        except (ConnectionError, OSError) as e:  # gone, reset, or a TLS alert
            fresh = self.tls is not None and not self.answered
            self.close()
            if fresh and not isinstance(e, BusyError):  # hung up on before its first answer
                raise ConnectionError(f"Redis at {self.path} refused the TLS connection ({e}): "
                                      f"a client certificate it wants, or one it does not trust?") from None
            if isinstance(e, BusyError) or type(e) is ConnectionError:  # this module's, worded already
                raise
            # the OS's (a broken pipe, a reset): worded, and never a BrokenPipeError, which the
            # command line takes for its own output's reader going away
            raise ConnectionError(f"Redis at {self.path}: {e}") from None
        self.answered = True
        return reply

    def ping(self):
        return self.execute("PING") == b"PONG"

    def get(self, key):
        return self.execute("GET", key)

    def set(self, key, value, nx=False, ex=None):
        """True when set; None when nx and the key exists (redis-py's replies)."""
        args = ["SET", key, value] + (["EX", int(ex)] if ex else []) + (["NX"] if nx else [])
        return True if self.execute(*args) == b"OK" else None

    def delete(self, *keys):
        return self.execute("DEL", *keys) if keys else 0

    def sadd(self, key, *values):
        return self.execute("SADD", key, *values)

    def srem(self, key, *values):
        return self.execute("SREM", key, *values)

    def hkeys(self, key):
        return self.execute("HKEYS", key)

    def lpush(self, key, *values):
        return self.execute("LPUSH", key, *values)

    def subscribe(self, channel):
        """Make this connection a subscriber of channel (then only next_message() reads it)."""
        self.execute("SUBSCRIBE", channel)

    def next_message(self, timeout):
        """The data of the next message published on the subscribed channel (bytes), or None
        when none came within timeout seconds."""
        if self.sock is None:
            raise ConnectionError("not subscribed")
        end = time.monotonic() + timeout
        try:
            while True:
                if not self.buf:  # wait for a reply to begin; then read it whole
                    ready, _, _ = select.select([self.sock], [], [], max(0.0, end - time.monotonic()))
                    if not ready:
                        return None
                reply = self._reply()
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    return reply[2]
        except OSError:
            self.close()
            raise

    def pubsub(self, ignore_subscribe_messages=True):
        """A subscriber on a connection of its own (redis-py's pubsub(), for what Job.wait uses)."""
        return PubSub(LightRedis(self.address, self.timeout, False, self.tls, self.auth, self.db))

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _fill(self):
        got = self.sock.recv(65536)
        if not got:
            raise ConnectionError(f"Redis at {self.path} closed the connection")
        self.buf += got

    def _reply(self):
        try:
            return self._parse(self._line())
        except ValueError as e:  # a length or number that is not one
            raise ConnectionError(f"not a Redis reply: {e}") from None

    def _parse(self, line):
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            text = rest.decode("utf-8", "replace")
            if rest.startswith(BUSY):
                raise BusyError(f"Redis at {self.path}: {text}")
            raise ReplyError(text)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"not a Redis reply: {line[:40]!r}")


class PubSub:
    """subscribe(channel), get_message(timeout) -> {"type": "message", "data": bytes} or None, close()."""

    def __init__(self, conn):
        self.conn = conn

    def subscribe(self, channel):
        self.conn.subscribe(channel)

    def get_message(self, timeout=0.0):
        data = self.conn.next_message(timeout)
        return None if data is None else {"type": "message", "data": data}

    def close(self):
        self.conn.close()


def _tls_context(opts):
    """An ssl context from redis-py's options: the server's certificate and host name checked
    unless ssl_cert_reqs is CERT_NONE; ssl_ca_certs, ssl_certfile and ssl_keyfile files."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if opts.get("ssl_cert_reqs", ssl.CERT_REQUIRED) == ssl.CERT_NONE:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif opts.get("ssl_ca_certs"):
        ctx.load_verify_locations(opts["ssl_ca_certs"])
    else:
        ctx.load_default_certs()
    if opts.get("ssl_certfile"):
        ctx.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"))
    return ctx
