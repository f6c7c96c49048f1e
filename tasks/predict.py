"""Bulk prediction tasks: a flat chord of predict_chunk tasks, then one assemble.

Only references cross the broker: the job id and a chunk index. The job record, the plan
and the model file are on shared storage (claim check); each chunk's result is written
there under the job id, so a redelivered chunk rewrites the same file and assemble
reads exactly one result per chunk: no row is lost or doubled.
"""
import time
from collections import OrderedDict

from celery import shared_task
from celery.utils.log import get_task_logger

from model import batch, checkpoint, storage
from model.errors import JobError
from tasks import jobs

log = get_task_logger(__name__)
_MODELS = OrderedDict()  # model version -> Model, per worker process
_PLANS = OrderedDict()  # job id -> Plan, per worker process
_CACHE_SIZE = 4
ASSEMBLE_FALLBACK_SECONDS = 5  # delay of the storage-triggered assemble (_ensure_assembled)


def storage_root(task):
    """The shared storage root this worker was configured with."""
    return task.app.conf.digits_storage


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


def load_plan(root, job_id):
    return _cached(_PLANS, job_id, lambda: batch.Plan.from_dict(
        jobs.read_json(jobs.ref(root, job_id, "plan.json"))))


@shared_task(bind=True, name="digits.predict_chunk")
def predict_chunk(self, job_id, index, lo=None, hi=None):
    """Predict chunk `index` of job `job_id` -> small summary {index, rows, bad}.

    lo/hi (the chunk's byte or list range) are shown in Flower only; the plan decides.
    """
    root = storage_root(self)
    target = jobs.chunk_ref(root, job_id, index)
    if storage.exists(target):  # an earlier delivery finished this chunk
        r = batch.ChunkResult.from_bytes(storage.read_bytes(target))
        _ensure_assembled(self, root, job_id)
        return {"index": index, "rows": len(r), "bad": len(r.errors), "reused": True}
    if jobs.is_cancelled(root, job_id):
        _ensure_assembled(self, root, job_id, cancelled=True)
        return {"index": index, "cancelled": True}
    job = jobs.read_job(root, job_id)
    t0 = time.perf_counter()
    model = load_model_cached(job["model"]["ref"], job["model"]["version"])
    result = batch.predict_chunk(load_plan(root, job_id), index, model)
    storage.write_bytes(target, result.to_bytes())
    _ensure_assembled(self, root, job_id)
    return {"index": index, "rows": len(result), "bad": len(result.errors),
            "seconds": round(time.perf_counter() - t0, 4)}


def _ensure_assembled(task, root, job_id, cancelled=False):
    """Once every chunk is on storage (or the job is cancelled), queue one delayed assemble
    besides the chord's.

    The chord counts its parts in Redis after each part's result is stored. A pool process
    killed between the two leaves the chord one part short forever, and Celery acks that
    task (its SUCCESS is stored) instead of requeueing it, so the chord's assemble never
    runs. This copy finishes such a job; when the chord did its work, it finds the
    manifest and returns at once. A Redis key makes it one copy per job.
    """
    if not cancelled and jobs.chunks_done(root, job_id) < len(load_plan(root, job_id).chunks):
        return
    if task.app.backend.client.set(f"digits:backup-assemble:{job_id}", 1, nx=True, ex=24 * 3600):
        assemble.apply_async(([], job_id), task_id=job_id, countdown=ASSEMBLE_FALLBACK_SECONDS)


@shared_task(bind=True, name="digits.assemble")
def assemble(self, summaries, job_id):
    """Write the job's output in input order, its errors file and its manifest -> manifest."""
    root = storage_root(self)
    done = jobs.read_manifest(root, job_id)
    if done:  # already assembled (a duplicate chord, or the fallback of _ensure_assembled)
        return done
    job = jobs.read_job(root, job_id)
    p = load_plan(root, job_id)
    missing = [i for i in range(len(p.chunks)) if not storage.exists(jobs.chunk_ref(root, job_id, i))]
    cancelled = jobs.is_cancelled(root, job_id)
    if missing and not cancelled:
        # a duplicate delivery may have closed the chord early: wait for the stragglers
        raise self.retry(countdown=1, max_retries=600)
    t0 = time.perf_counter()

    def results():
        for i in range(len(p.chunks)):
            raw = None if i in missing else storage.read_bytes(jobs.chunk_ref(root, job_id, i))
            yield None if raw is None else batch.ChunkResult.from_bytes(raw)

    counts = batch.assemble(p, results(), job["output"])
    manifest = dict(counts, job_id=job_id, kind="predict", state="CANCELLED" if missing else "SUCCESS",
                    input=job["input"], model=job["model"], chunks=len(p.chunks),
                    chunks_done=len(p.chunks) - len(missing), submitted_at=job["submitted_at"],
                    finished_at=time.time(),
                    timings={"chunk_seconds": round(sum(s.get("seconds", 0) for s in summaries or []), 3),
                             "assemble_seconds": round(time.perf_counter() - t0, 3),
                             "wall_seconds": round(time.time() - job["submitted_at"], 3)})
    jobs.write_manifest(root, job_id, manifest)
    return manifest
