"""Rows in Flower for prediction jobs and sweeps, fed by task events under the job's id.

A prediction job (or a sweep) is no Celery task, yet Flower builds its task list from
events alone (celery.events.state), so events sent under the job id give it a row:

    task-sent       the client, at submission: name digits.predict_job, labelled kwargs
    task-started    the first chunk's start and every chunk's mark (and a chunk's retry):
                    Result "chunks 47/101 done, 1 failed, 1 retrying, eta 6s"
    task-succeeded  assemble: "100000 rows in: 99998 ok, 2 bad; output ...; 3.2s"
    task-failed     assemble of a PARTIAL or FAILED job: the one-line reason the CLI prints
    task-revoked    assemble of a cancelled job

Its chunks and assemble carry the job id as root_id and parent_id, so Flower lists them
as the row's children. Celery's merge rules make the row hold: a STARTED event after
STARTED replaces the Result and keeps the state (the Active link's and Started filter's
state=STARTED); an event of a state that comes logically earlier (a chunk's mark event
arriving after assemble's end, a resubmission's task-sent) changes no state. Every event
repeats the row's name and arguments, so a Flower started mid-job still names the row.

The job's result key (celery-task-meta-<job id>) holds the same: STARTED with the progress
(counts and ETA, computed here, the one place a prediction's ETA is measured) while it
runs, then the final state, which wakes a waiting client (worker.client.handles.Job.wait).
Events are sent through Celery's event dispatcher; a failure to send one is logged, never
raised: a row in Flower never fails the work it shows.
"""
import json
import logging
import os
import socket
import time

from tasks import keys, records, times
from tasks.states import JobState

log = logging.getLogger(__name__)
PREDICT_JOB = "digits.predict_job"
SWEEP = "digits.sweep"
FINAL = {JobState.SUCCESS: "task-succeeded", JobState.PARTIAL: "task-failed", JobState.FAILURE: "task-failed",
         JobState.CANCELLED: "task-revoked"}  # a job's end state -> the event that ends its row

# KEYS[1] a result key; ARGV[1] the meta (JSON), ARGV[2] ttl: set unless the key holds a
# final state already (a chunk's progress arriving after assemble stored the job's end)
_SET_RUNNING = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, meta = pcall(cjson.decode, old)
  if ok and (meta['status'] == 'SUCCESS' or meta['status'] == 'FAILURE' or meta['status'] == 'REVOKED') then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""


def sender_hostname():
    """The name a client's events carry ("digits-sender@HOST": one per host, not per process)."""
    return f"digits-sender@{socket.gethostname()}"


def model_label(model):
    """A job's model as "name:version" (registry), else the file's name and version."""
    model = model or {}
    if model.get("name"):
        return f"{model['name']}:{model.get('registry_version')}"
    return f"{os.path.basename(str(model.get('ref')))}:{str(model.get('version'))[:12]}"


def predict_row(job):
    """The fields every event of a prediction job's row carries (job: its job.json dict)."""
    kwargs = {"input": job.get("input"), "model": model_label(job.get("model")),
              "output": job.get("download_to") or job.get("output"), "chunks": job.get("chunks")}
    return {"name": PREDICT_JOB, "args": "()", "kwargs": repr(kwargs), "root_id": job["job_id"],
            "parent_id": None, "queue": "predict", "retries": 0}


def sweep_row(record):
    """The fields of a sweep's row (record: its sweep.json dict)."""
    kwargs = {"name": record.get("name"), "data": record.get("data"), "recipe": record.get("recipe"),
              "grid": record.get("grid"), "runs": len(record.get("jobs") or ())}
    return {"name": SWEEP, "args": "()", "kwargs": repr(kwargs), "root_id": record["sweep_id"],
            "parent_id": None, "queue": "train", "retries": 0}


SKIP_AFTER_FAILURE = 5.0  # seconds a failed send makes progress events skipped
_failed = {"at": None}


def emit(app, hostname, type_, uuid, always=False, connection=None, **fields):
    """Send one task event for task id uuid through Celery's event dispatcher (logged, not
    raised, when the broker cannot take it).

    A send to a broker that is down fails at once on the connection it had, but a new
    connection is retried by redis-py for seconds: so for SKIP_AFTER_FAILURE seconds after a
    failure, progress events are skipped (the next one carries the whole state again); the
    first and the last event of a row (always=True) are always tried, or it would never end.
    connection: a broker connection to send on (else one from the app's pool)."""
    if not always and _failed["at"] is not None and time.monotonic() - _failed["at"] < SKIP_AFTER_FAILURE:
        return
    try:
        with (app.events.Dispatcher(connection, hostname=hostname) if connection is not None
              else app.events.default_dispatcher(hostname=hostname)) as d:
            d.send(type_, uuid=uuid, **fields)
        _failed["at"] = None
    except Exception as e:  # the broker is down or full: the work goes on, its row lags
        _failed["at"] = time.monotonic()
        log.warning("event %s of %s not sent: %s", type_, uuid, e)


