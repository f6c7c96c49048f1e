"""Bulk prediction tasks: predict_chunk per chunk, then one assemble per job.

Only references cross the broker: the job id and a chunk index. The job record, the plan
and the model file are on shared storage (claim check); each chunk's result is written
there under the job id, so a redelivered chunk rewrites the same file and assemble
reads exactly one result per chunk: no row is lost or doubled.

One completion path. Each chunk, once its result is on storage (or it failed for good,
or the job was cancelled), marks itself in a Redis hash with one atomic script (tasks.marks) that also
numbers and counts the marks. The chunk whose mark is number `total` queues
assemble(job_id) (task id "<job id>:assemble"). This replaces a chord: a chord counts its
parts after storing each part's result, so a pool process killed between the two left it
one part short forever. Here a chunk killed before its mark is redelivered (acks late) and marks then;
killed after, its redelivery finds the mark and does what the first delivery may not
have finished (queue the next chunk, queue assemble). assemble itself runs under a lock
and returns the manifest if one exists, so a duplicate never writes twice.

Every mark also moves the job's row in Flower (tasks.events): its id is the job id, its
children the chunks and assemble. A chunk that failed for good ends FAILURE and a skipped
one (the job was cancelled) REVOKED, each after its mark: the mark decides the job.

Fair sharing. A job keeps at most `window` chunks in the queue: the client queues the
first `window`, and the n-th chunk to finish queues chunk n + window - 1. Another job's
chunks queued meanwhile wait behind at most `window` chunks, not behind the whole job.
"""
import json
import time
from collections import OrderedDict

from celery import shared_task
from celery.exceptions import Ignore
from celery.utils.log import get_task_logger

from model import batch, checkpoint, storage
from model.data import sources
from model.errors import DataError, JobError, describe
from tasks import breaker, deliveries, events, jobfiles, keys, records
from tasks.jobfiles import storage_root
from tasks.queueing import ASSEMBLE, PREDICT_CHUNK, queue_assemble, queue_chunk, release_output, retry, touch
from tasks.marks import mark, marks, redis_client
from tasks.window import record_sent, sent_or_marked

log = get_task_logger(__name__)
_MODELS = OrderedDict()  # model version -> Model, per worker process
_SOURCES = OrderedDict()  # job id -> source (the plan), per worker process
_CACHE_SIZE = 4
ASSEMBLE_WAIT_RETRIES = 600  # 1 s apart: an assemble that finds chunks unmarked waits this long
LOCK_SECONDS = 600  # an assemble lock left by a killed process frees itself after this


def _cached(cache, key, load):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = load()
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def load_model_cached(model_ref, version):
    """The model at model_ref, loaded once per process and kept by version."""
    model = _cached(_MODELS, version, lambda: checkpoint.load_model(model_ref))
    if model.version != version:  # the file at that path was replaced since submission
        _MODELS.pop(version, None)
        raise JobError(f"model {model_ref} is now version {model.version}, job wants {version}")
    return model


def load_source(root, job):
    """The stored plan of a job -> its source (cached per process and submission: a
    resubmitted job id is planned anew)."""
    return _cached(_SOURCES, (job["job_id"], job["submitted_at"]), lambda: sources.from_dict(
        jobfiles.read_json(jobfiles.ref(root, job["job_id"], "plan.json"))))


_BLAS = {"limited": False}


def one_blas_thread():
    """One BLAS thread in a predict worker process (once per process): the embedded stack
    runs one process per core, so more threads per process only oversubscribe the cores."""
    if not _BLAS["limited"]:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
        _BLAS["limited"] = True



def resume(app, job_id):
    """Send again the work of a prediction job that stopped moving (its queued messages
    lost with a Redis that died before writing them to disk, say): the first `window` chunks
    without a mark, or assemble once every chunk is marked -> what was sent. Every task is
    idempotent, so a copy of work that was only slow costs time, never a row."""
    root = app.conf.digits_storage
    job = jobfiles.read_json(jobfiles.ref(root, job_id, "job.json"))
    r = app.backend.client
    if job is None or jobfiles.read_manifest(root, job_id):
        r.srem(keys.ACTIVE_PREDICTIONS, job_id)
        return []
    source = load_source(root, job)
    marked = {int(k) for k in r.hkeys(keys.chunk_marks(job_id))}
    missing = [i for i in range(len(source.chunks)) if i not in marked]
    touch(r, job_id)
    if not missing:  # every chunk marked (done, failed or skipped): only assemble is left
        queue_assemble(app, job_id)
        return ["assemble"]
    sent = missing[:job.get("window") or len(missing)]
    for index in sent:
        queue_chunk(app, job_id, index, source)
    return sent



