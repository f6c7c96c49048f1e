"""Training as a queue job: progress, checkpoints, crash resume, registration, retraining.

train_job(job_id) reads its job record from storage ({"name", "data", "config", ...}),
holds a Redis lock for the job (renewed while it runs) so that a second delivery of a
job that is still running does not train it twice: that delivery retries later, and
either finds the job finished or, once the holder has died (same host: at once; else
when the lock expires), resumes from the job's last checkpoint. The job checkpoints
every `checkpoint_every` epochs, publishes progress (result backend state PROGRESS, a
"task-started" event whose Result Flower shows while the task stays STARTED, found by
its Active link and Started filter, and jobs/<id>/progress.json), and registers the
finished model as a new version. A cancelled run ends REVOKED, not SUCCESS.
"""
import os
import socket
import time

import psutil
from celery import shared_task
from celery.exceptions import Ignore
from celery.utils.log import get_task_logger

from model import checkpoint, storage
from model.data import sources
from model.errors import JobError, describe
from model.registry.versions import Registry
from model.train import Trainer, config_from_dict, make_config
from tasks import deliveries, jobfiles, keys, records, sweep, times
from tasks.states import JobState
from tasks.liveness import LockLost, keep_lock
from tasks.jobfiles import storage_root
from tasks.queueing import retry, train_repr

log = get_task_logger(__name__)
LOCK_TTL = 30  # seconds; renewed while the job runs, so a dead run's lock frees quickly
LOCKED_RETRY = 5  # seconds before a delivery that found the job locked tries again
PUBLISH_EVERY = 0.5  # seconds between progress publications


def redis_client(task):
    """The Redis client of the result backend (locks and markers live there)."""
    return task.app.backend.client


active_key = keys.model_active
progress_text = records.TrainJob.progress_text  # the one progress formatter (Flower, CLI)


class _Publisher:
    """Throttled progress publication and cancel checks for one running job."""

    def __init__(self, task, root, job_id, name, lock, trainer):
        self.task, self.root, self.job_id, self.name, self.lock = task, root, job_id, name, lock
        self.trainer = trainer
        self.last = 0.0
        self.start = time.time()
        self.start_step = trainer.pos.epoch * trainer.batches_per_epoch + trainer.pos.batch
        self.total_steps = trainer.config.epochs * trainer.batches_per_epoch
        self.cancelled = False
        self.checked = 0.0
        self.info = None

    @property
    def val_accuracy(self):
        """The last finished epoch's validation accuracy, None before the first."""
        return self.trainer.history[-1].val_accuracy if self.trainer.history else None

    def batch(self, info):
        self.info = info
        now = time.time()
        if now - self.last < PUBLISH_EVERY:
            return
        self.last = now
        self.publish(self.progress(info))

    def final(self, state):
        """Publish the job's last position with its final state."""
        p = self.progress(self.info) if self.info else {}
        self.publish(dict(p, state=state, val_accuracy=self.val_accuracy))

    def progress(self, info):
        """The progress dict of a BatchInfo: position, loss, val_accuracy, ETA, history."""
        now = time.time()
        step = (info.epoch - 1) * info.batches + info.batch
        eta = times.eta_seconds(step, self.total_steps, now - self.start, self.start_step)
        p = {"epoch": info.epoch, "epochs": info.epochs, "batch": info.batch, "batches": info.batches,
             "loss": round(info.loss, 6), "val_accuracy": self.val_accuracy, "lr": info.lr,
             "fraction": round(step / self.total_steps, 4),
             "eta_seconds": None if eta is None else round(eta, 1),
             "history": [{"epoch": h.epoch, "train_loss": h.train_loss, "val_accuracy": h.val_accuracy}
                         for h in self.trainer.history]}
        return p

    def publish(self, p):
        jobfiles.write_json(jobfiles.ref(self.root, self.job_id, "progress.json"), p)
        self.task.update_state(state="PROGRESS", meta=p)
        text = progress_text(p) if "epoch" in p else p.get("state", "")
        # task-started again: a STARTED event after STARTED replaces the Result and keeps the
        # state (celery.events.state), where a custom event type would leave the STARTED filter
        self.task.send_event("task-started", result=text, progress=p)
        r = redis_client(self.task)
        keep_lock(r, self.lock, self.job_id, LOCK_TTL)
        r.expire(keys.lock_owner(self.job_id), LOCK_TTL)
        r.expire(active_key(self.name), max(LOCK_TTL, 120))

    def should_stop(self):
        now = time.time()
        if now - self.checked >= PUBLISH_EVERY:
            self.checked = now
            self.cancelled = jobfiles.is_cancelled(self.root, self.job_id)
        return self.cancelled


