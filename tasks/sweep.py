"""Hyperparameter sweeps: one training job per configuration, followed without a blocked worker.

    sweeps/<id>/sweep.json     the sweep as submitted: name, data, recipe, grid, its jobs
    sweeps/<id>/manifest.json  how it ended: each job's result, the best, the gate's decision

Each run is an ordinary train_job (queue "train", spread over the train worker processes)
whose record names its sweep. A run registers its version without the promotion gate;
when it ends (SUCCESS, CANCELLED or FAILURE) it marks itself in a Redis hash, and the run
whose mark completes the set queues sweep_finish(sweep_id), which offers the best version
to the gate. Nothing waits on a result inside a task.

The sweep has a row in Flower (tasks.events) whose id is the sweep id and whose children
are its runs: STARTED with "runs 1/4 ended" from its first run's start, then SUCCESS,
FAILURE (a run failed or none scored) or REVOKED (cancelled) from sweep_finish.
"""
import itertools
import time
import uuid

from celery import shared_task
from celery.utils.log import get_task_logger

from model import storage
from model.errors import ConfigError, JobError
from model.registry.versions import Registry
from tasks import events, jobfiles, keys, records
from tasks.jobfiles import storage_root
from tasks.states import JobState

log = get_task_logger(__name__)
MAX_RUNS = 64  # configurations one sweep may hold


def new_sweep_id():
    return f"sweep-{uuid.uuid4().hex[:16]}"


def ref(root, sweep_id, *parts):
    return storage.join(root, "sweeps", jobfiles.check_id(sweep_id), *parts)


def read_sweep(root, sweep_id):
    """The sweep record; JobError if there is none."""
    record = jobfiles.read_json(ref(root, sweep_id, "sweep.json"))
    if record is None:
        raise JobError(f"unknown sweep {sweep_id!r} (no record under {ref(root, sweep_id)})")
    return record


def read_manifest(root, sweep_id):
    return jobfiles.read_json(ref(root, sweep_id, "manifest.json"))


def parse_grid(specs, fields):
    """["lr=0.05,0.1", "epochs=10,20"] -> {"lr": [0.05, 0.1], "epochs": [10, 20]}.

    fields: {name: type} of the training options (TrainConfig); values are converted to the
    field's type. ConfigError for an unknown option, a bad value or an empty list."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not values.strip():
            raise ConfigError(f"--grid {spec!r}: write NAME=V1,V2,...")
        if key not in fields:
            raise ConfigError(f"--grid {spec!r}: unknown training option {key!r}; "
                              f"choose from {', '.join(sorted(fields))}")
        convert = fields[key]
        try:
            grid[key] = [convert(v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--grid {spec!r}: values must be {convert.__name__}") from None
    return grid


def configurations(grid):
    """Every combination of a grid -> [{name: value}], in the grid's order."""
    names = list(grid)
    runs = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    if len(runs) > MAX_RUNS:
        raise ConfigError(f"the grid makes {len(runs)} runs; a sweep holds at most {MAX_RUNS}")
    return runs


def job_ended(task, job, state):
    """Called by a sweep's train_job (job: its tasks.records.TrainJob) when it ends: mark it, and queue sweep_finish for the
    last mark. A repeated mark (a redelivered run) changes nothing but may queue the finish
    again, which is harmless: sweep_finish returns an existing manifest."""
    sweep_id = job.sweep
    r = task.app.backend.client
    key = keys.sweep_marks(sweep_id)
    r.hset(key, job.job_id, state)
    r.expire(key, keys.ttl(task.app))
    record = read_sweep(storage_root(task), sweep_id)
    ended = _ended(r, sweep_id)
    events.sweep_progress(task, record, ended)
    if len(ended) >= len(record["jobs"]):
        sweep_finish.apply_async((sweep_id,), task_id=f"{sweep_id}-finish", queue="train", root_id=sweep_id,
                                 parent_id=sweep_id, argsrepr=f"sweep={sweep_id}", kwargsrepr="{}",
                                 add_to_parent=False)


def run_started(task, job):
    """A run of a sweep starts (job: its TrainJob): the sweep's row says STARTED."""
    record = read_sweep(storage_root(task), job.sweep)
    events.sweep_progress(task, record, _ended(task.app.backend.client, job.sweep))


def _ended(r, sweep_id):
    """{job id: end state} of a sweep's runs that ended."""
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in r.hgetall(keys.sweep_marks(sweep_id)).items()}


