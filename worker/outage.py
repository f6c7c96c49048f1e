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

from worker.errors import BrokerUnreachable


def broker_errors():
    """The exceptions that mean "the broker is unreachable": ConnectionError (a refused
    socket, BrokerDown), redis-py's RedisError and kombu's OperationalError (kombu wraps
    redis-py's errors in it, the original as its __cause__). Looked up when matched, so a
    command that never loaded redis-py or kombu does not load them for this."""
    errors = [ConnectionError]
    if "redis" in sys.modules:
        errors.append(sys.modules["redis"].RedisError)
    if "kombu.exceptions" in sys.modules:
        errors.append(sys.modules["kombu.exceptions"].OperationalError)
    return tuple(errors)


def _chain(error):
    """error, then the errors it was raised from or during (kombu's wrapper -> redis-py's ->
    the ssl or socket error underneath)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _refusal(error):
    """"cut" for a TLS stream cut short (a server that wants a client certificate hangs up
    so, and so does one that died mid-session), "refused" when who we are is wrong
    (credentials, certificates: waiting won't help), None for an outage."""
    import ssl
    redis = sys.modules.get("redis")
    for e in _chain(error):
        if redis is not None and isinstance(e, (redis.exceptions.AuthenticationError,
                                                redis.exceptions.AuthorizationError,
                                                redis.exceptions.NoPermissionError)):
            return "refused"
        if isinstance(e, ssl.SSLEOFError):
            return "cut"
        if isinstance(e, (ssl.SSLCertVerificationError, ssl.SSLError)):  # verification, a TLS alert
            return "refused"
    return _text_refusal(str(error))


# redis-py words a TLS failure met while connecting as text only ("Error 1 connecting to
# h:6379. [SSL: CERTIFICATE_VERIFY_FAILED] ..."), without the ssl error as its cause: then
# the TLS library's marks ("[SSL: ...]", "(_ssl.c:...)") and Redis's error codes are read,
# not "ssl" alone, which a broker's host name may hold.
REFUSALS = ("noauth", "wrongpass", "invalid username-password", "noperm", "certificate verify failed",
            "certificate_verify_failed", "[ssl:", "(_ssl.c")
CUT_SHORT = ("eof occurred", "unexpected_eof")


def _text_refusal(text):
    text = text.lower()
    if any(w in text for w in CUT_SHORT):
        return "cut"
    return "refused" if any(w in text for w in REFUSALS) else None


def refused(error):
    """True for a broker error (an exception, or its text) that says the broker refused this
    client: a wrong password or user, an untrusted or missing certificate (a TLS stream cut
    short included: a server that wants a client certificate hangs up so)."""
    kind = _refusal(error) if isinstance(error, BaseException) else _text_refusal(str(error))
    return kind is not None


def cut_short(error):
    """True for a refusal that a server going away mid-session also gives (see refused)."""
    kind = _refusal(error) if isinstance(error, BaseException) else _text_refusal(str(error))
    return kind == "cut"


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
                if refused(e):
                    if doubted or not cut_short(e):
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
