"""Just enough of the Celery app for `digits predict` on the embedded stack: submit a job,
follow it and fetch its output with no Celery, kombu or redis-py imported (they cost a
fresh client ~200 ms). Tasks are sent by name (tasks.queueing.send) as the same messages
Celery sends; results are read as Celery's Redis backend stores them.

    app = LightApp("redis+socket:///path/redis.sock", settings)
    job = worker.client.submit_prediction(..., app=app, settings=settings)

Workers, training, sweeps and any configured broker use the real Celery app.
"""
import contextlib
import json
import os
import socket
from types import SimpleNamespace

from tasks.queueing import task_message
from worker.lightredis import LightRedis

PREFIX = "redis+socket://"
TASK_KEY = "celery-task-meta-"  # celery.backends.base.KeyValueStoreBackend.task_keyprefix


def supports(url):
    """True when a LightApp can serve broker url (the embedded stack's unix socket)."""
    return str(url).startswith(PREFIX)


class LightApp:
    is_light = True

    def __init__(self, url, settings, timeout=2.0):
        if not supports(url):
            raise ValueError(f"not the embedded stack's broker: {url}")
        self.conf = SimpleNamespace(broker_url=url, digits_storage=settings.storage if settings else None)
        self.backend = Backend(LightRedis(url[len(PREFIX):], timeout, connect=False))
        self.origin = f"digits-client-{os.getpid()}@{socket.gethostname()}"

    def push(self, queue, name, args, task_id):
        """Put task `name`(*args) in `queue`, as kombu's Redis transport does (LPUSH)."""
        self.backend.client.lpush(queue, task_message(name, args, task_id, queue, self.origin))

    def connection_for_write(self):
        return contextlib.nullcontext()


class Backend:
    """Celery's Redis result backend, read side: get_task_meta, get_key_for_task, forget."""

    def __init__(self, client):
        self.client = client

    def get_key_for_task(self, task_id):
        return (TASK_KEY + task_id).encode()

    def get_task_meta(self, task_id):
        """{"status", "result"} as stored; a FAILURE's result is an exception of the stored
        type name and message (rebuilt by name only: nothing is imported or unpickled)."""
        raw = self.client.get(self.get_key_for_task(task_id))
        if not raw:
            return {"status": "PENDING", "result": None}
        meta = json.loads(raw)
        result = meta.get("result")
        if meta.get("status") == "FAILURE" and isinstance(result, dict) and "exc_type" in result:
            message = result.get("exc_message")
            args = message if isinstance(message, (list, tuple)) else (message,)
            meta["result"] = type(str(result["exc_type"]), (Exception,), {})(*args)
        return meta

    def forget(self, task_id):
        self.client.delete(self.get_key_for_task(task_id))
