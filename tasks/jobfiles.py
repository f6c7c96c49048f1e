"""A job's files on shared storage: ids, paths, JSON reads and writes, chunk results, the
cancel request, the manifest and the index entry.

    jobs/<id>/job.json         the job as submitted (PredictJob / TrainJob.to_dict())
    jobs/<id>/plan.json        prediction plan (model.data.sources)
    jobs/<id>/chunks/<n>.result  one prediction chunk's result (model.batch.ChunkResult,
                               written atomically; <n>.npz by earlier versions)
    jobs/<id>/progress.json    training progress (epoch, batch, loss, val_accuracy, eta)
    jobs/<id>/state.npz        training checkpoint (weights, optimizer, RNG, position)
    jobs/<id>/cancel           present once a cancel was requested
    jobs/<id>/manifest.json    how the job ended: state, counts, output, timings
    jobs-index/<id>.json       the job's line in `digits jobs` (index_entry), rewritten at
                               submit and at the end, so a listing reads one small object
                               per job instead of every job's folder

Storage is the source of truth, so any client with DIGITS_STORAGE can read a job, and a
redelivered task finds what an earlier delivery already wrote.
"""
import json
import os
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


def full_ref(root, ref):
    """A job's path as every command shows it: a URL as it is, a local path absolute; a
    path relative to storage (a training run's output in records of earlier versions) is
    joined onto root first. None stays None."""
    if ref is None or storage.is_url(ref):
        return ref
    path = storage.local_path(ref)
    if not os.path.isabs(path):
        base = storage.local_path(root)
        if base is None:  # storage is an object store: the path is a key under it
            return storage.join(root, path)
        path = os.path.join(base, path)
    return os.path.abspath(path)


def storage_root(task):
    """The shared storage root a task's worker was configured with."""
    return task.app.conf.digits_storage


def job_dir(root, job_id):
    return storage.join(root, "jobs", check_id(job_id))


def ref(root, job_id, *parts):
    return storage.join(job_dir(root, job_id), *parts)


def index_dir(root):
    return storage.join(root, "jobs-index")


def index_ref(root, job_id):
    return storage.join(index_dir(root), check_id(job_id) + ".json")


def write_json(target, obj):
    storage.write_text(target, json.dumps(obj, indent=1, sort_keys=True))


def read_json(target, default=None):
    try:
        return json.loads(storage.read_text(target))
    except FileNotFoundError:
        return default


CHUNK_SUFFIXES = (".result", ".npz")  # the current name of a chunk's result, then the earlier one


def chunk_ref(root, job_id, index, suffix=CHUNK_SUFFIXES[0]):
    return ref(root, job_id, "chunks", f"{index:06d}{suffix}")


def read_chunk(root, job_id, index):
    """The stored result of chunk `index` -> bytes; one written by an earlier version (a job
    that ran across an upgrade) is found under its earlier name. The current name's error
    when neither is readable."""
    try:
        return storage.read_bytes(chunk_ref(root, job_id, index))
    except Exception as e:
        try:
            return storage.read_bytes(chunk_ref(root, job_id, index, CHUNK_SUFFIXES[1]))
        except Exception:
            raise e from None


def chunks_done(root, job_id):
    """How many chunks have a result on storage (not counting ".tmp-..." files being written,
    or left behind by a process killed while writing; a chunk with a result under both
    names, after an upgrade, counts once)."""
    return len({n.rsplit(".", 1)[0] for n in storage.listdir(ref(root, job_id, "chunks"))
                if n.endswith(CHUNK_SUFFIXES) and not n.startswith(".")})


def request_cancel(root, job_id):
    write_json(ref(root, job_id, "cancel"), {"requested_at": time.time()})


def is_cancelled(root, job_id):
    return storage.exists(ref(root, job_id, "cancel"))


def read_manifest(root, job_id):
    return read_json(ref(root, job_id, "manifest.json"))


def clear(root, job_id):
    """Remove everything a job wrote on storage (its folder, its index entry), for a fresh
    resubmission."""
    storage.remove(job_dir(root, job_id), recursive=True)
    storage.remove(index_ref(root, job_id))


def write_index(root, record, manifest=None, **extra):
    """(Re)write the job's index entry from its record and manifest."""
    write_json(index_ref(root, record.job_id), dict(record.index_entry(manifest), **extra))
