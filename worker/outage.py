"""Calm clients: a polling client rides out a broker outage of up to DIGITS_BROKER_OUTAGE.

    outage = Outage(url, limit, say)
    st = outage.call(poll)   # poll()'s result, or None while the broker is unreachable;
                             # BrokerUnreachable (one line naming the broker) once the
                             # outage lasted longer than limit seconds
    job = outage.ride(submit)  # submit() again until it gets through (it must be idempotent);
                               # a broker that refused this client raises at once
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


# what a broker error says when who we are is wrong (credentials, certificates): waiting won't
# help. The TLS library's words are matched by their marks ("[SSL: ...]", "(_ssl.c:...)"),
# not by "ssl" alone, which a broker's host name may hold.
REFUSALS = ("noauth", "wrongpass", "authenticat", "invalid username-password", "noperm",
            "certificate verify failed", "certificate_verify_failed", "[ssl:", "(_ssl.c",
            "refused the tls connection")
# ... and of those, what a server that went away mid-session also says: a TLS stream cut short
CUT_SHORT = ("eof occurred", "unexpected_eof", "refused the tls connection")


def refused(reason):
    """True for a broker error's text that says the broker refused this client (a TLS
    stream cut short included: a server that wants a client certificate hangs up so)."""
    text = str(reason).lower()
    return any(w in text for w in REFUSALS)


def cut_short(reason):
    """True for a refusal that a server going away mid-session also gives (see refused)."""
    text = str(reason).lower()
    return any(w in text for w in CUT_SHORT)


def out_of_memory(error):
    """True for a full Redis's refusal of a write (maxmemory reached under the noeviction
    policy: its "OOM" error reply, redis-py's OutOfMemoryError): an outage that ends when
    memory is freed, ridden out like an unreachable broker."""
    seen = 0
    while error is not None and seen < 5:  # kombu wraps redis-py's error in its OperationalError
        if type(error).__name__ == "OutOfMemoryError" or str(error).startswith("OOM "):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _outage(error):
    return isinstance(error, broker_errors()) or out_of_memory(error)


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
        except Exception as e:
            if not _outage(e):
                raise
            self.failed(e)
            return None
        self.since = None
        return result

    def ride(self, attempt, pause=0.5):
        """attempt() until it returns -> its result. A broker error is counted (failed()) and
        attempt() called again `pause` seconds later, so attempt must be idempotent (a job
        submission under a fixed job id is). A refusal (refused()) is raised at once, unless
        it is a stream cut short (cut_short()), which a server going away also gives: that
        one is tried once more, unsaid, and raised if the next attempt is refused too."""
        doubted = False
        while True:
            try:
                result = attempt()
            except Exception as e:
                if not _outage(e):
                    raise
                reason = _reason(e)
                if refused(reason):
                    if doubted or not cut_short(reason):
                        raise
                    doubted = True
                else:
                    doubted = False
                    self.failed(e)
                time.sleep(pause)
                continue
            self.since = None
            return result

    def failed(self, error):
        """Count a failed attempt: the first one of an outage is said, one past the limit raises."""
        now = time.monotonic()
        full = out_of_memory(error)
        if self.since is None:
            self.since = now
            if full:
                self.say(f"broker {self.url} is out of memory: {_reason(error)} (see docs/failures.md); "
                         f"waiting for up to {self.limit:g}s")
            else:
                self.say(f"broker {self.url} unreachable ({_reason(error)}); reconnecting for up to {self.limit:g}s")
        elif now - self.since > self.limit:
            what = "out of memory" if full else "unreachable"
            raise BrokerUnreachable(f"broker {self.url} {what} for more than {self.limit:g}s "
                                    f"({_reason(error)}); set DIGITS_BROKER_OUTAGE to wait longer") from None


def _reason(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
