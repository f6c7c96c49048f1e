"""The Celery app, configured from worker.settings (run workers with `-A worker.app`).

With no DIGITS_BROKER_URL the app points at the embedded stack's Redis socket under
DIGITS_HOME; the `digits` commands start that stack when it is not running.
"""
from celery import Celery
from kombu import Queue

from worker import settings as settings_mod
from worker.schedule import beat_schedule


def celery_config(s, broker_url=None):
    """The Celery settings dict for Settings s (broker_url overrides s.broker_url)."""
    broker = broker_url or s.broker_url or s.embedded_url
    backend = s.result_backend if (s.result_backend and not broker_url) else broker
    transport = {"visibility_timeout": s.visibility_timeout}
    return dict(
        broker_url=broker,
        result_backend=backend,
        # JSON only: pickle over a broker is remote code execution
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # a task is acknowledged when it finished, and requeued if its process died
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        result_expires=s.result_expires,
        result_extended=True,
        # everything Flower needs to see
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        task_queues=[Queue("predict"), Queue("train")],
        task_default_queue="predict",
        task_routes={"digits.train_job": {"queue": "train"}},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # the project's own settings, read by the tasks
        digits_storage=s.storage,
        digits_promote_tolerance=s.promote_tolerance,
    )


def make_app(s=None, broker_url=None):
    """A configured Celery app for Settings s (default: from the environment)."""
    s = s or settings_mod.load()
    app = Celery("digits", include=["tasks.predict", "tasks.train"])
    app.conf.update(celery_config(s, broker_url))
    app.conf.beat_schedule = beat_schedule(s)
    return app


app = make_app()


def configure(broker_url):
    """Point the module's app at another broker/backend (the embedded stack's) before use."""
    s = settings_mod.load()
    app.conf.update(celery_config(s, broker_url))
    app.conf.beat_schedule = beat_schedule(s)  # re-read like the rest, not frozen at import
    return app