def _after_mark(task, job, source, the_mark, repeated):
    """Release the next chunk of the window and, for the last mark, queue assemble.

    A repeated delivery (its mark already existed) releases again only a chunk that has
    no mark yet: its first delivery may have died before doing it."""
    job_id, total, window = job["job_id"], len(source.chunks), job.get("window") or len(source.chunks)
    order = the_mark["order"]
    nxt = order + window - 1  # 0-based index released by the order-th mark
    if nxt < total and not (repeated and sent_or_marked(redis_client(task), job_id, nxt)):
        queue_chunk(task.app, job_id, nxt, source)
        record_sent(redis_client(task), job_id, nxt)
    if order == total or (repeated and redis_client(task).hlen(keys.chunk_marks(job_id)) >= total):
        if not (repeated and jobfiles.read_manifest(job["root"], job_id)):
            queue_assemble(task.app, job_id)


# acks_on_timeout=False: a chunk killed at its hard time limit (a frozen process) goes back to its queue
@shared_task(bind=True, name=PREDICT_CHUNK, ignore_result=True, track_started=False, throws=(JobError,),
             acks_on_timeout=False)
def predict_chunk(self, job_id, index, lo=None, hi=None):
    """Predict chunk `index` of job `job_id` -> one line for Flower ("chunk 3/101: 10000
    rows, 2 bad, 0.24s").

    Its state lives in the job's marks: the result backend keeps nothing of a chunk (Flower
    shows the line from the task-succeeded event), which saves two writes and two
    publishes per chunk.

    lo/hi (the chunk's byte or list range) are shown in Flower only; the plan decides.
    A failure not tied to one record (storage, a bug) is retried DIGITS_CHUNK_RETRIES
    times with backoff, then marks the chunk failed and ends FAILURE: the job ends PARTIAL,
    not lost. A chunk of a cancelled job is marked skipped and ends REVOKED.
    """
    root = storage_root(self)
    record = jobfiles.read_json(jobfiles.ref(root, job_id, "job.json"))
    if record is None:  # a late copy of a job whose record was cleared (resubmitted afresh)
        log.warning("job %s has no record (cleared for a resubmission?): chunk %s not run", job_id, index)
        return f"chunk {index}: not run, job {job_id} has no record"
    job = dict(record, root=root)
    source = load_source(root, job)
    existing = redis_client(self).hget(keys.chunk_marks(job_id), index)
    if existing:  # an earlier delivery marked it
        the_mark = json.loads(existing)
        _after_mark(self, job, source, the_mark, repeated=True)
        return _ended(self, job, index, the_mark, repeated=True)
    if jobfiles.is_cancelled(root, job_id):
        first, the_mark = mark(self, job, index, "skipped")
        _after_mark(self, job, source, the_mark, repeated=not first)
        return _ended(self, job, index, the_mark)
    # faults: a job stopped early (tasks.breaker), a chunk that killed its process (tasks.deliveries)
    refused = breaker.tripped(redis_client(self), job_id) or deliveries.chunk_poisoned(self, job_id, index)
    if refused:
        first, the_mark = mark(self, job, index, "failed", reason=refused)
        _after_mark(self, job, source, the_mark, repeated=not first)
        return _ended(self, job, index, the_mark)
    if index == 0 and not self.request.retries:  # the job's row says STARTED from its first chunk on
        events.job_progress(self, job, *events.chunk_counts(redis_client(self), job_id))
    target = jobfiles.chunk_ref(root, job_id, index)
    started, t0 = time.time(), time.perf_counter()
    stages = {}  # seconds spent reading+parsing, predicting, writing the result
    try:
        if storage.exists(target):  # written by a delivery that died before marking
            result = batch.ChunkResult.from_bytes(storage.read_bytes(target))
        else:
            one_blas_thread()
            model = load_model_cached(job["model"]["ref"], job["model"]["version"])
            t = time.perf_counter()
            block = source.read(index)
            stages["read"] = time.perf_counter() - t
            t = time.perf_counter()
            result = batch.predict_block(block, model)
            del block
            stages["predict"] = time.perf_counter() - t
            t = time.perf_counter()
            storage.write_bytes(target, result.to_bytes())
            stages["write"] = time.perf_counter() - t
    except Exception as e:
        retries, limit = self.request.retries, self.app.conf.digits_chunk_retries
        stopped = breaker.chunk_failed(redis_client(self), job_id, e, self.app.conf.digits_breaker_chunks)
        if retries < limit and not stopped and not isinstance(e, DataError):  # the data says the same on every try
            countdown = self.app.conf.digits_retry_backoff * 2 ** retries
            log.warning("job %s chunk %s failed (%s); retry %s of %s in %.1fs", job_id, index,
                        describe(e), retries + 1, limit, countdown)
            _retrying(self, job, index)
            raise retry(self, countdown=countdown, max_retries=limit, exc=e)
        log.error("job %s chunk %s failed for good: %s", job_id, index, describe(e))
        first, the_mark = mark(self, job, index, "failed", reason=stopped or describe(e))
        _after_mark(self, job, source, the_mark, repeated=not first)
        return _ended(self, job, index, the_mark)
    seconds = round(time.perf_counter() - t0, 4)
    breaker.chunk_done(redis_client(self), job_id)
    first, the_mark = mark(self, job, index, "done", rows=len(result), bad=len(result.errors),
                           seconds=seconds, started=started, finished=time.time(),
                           **{k: round(v, 4) for k, v in stages.items()})
    _after_mark(self, job, source, the_mark, repeated=not first)
    return _ended(self, job, index, the_mark, repeated=not first)


