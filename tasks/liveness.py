"""A training job's lock that survives a pause of its process.

The lock (keys.job_lock) expires LOCK_TTL seconds after its last renewal, so that a dead
run's lock frees quickly; a run that was only paused longer than that (a stopped VM, a long
GC, a swap storm) finds it expired when it wakes up. keep_lock() renews it and, when it
lapsed, takes it back if nobody holds it, else raises LockLost: another delivery runs the
job now (from the last checkpoint), and this one must stop without touching the job.
"""
import os
import socket

from celery.utils.log import get_task_logger
from redis.exceptions import LockError

from model.errors import JobError
from tasks import keys

log = get_task_logger(__name__)


class LockLost(JobError):
    """Another delivery owns the job's lock: this one stops, leaving the job to it."""


def me():
    """host:pid of this process (keys.lock_owner)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def keep_lock(r, lock, job_id, ttl):
    """Renew lock for ttl seconds; if it lapsed, take it back when free -> None, or raise
    LockLost naming its new owner."""
    try:
        lock.extend(ttl, replace_ttl=True)
        return
    except LockError:  # LockNotOwnedError: it expired (and maybe another delivery took it)
        pass
    token = lock.local.token
    if token is not None and lock.acquire(blocking=False, token=token):
        lock.extend(ttl, replace_ttl=True)
        r.set(keys.lock_owner(job_id), me(), ex=ttl)
        log.warning("job %s: its lock lapsed while this run was paused; nobody had taken it: taken back", job_id)
        return
    owner = (r.get(keys.lock_owner(job_id)) or b"?").decode()
    raise LockLost(f"job {job_id}: its lock lapsed while this run was paused and another delivery "
                   f"({owner}) holds it now; this one stops")
