"""A job's window of queued chunks, released once: which chunks a mark has queued.

The n-th chunk to finish queues chunk n + window - 1 (tasks.predict). A repeated delivery
of a marked chunk (its first delivery may have died before queueing) queues that chunk
again only if no delivery queued it and it has no mark: a chunk queued or running is never
queued twice, so a requeue after a frozen worker does not cascade into duplicates.
A chunk whose message was lost after it was recorded here (a Redis that died before
writing it) is found by the watchdog (tasks.predict.resume), which sends regardless.
"""
from tasks import keys

TTL = 7 * 86400


def record_sent(r, job_id, index):
    """Record that chunk `index` of job_id was queued by a mark (after sending it: a
    process killed in between leaves it unrecorded, and its repeated delivery sends it again)."""
    p = r.pipeline(transaction=False)
    p.sadd(keys.chunks_sent(job_id), index)
    p.expire(keys.chunks_sent(job_id), TTL)
    p.execute()


def sent_or_marked(r, job_id, index):
    """True when chunk `index` was queued by a mark already, or is marked."""
    p = r.pipeline(transaction=False)
    p.sismember(keys.chunks_sent(job_id), index)
    p.hexists(keys.chunk_marks(job_id), index)
    return any(p.execute())
