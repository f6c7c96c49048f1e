"""A prediction chunk's mark: one atomic Redis script records that chunk `index` of a job is
done, failed or skipped, numbers and counts the marks, and touches the job; the mark that
is number `total` is the one that queues assemble (tasks.predict)."""
import json
import time

from tasks import events, keys
from tasks.scripts import REFUSED

# KEYS[1] the marks hash, KEYS[2] the job's touched key, KEYS[3] the set of active jobs,
# KEYS[4] the counts of marks by state, KEYS[5] the set of chunks waiting for a retry;
# ARGV[1] chunk index, ARGV[2] mark (JSON), ARGV[3] ttl in seconds, ARGV[4] job id, ARGV[5]
# the time now, ARGV[6] the mark's state. A first mark gets the next order number, is
# counted, and returns {1, mark, counts, retrying}; a repeated one changes no mark and
# returns {0, the first mark, counts, retrying}. Either way the job is touched
# (queueing.touch: when it last moved, and that it is active), all in one round trip. A full
# Redis refuses the first write: its error reply is returned as Redis gave it (tasks.scripts).
_MARK = REFUSED + """
local ttl = tonumber(ARGV[3])
local no = refused(redis.pcall('SET', KEYS[2], ARGV[5], 'EX', ttl))
if no then return no end
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SREM', KEYS[5], ARGV[1])
local first, text = 0, redis.call('HGET', KEYS[1], ARGV[1])
if not text then
  local mark = cjson.decode(ARGV[2])
  mark['order'] = redis.call('HLEN', KEYS[1]) + 1
  text = cjson.encode(mark)
  first = 1
  redis.call('HSET', KEYS[1], ARGV[1], text)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {first, text, redis.call('HGETALL', KEYS[4]), redis.call('SCARD', KEYS[5])}
"""


def redis_client(task):
    return task.app.backend.client


def mark(task, job, index, state, **info):
    """Mark chunk `index` of a job (its job.json dict) as done, failed or skipped, and move
    the job's row in Flower -> (first time?, the mark)."""
    r, job_id = redis_client(task), job["job_id"]
    ttl = keys.ttl(task.app)
    first, text, counts, retrying = r.eval(
        _MARK, 5, keys.chunk_marks(job_id), keys.job_touched(job_id), keys.ACTIVE_PREDICTIONS,
        keys.chunk_counts(job_id), keys.chunks_retrying(job_id),
        index, json.dumps(dict(info, state=state)), ttl, job_id, repr(time.time()), state)
    counts = {counts[i].decode(): int(counts[i + 1]) for i in range(0, len(counts), 2)}
    events.job_progress(task, job, counts, int(retrying))
    return bool(first), json.loads(text)


def marks(task, job_id):
    """{chunk index: mark} of a job."""
    raw = redis_client(task).hgetall(keys.chunk_marks(job_id))
    return {int(k): json.loads(v) for k, v in raw.items()}
