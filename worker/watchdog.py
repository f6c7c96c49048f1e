"""The watchdog: requeue work that a dead worker took from the queue, without waiting hours.

Celery on Redis (kombu's Redis transport) moves a message a worker takes into the hash
`unacked` (delivery tag -> [message, exchange, routing key]) and the sorted set
`unacked_index` (delivery tag -> time taken), and removes it when the task is acknowledged.
When the worker dies (SIGKILL, a lost machine), or when Redis restarts under a worker whose
ack then goes nowhere, the entry stays, and kombu puts it back in its queue only after
`visibility_timeout` (DIGITS_VISIBILITY_TIMEOUT, 12 h, since training runs are long).

Every DIGITS_WATCHDOG_INTERVAL seconds a scan lists the entries, asks the live workers
which tasks they hold (running, reserved, or waiting for their countdown), and requeues,
as kombu itself does (QoS.restore_by_tag: one WATCH/MULTI transaction, so two watchdogs
never push one message twice), every entry older than DIGITS_WATCHDOG_GRACE that no live
worker held in two scans in a row. A scan whose worker census failed requeues nothing.
Tasks are idempotent (a chunk rewrites its file, a training job resumes from its checkpoint
under its lock), so requeueing work of a worker that was only slow to answer is harmless.

`digits up` runs a Watchdog in its supervision loop; on a cluster the one scheduler runs it
in a thread (start_in_scheduler, connected to beat_init in worker.app).
"""
import json
import logging
import threading
import time

import kombu.exceptions  # noqa: F401 (loaded, so that broker_errors() counts kombu's errors)
import redis  # noqa: F401 (and redis-py's)

from worker.outage import broker_errors

log = logging.getLogger("digits.watchdog")
# what an unreachable broker raises: redis-py's and kombu's wrappers, a refused socket
BROKER_ERRORS = broker_errors()


def held_task_ids(app, timeout=1.0, workers=None):
    """Ids of the tasks that live workers hold (active, reserved, scheduled) -> set, or None
    when no worker answered. workers: how many replies to expect (returns as soon as they
    are in), None = wait the whole timeout (a cluster's size is not known)."""
    inspect = app.control.inspect(timeout=timeout, limit=workers)
    held, answered = set(), False
    for query in (inspect.active, inspect.reserved, inspect.scheduled):
        replies = query() or {}
        answered = answered or bool(replies)
        for tasks in replies.values():
            for t in tasks:
                t = t.get("request", t)  # scheduled() wraps the request with its eta
                held.add(t.get("id"))
    return held if answered else None


def task_id(raw):
    """The task id inside an `unacked` entry ([message, exchange, routing key] as JSON)."""
    try:
        message = json.loads(raw)[0]
        return message["headers"]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _queued_task_id(raw):
    """The task id of a message waiting in a queue's list (kombu's JSON envelope)."""
    try:
        return json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


