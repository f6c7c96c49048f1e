"""After a Redis failover: find, from storage, the jobs that the unreplicated tail lost.

A failover loses the writes the replica had not received. For a job that Redis knew
before (its chunks' marks, an acknowledgement, a queued chunk) the watchdog's usual scans
recover; but a job *submitted* in that tail may be unknown to the new master altogether: no
queued message, not among the active predictions, no model-active marker. Storage still has
its record and its `digits jobs` entry (written before anything is sent).

When this process has followed a failover (worker.sentinel.failovers() moved), the audit
lists the storage index once for jobs submitted within WINDOW seconds before it that have
not ended, then at each scan, until none is left:
- a prediction job not among the active ones is made active (tasks.queueing.touch): the
  watchdog's resume_stalled sends its missing work once nothing holds any of it;
- a training job that no live worker, queue or unacked delivery holds and whose lock is free,
  in two scans in a row, is sent again under its id (it resumes from its checkpoint; a copy
  that was only slow waits on the lock, so nothing runs twice).
"""
import logging
import time

from worker import sentinel

log = logging.getLogger("digits.watchdog")
WINDOW = 300  # seconds before a failover whose submissions are audited (far above any replication lag)
GIVE_UP = 600  # seconds after a failover when the audit stops looking


class FailoverAudit:
    """See the module docstring. scan(held) once per watchdog scan -> [job ids handled now];
    held: a function giving the task ids live workers hold (a set), or None (no census)."""

    def __init__(self, app):
        self.app = app
        self.seen = sentinel.failovers()
        self.since = None  # time of the failover being audited
        self.candidates = None  # job id -> kind, from the storage index
        self.suspects = set()  # training jobs nothing held at the last scan

    def scan(self, held):
        now = sentinel.failovers()
        if now != self.seen:
            self.seen, self.since, self.candidates, self.suspects = now, time.time(), None, set()
        if self.since is None:
            return []
        if time.time() - self.since > GIVE_UP:
            self.since = None
            return []
        if self.candidates is None:
            self.candidates = self._unended(self.since - WINDOW)
            log.info("watchdog: after a Redis failover, %d job(s) submitted before it have not ended: %s",
                     len(self.candidates), sorted(self.candidates))
        return self._settle(held)

    def _unended(self, after):
        """{job id: kind} of the jobs submitted after `after` whose index says not ended."""
        from tasks import index, states
        root = self.app.conf.digits_storage
        return {e["job_id"]: e.get("kind") for e in index.list_index(root)
                if (e.get("submitted_at") or 0) >= after and e.get("state") not in states.FINAL}

    def _settle(self, held):
        """Handle the candidates that have ended, are predictions, or are lost trainings."""
        from tasks import jobfiles, keys, records
        from tasks.queueing import TRAIN_JOB, send, touch
        root = self.app.conf.digits_storage
        r = self.app.backend.client
        handled = []
        for job_id, kind in list(self.candidates.items()):
            if jobfiles.read_manifest(root, job_id):
                del self.candidates[job_id]
            elif kind == records.PredictJob.kind:
                if not r.sismember(keys.ACTIVE_PREDICTIONS, job_id):
                    touch(r, job_id)
                    log.info("watchdog: prediction job %s was lost with the failover; made active again", job_id)
                    handled.append(job_id)
                del self.candidates[job_id]
        trainings = [j for j, kind in self.candidates.items() if kind == records.TrainJob.kind]
        if not trainings:
            self.candidates = {j: k for j, k in self.candidates.items() if k == records.TrainJob.kind}
            if not self.candidates:
                self.since = None  # audit done
            return handled
        holders = held()
        if holders is None:
            return handled
        busy = set(holders) | in_flight(self.app)
        unheld = {j for j in trainings if j not in busy and not r.exists(keys.job_lock(j))}
        for job_id in unheld & self.suspects:
            record = records.load(root, job_id)
            r.set(keys.model_active(record.name), job_id, ex=self.app.conf.broker_transport_options
                  .get("visibility_timeout", 43200))
            send(self.app, TRAIN_JOB, (job_id, record.name, record.config.get("recipe")), job_id)
            log.info("watchdog: training job %s was lost with the failover: sent again", job_id)
            del self.candidates[job_id]
            handled.append(job_id)
        self.suspects = unheld - set(handled)
        return handled


def in_flight(app):
    """Task ids of the messages in the broker's queues and unacked deliveries -> set."""
    from worker.watchdog import _queued_task_id, task_id
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        broker = channel.client
        ids = {task_id(raw) for raw in broker.hvals(channel.unacked_key)}
        for q in app.conf.task_queues:
            ids.update(_queued_task_id(m) for m in broker.lrange(q.name, 0, -1))
    return ids
