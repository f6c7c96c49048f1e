"""Retention: remove what ended jobs no longer need, once they are older than a limit.

    report = collect(root, older_than_seconds, dry_run=False, redis=None)

For every job that ended (it has a manifest) more than `older_than` seconds ago, removes:
    jobs/<id>/chunks/      prediction chunk results (the output holds their rows now)
    jobs/<id>/state.npz    a training run's checkpoint (a cancelled run then cannot resume)
    inputs/<id>/           the input (and model copy) uploaded for workers on other hosts
and, given the result backend's Redis client, the job's keys there that expiry left
behind (Celery's task results, chunk marks, counters, locks, its output claim).

Never removed: job.json, the manifest and the index entry (so `digits jobs` still lists
the job), any job's output, every registered model version (models/), and anything of a
job that has not ended. A target holding such a path is skipped and named in the report.
The one scheduler runs this daily (`digits.gc`, DIGITS_GC_CRON); `digits gc` runs it now.
"""
import os
import time

from celery import shared_task
from celery.utils.log import get_task_logger

from model import storage
from tasks import index, jobfiles, keys, records, states, times

log = get_task_logger(__name__)


def _targets(root, job_id):
    """(what, path) of everything retention may remove of one job."""
    return [("chunk files", jobfiles.ref(root, job_id, "chunks")),
            ("training state", jobfiles.ref(root, job_id, "state.npz")),
            ("uploaded input", storage.join(root, "inputs", job_id))]


def _inside(path, folder):
    """True if `path` is `folder` or lies under it."""
    p, f = str(path).rstrip("/" + os.sep), str(folder).rstrip("/" + os.sep)
    return p == f or p.startswith(f + "/") or p.startswith(f + os.sep)


def _usage(path):
    """(bytes, files) of a file or folder."""
    fs, p = storage.filesystem(path)
    if fs.isdir(p):
        found = fs.find(p, detail=True)
        return sum(int(info.get("size") or 0) for info in found.values()), len(found)
    return int(fs.size(p) or 0), 1


def _protected(root, entries, ended_ids):
    """Paths retention never touches: the registry and every job's outputs, plus the
    inputs of jobs that have not ended."""
    paths = [storage.join(root, "models")]
    for e in entries:
        paths += [e.get("output"), e.get("storage_output")]
        if e["job_id"] not in ended_ids:
            paths.append(e.get("input"))
    return [p for p in paths if p]


def _job_keys(redis, entry):
    """The job's keys that exist in the result backend."""
    job_id = entry["job_id"]
    names = keys.job_keys(job_id) + [keys.task_meta(job_id), keys.job_lock(job_id), keys.lock_owner(job_id)]
    names += [keys.task_meta(keys.chunk_task_id(job_id, i)) for i in range(int(entry.get("chunks") or 0))]
    pipe = redis.pipeline()
    for name in names:
        pipe.exists(name)
    found = [name for name, n in zip(names, pipe.execute()) if n]
    for out in (entry.get("output"), entry.get("storage_output")):
        claim = keys.output_owner(out) if out else None
        if claim and (redis.get(claim) or b"").decode() == job_id:
            found.append(claim)
    return found


def collect(root, older_than, dry_run=False, redis=None, now=None):
    """Remove what jobs that ended more than `older_than` seconds ago no longer need ->
    report {"cutoff", "dry_run", "jobs", "removed": [{"job_id", "what", "path", "bytes",
    "files"}], "bytes", "keys", "skipped": [{"path", "reason"}], "redis_checked"}.
    dry_run: report what would go, remove nothing."""
    now = time.time() if now is None else now
    cutoff = now - older_than
    entries = index.list_index(root)
    due = [e for e in entries if e.get("state") in states.FINAL and (e.get("finished_at") or now) < cutoff
           and not e.get("collected_at")]
    protected = _protected(root, entries, {e["job_id"] for e in entries if e.get("state") in states.FINAL})
    report = {"cutoff": times.iso(cutoff), "dry_run": dry_run, "jobs": 0, "removed": [], "bytes": 0,
              "keys": [], "skipped": [], "redis_checked": redis is not None}
    for entry in due:
        job_id, touched = entry["job_id"], False
        for what, target in _targets(root, job_id):
            if not storage.exists(target):
                continue
            held = [p for p in protected if _inside(p, target)]
            if held:
                report["skipped"].append({"path": target, "reason": f"holds {held[0]}, which is kept"})
                continue
            size, files = _usage(target)
            if not dry_run:
                storage.remove(target, recursive=True)
            report["removed"].append({"job_id": job_id, "what": what, "path": target, "bytes": size,
                                      "files": files})
            report["bytes"] += size
            touched = True
        if redis is not None:
            found = _job_keys(redis, entry)
            if found and not dry_run:
                redis.delete(*found)
            report["keys"] += found
            touched = touched or bool(found)
        report["jobs"] += touched
        record = jobfiles.read_json(jobfiles.ref(root, job_id, "job.json"))
        if not dry_run and record is not None:  # later runs skip it (a resubmission rewrites the entry)
            jobfiles.write_index(root, records.record_from_dict(record), jobfiles.read_manifest(root, job_id),
                             collected_at=now)
    return report


def format_bytes(n):
    """1536 -> "1.5 KB"."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def summary_line(report):
    """One line: what was (or would be) removed and how much space that frees."""
    verb = "would remove" if report["dry_run"] else "removed"
    kinds = {}
    for r in report["removed"]:
        jobs_files = kinds.setdefault(r["what"], [0, 0])
        jobs_files[0] += 1
        jobs_files[1] += r["files"]
    what = ", ".join(f"the {w} of {n} job(s) ({files} files)" for w, (n, files) in sorted(kinds.items())) \
        or "nothing"
    line = (f"{verb} {what}, of jobs that ended before {report['cutoff']}: "
            f"{format_bytes(report['bytes'])} {'to free' if report['dry_run'] else 'freed'}")
    if report["redis_checked"]:
        line += f"; {len(report['keys'])} result-backend key(s)"
    return line


@shared_task(bind=True, name="digits.gc")
def gc(self, older_than):
    """Scheduled retention (DIGITS_GC_CRON) of jobs ended more than `older_than` seconds
    ago -> the summary line and counts, for Flower."""
    report = collect(jobfiles.storage_root(self), float(older_than), redis=self.app.backend.client)
    line = summary_line(report)
    log.info("gc: %s", line)
    return {"summary": line, "jobs": report["jobs"], "bytes": report["bytes"], "keys": len(report["keys"]),
            "skipped": len(report["skipped"])}