def job_sent(app, job, connection=None):
    """A prediction job was submitted (the client): its row appears, PENDING."""
    emit(app, sender_hostname(), "task-sent", job["job_id"], always=True, connection=connection,
         **predict_row(job))


def sweep_sent(app, record):
    emit(app, sender_hostname(), "task-sent", record["sweep_id"], always=True, **sweep_row(record))


def job_progress(task, job, counts, retrying=0):
    """A chunk of prediction job `job` (its job.json dict) started, ended or waits for a
    retry: the row's Result and the job's result key say how far it got. counts: {mark
    state: chunks} -> the progress dict."""
    total = job.get("chunks") or 0
    ended = sum(counts.values())
    progress = {"chunks_done": counts.get("done", 0), "chunks": total, "failed": counts.get("failed", 0),
                "skipped": counts.get("skipped", 0), "retrying": retrying,
                "eta_seconds": _round(times.eta_seconds(ended, total, time.time() - job["submitted_at"]))}
    text = records.PredictJob.progress_text(progress)
    emit(task.app, task.request.hostname, "task-started", job["job_id"], result=text, **predict_row(job))
    _set_running(task.app, job["job_id"], PREDICT_JOB, progress)
    return progress


def _round(seconds):
    return None if seconds is None else round(seconds, 1)


def _set_running(app, task_id, name, progress):
    backend = app.backend
    meta = {"status": "STARTED", "result": progress, "traceback": None, "children": [], "date_done": None,
            "task_id": task_id, "name": name}
    ttl = int(app.conf.result_expires or 7 * 86400)
    backend.client.eval(_SET_RUNNING, 1, backend.get_key_for_task(task_id), json.dumps(meta), ttl)


def job_ended(task, job, manifest):
    """Prediction job `job` ended with `manifest`: its row ends SUCCESS, FAILURE (PARTIAL or
    FAILED, the reason as its exception) or REVOKED (cancelled), and its result key says the
    same (stored last: it wakes the waiting client, which then reads the manifest)."""
    from celery import states
    from celery.exceptions import TaskRevokedError
    from model.errors import JobError
    state, line = manifest["state"], records.PredictJob.summary(manifest)
    fields = dict(predict_row(job), result=line)
    seconds = (manifest.get("timings") or {}).get("wall_seconds")
    if state == JobState.SUCCESS:
        fields["runtime"] = seconds
    elif state == JobState.CANCELLED:
        fields.update(terminated=False, expired=False, signum=None)
    else:
        fields.update(exception=line, traceback=line)
    emit(task.app, task.request.hostname, FINAL[state], job["job_id"], always=True, **fields)
    result = {JobState.SUCCESS: (line, states.SUCCESS), JobState.CANCELLED: (TaskRevokedError(line), states.REVOKED)}
    value, celery_state = result.get(state, (JobError(line), states.FAILURE))
    task.app.backend.store_result(job["job_id"], value, celery_state)


def sweep_progress(task, record, ended):
    """A run of sweep `record` started or ended (ended: {job id: end state}): its row's Result."""
    n = len(record.get("jobs") or ())
    text = f"runs {len(ended)}/{n} ended"
    failed = sum(1 for s in ended.values() if s != JobState.SUCCESS)
    if failed:
        text += f", {failed} not successful"
    emit(task.app, task.request.hostname, "task-started", record["sweep_id"], result=text, **sweep_row(record))


def sweep_ended(task, record, manifest, line):
    """Sweep `record` ended: SUCCESS, FAILURE (PARTIAL or FAILURE) or REVOKED (cancelled)."""
    state = manifest["state"]
    fields = dict(sweep_row(record), result=line)
    if state == JobState.CANCELLED:
        fields.update(terminated=False, expired=False, signum=None)
    elif state != JobState.SUCCESS:
        fields.update(exception=line, traceback=line)
    else:
        fields["runtime"] = round(manifest["finished_at"] - manifest["submitted_at"], 3)
    emit(task.app, task.request.hostname, FINAL[state], record["sweep_id"], always=True, **fields)


def chunk_counts(r, job_id):
    """{mark state: chunks} and the number of chunks waiting for a retry of a prediction job."""
    raw = r.hgetall(keys.chunk_counts(job_id))
    counts = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
    return counts, int(r.scard(keys.chunks_retrying(job_id)))