# max_retries=None here: retry(max_retries=None) alone means "the default, 3", which gave up
# (FAILURE) before a dead run's lock (LOCK_TTL) expired
@shared_task(bind=True, name="digits.train_job", max_retries=None)
def train_job(self, job_id, name=None, recipe=None):
    """Run (or resume) training job `job_id` -> a short summary for Flower (version,
    val_accuracy, promotion, report: TrainJob.summary); the manifest is on storage.

    name/recipe are shown in Flower only; the job record on storage decides. A run that
    fails writes a FAILURE manifest with the reason in one line.
    """
    root = storage_root(self)
    job = records.load(root, job_id)
    done = jobfiles.read_manifest(root, job_id)
    if done:
        log.info("job %s already finished; nothing to do", job_id)
        if job.sweep:  # its first delivery may have died before marking its sweep
            sweep.job_ended(self, job, done["state"])
        return _end(self, done)
    r = redis_client(self)
    lock = r.lock(keys.job_lock(job_id), timeout=LOCK_TTL, blocking=False)
    if not lock.acquire(blocking=False) and not _break_dead_lock(r, lock, job_id):
        log.warning("job %s is running in another delivery; this one retries in %ss", job_id, LOCKED_RETRY)
        raise retry(self, countdown=LOCKED_RETRY)
    r.set(keys.lock_owner(job_id), _me(), ex=LOCK_TTL)
    if job.sweep:
        sweep.run_started(self, job)
    died = deliveries.begin(self, keys.train_deliveries(job_id))  # poison: runs that died before
    try:
        if died >= deliveries.limit(self):
            deliveries.reset(self, keys.train_deliveries(job_id))  # a resubmission starts afresh
            raise JobError(f"job {job_id}: {deliveries.poison_reason(died)}")
        manifest = _run(self, root, job, lock)
    except LockLost as e:  # another delivery runs the job now: leave it everything
        log.warning("%s", e)
        raise Ignore() from None
    except Exception as e:
        # a failed run is neither queued nor running: free its model for the next retrain
        # (else the marker lives on for visibility_timeout when it failed before publishing),
        # before the manifest, which a waiting client reads as the end
        _clear_active(redis_client(self), job.name, job_id)
        records.write_manifest(root, job_id, job.failure_manifest(describe(e)))
        if job.sweep:
            sweep.job_ended(self, job, JobState.FAILURE)
        raise
    finally:
        try:
            lock.release()
        except Exception:  # the lock expired: nothing to release
            pass
    if job.sweep:
        sweep.job_ended(self, job, manifest["state"])
    return _end(self, manifest)


def _end(task, manifest):
    """The run's one-line summary (TrainJob.summary) as its result; a cancelled run ends
    REVOKED instead (its event and stored state, then Ignore: no SUCCESS follows)."""
    line = records.TrainJob.summary(manifest)
    if manifest["state"] == JobState.CANCELLED:
        from celery import states
        from celery.exceptions import TaskRevokedError
        task.send_event("task-revoked", terminated=False, expired=False, signum=None, result=line)
        task.backend.store_result(task.request.id, TaskRevokedError(line), states.REVOKED)
        raise Ignore(line)
    return line