class Watchdog:
    """Scans for unacked messages no live worker holds and requeues them (see module doc).

    app: a configured Celery app; grace: seconds a taken message is left alone;
    workers: the number of workers to expect in a census (None: unknown).
    """

    def __init__(self, app, grace, workers=None, census_timeout=1.0):
        self.app, self.grace, self.workers, self.census_timeout = app, grace, workers, census_timeout
        self.suspects = set()  # delivery tags no live worker held at the last scan
        self.lost_training = set()  # training job ids found nowhere at the last scan
        self.requeued = 0  # how many messages this watchdog put back, in all
        from worker.failover import FailoverAudit
        self.audit = FailoverAudit(app)  # jobs a Redis failover lost whole (worker.failover)

    def scan(self):
        """One scan -> [(delivery tag, task id)] requeued now, then stalled prediction jobs
        resumed (resume_stalled). Raises BROKER_ERRORS when the broker is unreachable (the
        caller tries again at the next interval)."""
        requeued = self.restore_unheld()
        self.audit.scan(lambda: held_task_ids(self.app, self.census_timeout, self.workers))
        self.resume_stalled()
        self.resend_lost_training()
        return requeued

    def _in_broker(self):
        """Task ids taken and unacked, or waiting in a queue."""
        with self.app.connection_for_write() as conn:  # the broker's Redis (maybe not the backend's)
            channel = conn.default_channel
            broker = channel.client
            found = {task_id(raw) for raw in broker.hvals(channel.unacked_key)}
            for q in self.app.conf.task_queues:
                found.update(_queued_task_id(m) for m in broker.lrange(q.name, 0, -1))
        return found

    def resend_lost_training(self):
        """Send again training jobs that are neither ended, nor running (their lock is free),
        nor anywhere as a message (no queue, no unacked entry, no live worker holds them), in two
        scans in a row: their message was lost with its bookkeeping (a worker took it from the
        queue and a full Redis refused to record it as taken, a Redis killed before it wrote it
        to disk) -> [job ids]. A training job resumes from its checkpoint under its lock, so a
        copy of one that was only slow to show up costs nothing."""
        from tasks import jobfiles, keys, records
        from tasks.queueing import TRAIN_JOB, send
        client, root = self.app.backend.client, self.app.conf.digits_storage
        candidates = set()
        for raw in client.smembers(keys.ACTIVE_TRAINING):
            job_id = raw.decode() if isinstance(raw, bytes) else raw
            if jobfiles.read_manifest(root, job_id):
                client.srem(keys.ACTIVE_TRAINING, job_id)
            elif not client.exists(keys.job_lock(job_id)):
                candidates.add(job_id)
        candidates -= self._in_broker()
        if not candidates:
            self.lost_training = set()
            return []
        held = held_task_ids(self.app, self.census_timeout, self.workers)
        if held is None:
            return []
        lost = candidates - held
        due, self.lost_training = lost & self.lost_training, lost - self.lost_training
        for job_id in sorted(due):
            try:
                record = records.load(root, job_id)
            except Exception as e:  # no record (yet, or any more): nothing to send
                log.warning("watchdog: training job %s has no readable record (%s)", job_id, e)
                continue
            send(self.app, TRAIN_JOB, (job_id, record.name, record.config.get("recipe")), job_id)
            log.info("watchdog: training job %s was neither running nor queued anywhere: sent again", job_id)
        return sorted(due)

    def resume_stalled(self):
        """Send again the missing work of prediction jobs that have not moved for the grace
        period while no live worker holds, and no queue holds, any task of theirs: their
        messages were lost (a Redis killed before it wrote them to disk) -> [job ids].

        The unacked entries above cover work a dead worker had taken; this covers work that
        no longer exists anywhere, which kombu would never redeliver."""
        from tasks import keys
        from tasks.predict import resume
        client = self.app.backend.client
        active = [j.decode() if isinstance(j, bytes) else j for j in client.smembers(keys.ACTIVE_PREDICTIONS)]
        now = time.time()
        quiet = [j for j in active if now - float(client.get(keys.job_touched(j)) or 0) > self.grace]
        if not quiet:
            return []
        held = held_task_ids(self.app, self.census_timeout, self.workers)
        if held is None:
            return []
        busy = set(held) | self._in_broker()
        resumed = []
        for job_id in quiet:
            if any(t and (t == job_id or t.startswith(keys.job_task_ids(job_id))) for t in busy):
                continue
            sent = resume(self.app, job_id)
            if sent:
                log.info("watchdog: job %s had not moved for %ss and no worker or queue held its work: "
                         "sent again %s", job_id, self.grace, sent)
                resumed.append(job_id)
        return resumed

    def restore_unheld(self):
        """Requeue unacked messages that no live worker held in two scans -> [(tag, task id)]."""
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            client = channel.client
            index = client.zrange(channel.unacked_index_key, 0, -1, withscores=True)
            now = time.time()
            if all(now - taken_at < self.grace for _, taken_at in index):
                # nothing taken longer ago than the grace (nothing at all, or short tasks of a
                # running job): nothing could be requeued, so no census costs the workers CPU
                self.suspects = set()
                return []
            held = held_task_ids(self.app, self.census_timeout, self.workers)
            if held is None:  # no census, no verdict: a worker may be starting or slow
                return []
            unheld, due = set(), []
            for tag, taken_at in index:
                tag = tag.decode() if isinstance(tag, bytes) else tag
                raw = client.hget(channel.unacked_key, tag)
                tid = task_id(raw) if raw is not None else None
                if raw is None or tid in held or now - taken_at < self.grace:
                    continue
                unheld.add(tag)
                if tag in self.suspects:
                    due.append((tag, tid))
            self.suspects = unheld - {tag for tag, _ in due}
            for tag, tid in due:
                channel.qos.restore_by_tag(tag, client=client)
                log.info("watchdog: requeued task %s (delivery %s): no live worker holds it", tid, tag)
            self.requeued += len(due)
            return due


class Every:
    """Calls fn() at most every `interval` seconds from a polling loop: tick() -> fn's
    result when due, else None. Broker errors are logged once per outage, not raised."""

    def __init__(self, interval, fn, what):
        self.interval, self.fn, self.what = interval, fn, what
        self.next = 0.0
        self.failing = False

    def tick(self):
        now = time.monotonic()
        if not self.interval or now < self.next:
            return None
        self.next = now + self.interval
        try:
            try:
                result = self.fn()
            except BROKER_ERRORS:  # a pooled connection from before a Redis restart: once more
                result = self.fn()
        except BROKER_ERRORS as e:
            if not self.failing:
                log.warning("%s: broker unreachable (%s); trying again every %ss", self.what, e, self.interval)
            self.failing = True
            return None
        except Exception:  # a scan's own failure (storage, a bug) must not stop the stack running it
            if not self.failing:
                log.exception("%s failed; trying again every %ss", self.what, self.interval)
            self.failing = True
            return None
        self.failing = False
        return result


def start_in_scheduler(sender=None, **_):
    """beat_init handler: run the watchdog in a daemon thread of the scheduler process
    (a cluster runs exactly one scheduler, so exactly one watchdog)."""
    from worker import settings
    s = settings.load()
    if not s.watchdog_interval:
        return
    dog = Watchdog(sender.app, s.watchdog_grace)
    every = Every(s.watchdog_interval, dog.scan, "watchdog")

    def loop():
        while True:
            every.tick()
            time.sleep(min(1.0, s.watchdog_interval))

    threading.Thread(target=loop, name="digits-watchdog", daemon=True).start()
    log.info("watchdog running every %ss (grace %ss)", s.watchdog_interval, s.watchdog_grace)
