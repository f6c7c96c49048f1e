"""worker.redisconn (the one maker of redis-py clients) against a real Redis on a unix socket:
every URL form the project uses, a quick probe, a Redis restarted under a client, and a
Redis still loading its data counted as an outage, not a refusal."""
import socket
import threading

import pytest
import redis

from tests.conftest import start_redis
from worker import redisconn
from worker.outage import broker_errors, refused


@pytest.fixture()
def server(tmp_path):
    sock = tmp_path / "r.sock"
    proc = start_redis(sock)
    yield sock, proc
    proc.kill()
    proc.wait()


def test_every_url_form_reaches_the_same_redis(server):
    sock, _ = server
    redisconn.connect(f"redis+socket://{sock}").set("k", "v")
    for url in (f"redis+socket://{sock}", f"unix://{sock}", str(sock)):
        assert redisconn.connect(url).get("k") == b"v", url
    assert redisconn.connect(f"redis+socket://{sock}?virtual_host=1").get("k") is None  # another database
    assert redisconn.ping(f"redis+socket://{sock}")
    with pytest.raises(ValueError, match="not a Redis URL"):
        redisconn.connect("amqp://h:5672")
    from redis.sentinel import SentinelConnectionPool  # a sentinel URL: the master its sentinels name
    assert isinstance(redisconn.connect("sentinel://127.0.0.1:1/0").connection_pool, SentinelConnectionPool)
    assert not redisconn.ping("memory://")


def test_a_restarted_redis_is_reconnected_to_and_its_absence_is_a_broker_error(server):
    sock, proc = server
    r = redisconn.connect(str(sock), timeout=1)
    assert r.ping()
    proc.kill()
    proc.wait()
    assert not redisconn.ping(str(sock), timeout=0.2)  # a probe answers at once
    for _ in range(2):  # the dead connection, then the socket gone
        with pytest.raises(broker_errors()) as e:
            r.get("k")
        assert str(sock) in str(e.value) and not refused(e.value)  # named; an outage, not a refusal
        assert not isinstance(e.value, BrokenPipeError)  # never the CLI's own output's reader going away
    again = start_redis(sock)
    try:
        assert r.ping() and r.set("k", "v") and r.get("k") == b"v"
    finally:
        again.kill()
        again.wait()


def test_a_loading_redis_is_an_outage_not_a_refusal(tmp_path):
    """A Redis restarted on its append-only file answers -LOADING until it has read it: an
    outage (the calm clients wait it out). The server here is a socket that gives that one
    answer (Redis cannot be held in it)."""
    path = str(tmp_path / "loading.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while conn.recv(4096):
                    conn.sendall(b"-LOADING Redis is loading the dataset in memory\r\n")
    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(redis.BusyLoadingError) as e:
            redisconn.connect(path).get("k")
        assert isinstance(e.value, broker_errors()) and not refused(e.value)
    finally:
        srv.close()
