"""Sending the project's tasks by name, and the Redis records a job's client keeps, with no
Celery import: `digits predict` sends through worker.lightapp.LightApp when broker and
backend are Redis (a fresh client saves the ~200 ms that Celery, kombu and redis-py take to
import); workers and other clients send through their Celery app. Both put the same
message in the same queue (task_message below; the routes are the Celery app's too).

    send(app, PREDICT_CHUNK, (job_id, index, lo, hi), task_id)
"""
import time

from tasks import keys

PREDICT_CHUNK = "digits.predict_chunk"
ASSEMBLE = "digits.assemble"
TRAIN_JOB = "digits.train_job"
SWEEP_FINISH = "digits.sweep_finish"

QUEUES = ("predict", "train")
DEFAULT_QUEUE = "predict"
ROUTES = {TRAIN_JOB: "train", SWEEP_FINISH: "train"}  # every other task goes to DEFAULT_QUEUE


def queue_of(name):
    """The queue task `name` is sent to (the Celery app routes by the same table)."""
    return ROUTES.get(name, DEFAULT_QUEUE)


def send(app, name, args, task_id, **options):
    """Queue task `name`(*args) under id task_id through app (a Celery app or a LightApp),
    keeping nothing. Nobody here waits on a result (jobs are followed through storage and
    the backend), so the sender is not subscribed to the task's result channel, as Celery's
    Redis backend would do: that subscription outlived the command, and with the backend
    gone it was retried for 20 s and then raised RuntimeError instead of a broker error."""
    if getattr(app, "is_light", False):
        app.push(queue_of(name), name, args, task_id)
        return
    from celery.result import denied_join_result
    with denied_join_result():  # "a join would block": Celery subscribes the sender to nothing
        result = app.send_task(name, args, task_id=task_id, **options)
    result.backend = None  # let go: no AsyncResult.__del__ against a closed connection at exit


class DirectSender:
    """Sends through a redis-py client of the broker's own Redis: what a predict task queues
    its job's next chunk and assemble with when the result backend is the broker (one LPUSH
    of the message Celery would send, no task-sent event: about 0.1 ms against 0.7 ms
    through Celery). In worker processes that client rides out a Redis restart
    (worker.app.ride_out_outages); a push repeated after a lost reply only queues a copy,
    and every task is idempotent."""
    is_light = True

    def __init__(self, client, origin):
        self.client, self.origin = client, origin

    def push(self, queue, name, args, task_id):
        self.client.lpush(queue, task_message(name, args, task_id, queue, self.origin))


def queue_chunk(app, job_id, index, source, **options):
    """Send predict_chunk for chunk `index` (its task id is fixed, so a copy is the same task)."""
    lo, hi = source.chunks[index]
    send(app, PREDICT_CHUNK, (job_id, index, lo, hi), keys.chunk_task_id(job_id, index), **options)


def queue_assemble(app, job_id, **options):
    send(app, ASSEMBLE, (job_id,), job_id, **options)


def touch(r, job_id, ttl=keys.TTL):
    """Record that a prediction job moved now (keys.job_touched), and that it is active."""
    r.set(keys.job_touched(job_id), time.time(), ex=ttl)
    r.sadd(keys.ACTIVE_PREDICTIONS, job_id)


def release_output(r, job, job_id):
    """Free the job's claim on its output path (see worker.client.claim_output)."""
    key = keys.output_owner(job.get("download_to") or job["output"])
    if (r.get(key) or b"").decode() == job_id:
        r.delete(key)


def task_message(name, args, task_id, queue, origin):
    """The message Celery (task protocol 2, JSON) and kombu's Redis transport put in a queue's
    list for task `name`(*args) -> bytes; tests/tasks/test_queueing.py checks it against the
    one Celery builds. origin: "<client>@<host>", shown by Flower."""
    import base64
    import json
    import uuid
    body = json.dumps([list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    headers = {"lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None, "expires": None,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
               "root_id": task_id, "parent_id": None, "argsrepr": repr(tuple(args)), "kwargsrepr": "{}",
               "origin": origin, "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
               "stamps": {}}
    properties = {"correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
                  "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                  "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return json.dumps({"body": base64.b64encode(body.encode()).decode(), "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": headers,
                       "properties": properties}).encode()
