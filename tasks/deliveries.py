"""Poison detection: deliveries of a chunk or a training job that began and never ended.

With acks late and reject-on-worker-lost, a message whose pool process dies (the kernel's
OOM killer, a container's memory limit, a hard time limit killing a frozen process) goes
back to its queue and is delivered again, for ever if the work itself kills its process.
Celery's retry count covers exceptions only, so each delivery is counted here, in Redis
beside the job's marks: begin() when the work starts (returns how many earlier deliveries
began and never ended), end() when it returns, raises or retries (from the task_postrun
signal, which Celery sends in every case but a dead process). A job whose work died
DIGITS_POISON_LIMIT times is failed with poison_reason() instead of run again.
"""
from celery.signals import task_postrun
from celery.utils.log import get_task_logger

from tasks import keys
from tasks.scripts import REFUSED

log = get_task_logger(__name__)
TTL = 7 * 86400  # the counters live as long as the marks


def poison_reason(died):
    """The one-line reason a job's work that died `died` times is failed with."""
    return f"killed its worker {died} times (out of memory?)"


# KEYS[1] the counters hash; ARGV[1] the "begun" field, ARGV[2] the "ended" field, ARGV[3] ttl.
# -> deliveries that began before this one and never ended. A full Redis refuses the first write:
# its error reply is returned as Redis gave it (tasks.scripts).
_BEGIN = REFUSED + """
local begun = redis.pcall('HINCRBY', KEYS[1], ARGV[1], 1)
if refused(begun) then return refused(begun) end
local ended = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return begun - 1 - ended
"""


def _fields(name):
    return ("begun", "ended") if name is None else (f"begun:{name}", f"ended:{name}")


def begin(task, key, name=None):
    """Count a delivery of the work under (key, name) that starts running now -> how many
    earlier deliveries of it died (began, never ended). The task's postrun ends it."""
    r = task.app.backend.client
    begun, ended = _fields(name)
    died = int(r.eval(_BEGIN, 1, key, begun, ended, int(task.app.conf.result_expires or TTL)))
    task.request.digits_delivery = (key, ended)
    return died


def end(task):
    """Count the current delivery of task as ended (no-op when it never began counting)."""
    counted = getattr(task.request, "digits_delivery", None)
    if not counted:
        return
    task.request.digits_delivery = None
    key, ended = counted
    try:
        task.app.backend.client.hincrby(key, ended, 1)
    except Exception as e:  # Redis gone for longer than the client rides out: counted as a death
        log.warning("could not count the end of task %s (%s): a later delivery counts it as died",
                    task.request.id, e)


def reset(task, key):
    """Forget the counts under key (a training job failed as poison: its resubmission starts afresh)."""
    task.app.backend.client.delete(key)
    task.request.digits_delivery = None


def limit(task):
    """Deaths after which work is failed (DIGITS_POISON_LIMIT)."""
    return int(getattr(task.app.conf, "digits_poison_limit", 3) or 3)


def chunk_poisoned(task, job_id, index):
    """Count a delivery of chunk `index` -> the reason to fail it without running (its
    process died DIGITS_POISON_LIMIT times), or None to run it."""
    died = begin(task, keys.chunk_deliveries(job_id), index)
    if died >= limit(task):
        log.error("job %s chunk %s: %s; failed without running it again", job_id, index, poison_reason(died))
        return poison_reason(died)
    if died:
        log.warning("job %s chunk %s: delivery %s, after %s that died", job_id, index, died + 1, died)
    return None


def job_ended(r, job_id, keep=3600):
    """A prediction job ended: its fault bookkeeping (delivery counts, chunks sent, breaker)
    expires `keep` seconds from now instead of with its marks (~200 bytes a chunk less)."""
    p = r.pipeline(transaction=False)
    for key in (keys.chunk_deliveries(job_id), keys.chunks_sent(job_id), keys.job_breaker(job_id)):
        p.expire(key, keep)
    p.execute()


def chunk_runs(r, job_id):
    """{chunk index: deliveries that began running it} of a prediction job."""
    raw = r.hgetall(keys.chunk_deliveries(job_id))
    out = {}
    for k, v in raw.items():
        k = k.decode() if isinstance(k, bytes) else k
        if k.startswith("begun:"):
            out[int(k.split(":", 1)[1])] = int(v)
    return out


@task_postrun.connect(weak=False)
def _ended(task=None, **_):
    if task is not None and getattr(task.request, "digits_delivery", None):
        end(task)
