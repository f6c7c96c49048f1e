"""A minimal Redis client for the embedded stack's unix socket: RESP2, no retries. It
serves the commands that must start fast (`digits status` PINGs the stack and reads one
key; `digits predict` submits and follows a job through worker.lightapp): redis-py costs
40 to 90 ms to import, this nothing. Workers and everything else use redis-py or Celery.

    with LightRedis("/path/redis.sock", timeout=1.0) as r:
        r.ping(); r.get("key"); r.set("key", "value", nx=True, ex=60)

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


def _arg(a):
    if isinstance(a, bytes):
        return a
    return (a if isinstance(a, str) else str(a)).encode()


class LightRedis:
    def __init__(self, path, timeout=1.0, connect=True):
        self.path, self.timeout = str(path), timeout
        self.sock, self.buf = None, b""
        if connect:
            self._connect()

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise ConnectionError(f"cannot connect to Redis at {self.path}: {e.strerror or e}") from None
        except BaseException:
            sock.close()
            raise
        self.sock, self.buf = sock, b""

    def execute(self, *args):
        """Send one command (str, bytes or number arguments) -> its reply: bytes, int, None, list."""
        parts = [b"*%d\r\n" % len(args)]
        for a in map(_arg, args):
            parts += [b"$%d\r\n" % len(a), a, b"\r\n"]
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(b"".join(parts))
            return self._reply()
        except TimeoutError:
            self.close()  # a later command connects anew
            raise ConnectionError(f"Redis at {self.path} did not answer within {self.timeout:g}s") from None
        except OSError:
            self.close()
            raise

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
        return PubSub(self.path, self.timeout)

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
            raise ConnectionError("Redis closed the connection")
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
            raise ReplyError(rest.decode("utf-8", "replace"))
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

    def __init__(self, path, timeout):
        self.conn = LightRedis(path, timeout, connect=False)

    def subscribe(self, channel):
        self.conn.subscribe(channel)

    def get_message(self, timeout=0.0):
        data = self.conn.next_message(timeout)
        return None if data is None else {"type": "message", "data": data}

    def close(self):
        self.conn.close()
