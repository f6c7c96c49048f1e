"""Just enough of the Celery app for `digits predict`: submit a job, follow it and fetch
its output with no Celery, kombu or redis-py imported (they cost a fresh client ~200 ms).
Tasks are sent by name (tasks.queueing.send) as the same messages Celery sends, LPUSHed
to the queue's list as kombu's Redis transport does; results are read as Celery's Redis
backend stores them. It serves Redis brokers and backends (the embedded stack's socket,
redis://, rediss:// with the DIGITS_REDIS_* TLS settings and ACL users).

    app = LightApp(broker_url, settings)
    job = worker.client.submit_prediction(..., app=app, settings=settings)

Workers, training, sweeps and any other broker (Sentinel, say) use the real Celery app.
"""
import contextlib
import json
import os
import socket
from types import SimpleNamespace

from tasks.queueing import DirectSender
from worker.lightredis import LightRedis

SCHEMES = ("redis+socket://", "redis://", "rediss://")
TASK_KEY = "celery-task-meta-"  # celery.backends.base.KeyValueStoreBackend.task_keyprefix


def supports(url, settings=None):
    """True when a LightApp can serve broker url (and settings' result backend)."""
    backend = _backend_url(url, settings)
    return str(url).startswith(SCHEMES) and str(backend).startswith(SCHEMES)


def _backend_url(url, settings):
    """The result backend that goes with broker url (as worker.app.celery_config chooses it)."""
    if settings is not None and settings.result_backend and url == settings.broker_url:
        return settings.result_backend
    return url


class LightApp(DirectSender):
    """push(queue, name, args, task_id) puts a task in a queue's list as kombu's Redis
    transport does (LPUSH, DirectSender's); backend reads results."""

    def __init__(self, url, settings, timeout=5.0):
        if not supports(url, settings):
            raise ValueError(f"not a Redis broker and backend: {url}")
        tls = settings.redis_tls() if settings is not None and "rediss://" in (url + _backend_url(url, settings)) \
            else None
        self.conf = SimpleNamespace(broker_url=url, digits_storage=settings.storage if settings else None)
        self.broker = LightRedis.from_url(url, timeout, tls)
        backend_url = _backend_url(url, settings)
        self.backend = Backend(self.broker if backend_url == url else LightRedis.from_url(backend_url, timeout, tls))
        DirectSender.__init__(self, self.broker, f"digits-client-{os.getpid()}@{socket.gethostname()}")

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
