"""A minimal Redis client for the embedded stack's unix socket: one connection, RESP2,
no retries. It serves the quick probes of commands that must start fast (`digits status`
PINGs the stack and reads one key): redis-py costs 40 to 90 ms to import, this nothing.
Everything else talks to Redis through redis-py or Celery.

    with LightRedis("/path/redis.sock", timeout=1.0) as r:
        r.ping(); r.get("key")

Failures raise OSError (ConnectionError when the server is gone or answers nonsense,
socket.timeout when it is slow); an error reply raises ReplyError.
"""
import socket


class ReplyError(Exception):
    """An error reply from Redis ("-ERR ...")."""


class LightRedis:
    def __init__(self, path, timeout=1.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""

    def execute(self, *args):
        """Send one command (str or bytes arguments) -> its reply: bytes, int, None, list."""
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode() if isinstance(a, str) else bytes(a)
            parts += [b"$%d\r\n" % len(a), a, b"\r\n"]
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def ping(self):
        return self.execute("PING") == b"PONG"

    def get(self, key):
        return self.execute("GET", key)

    def close(self):
        self.sock.close()

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
