"""worker.outage: what counts as an outage, what as a refusal, and how a submission rides one
out (pure logic: the attempts here are functions that raise what a dead broker raises, typed
as redis-py and kombu raise them)."""
import ssl
import time

import redis
from kombu.exceptions import OperationalError

import pytest

from worker.errors import BrokerUnreachable
from worker.outage import Outage, cut_short, refused


@pytest.mark.parametrize("text, cut", [
    ("Redis at 10.0.0.2:6379 refused this client: WRONGPASS invalid username-password pair", False),
    ("NOAUTH Authentication required.", False),
    ("Error 1 connecting to 10.0.0.2:6379. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", False),
    ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)", False),
    # redis-py's words for a server that hung up on a client without a certificate; a TLS
    # server that died mid-session says the same
    ("Error 8 while writing to socket. EOF occurred in violation of protocol (_ssl.c:2427).", True),
])
def test_refusals_are_told_apart(text, cut):
    assert refused(text) and cut_short(text) == cut


def _wrapped(error, by):
    """error raised from inside `by` (as redis-py wraps an ssl error, and kombu a redis-py one)."""
    try:
        try:
            raise error
        except BaseException as inner:
            raise by from inner
    except BaseException as outer:
        return outer


@pytest.mark.parametrize("error, is_refusal, cut", [
    (redis.AuthenticationError("invalid username-password pair or user is disabled."), True, False),
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'get' command"), True, False),
    (_wrapped(ssl.SSLCertVerificationError(1, "verify failed"), redis.ConnectionError("Error 1 connecting")),
     True, False),
    (_wrapped(_wrapped(ssl.SSLError(1, "tlsv13 alert certificate required"), redis.ConnectionError("reading")),
              OperationalError("reading")), True, False),  # kombu's wrapper around redis-py's
    (_wrapped(ssl.SSLEOFError(8, "EOF"), redis.ConnectionError("Error 8 while writing to socket")), True, True),
    (redis.BusyLoadingError("Redis is loading the dataset in memory"), False, False),  # an outage: wait
    (redis.ConnectionError("Error 111 connecting to redis-ssl.internal:6379. Connection refused."), False, False),
    (_wrapped(ConnectionRefusedError(111, "refused"), OperationalError("Error 111")), False, False),
    (redis.TimeoutError("Timeout reading from socket"), False, False),
])
def test_typed_errors_are_told_apart_by_type(error, is_refusal, cut):
    assert (refused(error), cut_short(error)) == (is_refusal, cut)


@pytest.mark.parametrize("text", [
    "Redis at 10.0.0.2:6379 closed the connection",
    "cannot connect to Redis at redis-ssl.internal:6379: Connection refused",  # "ssl" in a host name
    "cannot connect to Redis at /run/redis.sock: Connection refused",
    "Error 111 connecting to 10.0.0.2:6379. Connection refused.",
    "LOADING Redis is loading the dataset in memory",
    "Redis at h:6379 did not answer within 5s",
])
def test_a_server_going_away_is_no_refusal(text):
    assert not refused(text)


def test_ride_repeats_the_attempt_through_an_outage_and_says_so_once():
    said, calls = [], []

    def attempt():
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise ConnectionError("Redis at h:6379 closed the connection")
        return "job"

    outage = Outage("redis://:secret@h:6379/0", 30, said.append)
    assert outage.ride(attempt, pause=0.01) == "job"
    assert len(calls) == 4 and outage.since is None
    assert len(said) == 1 and "closed the connection" in said[0] and "secret" not in said[0]


def test_ride_gives_up_after_the_limit_with_one_line():
    outage = Outage("redis://h:6379/0", 0.05, lambda line: None)
    t0 = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="unreachable for more than 0.05s"):
        outage.ride(lambda: (_ for _ in ()).throw(ConnectionError("cannot connect")), pause=0.01)
    assert time.monotonic() - t0 < 5


def test_ride_raises_a_refusal_or_any_other_error_at_once():
    calls = []

    def refusing():
        calls.append(1)
        raise redis.AuthenticationError("WRONGPASS invalid username-password pair")

    with pytest.raises(redis.AuthenticationError, match="WRONGPASS"):
        Outage("redis://h:6379/0", 30, lambda line: None).ride(refusing)
    assert calls == [1]
    with pytest.raises(ValueError):  # not the broker's: no retry
        Outage("redis://h:6379/0", 30, lambda line: None).ride(lambda: int("x"))


def test_a_stream_cut_short_is_tried_once_more_unsaid():
    """The first error of a TLS session cut short may be a server that died (tried again), or
    one that hangs up on us for good (its second refusal raised); neither is said as an outage."""
    said = []
    errors = [ConnectionError("Error 8 while writing to socket. EOF occurred in violation of protocol (_ssl.c)"),
              ConnectionError("cannot connect to Redis at h:6379: Connection refused")]

    def restarting():  # the session cut, then the server down a while, then back
        if errors:
            raise errors.pop(0)
        return "job"

    assert Outage("redis://h:6379/0", 30, said.append).ride(restarting, pause=0.01) == "job"
    assert len(said) == 1 and "Connection refused" in said[0]
    calls, said = [], []

    def hanging_up():
        calls.append(1)
        raise _wrapped(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
                       redis.ConnectionError("Error 8 while reading from h:6379"))

    with pytest.raises(redis.ConnectionError, match="Error 8"):
        Outage("redis://h:6379/0", 30, said.append).ride(hanging_up, pause=0.01)
    assert len(calls) == 2 and said == []


def _raised_from(cause, wrapper):
    try:
        try:
            raise cause
        except Exception as e:
            raise wrapper from e
    except Exception as e:
        return e


def test_a_full_redis_is_an_outage_said_as_such():
    """A full Redis's refusal (its "OOM" error reply) as redis-py, kombu (wrapping redis-py's)
    and a script's error reply (a plain ResponseError) raise it is an outage: said once as "out of memory", then given up
    on past the limit; any other error reply is not an outage."""
    import redis
    from kombu.exceptions import OperationalError
    from redis.exceptions import ResponseError as ReplyError
    from worker.outage import out_of_memory
    full = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    for e in (full, _raised_from(full, OperationalError(str(full))),
              ReplyError("OOM command not allowed when used memory > 'maxmemory'.")):
        assert out_of_memory(e)
    assert not out_of_memory(ReplyError("ERR unknown command")) and not out_of_memory(ConnectionError("refused"))
    said, calls = [], []

    def attempt():
        calls.append(1)
        if len(calls) < 3:
            raise ReplyError("OOM command not allowed when used memory > 'maxmemory'.")
        return "queued"
    assert Outage("redis://h:6379/0", 10, said.append).ride(attempt, pause=0.01) == "queued"
    assert len(said) == 1 and "is out of memory" in said[0] and "unreachable" not in said[0]
    with pytest.raises(ValueError):  # an error that is no outage is raised at once
        Outage("redis://h:6379/0", 10, said.append).call(lambda: (_ for _ in ()).throw(ValueError("bug")))
    gone = Outage("redis://h:6379/0", 0.05, said.append)
    with pytest.raises(BrokerUnreachable, match="out of memory for more than"):
        while True:
            gone.call(lambda: (_ for _ in ()).throw(full))
            time.sleep(0.01)