@shared_task(bind=True, name="digits.sweep_finish")
def sweep_finish(self, sweep_id):
    """Collect a sweep's results, offer the best version to the promotion gate, write the
    sweep's manifest -> a short summary (for Flower)."""
    root = storage_root(self)
    done = read_manifest(root, sweep_id)
    if done:
        return summary(done)  # its first delivery ended the sweep's row
    record = read_sweep(root, sweep_id)
    runs = []
    for job_id, config in zip(record["jobs"], record["configs"]):
        m = jobfiles.read_manifest(root, job_id) or {}
        runs.append({"job_id": job_id, "config": config, "state": m.get("state", JobState.FAILURE),
                     "version": m.get("version"), "val_accuracy": m.get("val_accuracy")})
    scored = [r for r in runs if r["state"] == JobState.SUCCESS and r["val_accuracy"] is not None]
    best = max(scored, key=lambda r: r["val_accuracy"], default=None)
    decision = None
    if best:
        decision = Registry(root).offer(record["name"], best["version"], self.app.conf.digits_promote_tolerance,
                                        why=f"best of sweep {sweep_id}")
    record_verdicts(root, sweep_id, runs, best, decision)
    cancelled = jobfiles.read_json(ref(root, sweep_id, "cancel")) is not None
    state = JobState.CANCELLED if cancelled else JobState.SUCCESS if len(scored) == len(runs) else \
        JobState.PARTIAL if scored else JobState.FAILURE
    manifest = {"sweep_id": sweep_id, "kind": "sweep", "state": state, "name": record["name"], "runs": runs,
                "best": best, "promotion": decision, "submitted_at": record["submitted_at"],
                "finished_at": time.time()}
    jobfiles.write_json(ref(root, sweep_id, "manifest.json"), manifest)
    log.info("sweep %s ended %s; best %s", sweep_id, state, best and best["version"])
    line = summary(manifest)
    events.sweep_ended(self, record, manifest, line)
    return line


def record_verdicts(root, sweep_id, runs, best, decision):
    """Write the sweep's verdict into the manifest (and so the `digits jobs` line) of each run
    that registered a version, in place of "deferred": the gate's decision for the best run,
    "not promoted" for the others. Then the jobs agree with the registry's aliases."""
    for run in runs:
        m = jobfiles.read_manifest(root, run["job_id"])
        if not m or m.get("version") is None:
            continue
        if best and run["job_id"] == best["job_id"]:
            m["promotion"] = decision
        else:
            why = f"version {best['version']} was the best of sweep {sweep_id}" if best else \
                f"sweep {sweep_id} had no successful run"
            m["promotion"] = {"promoted": False, "reason": why}
        records.write_manifest(root, run["job_id"], m)


def list_sweeps(root):
    """Every sweep on storage, newest first -> [{"sweep_id", "name", "state", "runs",
    "runs_ended", "best_version", "best_val_accuracy", "promoted", "submitted_at",
    "finished_at"}]. Storage alone: an unfinished sweep's state comes from its runs' records
    (PENDING, PROGRESS, or CANCELLING once cancelled); best and promoted are known once it ended."""
    out = []
    for sweep_id in storage.listdir(storage.join(root, "sweeps")):
        try:
            record = jobfiles.read_json(ref(root, sweep_id, "sweep.json"))
        except JobError:  # not a sweep's folder
            continue
        if not record:
            continue
        entry = {"sweep_id": sweep_id, "name": record.get("name"), "runs": len(record["jobs"]),
                 "submitted_at": record.get("submitted_at"), "finished_at": None, "best_version": None,
                 "best_val_accuracy": None, "promoted": None}
        done = read_manifest(root, sweep_id)
        if done:
            best, promo = done.get("best") or {}, done.get("promotion") or {}
            entry.update(state=done["state"], runs_ended=len(done["runs"]), finished_at=done.get("finished_at"),
                         best_version=best.get("version"), best_val_accuracy=best.get("val_accuracy"),
                         promoted=promo.get("promoted"))
        else:
            ended = sum(jobfiles.read_manifest(root, j) is not None for j in record["jobs"])
            running = ended or any(jobfiles.read_json(jobfiles.ref(root, j, "progress.json")) for j in record["jobs"])
            state = JobState.CANCELLING if jobfiles.read_json(ref(root, sweep_id, "cancel")) is not None else \
                JobState.PROGRESS if running else JobState.PENDING
            entry.update(state=state, runs_ended=ended)
        out.append(entry)
    return sorted(out, key=lambda e: e.get("submitted_at") or 0, reverse=True)


def summary(manifest):
    """What Flower shows for a sweep (its row, sweep_finish): one line, key facts first:
    "SUCCESS: 4 runs; best digits:7 val_accuracy 0.9812 (lr=0.1, epochs=20); promoted to
    production (...)"."""
    best = manifest.get("best") or {}
    runs = manifest["runs"]
    text = f"{manifest['state']}: {len(runs)} runs"
    unsuccessful = sum(1 for r in runs if r["state"] != "SUCCESS")
    if unsuccessful:
        text += f" ({unsuccessful} not successful)"
    if best:
        config = ", ".join(f"{k}={v}" for k, v in (best.get("config") or {}).items())
        text += f"; best {manifest['name']}:{best.get('version')} val_accuracy {best['val_accuracy']:.4f} ({config})"
    promo = manifest.get("promotion")
    if promo:
        text += f"; {records.TrainJob.promotion_text(promo)}"
    return text
