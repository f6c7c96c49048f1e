"""tasks.queueing: every task goes through the Celery app with readable arguments and the job's
links; routing; a send with Redis gone is a broker error."""
import base64
import json

import pytest

from tasks import keys, queueing


def memory_app():
    """The project's Celery app on an in-memory broker (a message is read back from its queue)."""
    from worker import settings
    from worker.app import make_app
    app = make_app(settings.load(), "memory://")
    app.conf.result_backend = "cache+memory://"
    return app


def queued(app, queue):
    with app.connection() as conn:
        return conn.default_channel._get(queue)


class _Source:
    chunks = [[0, 100], [100, 220], [220, 300]]

    def where(self, index):
        lo, hi = self.chunks[index]
        return f"bytes {lo}-{hi}"


def test_a_chunk_is_sent_by_celery_with_readable_args_and_the_job_as_root_and_parent():
    app = memory_app()
    queueing.queue_chunk(app, "predict-0123", 1, _Source())
    m = queued(app, "predict")
    h = m["headers"]
    assert h["task"] == queueing.PREDICT_CHUNK and h["id"] == keys.chunk_task_id("predict-0123", 1)
    assert h["argsrepr"] == "job=predict-0123, chunk=1/3, bytes 100-220"
    assert (h["root_id"], h["parent_id"]) == ("predict-0123", "predict-0123")  # Flower links it to the job's row
    assert json.loads(base64.b64decode(m["body"]))[0] == ["predict-0123", 1, 100, 220]
    assert h["origin"] and m["properties"]["delivery_info"]["routing_key"] == "predict"


def test_assemble_has_its_own_task_id_and_the_job_as_parent():
    app = memory_app()
    queueing.queue_assemble(app, "predict-0123")
    h = queued(app, "predict")["headers"]
    assert h["task"] == queueing.ASSEMBLE and h["id"] == "predict-0123:assemble" != "predict-0123"
    assert (h["root_id"], h["parent_id"], h["argsrepr"]) == ("predict-0123", "predict-0123", "job=predict-0123")


def test_a_training_run_says_its_job_model_recipe_and_sweep():
    from tasks import records
    record = records.TrainJob.new("train-77", "digits", "/d.csv", {"recipe": "default", "epochs": 30}, sweep="sweep-1")
    assert queueing.train_repr(record) == "job=train-77, model=digits, recipe=default, epochs=30, sweep=sweep-1"


def test_routes_match_the_celery_app():
    from worker import settings
    from worker.app import celery_config
    conf = celery_config(settings.load(), "memory://")
    assert [q.name for q in conf["task_queues"]] == list(queueing.QUEUES)
    for name in (queueing.PREDICT_CHUNK, queueing.ASSEMBLE, queueing.TRAIN_JOB, queueing.SWEEP_FINISH):
        route = conf["task_routes"].get(name, {}).get("queue", conf["task_default_queue"])
        assert route == queueing.queue_of(name)


def test_a_send_subscribes_to_nothing_and_a_dead_redis_is_a_broker_error(tmp_path, monkeypatch):
    """The Celery app's send leaves the sender subscribed to no result channel (Celery's Redis
    backend would subscribe it, and with Redis gone retry that for 20 s, then raise
    RuntimeError "must be restarted"); with Redis SIGKILLed a send raises a broker error,
    which the clients ride out (worker.outage)."""
    from tests.conftest import start_redis
    from worker import settings
    from worker.app import make_app
    from worker.client.submission import CLIENT_PUBLISH_RETRY
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


def test_no_hand_built_send_path_is_left():
    """No file of the project speaks Redis's protocol or builds Celery's messages by hand:
    the names of the removed light client and message builder appear nowhere."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    gone = ["task" + "_message", "Light" + "Redis", "Light" + "App", "Direct" + "Sender", "light" + "app",
            "light" + "redis"]
    found = []
    for path in root.rglob("*"):
        if path.suffix in (".py", ".md", ".toml", ".yml") and not any(p.startswith(".") for p in path.parts[len(root.parts):]):
            text = path.read_text(errors="replace")
            found += [(str(path.relative_to(root)), name) for name in gone if name in text]
    assert not found, found
