"""Job records on shared storage: what a job is, how far it got, and how it ended.

    jobs/<id>/job.json         the job as submitted: kind, input, output, model, chunks
    jobs/<id>/plan.json        prediction plan (model.batch.Plan)
    jobs/<id>/chunks/<n>.npz   one prediction chunk's result (written atomically)
    jobs/<id>/progress.json    training progress (epoch, batch, loss, val_accuracy, eta)
    jobs/<id>/state.npz        training checkpoint (weights, optimizer, RNG, position)
    jobs/<id>/cancel           present once a cancel was requested
    jobs/<id>/manifest.json    how the job ended: state, counts, output, timings

Storage is the source of truth, so any client with DIGITS_STORAGE can read a job, and a
redelivered task finds what an earlier delivery already wrote.
"""
import json
import re
import time
import uuid

from model import storage
from model.errors import JobError

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def new_job_id(kind):
    """A fresh job id such as 'predict-3f2a...'."""
    return f"{kind}-{uuid.uuid4().hex[:16]}"


def check_id(job_id):
    if not _ID.match(job_id or ""):
        raise JobError(f"bad job id {job_id!r}: use letters, digits, '.', '_' and '-'")
    return job_id


def storage_root(task):
    """The shared storage root a task's worker was configured with."""
    return task.app.conf.digits_storage


def job_dir(root, job_id):
    return storage.join(root, "jobs", check_id(job_id))


def ref(root, job_id, *parts):
    return storage.join(job_dir(root, job_id), *parts)


def write_json(target, obj):
    storage.write_text(target, json.dumps(obj, indent=1, sort_keys=True))


def read_json(target, default=None):
    try:
        return json.loads(storage.read_text(target))
    except FileNotFoundError:
        return default


def read_job(root, job_id):
    """The job record; JobError if there is none."""
    job = read_json(ref(root, job_id, "job.json"))
    if job is None:
        raise JobError(f"unknown job {job_id!r} (no record under {job_dir(root, job_id)})")
    return job


def chunk_ref(root, job_id, index):
    return ref(root, job_id, "chunks", f"{index:06d}.npz")


def chunks_done(root, job_id):
    """How many chunk results are on storage (not counting ".tmp-..." files being written,
    or left behind by a process killed while writing)."""
    return sum(1 for n in storage.listdir(ref(root, job_id, "chunks"))
               if n.endswith(".npz") and not n.startswith("."))


def request_cancel(root, job_id):
    write_json(ref(root, job_id, "cancel"), {"requested_at": time.time()})


def reopen(root, job_id):
    """Make a cancelled job runnable again: drop its cancel request, then its manifest."""
    storage.remove(ref(root, job_id, "cancel"))
    storage.remove(ref(root, job_id, "manifest.json"))


def clear(root, job_id):
    """Remove everything a job wrote on storage (its folder), for a fresh resubmission."""
    storage.remove(job_dir(root, job_id), recursive=True)


def is_cancelled(root, job_id):
    return storage.exists(ref(root, job_id, "cancel"))


def read_manifest(root, job_id):
    return read_json(ref(root, job_id, "manifest.json"))


def write_manifest(root, job_id, manifest):
    write_json(ref(root, job_id, "manifest.json"), manifest)
