"""A job-wide circuit breaker for storage that cannot take any more (disk full, quota,
permission denied, read-only).

Each chunk retries a failure for about a minute (DIGITS_CHUNK_RETRIES with backoff), and the
job's window moves only as chunks are marked: on a full disk every chunk of a 1,000-chunk
job would wait out its own retries, hours in all, for a reason that is the same each time.
Here each chunk failure for such a reason adds to the job's streak of the same reason (a
chunk that succeeds ends it); once DIGITS_BREAKER_CHUNKS chunks failed in a row for it, the
breaker trips: every chunk not yet marked is failed at its next delivery with the reason,
without running, and the job ends PARTIAL in seconds. The reason is in Redis meanwhile
(`digits status` and the waiting client show it: tripped()), since the storage may be what
is full.
"""
import errno

from celery.utils.log import get_task_logger

from model.errors import describe
from tasks import keys
from tasks.scripts import REFUSED

log = get_task_logger(__name__)
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
TTL = 7 * 86400

# KEYS[1] the breaker hash, KEYS[2] the job's stopped key; ARGV[1] the reason's kind, ARGV[2] its
# line, ARGV[3] the streak that trips, ARGV[4] ttl -> the tripped reason, or false
_FAILED = REFUSED + """
local tripped = redis.call('GET', KEYS[2])
if tripped then return tripped end
local streak = 1
if redis.call('HGET', KEYS[1], 'kind') == ARGV[1] then
  streak = tonumber(redis.call('HGET', KEYS[1], 'streak') or '0') + 1
end
local no = refused(redis.pcall('HSET', KEYS[1], 'kind', ARGV[1], 'streak', streak, 'last', ARGV[2]))
if no then return no end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if streak >= tonumber(ARGV[3]) then
  local line = 'stopped early: ' .. streak .. ' chunks in a row failed with ' .. ARGV[2]
  redis.call('SET', KEYS[2], line, 'EX', tonumber(ARGV[4]))
  return line
end
return false
"""


def storage_kind(exc):
    """The storage reason of a failure that every later chunk would hit too ("No space left
    on device"), or None for any other failure."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and code in STORAGE_ERRNOS:
        return exc.strerror or errno.errorcode.get(code, str(code))
    return None


def chunk_failed(r, job_id, exc, streak_limit):
    """Count a chunk failure (each attempt) -> the reason the job stopped early for, once it
    tripped, else None. A failure of another kind ends the streak."""
    kind = storage_kind(exc)
    if kind is None:
        r.hdel(keys.job_breaker(job_id), "kind", "streak")
        return None
    tripped = r.eval(_FAILED, 2, keys.job_breaker(job_id), keys.job_stopped(job_id), kind, describe(exc),
                     int(streak_limit), TTL)
    if tripped:
        tripped = tripped.decode() if isinstance(tripped, bytes) else tripped
        log.error("job %s %s", job_id, tripped)
    return tripped


def chunk_done(r, job_id):
    """A chunk succeeded: the streak ends (a tripped breaker stays tripped)."""
    r.hdel(keys.job_breaker(job_id), "kind", "streak")


def tripped(r, job_id):
    """The reason job_id stopped early for, or None."""
    raw = r.get(keys.job_stopped(job_id))
    return raw.decode() if isinstance(raw, bytes) else raw