def _retrying(task, job, index):
    """Chunk `index` waits for a retry: counted (its mark uncounts it) on the job's row."""
    r = redis_client(task)
    r.sadd(keys.chunks_retrying(job["job_id"]), index)
    r.expire(keys.chunks_retrying(job["job_id"]), int(task.app.conf.result_expires or 7 * 86400))
    events.job_progress(task, job, *events.chunk_counts(r, job["job_id"]))


def chunk_line(index, total, the_mark):
    """A chunk's mark in one line, key facts first: "chunk 3/101: 10000 rows, 2 bad, 0.24s",
    "chunk 3/101 failed for good: <reason>", "chunk 3/101 skipped: the job was cancelled"."""
    head = f"chunk {index}/{total}"
    if the_mark["state"] == "failed":
        return f"{head} failed for good: {the_mark.get('reason')}"
    if the_mark["state"] == "skipped":
        return f"{head} skipped: the job was cancelled"
    text = f"{head}: {the_mark.get('rows')} rows"
    if the_mark.get("bad"):
        text += f", {the_mark['bad']} bad"
    return text + (f", {the_mark['seconds']:.2f}s" if the_mark.get("seconds") is not None else "")


def _ended(task, job, index, the_mark, repeated=False):
    """End a chunk's task as its mark says -> its line (done): FAILURE for a chunk that failed
    for good (JobError, raised), REVOKED for a skipped one (its event, then Ignore: no success
    follows)."""
    line = chunk_line(index, job.get("chunks"), the_mark) + (" (a repeated delivery)" if repeated else "")
    if the_mark["state"] == "failed":
        raise JobError(line)
    if the_mark["state"] == "skipped":
        task.send_event("task-revoked", terminated=False, expired=False, signum=None, result=line)
        raise Ignore(line)
    return line


def _outcomes(root, job_id, source, chunk_marks):
    """Each chunk's outcome for batch.assemble, in chunk order."""
    for i in range(len(source.chunks)):
        m = chunk_marks.get(i, {"state": "skipped"})
        if m["state"] == "skipped":
            yield None
        elif m["state"] == "failed":
            yield batch.ChunkFailure(m.get("reason") or "failed", m.get("rows"))
        else:
            try:
                yield batch.ChunkResult.from_bytes(jobfiles.read_chunk(root, job_id, i))
            except Exception as e:  # its result is gone or unreadable: its records are failed
                yield batch.ChunkFailure(f"its result cannot be read ({describe(e)})", m.get("rows"))


