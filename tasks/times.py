"""Times as people read them: ISO-8601 UTC text of epoch seconds, the ETA of a job at the
rate measured so far, and short durations ("3m05s")."""
from datetime import datetime, timezone

ETA_MIN_FRACTION = 0.02  # no ETA before this share of the remaining work is done ...
ETA_MIN_SECONDS = 1.0  # ... or before this much time was measured: first frames mislead


def iso(t):
    """Epoch seconds -> ISO-8601 UTC to the second ("2024-06-01T12:00:00+00:00"); None stays None."""
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def iso_times(obj):
    """A copy of a record or status with every numeric "*_at" value as iso() text."""
    if isinstance(obj, dict):
        return {k: iso(v) if k.endswith("_at") and isinstance(v, (int, float)) and not isinstance(v, bool)
                else iso_times(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [iso_times(v) for v in obj]
    return obj


def eta_seconds(done, total, elapsed, done_at_start=0):
    """Seconds left at the rate measured so far -> float, or None while the measure is too
    short to mean anything (the first frames of a job would say hours)."""
    measured = done - done_at_start
    if total <= 0 or measured <= 0 or elapsed < ETA_MIN_SECONDS \
            or measured < ETA_MIN_FRACTION * (total - done_at_start):
        return None
    return max(0.0, (total - done) * elapsed / measured)


def format_seconds(seconds):
    """3.14 -> "3.1s", 21 -> "21s", 185 -> "3m05s", 7300 -> "2h01m", 604800 -> "7d"."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d" + (f"{s % 86400 // 3600:02d}h" if s % 86400 >= 3600 else "")
