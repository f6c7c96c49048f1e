"""The Python API of the queue: submit jobs, follow them, cancel them.

    job = submit_prediction("test.csv", "model.npz", "submission.csv", app=app, settings=s)
    job.progress()   # {"state", "progress": {...}, "output", ...}
    job.wait()       # the manifest once the job ended
    job.cancel()

Jobs are recorded on shared storage (tasks.jobs), so status() works from any client
that sees the same DIGITS_STORAGE and broker. Each kind of job has its handle class here
(PredictionJob, TrainingJob; JOB_CLASSES) over its record class in tasks.jobs.
"""
import json
import os
import time

from model import storage
from model.errors import DataError, JobError
from tasks import jobs, keys
from tasks.states import JobState

# NumPy, the model code and Celery's task modules are imported where they are used, so
# that `digits status` (status() below on an ended job) imports none of them.

FINAL_STATES = jobs.FINAL_STATES


def _abs(ref):
    return ref if storage.is_url(ref) else os.path.abspath(ref)


def shared(s, ref):
    """True when workers read or write local path or URL `ref` as it is: any ref on the
    embedded stack (one host), a URL, or a path inside a shared-folder DIGITS_STORAGE.
    Any other local path is the client's own: it goes through storage (see docs/cluster.md,
    "Running on a cluster": local paths)."""
    if s.embedded or storage.is_url(ref):
        return True
    root = storage.local_path(s.storage)
    if root is None:  # storage is an object store: only its URLs are shared
        return False
    root, path = os.path.realpath(root), os.path.realpath(ref)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def stage_input(s, job_id, ref, name="input"):
    """Where workers read `ref`: as is when it is shared (see shared()); otherwise the
    client's local file is uploaded to storage `inputs/<job id>/` first, and a local image
    folder is packed there (model.data.imagepack: two objects instead of one per file)."""
    ref = _abs(str(ref))
    if shared(s, ref):
        return ref
    folder = os.path.isdir(ref)
    target = storage.join(s.storage, "inputs", job_id, name + ("" if folder else os.path.splitext(ref)[1]))
    if not folder and ref.lower().endswith(".zip"):  # its name kept: records are named `name.zip::member`
        target = storage.join(s.storage, "inputs", job_id, name, os.path.basename(ref))
    if folder:
        from model.data import imagepack
        from model.data import imagefolder
        imagepack.pack(ref, target, imagefolder.IMAGE_TYPES, imagefolder.MAX_IMAGE_BYTES)
    else:
        storage.upload(ref, target)
    return target


def stage_data(s, job_id, ref, name="input"):
    """stage_input of an input that may name a zip's member (`a.zip::test.csv`): the zip is
    staged, the member named after it."""
    from model.data import archive
    path, member = archive.split_member(_abs(str(ref)))
    return stage_input(s, job_id, path, name) + (archive.MEMBER_SEP + member if member else "")


def check_paths(input_ref, out):
    """The input exists and a local --out is a file in an existing folder (else the job
    would fail only when it assembles its output)."""
    from model.data import archive
    if not storage.exists(archive.split_member(_abs(str(input_ref)))[0]):
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
    from model.data import sources
    from model.registry.versions import Registry
    sources.check_input(_abs(str(input_ref)))  # header, separator, compression, normalized values
    path, info = Registry(s.storage).resolve(str(model_ref))
    return path, info, checkpoint.load_model(path)


def output_ref(s, job_id, out):
    """Where the workers write the output: --out itself when it is shared (see shared()),
    else jobs/<id>/ on storage, from where the waiting client downloads it to --out."""
    out = _abs(str(out))
    if shared(s, out):
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


# a client's sends through the Celery app retry briefly: the app's own policy waits up to
# DIGITS_BROKER_OUTAGE unsaid, where _ride says the outage and sends the job again
CLIENT_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