@shared_task(bind=True, name=ASSEMBLE)
def assemble(self, job_id):
    """Write the job's output in input order, its errors file and its manifest -> the job's
    one-line summary for Flower (the manifest itself is on storage), which ends the job's
    row too (tasks.events.job_ended) and stores its final state under the job id."""
    root = storage_root(self)
    done = jobfiles.read_manifest(root, job_id)
    if done:  # a repeated delivery: the first may have died before ending the job's row
        record = jobfiles.read_json(jobfiles.ref(root, job_id, "job.json"))
        if record is not None:
            events.job_ended(self, record, done)
        return summary(done)
    r = redis_client(self)
    lock = r.lock(keys.assemble_lock(job_id), timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire(blocking=False):
        raise retry(self, countdown=1, max_retries=ASSEMBLE_WAIT_RETRIES)
    try:
        done = jobfiles.read_manifest(root, job_id)
        if done:
            return summary(done)
        return summary(_assemble(self, root, job_id))
    finally:
        try:
            lock.release()
        except Exception:  # it expired: nothing to release
            pass


def _assemble(task, root, job_id):
    job = jobfiles.read_json(jobfiles.ref(root, job_id, "job.json"))
    if job is None:
        # a late copy (say, a retry waiting for the lock) of a job that ended and was cleared
        # for a resubmission, run before the new record was written: nothing to assemble, and
        # no FAILURE stored under the job id, where the resubmitted job's status would find it
        log.warning("job %s has no record (cleared for a resubmission?): assemble not run", job_id)
        return {"job_id": job_id, "state": "NO RECORD"}  # summary() says so; nothing under the job id
    record = records.PredictJob.from_dict(job)
    source = load_source(root, job)
    chunk_marks = marks(task, job_id)
    cancelled = jobfiles.is_cancelled(root, job_id)
    if len(chunk_marks) < len(source.chunks) and not cancelled:
        # queued early (a resubmission, a repeated last chunk): wait for the stragglers
        raise retry(task, countdown=1, max_retries=ASSEMBLE_WAIT_RETRIES)
    assemble_started, t0 = time.time(), time.perf_counter()
    r = redis_client(task)
    try:
        counts = batch.assemble(source, _outcomes(root, job_id, source, chunk_marks), job["output"])
    except Exception as e:  # the output cannot be written: retry, then fail naming the path
        retries, limit = task.request.retries, task.app.conf.digits_chunk_retries
        if retries < limit:
            raise retry(task, countdown=task.app.conf.digits_retry_backoff * 2 ** retries,
                             max_retries=limit, exc=e)
        error = f"job {job_id}: the output cannot be written: {describe(e)}"
        manifest = record.failure_manifest(error)
        records.write_manifest(root, job_id, manifest)
        release_output(r, job, job_id)
        events.job_ended(task, job, manifest)
        raise JobError(error) from None
    state = batch.final_state(counts, cancelled)
    done = [m for m in chunk_marks.values() if m["state"] == "done"]
    manifest = record.manifest(counts, state, chunks_done=len(done),
                               chunk_seconds=sum(m.get("seconds", 0) for m in done),
                               assemble_seconds=time.perf_counter() - t0,
                               error=f"job {job_id}: {batch.failure_line(counts)}" if state in ("PARTIAL", "FAILURE")
                               else None)
    manifest["timings"] = _timings(job, done, assemble_started, time.perf_counter() - t0)  # and per stage
    records.write_manifest(root, job_id, manifest)
    r.srem(keys.ACTIVE_PREDICTIONS, job_id)
    deliveries.job_ended(r, job_id)
    r.incr(keys.assemble_runs(job_id))
    r.expire(keys.assemble_runs(job_id), keys.ttl(task.app))
    release_output(r, job, job_id)
    events.job_ended(task, job, manifest)
    return manifest


def _timings(job, done, assemble_started, assemble_seconds):
    """The manifest's timings: chunk seconds in all (and per stage: read and parse, predict,
    write the result), assemble seconds, wall seconds from submission, and the times
    (time.time()) at which the first chunk started, the last one finished and assemble began."""
    out = {"chunk_seconds": round(sum(m.get("seconds", 0) for m in done), 3),
           "assemble_seconds": round(assemble_seconds, 3),
           "wall_seconds": round(time.time() - job["submitted_at"], 3)}
    for stage in ("read", "predict", "write"):
        out[f"{stage}_seconds"] = round(sum(m.get(stage, 0) for m in done), 3)
    if done and all("started" in m for m in done):
        out["first_chunk_started_at"] = min(m["started"] for m in done)
        out["last_chunk_finished_at"] = max(m["finished"] for m in done)
    out["assemble_started_at"] = assemble_started
    return out


def summary(manifest):
    """What Flower shows as an assemble's result: the job's one line (tasks.records.PredictJob.summary)."""
    if manifest.get("state") == "NO RECORD":
        return f"job {manifest['job_id']} has no record (cleared for a resubmission?): nothing assembled"
    return records.PredictJob.summary(manifest)
