"""The retraining schedule, from DIGITS_RETRAIN_* settings, for Celery beat.

DIGITS_RETRAIN_CRON is a five-field cron expression ("0 3 * * *": daily at 03:00 UTC) or
an interval "every 30s" / "every 10m" / "every 2h". Beat sends `digits.retrain`, which
skips (and logs) a run while another run of the same model is queued or running.
"""
import re
from datetime import datetime, timezone

from celery.schedules import crontab, schedule

from model.errors import ConfigError

_EVERY = re.compile(r"^\s*every\s+(\d+(?:\.\d+)?)\s*([smh])\s*$", re.I)


def parse(expr):
    """A cron expression or "every N[s|m|h]" -> a Celery schedule."""
    m = _EVERY.match(expr)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2).lower()]
        if seconds <= 0:
            raise ConfigError(f"DIGITS_RETRAIN_CRON={expr!r}: the interval must be positive")
        return schedule(seconds)
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"DIGITS_RETRAIN_CRON={expr!r}: expected 5 cron fields "
                          "(minute hour day month weekday) or 'every N[s|m|h]'")
    try:
        return crontab(*fields[:2], day_of_month=fields[2], month_of_year=fields[3], day_of_week=fields[4])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"DIGITS_RETRAIN_CRON={expr!r}: {e}") from None


def beat_schedule(s):
    """The beat_schedule dict for Settings s ({} when no retraining is configured)."""
    if not s.retrain_cron:
        return {}
    if not s.retrain_data:
        raise ConfigError("DIGITS_RETRAIN_CRON is set but DIGITS_RETRAIN_DATA is not")
    return {f"retrain-{s.retrain_model}": {
        "task": "digits.retrain", "schedule": parse(s.retrain_cron),
        "args": (s.retrain_model, s.retrain_data, s.retrain_recipe), "options": {"queue": "predict"}}}


def describe(s, now=None):
    """What `digits schedule` shows: enabled, cron, model, data, recipe, next_run (UTC ISO)."""
    info = {"enabled": bool(s.retrain_cron), "cron": s.retrain_cron, "model": s.retrain_model,
            "data": s.retrain_data, "recipe": s.retrain_recipe, "next_run": None}
    if s.retrain_cron:
        sched = parse(s.retrain_cron)
        now = now or datetime.now(timezone.utc)
        # remaining time counted from a run "now": the next firing after this moment
        if isinstance(sched, crontab):
            sched.tz = timezone.utc
            # remaining_delta: (start, delta to the next firing after start, ...); not
            # remaining_estimate, which counts from the wall clock instead of from `now`
            start, delta, _ = sched.remaining_delta(now)
            info["next_run"] = (start + delta).isoformat(timespec="seconds")
        else:
            info["next_run"] = (now + sched.run_every).isoformat(timespec="seconds")
    return info
