"""Sending the project's tasks: every task goes through the Celery app (send_task), from
the client and from workers alike, with task-sent events on, so Flower sees queued work.
Routes, readable arguments (argsrepr) and the links to a job's Flower row (root_id and
parent_id: the job id) are decided here; the Redis records a job's client keeps too.

    send(app, PREDICT_CHUNK, (job_id, index, lo, hi), task_id, argsrepr="job=..., chunk=3/101, ...")
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
    """Queue task `name`(*args) under id task_id through the Celery app, keeping nothing.
    options: send_task's (argsrepr, root_id, parent_id, retry_policy, connection...).

    Nobody here waits on a result (jobs are followed through storage and the backend), so
    the sender is not subscribed to the task's result channel, as Celery's Redis backend
    would do: that subscription outlived the command, and with the backend gone it was
    retried for 20 s and then raised RuntimeError instead of a broker error. Nor is the
    task added to the sending task's children (a chunk sends the next one: its stored
    result would list every chunk after it): root_id and parent_id link the job instead."""
    from celery.result import denied_join_result
    with denied_join_result():  # "a join would block": Celery subscribes the sender to nothing
        result = app.send_task(name, args, task_id=task_id, add_to_parent=False, **options)
    result.backend = None  # let go: no AsyncResult.__del__ against a closed connection at exit


def retry(task, **options):
    """task.retry(**options) with the arguments Flower shows kept: Celery builds a retry's
    message from the request without its argsrepr, so a retried chunk showed raw byte offsets."""
    shown = {k: getattr(task.request, k, None) for k in ("argsrepr", "kwargsrepr")}
    return task.retry(**{k: v for k, v in shown.items() if v is not None}, **options)


def chunk_repr(job_id, index, source):
    """What Flower shows as a chunk's arguments: "job=predict-1f.., chunk=3/101, bytes 1200-1800"."""
    return f"job={job_id}, chunk={index}/{len(source.chunks)}, {source.where(index)}"


def queue_chunk(app, job_id, index, source, **options):
    """Send predict_chunk for chunk `index` (its task id is fixed, so a copy is the same task),
    a child of the job's Flower row."""
    lo, hi = source.chunks[index]
    send(app, PREDICT_CHUNK, (job_id, index, lo, hi), keys.chunk_task_id(job_id, index),
         argsrepr=chunk_repr(job_id, index, source), kwargsrepr="{}", root_id=job_id, parent_id=job_id, **options)


def queue_assemble(app, job_id, **options):
    """Send the job's assemble under its own task id (keys.assemble_task_id), a child of the job's row."""
    send(app, ASSEMBLE, (job_id,), keys.assemble_task_id(job_id), argsrepr=f"job={job_id}", kwargsrepr="{}",
         root_id=job_id, parent_id=job_id, **options)


def train_repr(record):
    """What Flower shows as a training run's arguments: "job=train-1f.., model=digits, recipe=default,
    epochs=30" (and its sweep); record: its tasks.records.TrainJob."""
    config = record.config or {}
    text = f"job={record.job_id}, model={record.name}, recipe={config.get('recipe')}, epochs={config.get('epochs')}"
    return text + (f", sweep={record.sweep}" if record.sweep else "")


def touch(r, job_id, ttl=keys.TTL):
    """Record that a prediction job moved now (keys.job_touched), and that it is active."""
    r.set(keys.job_touched(job_id), time.time(), ex=ttl)
    r.sadd(keys.ACTIVE_PREDICTIONS, job_id)


def release_output(r, job, job_id):
    """Free the job's claim on its output path (see worker.client.submission.claim_output)."""
    key = keys.output_owner(job.get("download_to") or job["output"])
    if (r.get(key) or b"").decode() == job_id:
        r.delete(key)
