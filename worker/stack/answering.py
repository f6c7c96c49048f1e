"""Workers that answer, not only exist: the embedded stack's check for a hung worker.

A worker process can be alive and do nothing: a main process deadlocked in its shutdown
(waiting on a pool process blocked writing to its pipe), a consumer stuck after its broker
refused it. supervise() of the stack restarts dead processes only; Answering pings the
workers (Celery's control ping) every `every` seconds and names those that have not answered
for `patience` seconds while the broker itself took writes all along. A full Redis (writes
refused: a ping's reply cannot be queued) or an unreachable one is an outage of everybody,
not a hung worker, and suspends the count.

    answering = Answering(app, {"worker-predict": "predict@host", ...}, redis_client)
    answering.replace_hung(procs, log)    # kill the hung ones: supervise() restarts them
    answering.started(service)            # a service (re)started now: its patience anew

CrashLoop spaces the restarts of a worker that keeps dying (against a full Redis, say) instead
of giving up on the whole stack, Redis included.
"""
import contextlib
import logging
import os
import signal
import time

from tasks.keys import SUPERVISOR_PROBE

log = logging.getLogger("digits.answering")


class Answering:
    def __init__(self, app, workers, redis_client, every=5.0, patience=30.0):
        self.app, self.workers, self.r = app, dict(workers), redis_client
        self.every, self.patience = every, patience
        now = time.monotonic()
        self.heard = {service: now for service in self.workers}  # last answer (or start)
        self.healthy_since = now  # start of the broker's current stretch of taking writes
        self.next = now

    def started(self, service):
        self.heard[service] = time.monotonic()

    def _broker_takes_writes(self):
        try:
            return bool(self.r.set(SUPERVISOR_PROBE, "1", ex=60))
        except Exception:  # unreachable, or full (OutOfMemoryError): an outage, not a hung worker
            return False

    def hung(self):
        """One check when due -> services whose worker has not answered for `patience`
        seconds though the broker took writes all that time ([] when not due)."""
        now = time.monotonic()
        if now < self.next:
            return []
        self.next = now + self.every
        if not self._broker_takes_writes():
            self.healthy_since = None
            return []
        if self.healthy_since is None:
            self.healthy_since = now
        try:
            replies = self.app.control.ping(timeout=1.0, limit=len(self.workers)) or []
        except Exception:  # the broker went away between the probe and the ping
            return []
        answered = {name for reply in replies for name in reply}
        now = time.monotonic()
        for service, name in self.workers.items():
            if name in answered:
                self.heard[service] = now
        return [service for service in self.workers
                if now - max(self.heard[service], self.healthy_since) > self.patience]

    def replace_hung(self, procs, say):
        """Kill, with its pool, each worker process (procs: service -> Popen, each the leader
        of its process group) that hung() names; the stack's next round restarts it and the
        watchdog requeues what it held."""
        for service in self.hung():
            proc = procs.get(service)
            if proc is None or proc.poll() is not None:
                continue
            say(f"{service} (pid {proc.pid}) has answered no ping for {self.patience:g}s though Redis takes "
                f"writes: replacing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            self.started(service)


class CrashLoop:
    """A worker that died DIGITS_RESTART_LIMIT times within a minute is restarted every `pause`
    seconds from then on (said once per episode), instead of the stack giving up."""

    def __init__(self, say, pause=10.0):
        self.say, self.pause = say, pause
        self.held = set()

    def hold(self, service, recent, log_path):
        """True while service, past its restart limit (recent: its restarts within a minute),
        must wait before its next restart."""
        if time.monotonic() - recent[-1] >= self.pause:
            self.held.discard(service)
            return False
        if service not in self.held:
            self.held.add(service)
            self.say(f"{service} died {len(recent) + 1} times within a minute; restarting it every "
                     f"{self.pause:g}s until it stays up; see {log_path}")
        return True
