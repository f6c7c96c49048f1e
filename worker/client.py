"""The Python API of the queue: submit jobs, follow them, cancel them.

    job = submit_prediction("test.csv", "model.npz", "submission.csv", app=app, settings=s)
    job.progress()   # {"state", "progress": {...}, "output", ...}
    job.wait()       # the manifest once the job ended
    job.cancel()

Jobs are recorded on shared storage (tasks.jobs), so status() works from any client
that sees the same DIGITS_STORAGE and broker.
"""
import json
import os
import time

from model import storage
from model.errors import DataError, JobError
from tasks import jobs, keys

# NumPy, the model code and Celery's task modules are imported where they are used, so
# that `digits status` (status() below on an ended job) imports none of them.

FINAL_STATES = ("SUCCESS", "PARTIAL", "CANCELLED", "FAILURE")


def _abs(ref):
    return ref if storage.is_url(ref) else os.path.abspath(ref)


def stage_input(s, job_id, ref, name="input"):
    """Where workers read `ref`: as is on the embedded stack or for URLs; otherwise a local
    file or folder is uploaded to storage first (workers are on other machines)."""
    ref = _abs(str(ref))
    if s.embedded or storage.is_url(ref) or not storage.is_url(s.storage):
        return ref
    target = storage.join(s.storage, "inputs", job_id, name + ("" if os.path.isdir(ref) else
                                                                  os.path.splitext(ref)[1]))
    storage.upload(ref, target)
    return target


def check_paths(input_ref, out):
    """The input exists and a local --out is a file in an existing folder (else the job
    would fail only when it assembles its output)."""
    if not storage.exists(_abs(str(input_ref))):
        raise DataError(input_ref, "no such file or folder")
    out = _abs(str(out))
    if not storage.is_url(out):
        if os.path.isdir(out):
            raise JobError(f"--out {out} is a folder; give a file name such as {out}/predictions.csv")
        if not os.path.isdir(os.path.dirname(out)):
            raise JobError(f"--out {out}: folder {os.path.dirname(out)} does not exist")


def check_prediction(s, input_ref, model_ref, out):
    """Fail fast, before a stack is started or anything queued: check_paths, and the model
    reference resolves to a readable model file -> (model path, registry info, Model), which
    submit_prediction(checked=...) takes instead of checking again."""
    check_paths(input_ref, out)
    from model import checkpoint
    from model.registry import Registry
    path, info = Registry(s.storage).resolve(str(model_ref))
    return path, info, checkpoint.load_model(path)


def output_ref(s, job_id, out):
    """Where the workers write the output: --out itself when they can write there."""
    out = _abs(str(out))
    if s.embedded or storage.is_url(out) or not storage.is_url(s.storage):
        return out
    return storage.join(s.storage, "jobs", job_id, os.path.basename(out))


def resolve_model(s, model_ref, job_id, checked):
    """Model reference and check_prediction's result -> {"ref", "version", "name",
    "registry_version", "requested"} as workers see it."""
    path, info, model = checked
    path = stage_input(s, job_id, path, "model")
    return {"ref": path, "version": model.version, "name": info.get("name"),
            "registry_version": info.get("version"), "requested": str(model_ref)}


def claim_output(app, job_id, out):
    """Make job_id the one live job writing `out`; JobError naming the job that holds it.

    A claim whose job has ended (it has a manifest) or left no record is taken over."""
    r = app.backend.client
    key = keys.output_owner(out)
    for _ in range(3):
        if r.set(key, job_id, nx=True):
            return
        holder = (r.get(key) or b"").decode()
        if holder in ("", job_id):
            r.set(key, job_id)
            return
        root = app.conf.digits_storage
        record = jobs.read_json(jobs.ref(root, holder, "job.json"))
        if record is not None and not jobs.read_manifest(root, holder):
            raise JobError(f"{out} is the output of job {holder}, which is still running: wait for it "
                           f"(digits watch {holder}), cancel it, or choose another --out")
        r.delete(key)  # its job ended or is gone: a stale claim
    raise JobError(f"could not claim output {out}")


