"""The schedule of the one scheduler (Celery beat): retraining and retention.

DIGITS_RETRAIN_CRON is a five-field cron expression ("0 3 * * *": daily at 03:00 UTC) or
an interval "every 30s" / "every 10m" / "every 2h". Beat sends `digits.retrain`, which
skips (and logs) a run while another run of the same model is queued or running.
DIGITS_GC_CRON (default daily at 04:00 UTC, "off" for never) sends `digits.gc`, which
removes the leftovers of jobs ended more than DIGITS_GC_OLDER_THAN ago (tasks/retention.py).
"""
import re
from datetime import datetime, timezone

from celery.schedules import crontab, schedule

from model.errors import ConfigError

_EVERY = re.compile(r"^\s*every\s+(\d+(?:\.\d+)?)\s*([smh])\s*$", re.I)


def parse(expr, setting="DIGITS_RETRAIN_CRON"):
    """A cron expression or "every N[s|m|h]" -> a Celery schedule."""
    m = _EVERY.match(expr)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2).lower()]
        if seconds <= 0:
            raise ConfigError(f"{setting}={expr!r}: the interval must be positive")
        return schedule(seconds)
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"{setting}={expr!r}: expected 5 cron fields "
                          "(minute hour day month weekday) or 'every N[s|m|h]'")
    try:
        return crontab(*fields[:2], day_of_month=fields[2], month_of_year=fields[3], day_of_week=fields[4])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{setting}={expr!r}: {e}") from None


def _check_retrain(s):
    """ConfigError unless the retraining settings are complete (or retraining is off)."""
    if s.retrain_cron and not s.retrain_data:
        raise ConfigError("DIGITS_RETRAIN_CRON is set but DIGITS_RETRAIN_DATA is not: set the training "
                          "data the scheduled runs read (a path or storage URL the workers can read)")


def beat_schedule(s):
    """The beat_schedule dict for Settings s: retraining (when configured) and retention."""
    _check_retrain(s)
    out = {}
    if s.retrain_cron:
        out[f"retrain-{s.retrain_model}"] = {
            "task": "digits.retrain", "schedule": parse(s.retrain_cron),
            "args": (s.retrain_model, s.retrain_data, s.retrain_recipe), "options": {"queue": "predict"}}
    if s.gc_cron:
        out["gc"] = {"task": "digits.gc", "schedule": parse(s.gc_cron, "DIGITS_GC_CRON"),
                     "args": (s.gc_older_than,), "options": {"queue": "predict"}}
    return out


def next_run(sched, now):
    """The next firing of a Celery schedule after `now` -> ISO-8601 UTC."""
    # remaining time counted from a run "now": the next firing after this moment
    if isinstance(sched, crontab):
        sched.tz = timezone.utc
        # remaining_delta: (start, delta to the next firing after start, ...); not
        # remaining_estimate, which counts from the wall clock instead of from `now`
        start, delta, _ = sched.remaining_delta(now)
        return (start + delta).isoformat(timespec="seconds")
    return (now + sched.run_every).isoformat(timespec="seconds")


def describe(s, now=None):
    """What `digits schedule` shows: enabled, cron, model, data, recipe, next_run (UTC ISO),
    and "gc": {enabled, cron, older_than_seconds, next_run}. ConfigError for incomplete settings."""
    _check_retrain(s)
    now = now or datetime.now(timezone.utc)
    info = {"enabled": bool(s.retrain_cron), "cron": s.retrain_cron, "model": s.retrain_model,
            "data": s.retrain_data, "recipe": s.retrain_recipe, "next_run": None}
    if s.retrain_cron:
        info["next_run"] = next_run(parse(s.retrain_cron), now)
    info["gc"] = {"enabled": bool(s.gc_cron), "cron": s.gc_cron, "older_than_seconds": s.gc_older_than,
                  "next_run": next_run(parse(s.gc_cron, "DIGITS_GC_CRON"), now) if s.gc_cron else None}
    return info