def _ride(app, s, job_id, submit, on_outage=None):
    """submit() through a broker outage of up to DIGITS_BROKER_OUTAGE (worker.outage.Outage.ride):
    a submission cut off midway (a Redis restart) is made again under the same job id, and
    sending a job id again is idempotent (see submit_prediction, submit_training). Past the
    limit, BrokerUnreachable says how to send the job again."""
    from worker.errors import BrokerUnreachable
    from worker.outage import Outage, say_stderr
    try:
        return Outage(app.conf.broker_url, s.broker_outage, on_outage or say_stderr).ride(submit)
    except BrokerUnreachable as e:
        raise BrokerUnreachable(f"{e}; job {job_id} may be partly queued: submit it again with "
                                f"--job-id {job_id} once the broker is back") from None


def submit_prediction(input_ref, model_ref, out, *, app, settings, job_id=None, chunk_rows=None,
                      checked=None, on_outage=None):
    """Queue a bulk prediction of a CSV file or image folder -> PredictionJob.

    checked: check_prediction's result for these arguments, when the caller already has it.
    One live job per output: a second job with the same `out` is refused (JobError).
    A job id that is still running is sent again: its missing chunks are queued again and
    the ones already done are reused, so no row is doubled or lost. A job id that has
    ended is started afresh with these arguments (its earlier result is cleared).
    A broker outage meanwhile is ridden out (on_outage(line) told once; default stderr),
    by sending the job id again; past DIGITS_BROKER_OUTAGE, BrokerUnreachable.
    """
    job_id = jobs.check_id(job_id or jobs.new_job_id("predict"))
    return _ride(app, settings, job_id, lambda: _submit_prediction(input_ref, model_ref, out, app, settings,
                                                                   job_id, chunk_rows, checked), on_outage)


def _submit_prediction(input_ref, model_ref, out, app, s, job_id, chunk_rows, checked):
    """One attempt of submit_prediction."""
    from model.data import sources
    from tasks import events
    from tasks.queueing import queue_assemble, queue_chunk, release_output, touch
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
            staged = stage_data(s, job_id, input_ref)
            source = sources.open_source(staged, chunk_rows or s.chunk_rows, chunk_rows or s.chunk_images,
                                         unpack_to=storage.join(root, "inputs", job_id))
        except BaseException:
            release_output(app.backend.client, {"download_to": _abs(str(out))}, job_id)
            raise
        jobs.write_json(jobs.ref(root, job_id, "plan.json"), source.to_dict())
        record = jobs.PredictJob(job_id=job_id, input=staged, model=model, output=output_ref(s, job_id, out),
                                 download_to=_abs(str(out)), chunks=len(source.chunks), input_kind=source.kind,
                                 window=s.job_window, submitted_at=time.time())
        record.write(root)
        job = record.to_dict()
        missing = range(len(source.chunks))
    else:  # still running: its own plan, and the chunks without a mark
        if _abs(str(out)) != job.get("download_to"):
            raise JobError(f"job {job_id} is still running with --out {job.get('download_to')}")
        source = sources.from_dict(jobs.read_json(jobs.ref(root, job_id, "plan.json")))
        marked = {int(k) for k in app.backend.client.hkeys(keys.chunk_marks(job_id))}
        missing = [i for i in range(len(source.chunks)) if i not in marked]
    window = job.get("window") or len(source.chunks)
    touch(app.backend.client, job_id)
    with app.connection_for_write() as conn:
        events.job_sent(app, job, connection=conn)  # the job's row in Flower, before its chunks
        for index in list(missing)[:window]:
            queue_chunk(app, job_id, index, source, connection=conn, retry_policy=CLIENT_PUBLISH_RETRY)
        if not source.chunks or not missing:
            queue_assemble(app, job_id, connection=conn, retry_policy=CLIENT_PUBLISH_RETRY)
    return PredictionJob(app, s, job_id)