def submit_prediction(input_ref, model_ref, out, *, app, settings, job_id=None, chunk_rows=None,
                      checked=None):
    """Queue a bulk prediction of a CSV file or image folder -> PredictionJob.

    checked: check_prediction's result for these arguments, when the caller already has it.
    One live job per output: a second job with the same `out` is refused (JobError).
    A job id that is still running is sent again: its missing chunks are queued again and
    the ones already done are reused, so no row is doubled or lost. A job id that has
    ended is started afresh with these arguments (its earlier result is cleared).
    """
    from model import sources
    from tasks.predict import queue_assemble, queue_chunk, release_output
    s = settings
    job_id = jobs.check_id(job_id or jobs.new_job_id("predict"))
    root = s.storage
    job = jobs.read_json(jobs.ref(root, job_id, "job.json"))
    if job is not None and jobs.read_manifest(root, job_id):
        _forget(app, s, job_id)  # ended: start afresh
        job = None
    if job is None:
        checked = checked or check_prediction(s, input_ref, model_ref, out)  # a bad model fails here
        claim_output(app, job_id, _abs(str(out)))
        try:
            model = resolve_model(s, model_ref, job_id, checked)
            staged = stage_input(s, job_id, input_ref)
            source = sources.open_source(staged, chunk_rows or s.chunk_rows, chunk_rows or s.chunk_images)
        except BaseException:
            release_output(app.backend.client, {"download_to": _abs(str(out))}, job_id)
            raise
        jobs.write_json(jobs.ref(root, job_id, "plan.json"), source.to_dict())
        job = {"job_id": job_id, "kind": "predict", "input": staged, "model": model,
               "output": output_ref(s, job_id, out), "download_to": _abs(str(out)),
               "chunks": len(source.chunks), "input_kind": source.kind, "window": s.job_window,
               "submitted_at": time.time()}
        jobs.write_json(jobs.ref(root, job_id, "job.json"), job)
        missing = range(len(source.chunks))
    else:  # still running: its own plan, and the chunks without a mark
        if _abs(str(out)) != job.get("download_to"):
            raise JobError(f"job {job_id} is still running with --out {job.get('download_to')}")
        source = sources.from_dict(jobs.read_json(jobs.ref(root, job_id, "plan.json")))
        marked = {int(k) for k in app.backend.client.hkeys(keys.chunk_marks(job_id))}
        missing = [i for i in range(len(source.chunks)) if i not in marked]
    window = job.get("window") or len(source.chunks)
    with app.connection_for_write() as conn:
        for index in list(missing)[:window]:
            queue_chunk(job_id, index, source, connection=conn)
        if not source.chunks or not missing:
            queue_assemble(job_id, connection=conn)
    return PredictionJob(app, s, job_id)


def _forget(app, s, job_id):
    """Clear an ended job's storage, Redis keys and task results before a resubmission."""
    jobs.clear(s.storage, job_id)
    r = app.backend.client
    r.delete(*keys.job_keys(job_id))
    app.backend.forget(job_id)  # the earlier assemble's result, which status() would read


def status(app, s, job_id):
    """The state of any job -> dict with at least state, progress and output."""
    root = s.storage
    job = jobs.read_job(root, job_id)
    manifest = jobs.read_manifest(root, job_id)
    out = {"job_id": job_id, "kind": job["kind"], "output": job.get("download_to") or job.get("output")}
    if job["kind"] == "predict":
        total = job["chunks"]
        done = jobs.chunks_done(root, job_id)
        out["progress"] = {"chunks_done": done, "chunks": total,
                           "fraction": round(done / total, 4) if total else 1.0}
    else:
        out["progress"] = jobs.read_json(jobs.ref(root, job_id, "progress.json"), {})
    if manifest:
        out.update(manifest)
        out["output"] = job.get("download_to") or manifest.get("output")
        return out
    # app is None when no broker is reachable: then storage alone tells the state
    meta = app.backend.get_task_meta(job_id) if app is not None else {"status": "PENDING"}
    if meta["status"] == "FAILURE":
        out["state"] = "FAILURE"
        out["error"] = f"{type(meta['result']).__name__}: {meta['result']}"
    elif jobs.is_cancelled(root, job_id):
        out["state"] = "CANCELLING"
    elif job["kind"] == "predict":
        out["state"] = "PROGRESS" if out["progress"]["chunks_done"] else "PENDING"
    else:
        out["state"] = "PROGRESS" if out["progress"] else meta["status"]
    return out