def _run(task, root, job, lock):
    job_id, name = job.job_id, job.name
    t_start = time.time()
    config = config_from_dict(job.config)
    dataset = sources.load_training(job.data, skip_bad=job.skip_bad,
                                 progress=lambda done, total: keep_lock(redis_client(task), lock, job_id, LOCK_TTL))
    state_ref = jobfiles.ref(root, job_id, "state.npz")
    state = None
    if storage.exists(state_ref):
        state = checkpoint.load_state(state_ref)
        if state["extra"].get("data_fingerprint") != dataset.fingerprint:
            raise JobError(f"job {job_id}: training data changed since its last checkpoint")
        log.info("job %s resumes at epoch %d batch %d", job_id, state["position"]["epoch"] + 1,
                 state["position"]["batch"])
    trainer = Trainer(config, dataset.pixels, dataset.labels, state=state)
    pub = _Publisher(task, root, job_id, name, lock, trainer)
    every = max(1, int(job.checkpoint_every or 1))

    def save_state():
        s = trainer.state()
        s["extra"] = {"data_fingerprint": dataset.fingerprint, "job_id": job_id}
        checkpoint.save_state(s, state_ref)

    def on_epoch(m):
        if m.epoch % every == 0 or m.epoch == config.epochs:
            save_state()

    trainer.run(on_batch=pub.batch, on_epoch=on_epoch, should_stop=pub.should_stop)
    common = {"history": [h.__dict__ for h in trainer.history], "skipped_records": len(dataset.skipped),
              "started_at": t_start}
    if not trainer.done:
        save_state()
        manifest = job.manifest(JobState.CANCELLED, seconds=time.time() - t_start, checkpoint=state_ref, **common)
    else:
        model = checkpoint.trained_model(trainer, dataset.fingerprint, job.data)
        meta = Registry(root).register_trained(name, model, trainer, job_id=job_id,
                                               tolerance=task.app.conf.digits_promote_tolerance,
                                               gate=not job.sweep)  # a sweep offers its best run
        manifest = job.manifest(JobState.SUCCESS, seconds=time.time() - t_start, registered=meta, **common)
    pub.final(manifest["state"])
    records.write_manifest(root, job_id, manifest)
    _clear_active(redis_client(task), name, job_id)
    return manifest


def _me():
    return f"{socket.gethostname()}:{os.getpid()}"


def _break_dead_lock(r, lock, job_id):
    """Take over the job lock when its holder was a process on this host that has died
    (a pool process killed mid-run): the redelivery resumes at once instead of waiting
    for the lock to expire. -> True if the lock is now ours."""
    owner = (r.get(keys.lock_owner(job_id)) or b"").decode()
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or psutil.pid_exists(int(pid)):
        return False
    log.warning("job %s: the process that held its lock (%s) is gone; taking over", job_id, owner)
    r.delete(lock.name, keys.lock_owner(job_id))
    return lock.acquire(blocking=False)


def _clear_active(r, name, job_id):
    """Remove the model-active marker of `name` if this job set it."""
    if (r.get(active_key(name)) or b"").decode() == job_id:
        r.delete(active_key(name))


@shared_task(bind=True, name="digits.retrain")
def retrain(self, name, data_ref, recipe="default"):
    """Scheduled retraining of model `name` from `data_ref` -> job id, or None if skipped.

    Skipped (and logged) while another run of the same model is queued or running.
    """
    root = storage_root(self)
    job_id = jobfiles.new_job_id("train")
    if not redis_client(self).set(active_key(name), job_id, nx=True, ex=self.app.conf.broker_transport_options
                                  .get("visibility_timeout", 43200)):
        log.warning("retrain of %s skipped: another run of it is still going (%s)", name,
                    redis_client(self).get(active_key(name)))
        return None
    record = records.TrainJob.new(job_id, name, data_ref, make_config(recipe).to_dict())
    record.write(root)
    redis_client(self).sadd(keys.ACTIVE_TRAINING, job_id)  # the watchdog re-sends it if its message is lost
    train_job.apply_async((job_id, name, recipe), task_id=job_id, argsrepr=train_repr(record), kwargsrepr="{}")
    log.info("retrain of %s queued as %s", name, job_id)
    return job_id
