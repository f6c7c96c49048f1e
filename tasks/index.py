"""The job index: jobs-index/<id>.json, one small entry a job, read in one batch for
`digits jobs` (entries missing for a job folder are rebuilt from its record)."""
import json

from model import storage
from tasks.jobfiles import (
    _ID,
    index_dir,
    index_ref,
    read_json,
    read_manifest,
    ref,
    write_index,
)
from tasks.records import KINDS, record_from_dict


def _read_many(refs):
    """{ref: parsed JSON or None} of several small files, in one batch of requests."""
    out = {}
    for ref_, value in zip(refs, storage.read_many(refs)):
        try:
            out[ref_] = json.loads(value) if isinstance(value, bytes) else None
        except ValueError:  # a damaged entry: rebuilt below
            out[ref_] = None
    return out


def list_index(root):
    """Every job's index entry, newest submission first -> list of dicts.

    One listing of jobs-index/ and one batch of reads; a job folder without an entry
    (written by an older version, or whose entry was lost) gets one rebuilt here."""
    names = [n[:-5] for n in storage.listdir(index_dir(root)) if n.endswith(".json") and not n.startswith(".")]
    entries = _read_many([index_ref(root, n) for n in names])
    by_id = {e["job_id"]: e for e in entries.values() if isinstance(e, dict) and e.get("job_id")}
    for job_id in storage.listdir(storage.join(root, "jobs")):
        if job_id in by_id or not _ID.match(job_id):
            continue
        record = read_json(ref(root, job_id, "job.json"))
        if record is None or record.get("kind") not in KINDS:
            continue  # a job being created, or not ours
        record = record_from_dict(record)
        write_index(root, record, read_manifest(root, job_id))
        by_id[job_id] = read_json(index_ref(root, job_id))
    return sorted(by_id.values(), key=lambda e: e.get("submitted_at") or 0, reverse=True)
