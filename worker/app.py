"""The Celery app, configured from worker.settings (run workers with `-A worker.app`).

With no DIGITS_BROKER_URL the app points at the embedded stack's Redis socket under
DIGITS_HOME; the `digits` commands start that stack when it is not running.
"""
from celery import Celery
from celery.signals import beat_init, worker_init, worker_process_init
from kombu import Exchange, Queue

from tasks import events
from tasks.queueing import DEFAULT_QUEUE, PREDICT_CHUNK, QUEUES, ROUTES
from worker import sentinel
from worker import settings as settings_mod
from worker import watchdog
from worker.schedule import beat_schedule

# the one scheduler of a cluster runs the watchdog (`digits up` runs its own instead)
beat_init.connect(watchdog.start_in_scheduler, weak=False)


def ride_out_outages(**_):
    """In worker processes: every command of the result backend's Redis client (results,
    progress, job locks, markers) retries a lost connection for up to DIGITS_BROKER_OUTAGE
    seconds, so a task lives through a Redis restart instead of failing on it.

    redis-py gives a client made from a connection pool, as Celery makes it, no retries.
    Clients keep that: they say that the broker is down instead of hanging (worker.outage).
    """
    import socket
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, OutOfMemoryError, TimeoutError
    from redis.retry import Retry
    s = settings_mod.load()
    # a full Redis (maxmemory, noeviction) refuses writes until memory is freed: an outage too
    _bound["app"].backend.client.set_retry(Retry(ExponentialBackoff(cap=1, base=0.05),
                                                 retries=max(1, int(s.broker_outage)),
                                                 supported_errors=(ConnectionError, TimeoutError, socket.timeout,
                                                                   OutOfMemoryError)))


worker_init.connect(ride_out_outages, weak=False)
worker_process_init.connect(ride_out_outages, weak=False)


def tune_process(**_):
    """In worker processes: large temporaries reused instead of mapped anew (worker.malloc),
    and the objects that exist once the worker is up (Celery, the tasks' modules: ~55,000)
    frozen out of the garbage collector, whose full collections walked them all (12-16 ms
    each, at unpredictable points in a chunk)."""
    import gc
    from worker.malloc import keep_freed_memory
    keep_freed_memory()
    gc.freeze()


worker_init.connect(tune_process, weak=False)
worker_process_init.connect(tune_process, weak=False)


def celery_config(s, broker_url=None):
    """The Celery settings dict for Settings s (broker_url overrides s.broker_url)."""
    broker = broker_url or s.broker_url or s.embedded_url
    backend = s.result_backend if (s.result_backend and not broker_url) else broker
    transport = {"visibility_timeout": s.visibility_timeout}
    tls = {}  # rediss:// URLs: certificate checks on unless DIGITS_REDIS_VERIFY=none
    if str(broker).startswith("rediss://"):
        tls["broker_use_ssl"] = s.redis_tls()
    if str(backend).startswith("rediss://"):
        tls["redis_backend_use_ssl"] = s.redis_tls()
    conf = dict(
        **tls,
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
        # each queue with its own direct exchange and routing key (a bare Queue("train") was
        # bound to the default exchange "predict" with key "predict": it routed by accident)
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange=DEFAULT_QUEUE,
        task_default_routing_key=DEFAULT_QUEUE,
        task_routes={name: {"queue": q} for name, q in ROUTES.items()},
        broker_connection_retry_on_startup=True,
        # a broker error reply (a full Redis refusing a write: OOM) restarts the consumer, which
        # reconnects and waits, instead of stopping the worker ("Unrecoverable error")
        broker_channel_error_retry=True,
        # a message sent while Redis restarts (a chunk queueing the next, a retry) waits for it
        task_publish_retry_policy={"max_retries": max(3, int(s.broker_outage)), "interval_start": 0,
                                   "interval_step": 0.5, "interval_max": 1},
        worker_hijack_root_logger=False,
        # a chunk far slower than its peers (its process frozen, say) is taken back: at the soft
        # limit a live chunk raises and is retried; at the hard one its process is killed and the
        # message requeued (predict_chunk does not ack a timeout)
        task_annotations={PREDICT_CHUNK: {"soft_time_limit": 0.8 * s.chunk_time_limit,
                                          "time_limit": s.chunk_time_limit}},
        # the project's own settings, read by the tasks
        digits_broker_url=broker,  # as configured (broker_url may be rewritten below)
        digits_storage=s.storage,
        digits_promote_tolerance=s.promote_tolerance,
        digits_chunk_retries=s.chunk_retries,
        digits_retry_backoff=s.retry_backoff,
        digits_poison_limit=s.poison_limit,
        digits_breaker_chunks=s.breaker_chunks,
    )
    # sentinel:// URLs: kombu's and Celery's Sentinel forms, the master's name, short timeouts
    for key, value in sentinel.celery_entries(broker, backend, s).items():
        conf[key] = {**conf[key], **value} if key.endswith("transport_options") else value
    return conf



def make_app(s=None, broker_url=None):
    """A configured Celery app for Settings s (default: from the environment)."""
    s = s or settings_mod.load()
    app = Celery("digits", include=["tasks.predict", "tasks.train", "tasks.sweep", "tasks.retention"])
    _apply(app, s, broker_url)
    _name_task_sender(app)
    return app


def _name_task_sender(app):
    """task-sent events carry one sender name per host ("digits-sender@HOST") instead of
    Celery's "gen<pid>@HOST", which gave Flower's /metrics a new label series per process."""
    app.amqp._event_dispatcher = app.events.Dispatcher(hostname=events.sender_hostname(), enabled=False)


def _apply(app, s, broker_url):
    """Set app's Celery configuration and beat schedule from Settings s."""
    app.conf.update(celery_config(s, broker_url))
    app.conf.beat_schedule = beat_schedule(s)


app = make_app()
sentinel.flower_asks_every_sentinel(app)  # in Flower's process: its Broker page follows the master too
_bound = {"app": app, "used": False}  # the app configure() handed out last


def configure(broker_url):
    """The current Celery app bound to broker_url (the embedded stack's, or a configured one).

    The settings are read anew. An app that was already handed out for another broker is
    replaced by a fresh one (its connections and result backend point at the old broker);
    the new app becomes the current one, which the project's shared tasks follow.
    """
    s = settings_mod.load()
    current = _bound["app"]
    if _bound["used"] and current.conf.get("digits_broker_url", current.conf.broker_url) != broker_url:
        current = make_app(s, broker_url)
    else:
        _apply(current, s, broker_url)
    current.set_current()
    current.set_default()
    _bound.update(app=current, used=True)
    return current