class Job:
    """A handle on a queued job: progress(), wait(), result(), cancel()."""

    def __init__(self, app, settings, job_id):
        self.app, self.s, self.id = app, settings, job_id

    def progress(self):
        return status(self.app, self.s, self.id)

    def result(self):
        """The manifest when the job has ended, else None."""
        return jobs.read_manifest(self.s.storage, self.id)

    def cancel(self):
        """Ask the job to stop: remaining chunks (or batches) are skipped, finished work kept."""
        jobs.request_cancel(self.s.storage, self.id)

    def wait(self, timeout=None, on_progress=None, poll=0.25, on_outage=None):
        """Block until the job ends -> its manifest; JobError if it failed or timed out.

        A broker outage is ridden out for DIGITS_BROKER_OUTAGE seconds (on_outage(line) is
        told once, default: a line on stderr), then BrokerUnreachable.
        """
        from worker.outage import Outage, say_stderr
        outage = Outage(self.app.conf.broker_url, self.s.broker_outage, on_outage or say_stderr)
        deadline = None if timeout is None else time.time() + timeout
        wake = _Wake(self.app, self.id)
        st = None
        while True:
            st = outage.call(self.progress) or st
            if on_progress and st and outage.since is None:
                on_progress(st)
            if st and st["state"] in FINAL_STATES:
                break
            if deadline and time.time() > deadline:
                raise JobError(f"job {self.id} still {st and st['state']} after {timeout}s")
            wake.pause(poll)
        wake.close()
        if st["state"] == "FAILURE":
            raise JobError(f"job {self.id} failed: {st.get('error')}")
        self._download(st)
        return self.result()

    def _download(self, st):
        from model import batch
        job = jobs.read_job(self.s.storage, self.id)
        src, dst = job.get("output"), job.get("download_to")
        if job["kind"] == "predict" and src and dst and src != dst and storage.exists(src):
            storage.write_bytes(dst, storage.read_bytes(src))
            err = batch.errors_ref(src)
            if storage.exists(err):
                storage.write_bytes(batch.errors_ref(dst), storage.read_bytes(err))


class _Wake:
    """Job.wait's pause between polls, cut short when the job's task (assemble for a
    prediction, train_job for training: task id = job id) stores a final result. Celery's
    Redis backend publishes every result it stores on the channel named by the result's key,
    so the waiting client hears the end at once instead of at its next poll. Anything that
    goes wrong here (no Redis backend, an outage) leaves a plain sleep: polls still decide."""

    READY = ("SUCCESS", "FAILURE", "REVOKED")

    def __init__(self, app, job_id):
        self.pubsub = None
        try:
            backend = app.backend
            self.channel = backend.get_key_for_task(job_id)
            self.pubsub = backend.client.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(self.channel)
        except Exception:  # no pub/sub here: plain polling
            self.close()

    def pause(self, seconds):
        end = time.monotonic() + seconds
        while self.pubsub is not None:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                msg = self.pubsub.get_message(timeout=left)
            except Exception:  # the broker went away: the polls ride the outage out
                self.close()
                break
            if msg and msg.get("type") == "message" and _status_of(msg.get("data")) in self.READY:
                return
        time.sleep(max(0.0, end - time.monotonic()))

    def close(self):
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except Exception:  # closing a dead connection
                pass
        self.pubsub = None


def _status_of(data):
    try:
        return json.loads(data).get("status")
    except (TypeError, ValueError, AttributeError):
        return None


class PredictionJob(Job):
    """A queued bulk prediction."""


def submit_training(data_ref, name, config, *, app, settings, skip_bad=False, checkpoint_every=1,
                    job_id=None):
    """Queue a training job of model `name` on `data_ref` with TrainConfig `config` -> TrainingJob.

    Resubmitting an existing job id sends it again: it resumes from its last checkpoint.
    """
    from tasks.train import active_key, new_train_record, train_job
    s = settings
    job_id = jobs.check_id(job_id or jobs.new_job_id("train"))
    record = jobs.read_json(jobs.ref(s.storage, job_id, "job.json"))
    if record is None:
        if not storage.is_url(str(data_ref)) and not os.path.exists(data_ref):
            raise DataError(data_ref, "no such file or folder")
        record = new_train_record(job_id, name, stage_input(s, job_id, data_ref, "data"), config.to_dict(),
                                  skip_bad=skip_bad, checkpoint_every=checkpoint_every)
        jobs.write_json(jobs.ref(s.storage, job_id, "job.json"), record)
    else:
        ended = jobs.read_manifest(s.storage, job_id)
        if ended and ended.get("state") != "CANCELLED":
            return TrainingJob(app, s, job_id)
        if ended:  # a cancelled job resumes from its checkpoint (train_job returns a manifest as is)
            jobs.reopen(s.storage, job_id)
        # the previous delivery's result (a cancelled run's SUCCESS, a FAILURE) must not be
        # read as this delivery's by status()/wait()
        app.backend.forget(job_id)
    app.backend.client.set(active_key(record["name"]), job_id, ex=s.visibility_timeout)
    train_job.apply_async((job_id, record["name"], record["config"]["recipe"]), task_id=job_id)
    return TrainingJob(app, s, job_id)


class TrainingJob(Job):
    """A queued training run."""
