"""Job handles: status() and open_job() of any job id, and the handle classes over the
job records of tasks.records (PredictionJob, TrainingJob; JOB_CLASSES).

    job.progress()   # {"state", "progress": {...}, "output", ...}
    job.wait()       # the manifest once the job ended
    job.cancel()

Jobs are recorded on shared storage, so status() works from any client that sees the same
DIGITS_STORAGE and broker.
"""
import json
import os
import time

from model import storage
from model.errors import JobError
from tasks import jobfiles, keys, records, states
from tasks.states import JobState

# NumPy, the model code and Celery's task modules are imported where they are used, so
# that `digits status` (status() below on an ended job) imports none of them.

FINAL_STATES = states.FINAL


def status(app, s, job_id):
    """The state of any job -> dict with at least job_id, kind, state, progress and output."""
    return open_job(app, s, job_id).progress()


def open_job(app, s, job_id):
    """The handle of an existing job, of its kind's class; JobError for an unknown job."""
    record = records.load(s.storage, job_id)
    return JOB_CLASSES[record.kind](app, s, job_id, record)


class Job:
    """A handle on a queued job: progress(), wait(), result(), cancel()."""

    def __init__(self, app, settings, job_id, record=None):
        self.app, self.s, self.id = app, settings, job_id
        self._record = record

    @property
    def record(self):
        """The job's typed record (tasks.records.PredictJob / TrainJob), read once."""
        if self._record is None:
            self._record = records.load(self.s.storage, self.id)
        return self._record

    def progress(self):
        """{"job_id", "kind", "state", "progress", "output", ...}: the manifest's fields once
        the job ended; else the state from storage and, when app is given, the broker."""
        root, record = self.s.storage, self.record
        out = {"job_id": self.id, "kind": record.kind, "output": record.user_output,
               "progress": record.progress(root)}
        manifest = jobfiles.read_manifest(root, self.id)
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
            if out["state"] == JobState.PENDING and meta["status"] not in ("PENDING", "SUCCESS"):
                # what the broker knows more: a job whose work began (STARTED), a retry
                out["state"] = JobState.PROGRESS if meta["status"] == "STARTED" else meta["status"]
        if self.app is not None and record.kind == "predict":  # stopping early: why (tasks.breaker)
            why = self.app.backend.client.get(keys.job_stopped(self.id))
            if why:
                out["stopping"] = why.decode() if isinstance(why, bytes) else why
        return out

    def result(self):
        """The manifest when the job has ended, else None."""
        return jobfiles.read_manifest(self.s.storage, self.id)

    def cancel(self):
        """Ask the job to stop: remaining chunks (or batches) are skipped, finished work kept."""
        jobfiles.request_cancel(self.s.storage, self.id)

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


class TrainingJob(Job):
    """A queued training run."""


JOB_CLASSES = {"predict": PredictionJob, "train": TrainingJob}
