"""tasks.queueing: the light client's messages are the ones Celery sends; routing."""
import base64
import json

import pytest

from tasks import queueing

VARYING = {("headers", "origin"), ("properties", "reply_to"), ("properties", "delivery_tag")}


def celery_message(name, args, task_id):
    """The message the project's Celery app puts in the queue for send_task(name, args)."""
    from worker import settings
    from worker.app import make_app
    app = make_app(settings.load(), "memory://")
    app.conf.result_backend = "cache+memory://"
    app.send_task(name, args, task_id=task_id)
    with app.connection() as conn:
        return conn.default_channel._get(queueing.queue_of(name))


@pytest.mark.parametrize("name, args, task_id", [
    (queueing.PREDICT_CHUNK, ("predict-0123", 3, 1000, 2000), "predict-0123:3"),
    (queueing.ASSEMBLE, ("predict-0123",), "predict-0123"),
    (queueing.TRAIN_JOB, ("train-77", "digits", "default"), "train-77"),
])
def test_light_message_is_the_one_celery_sends(name, args, task_id):
    want = celery_message(name, args, task_id)
    got = json.loads(queueing.task_message(name, args, task_id, queueing.queue_of(name), "me@host"))
    assert got.keys() == want.keys()
    for part in ("headers", "properties"):
        assert got[part].keys() == want[part].keys()
        for k in got[part]:
            if (part, k) not in VARYING:
                assert got[part][k] == want[part][k], (part, k)
    assert base64.b64decode(got["body"]) == base64.b64decode(want["body"])
    assert {k: got[k] for k in got if k not in ("headers", "properties", "body")} == \
        {k: want[k] for k in want if k not in ("headers", "properties", "body")}
    assert got["headers"]["origin"] == "me@host"


def test_routes_match_the_celery_app():
    from worker import settings
    from worker.app import celery_config
    conf = celery_config(settings.load(), "memory://")
    assert [q.name for q in conf["task_queues"]] == list(queueing.QUEUES)
    for name in (queueing.PREDICT_CHUNK, queueing.ASSEMBLE, queueing.TRAIN_JOB, queueing.SWEEP_FINISH):
        route = conf["task_routes"].get(name, {}).get("queue", conf["task_default_queue"])
        assert route == queueing.queue_of(name)


class _Recorder:
    def __init__(self):
        self.pushed = []

    def lpush(self, key, value):
        self.pushed.append((key, value))


@pytest.mark.parametrize("broker, backend, direct", [
    ("redis+socket:///tmp/x/redis.sock", "redis+socket:///tmp/x/redis.sock", True),
    ("rediss://h:6380/0", "rediss://h:6380/0", True),
    ("redis://h:6379/0", "redis://h:6379/1", False),  # results in another database: through Celery
    ("sentinel://h:26379", "sentinel://h:26379", False),
    ("memory://", "memory://", False),
])
def test_predict_tasks_push_directly_only_when_the_backend_is_the_broker(broker, backend, direct):
    from types import SimpleNamespace
    from tasks import predict
    client = _Recorder()
    app = SimpleNamespace(conf=SimpleNamespace(broker_url=broker, result_backend=backend),
                          backend=SimpleNamespace(client=client))
    chosen = predict.sender(SimpleNamespace(app=app))
    assert isinstance(chosen, queueing.DirectSender) == direct
    if direct:
        queueing.send(chosen, queueing.PREDICT_CHUNK, ("predict-1", 2, 0, 10), "predict-1:2")
        (key, raw), = client.pushed
        message = json.loads(raw)
        assert key == "predict" and message["headers"]["id"] == "predict-1:2"
        assert json.loads(base64.b64decode(message["body"]))[0] == ["predict-1", 2, 0, 10]
        assert message["headers"]["origin"].startswith("digits-worker-")
    else:
        assert chosen is app


def test_a_send_subscribes_to_nothing_and_a_dead_redis_is_a_broker_error(tmp_path, monkeypatch):
    """The Celery app's send leaves the sender subscribed to no result channel (Celery's Redis
    backend would subscribe it, and with Redis gone retry that for 20 s, then raise
    RuntimeError "must be restarted"); with Redis SIGKILLed a send raises a broker error,
    which the clients ride out (worker.outage)."""
    from tests.conftest import start_redis
    from worker import settings
    from worker.app import make_app
    from worker.client import CLIENT_PUBLISH_RETRY
    from worker.outage import broker_errors
    sock = tmp_path / "r.sock"
    proc = start_redis(sock)
    url = f"redis+socket://{sock}"
    monkeypatch.setenv("DIGITS_RESULT_BACKEND", url)
    app = make_app(settings.load(), url)
    try:
        queueing.send(app, queueing.TRAIN_JOB, ("train-1", "digits", "default"), "train-1")
        assert not app.backend.result_consumer.subscribed_to
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(broker_errors()) as e:
        queueing.send(app, queueing.TRAIN_JOB, ("train-2", "digits", "default"), "train-2",
                      retry_policy=CLIENT_PUBLISH_RETRY)
    assert not isinstance(e.value, RuntimeError) and str(sock) in str(e.value)
