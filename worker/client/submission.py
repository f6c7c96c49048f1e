"""Submitting jobs: the checks made before anything is queued, then submit_prediction and
submit_training, each riding out a broker outage by sending the same job id again.

    job = submit_prediction("test.csv", "model.npz", "submission.csv", app=app, settings=s)
    job = submit_training("train.csv", "digits", make_config(), app=app, settings=s)

Both return a handle (worker.client.handles) over the job's record in tasks.records.
"""
import os
import time

from model import storage
from model.errors import DataError, JobError
from tasks import jobfiles, keys, records
from tasks.states import JobState
from worker.client.handles import PredictionJob, TrainingJob
from worker.client.staging import absolute, output_ref, stage_data, stage_input

# NumPy, the model code and Celery's task modules are imported where they are used.


def check_paths(input_ref, out):
    """The input exists and a local --out is a file in an existing folder (else the job
    would fail only when it assembles its output)."""
    from model.data import archive
    if not storage.exists(archive.split_member(absolute(str(input_ref)))[0]):
        raise DataError(input_ref, "no such file or folder")
    out = absolute(str(out))
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
    sources.check_input(absolute(str(input_ref)))  # header, separator, compression, normalized values
    path, info = Registry(s.storage).resolve(str(model_ref))
    return path, info, checkpoint.load_model(path)


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
        record = jobfiles.read_json(jobfiles.ref(root, holder, "job.json"))
        if record is not None and not jobfiles.read_manifest(root, holder):
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
    job_id = jobfiles.check_id(job_id or jobfiles.new_job_id("predict"))
    return _ride(app, settings, job_id, lambda: _submit_prediction(input_ref, model_ref, out, app, settings,
                                                                   job_id, chunk_rows, checked), on_outage)


def _submit_prediction(input_ref, model_ref, out, app, s, job_id, chunk_rows, checked):
    """One attempt of submit_prediction."""
    from model.data import sources
    from tasks import events
    from tasks.queueing import queue_assemble, queue_chunk, release_output, touch
    root = s.storage
    job = jobfiles.read_json(jobfiles.ref(root, job_id, "job.json"))
    if job is not None and jobfiles.read_manifest(root, job_id):
        _forget(app, s, job_id)  # ended: start afresh
        job = None
    if job is None:
        checked = checked or check_prediction(s, input_ref, model_ref, out)  # a bad model fails here
        claim_output(app, job_id, absolute(str(out)))
        try:
            model = resolve_model(s, model_ref, job_id, checked)
            staged = stage_data(s, job_id, input_ref)
            source = sources.open_source(staged, chunk_rows or s.chunk_rows, chunk_rows or s.chunk_images,
                                         unpack_to=storage.join(root, "inputs", job_id))
        except BaseException:
            release_output(app.backend.client, {"download_to": absolute(str(out))}, job_id)
            raise
        jobfiles.write_json(jobfiles.ref(root, job_id, "plan.json"), source.to_dict())
        record = records.PredictJob(job_id=job_id, input=staged, model=model, output=output_ref(s, job_id, out),
                                 download_to=absolute(str(out)), chunks=len(source.chunks), input_kind=source.kind,
                                 window=s.job_window, submitted_at=time.time())
        record.write(root)
        job = record.to_dict()
        missing = range(len(source.chunks))
    else:  # still running: its own plan, and the chunks without a mark
        if absolute(str(out)) != job.get("download_to"):
            raise JobError(f"job {job_id} is still running with --out {job.get('download_to')}")
        source = sources.from_dict(jobfiles.read_json(jobfiles.ref(root, job_id, "plan.json")))
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
    jobfiles.clear(s.storage, job_id)
    r = app.backend.client
    r.delete(*keys.job_keys(job_id))
    app.backend.forget(job_id)  # the earlier assemble's result, which status() would read


def submit_training(data_ref, name, config, *, app, settings, skip_bad=False, checkpoint_every=1,
                    job_id=None, sweep=None, on_outage=None):
    """Queue a training job of model `name` on `data_ref` with TrainConfig `config` -> TrainingJob.

    Resubmitting an existing job id sends it again: it resumes from its last checkpoint.
    A broker outage meanwhile is ridden out as by submit_prediction.
    """
    job_id = jobfiles.check_id(job_id or jobfiles.new_job_id("train"))
    return _ride(app, settings, job_id, lambda: _submit_training(data_ref, name, config, app, settings,
                                                                 skip_bad, checkpoint_every, job_id, sweep),
                 on_outage)


def _submit_training(data_ref, name, config, app, s, skip_bad, checkpoint_every, job_id, sweep):
    """One attempt of submit_training."""
    from tasks.queueing import TRAIN_JOB, send, train_repr
    from tasks.train import active_key
    record = jobfiles.read_json(jobfiles.ref(s.storage, job_id, "job.json"))
    if record is None:
        check_training(data_ref)
        record = records.TrainJob.new(job_id, name, stage_data(s, job_id, data_ref, "data"), config.to_dict(),
                                   skip_bad=skip_bad, checkpoint_every=checkpoint_every, sweep=sweep)
        record.write(s.storage)
    else:
        record = records.TrainJob.from_dict(record)
        ended = jobfiles.read_manifest(s.storage, job_id)
        if ended and ended.get("state") == JobState.SUCCESS:
            return TrainingJob(app, s, job_id, record)
        if ended:  # a cancelled or failed job resumes from its checkpoint
            records.reopen(s.storage, job_id)
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
    sources.check_input(absolute(str(data_ref)), training=True)