def _forget(app, s, job_id):
    """Clear an ended job's storage, Redis keys and task results before a resubmission."""
    jobs.clear(s.storage, job_id)
    r = app.backend.client
    r.delete(*keys.job_keys(job_id))
    app.backend.forget(job_id)  # the earlier assemble's result, which status() would read


def status(app, s, job_id):
    """The state of any job -> dict with at least job_id, kind, state, progress and output."""
    return open_job(app, s, job_id).progress()


def open_job(app, s, job_id):
    """The handle of an existing job, of its kind's class; JobError for an unknown job."""
    record = jobs.load(s.storage, job_id)
    return JOB_CLASSES[record.kind](app, s, job_id, record)


class Job:
    """A handle on a queued job: progress(), wait(), result(), cancel()."""

    def __init__(self, app, settings, job_id, record=None):
        self.app, self.s, self.id = app, settings, job_id
        self._record = record

    @property
    def record(self):
        """The job's typed record (tasks.jobs.PredictJob / TrainJob), read once."""
        if self._record is None:
            self._record = jobs.load(self.s.storage, self.id)
        return self._record

    def progress(self):
        """{"job_id", "kind", "state", "progress", "output", ...}: the manifest's fields once
        the job ended; else the state from storage and, when app is given, the broker."""
        root, record = self.s.storage, self.record
        out = {"job_id": self.id, "kind": record.kind, "output": record.user_output,
               "progress": record.progress(root)}
        manifest = jobs.read_manifest(root, self.id)
        if manifest:
            out.update(manifest)
            out["output"] = record.output_of(manifest)
            return out
        # app is None when no broker is reachable: then storage alone tells the state
        meta = self.app.backend.get_task_meta(self.id) if self.app is not None else {"status": "PENDING"}
        if meta["status"] == "FAILURE":  # Celery's FAILURE: failed without writing its manifest (a worker bug)
            out["state"] = JobState.FAILURE
            out["error"] = f"{type(meta['result']).__name__}: {meta['result']}"
        else:
            if record.kind == "predict" and meta["status"] == "STARTED" and isinstance(meta.get("result"), dict):
                # what the workers measured of a prediction: failed and retrying chunks, the ETA
                out["progress"] = dict(meta["result"], **out["progress"])
            out["state"] = record.storage_state(root, out["progress"])
            if out["state"] == jobs.PENDING and meta["status"] not in ("PENDING", "SUCCESS"):
                # what the broker knows more: a job whose work began (STARTED), a retry
                out["state"] = jobs.PROGRESS if meta["status"] == "STARTED" else meta["status"]
        if self.app is not None and record.kind == "predict":  # stopping early: why (tasks.breaker)
            why = self.app.backend.client.get(keys.job_stopped(self.id))
            if why:
                out["stopping"] = why.decode() if isinstance(why, bytes) else why
        return out

    def result(self):
        """The manifest when the job has ended, else None."""
        return jobs.read_manifest(self.s.storage, self.id)

    def cancel(self):
        """Ask the job to stop: remaining chunks (or batches) are skipped, finished work kept."""
        jobs.request_cancel(self.s.storage, self.id)

    def wait(self, timeout=None, on_progress=None, poll=0.25, on_outage=None, settle=0.0):
        """Block until the job ends -> its manifest; JobError if it failed or timed out.

        A broker outage is ridden out for DIGITS_BROKER_OUTAGE seconds (on_outage(line) is
        told once, default: a line on stderr), then BrokerUnreachable. settle: seconds to
        wait before the first poll, cut short by the job's end (a job just submitted has
        nothing to show yet, and its workers then have the cores to themselves).
        """
        from worker.outage import Outage, say_stderr
        outage = Outage(self.app.conf.broker_url, self.s.broker_outage, on_outage or say_stderr)
        deadline = None if timeout is None else time.time() + timeout
        wake = _Wake(self.app, self.id)
        if settle > 0:
            wake.pause(settle)
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
        if st["state"] == JobState.FAILURE and st.get("rows_in") is None:  # not a prediction that read its input
            raise JobError(f"job {self.id} failed: {st.get('error')}")
        return self._download(self.result())

    def _download(self, manifest):
        """Bring the result to where the user asked for it -> the manifest (nothing to do
        by default)."""
        return manifest


