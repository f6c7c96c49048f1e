"""Every Redis key the project writes, named in one place (the tests import them too).

All live in the result backend's Redis (task.app.backend.client). The project's own start
"digits:"; Celery's result keys ("celery-task-meta-<task id>") are named here too, with the
task ids a job's tasks get, so that retention (tasks/retention.py) finds a job's keys.
"""
import hashlib

PREFIX = "digits:"
TTL = 7 * 86400  # seconds the project's keys and task results live (DIGITS_RESULT_EXPIRES's default)


def ttl(app):
    """Seconds a job's keys live under `app`: its result_expires (DIGITS_RESULT_EXPIRES), else TTL."""
    return int(app.conf.result_expires or TTL)


def chunk_marks(job_id):
    """Hash of a prediction job: chunk index -> JSON mark {"state": "done" | "failed" |
    "skipped", "order": n-th chunk to finish (1-based), "rows", "bad", "reason", "seconds"}."""
    return f"{PREFIX}job:{job_id}:chunks"


def chunk_counts(job_id):
    """Hash of a prediction job: mark state ("done", "failed", "skipped") -> how many chunks
    have that mark (counted by the mark itself, so the job's Flower row reads no whole hash)."""
    return f"{PREFIX}job:{job_id}:counts"


def chunks_retrying(job_id):
    """Set of a prediction job's chunk indexes waiting for a retry (removed by their mark)."""
    return f"{PREFIX}job:{job_id}:retrying"


ACTIVE_PREDICTIONS = f"{PREFIX}predictions:active"  # set of prediction job ids not yet assembled
# set of training job ids submitted; the watchdog removes those that ended (worker.watchdog)
ACTIVE_TRAINING = f"{PREFIX}training:active"
SUPERVISOR_PROBE = f"{PREFIX}probe:supervisor"  # written by `digits up` to see that Redis takes writes


def job_touched(job_id):
    """When a prediction job last moved (submitted, a chunk marked), in epoch seconds; the
    watchdog re-sends the missing work of a job that stopped moving (see tasks.predict.resume)."""
    return f"{PREFIX}job:{job_id}:touched"


def chunk_deliveries(job_id):
    """Hash of a prediction job: "begun:<chunk index>" -> deliveries of that chunk that began
    running, "ended:<chunk index>" -> those that ended (returned, raised or retried); a
    delivery that began and never ended had its process killed (tasks.deliveries)."""
    return f"{PREFIX}job:{job_id}:deliveries"


def chunks_sent(job_id):
    """Set of a prediction job's chunk indexes that a chunk's mark has queued: a repeated mark
    queues a chunk again only when it is not in it (no duplicate cascade)."""
    return f"{PREFIX}job:{job_id}:sent"


def job_breaker(job_id):
    """Hash of a prediction job's circuit breaker: "kind" (the storage reason of the last
    failed chunk), "streak" (chunks failed in a row for it), "last" (its line)."""
    return f"{PREFIX}job:{job_id}:breaker"


def job_stopped(job_id):
    """Why a prediction job stops early (its breaker tripped: tasks.breaker), one line; read
    by `digits status` and the waiting client while its remaining chunks are failed."""
    return f"{PREFIX}job:{job_id}:stopped"


def train_deliveries(job_id):
    """Hash of a training job: "begun" and "ended" deliveries that ran it (tasks.deliveries)."""
    return f"{PREFIX}train:{job_id}:deliveries"


def assemble_lock(job_id):
    """Lock held while a job's output is written, so two deliveries never write it at once."""
    return f"{PREFIX}job:{job_id}:assemble-lock"


def assemble_runs(job_id):
    """Counter: how many times a job's output was written (1, unless resubmitted)."""
    return f"{PREFIX}job:{job_id}:assembles"


def output_owner(path):
    """The id of the live job that writes output `path` (one live job per output)."""
    return f"{PREFIX}output:{hashlib.sha256(str(path).encode('utf-8', 'surrogateescape')).hexdigest()[:32]}"


def job_lock(job_id):
    """Lock of a running training job (renewed while it runs)."""
    return f"{PREFIX}lock:job:{job_id}"


def lock_owner(job_id):
    """host:pid of the process holding a training job's lock."""
    return f"{PREFIX}lock-owner:job:{job_id}"


def model_active(name):
    """Marks a model that has a queued or running training job (scheduled runs skip it)."""
    return f"{PREFIX}model-active:{name}"


def sweep_marks(sweep_id):
    """Hash of a sweep: job id -> the state its run ended in."""
    return f"{PREFIX}sweep:{sweep_id}:ended"


def chunk_task_id(job_id, index):
    """The task id of chunk `index` of a prediction job (fixed, so a copy is the same task).
    A training job's task has the job id itself as task id; a prediction job's id is its
    row in Flower (tasks.events) and its result key holds the job's state."""
    return f"{job_id}-chunk-{index}"


def assemble_task_id(job_id):
    """The task id of a prediction job's assemble (":" is in no job id, so no job's id)."""
    return f"{job_id}:assemble"


def job_task_ids(job_id):
    """What every task id of a job starts with besides the job id itself (the watchdog's
    census of a job's work)."""
    return (f"{job_id}-", f"{job_id}:")


def task_meta(task_id):
    """Celery's result key of a task (Redis backend; it expires after result_expires)."""
    return f"celery-task-meta-{task_id}"


def job_keys(job_id):
    """The keys of one job, for a resubmission to clear."""
    return [chunk_marks(job_id), chunk_counts(job_id), chunks_retrying(job_id), assemble_lock(job_id),
            assemble_runs(job_id), job_touched(job_id), task_meta(assemble_task_id(job_id)),
            chunk_deliveries(job_id), chunks_sent(job_id), job_breaker(job_id), job_stopped(job_id),
            train_deliveries(job_id)]
