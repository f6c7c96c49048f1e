"""worker.lightredis and worker.lightapp against a real Redis server on a unix socket."""
import json
import time

import pytest
import redis

from tests.conftest import start_redis
from worker.lightapp import LightApp
from worker.lightredis import LightRedis, ReplyError


@pytest.fixture
def server(tmp_path):
    sock = tmp_path / "r.sock"
    proc = start_redis(sock)
    yield sock, proc
    proc.kill()
    proc.wait()


def test_replies_are_redis_pys(server):
    sock, _ = server
    full = redis.Redis(unix_socket_path=str(sock))
    r = LightRedis(sock)
    assert r.ping() is True
    assert r.set("k", "v", nx=True, ex=60) is True and full.set("k2", "v", nx=True, ex=60) is True
    assert r.set("k", "w", nx=True) is None and full.set("k2", "w", nx=True) is None
    assert r.get("k") == full.get("k2") == b"v" and r.get("missing") is None
    assert 55 < full.ttl("k") <= 60
    assert r.set("f", 1.5) is True and full.get("f") == b"1.5"
    assert r.sadd("s", "a", "b") == 2 and r.srem("s", "a") == 1 and full.smembers("s") == {b"b"}
    full.hset("h", mapping={"0": "x", "1": "y"})
    assert sorted(r.hkeys("h")) == sorted(full.hkeys("h")) == [b"0", b"1"]
    assert r.lpush("q", b"\x00\r\n binary") == 1 and full.lrange("q", 0, -1) == [b"\x00\r\n binary"]
    assert r.execute("LRANGE", "q", 0, -1) == [b"\x00\r\n binary"]
    assert r.delete("k", "f", "nothing") == 2 and r.delete() == 0
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        r.hkeys("q")
    assert r.ping()  # the connection is still good after an error reply


def test_pubsub_hears_a_message_and_times_out_quietly(server):
    sock, _ = server
    sub = LightRedis(sock).pubsub()
    sub.subscribe("chan")
    t = time.monotonic()
    assert sub.get_message(timeout=0.2) is None
    assert 0.15 < time.monotonic() - t < 2
    redis.Redis(unix_socket_path=str(sock)).publish("chan", b"hello")
    assert sub.get_message(timeout=2) == {"type": "message", "data": b"hello"}
    sub.close()


def test_a_restarted_redis_is_reconnected_to(server, tmp_path):
    sock, proc = server
    r = LightRedis(sock, timeout=1)
    assert r.ping()
    proc.kill()
    proc.wait()
    for _ in range(2):  # the dead connection (a broken pipe, or no answer), then the socket gone
        with pytest.raises(ConnectionError, match=str(sock)) as e:  # named
            r.get("k")
        assert type(e.value) is ConnectionError  # never a BrokenPipeError: the CLI's own output's
    again = start_redis(sock)
    try:
        assert r.ping() and r.set("k", "v") and r.get("k") == b"v"
    finally:
        again.kill()
        again.wait()


def test_light_app_reads_celery_results_as_stored(server):
    sock, _ = server
    app = LightApp(f"redis+socket://{sock}", None)
    full = redis.Redis(unix_socket_path=str(sock))
    assert app.backend.get_task_meta("t1") == {"status": "PENDING", "result": None}
    full.set("celery-task-meta-t1", json.dumps({"status": "SUCCESS", "result": {"rows": 3}}))
    assert app.backend.get_task_meta("t1")["result"] == {"rows": 3}
    full.set("celery-task-meta-t2", json.dumps({"status": "FAILURE", "result": {
        "exc_type": "JobError", "exc_message": ["job t2 failed: disk full"], "exc_module": "model.errors"}}))
    err = app.backend.get_task_meta("t2")["result"]
    assert type(err).__name__ == "JobError" and str(err) == "job t2 failed: disk full"
    app.backend.forget("t1")
    assert full.get("celery-task-meta-t1") is None
    app.push("predict", "digits.assemble", ("job-9",), "job-9")
    message = json.loads(full.lindex("predict", 0))
    assert message["headers"]["task"] == "digits.assemble" and message["headers"]["id"] == "job-9"


def test_a_loading_redis_is_an_outage_not_an_error(tmp_path):
    """A Redis restarted on its append-only file answers -LOADING until it has read it:
    that is an outage (a ConnectionError the calm clients wait out), as redis-py has it.
    The server here is a socket that gives that one answer (Redis cannot be held in it)."""
    import socket
    import threading
    from worker.lightredis import BusyError
    from worker.outage import broker_errors
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
        r = LightRedis(path)
        with pytest.raises(BusyError, match="LOADING") as e:
            r.get("k")
        assert isinstance(e.value, broker_errors())
        with pytest.raises(BusyError):  # also when it comes at the connection's AUTH
            LightRedis((path), auth=(None, "pw")).ping()
    finally:
        srv.close()