class _Wake:
    """Job.wait's pause between polls, cut short when the job's task (assemble for a
    prediction, train_job for training: task id = job id) stores a final result. Celery's
    Redis backend publishes every result it stores on the channel named by the result's key,
    so the waiting client hears the end at once instead of at its next poll. Anything that
    goes wrong here (no Redis backend, an outage) leaves a plain sleep: polls still decide."""

    READY = ("SUCCESS", "FAILURE", "REVOKED")  # Celery's task states (celery.states.READY_STATES)

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

    def _download(self, manifest):
        """Copy a prediction's output (and errors file) from storage to the client's --out
        when the workers wrote it elsewhere -> the manifest, naming the files the client has."""
        from model import batch
        src, dst = self.record.output, self.record.download_to
        if not (src and dst) or src == dst or not manifest:
            return manifest
        storage.download(src, dst)
        err = batch.errors_ref(src)
        if manifest.get("errors"):
            storage.download(err, batch.errors_ref(dst))
        elif os.path.exists(batch.errors_ref(dst)):
            os.unlink(batch.errors_ref(dst))  # a stale one from an earlier run
        return dict(manifest, output=dst, errors=batch.errors_ref(dst) if manifest.get("errors") else None,
                    stored_output=src)


def submit_training(data_ref, name, config, *, app, settings, skip_bad=False, checkpoint_every=1,
                    job_id=None, sweep=None, on_outage=None):
    """Queue a training job of model `name` on `data_ref` with TrainConfig `config` -> TrainingJob.

    Resubmitting an existing job id sends it again: it resumes from its last checkpoint.
    A broker outage meanwhile is ridden out as by submit_prediction.
    """
    job_id = jobs.check_id(job_id or jobs.new_job_id("train"))
    return _ride(app, settings, job_id, lambda: _submit_training(data_ref, name, config, app, settings,
                                                                 skip_bad, checkpoint_every, job_id, sweep),
                 on_outage)


def _submit_training(data_ref, name, config, app, s, skip_bad, checkpoint_every, job_id, sweep):
    """One attempt of submit_training."""
    from tasks.queueing import TRAIN_JOB, send, train_repr
    from tasks.train import active_key
    record = jobs.read_json(jobs.ref(s.storage, job_id, "job.json"))
    if record is None:
        check_training(data_ref)
        record = jobs.TrainJob.new(job_id, name, stage_data(s, job_id, data_ref, "data"), config.to_dict(),
                                   skip_bad=skip_bad, checkpoint_every=checkpoint_every, sweep=sweep)
        record.write(s.storage)
    else:
        record = jobs.TrainJob.from_dict(record)
        ended = jobs.read_manifest(s.storage, job_id)
        if ended and ended.get("state") == jobs.SUCCESS:
            return TrainingJob(app, s, job_id, record)
        if ended:  # a cancelled or failed job resumes from its checkpoint
            jobs.reopen(s.storage, job_id)
        # the previous delivery's result (a cancelled run's SUCCESS, a FAILURE) must not be
        # read as this delivery's by status()/wait()
        app.backend.forget(job_id)
    app.backend.client.set(active_key(record.name), job_id, ex=s.visibility_timeout)
    app.backend.client.sadd(keys.ACTIVE_TRAINING, job_id)  # the watchdog re-sends it if its message is lost
    links = {"root_id": sweep, "parent_id": sweep} if sweep else {}  # a sweep's run is a child of its row
    send(app, TRAIN_JOB, (job_id, record.name, record.config["recipe"]), job_id, retry_policy=CLIENT_PUBLISH_RETRY,
         argsrepr=train_repr(record), kwargsrepr="{}", **links)
    return TrainingJob(app, s, job_id, record)


