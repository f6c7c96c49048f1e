"""Calm clients: a polling client rides out a broker outage of up to DIGITS_BROKER_OUTAGE.

    outage = Outage(url, limit, say)
    st = outage.call(poll)   # poll()'s result, or None while the broker is unreachable;
                             # BrokerUnreachable (one line naming the broker) once the
                             # outage lasted longer than limit seconds
"""
import sys
import time

from model.errors import BrokerUnreachable


def broker_errors():
    """The exceptions that mean "the broker is unreachable": ConnectionError (also
    worker.lightredis's), and redis-py's and kombu's once a client has loaded them (a light
    client never imports either)."""
    errors = [ConnectionError]
    if "redis" in sys.modules:
        errors.append(sys.modules["redis"].RedisError)
    if "kombu.exceptions" in sys.modules:
        errors.append(sys.modules["kombu.exceptions"].OperationalError)
    return tuple(errors)


def say_stderr(line):
    print(f"digits: {line}", file=sys.stderr, flush=True)


class BrokerDown(ConnectionError):
    """No broker answers (raised by a client's own probe, counted like a lost connection)."""


class Outage:
    """Tracks one client's view of the broker: says once when it became unreachable, and
    gives up after `limit` seconds of it."""

    def __init__(self, url, limit, say=say_stderr):
        from worker.settings import redact
        self.url, self.limit, self.say = redact(url), limit, say
        self.since = None  # monotonic time the current outage began

    def call(self, poll):
        try:
            result = poll()
        except broker_errors() as e:
            self.failed(e)
            return None
        self.since = None
        return result

    def failed(self, error):
        """Count a failed attempt: the first one of an outage is said, one past the limit raises."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self.say(f"broker {self.url} unreachable ({_reason(error)}); reconnecting for up to {self.limit:g}s")
        elif now - self.since > self.limit:
            raise BrokerUnreachable(f"broker {self.url} unreachable for more than {self.limit:g}s "
                                    f"({_reason(error)}); set DIGITS_BROKER_OUTAGE to wait longer") from None


def _reason(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