def check_training(data_ref):
    """Fail fast, before a stack is started or anything queued: the training data exists
    and has labels (a labeled CSV header, compressed or not, or digit sub-folders) ->
    DataError naming it."""
    from model.data import sources
    sources.check_input(_abs(str(data_ref)), training=True)


class TrainingJob(Job):
    """A queued training run."""


JOB_CLASSES = {"predict": PredictionJob, "train": TrainingJob}


# ----------------------------------------------------------------------------- sweeps

def submit_sweep(data_ref, name, recipe, grid, *, app, settings, skip_bad=False, overrides=None):
    """Queue one training job per configuration of `grid` ({option: [values]}, on top of
    `recipe` and `overrides`) -> the sweep id. The runs spread over the train workers; the
    best one's version is offered to the promotion gate when the last run ends."""
    from model.train import make_config
    from tasks import events, sweep
    s = settings
    configs = sweep.configurations(grid)
    built = [make_config(recipe, **dict(overrides or {}, **c)) for c in configs]  # all checked first
    check_training(data_ref)
    sweep_id = sweep.new_sweep_id()
    staged = stage_data(s, sweep_id, data_ref, "data")  # once for every run
    job_ids = [jobs.new_job_id("train") for _ in configs]
    record = {"sweep_id": sweep_id, "kind": "sweep", "name": name, "data": staged, "recipe": recipe,
              "grid": grid, "configs": configs, "jobs": job_ids, "submitted_at": time.time()}
    jobs.write_json(sweep.ref(s.storage, sweep_id, "sweep.json"), record)
    events.sweep_sent(app, record)  # the sweep's row in Flower, before its runs
    for job_id, config in zip(job_ids, built):
        submit_training(staged, name, config, app=app, settings=s, skip_bad=skip_bad, job_id=job_id,
                        sweep=sweep_id)
    return sweep_id


def sweep_status(app, s, sweep_id):
    """A sweep's state and one row per run: {"sweep_id", "state", "name", "runs": [{"job_id",
    "config", "state", "epoch", "epochs", "val_accuracy", "version"}], "best", "promotion"}."""
    from tasks import sweep
    record = sweep.read_sweep(s.storage, sweep_id)
    done = sweep.read_manifest(s.storage, sweep_id)
    runs = []
    for job_id, config in zip(record["jobs"], record["configs"]):
        st = status(app, s, job_id)
        p = st.get("progress") or {}
        runs.append({"job_id": job_id, "config": config, "state": st["state"], "epoch": p.get("epoch"),
                     "epochs": p.get("epochs"), "val_accuracy": st.get("val_accuracy", p.get("val_accuracy")),
                     "version": st.get("version")})
    out = {"sweep_id": sweep_id, "kind": "sweep", "name": record["name"], "runs": runs,
           "submitted_at": record["submitted_at"]}
    if done:
        return dict(out, state=done["state"], best=done["best"], promotion=done["promotion"],
                    finished_at=done["finished_at"])
    ended = sum(r["state"] in FINAL_STATES for r in runs)
    state = JobState.CANCELLING if jobs.read_json(sweep.ref(s.storage, sweep_id, "cancel")) else \
        JobState.PROGRESS if ended or any(r["state"] == JobState.PROGRESS for r in runs) else JobState.PENDING
    return dict(out, state=state, best=None, promotion=None)


def cancel_sweep(s, sweep_id):
    """Ask every run of a sweep to stop (finished runs are kept) -> the job ids asked."""
    from tasks import sweep
    record = sweep.read_sweep(s.storage, sweep_id)
    jobs.write_json(sweep.ref(s.storage, sweep_id, "cancel"), {"requested_at": time.time()})
    asked = [j for j in record["jobs"] if not jobs.read_manifest(s.storage, j)]
    for job_id in asked:
        jobs.request_cancel(s.storage, job_id)
    return asked



from worker.api import Client  # noqa: E402,F401  (the one-import Python API: worker/api.py)
