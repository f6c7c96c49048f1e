"""The retraining schedule: DIGITS_RETRAIN_CRON parsing and description (unit), and Celery
beat on a separate real stack firing `digits.retrain` (integration)."""
import dataclasses
import glob
import json
import os
import re
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from celery.schedules import crontab, schedule

from model.data.samples import write_sample
from model.errors import ConfigError
from worker import settings
from worker.schedule import beat_schedule, describe, parse


def with_cron(cron, data="train.csv", **kw):
    return dataclasses.replace(settings.load(), retrain_cron=cron, retrain_data=data, **kw)


@pytest.mark.parametrize("expr, seconds", [
    ("every 4s", 4), ("every 30s", 30), ("every 10m", 600), ("every 2h", 7200),
    ("every 1.5s", 1.5), ("  EVERY 3S  ", 3), ("every 5 m", 300),
])
def test_parse_every(expr, seconds):
    sched = parse(expr)
    assert isinstance(sched, schedule) and not isinstance(sched, crontab)
    assert sched.run_every == timedelta(seconds=seconds)


def test_parse_cron():
    daily = parse("0 3 * * *")
    assert isinstance(daily, crontab)
    assert daily.minute == {0} and daily.hour == {3}
    assert len(daily.day_of_month) == 31 and len(daily.month_of_year) == 12 and len(daily.day_of_week) == 7
    weekdays = parse("*/15 8-17 1,15 */2 1-5")
    assert weekdays.minute == {0, 15, 30, 45} and weekdays.hour == set(range(8, 18))
    assert weekdays.day_of_month == {1, 15} and weekdays.month_of_year == {1, 3, 5, 7, 9, 11}
    assert weekdays.day_of_week == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("expr", [
    "", "every", "every s", "every 0s", "every 0m", "every -5s", "every 5x", "every 5", "5s",
    "1 2 3", "* * * *", "* * * * * *", "61 * * * *", "0 25 * * *", "0 0 32 * *", "0 0 * 13 *",
    "0 0 * * 8", "a b c d e",
])
def test_parse_rejects_bad_values(expr):
    with pytest.raises(ConfigError, match="DIGITS_RETRAIN_CRON"):
        parse(expr)


def test_describe_disabled():
    s = dataclasses.replace(settings.load(), retrain_cron=None, retrain_data=None)
    info = describe(s)
    assert info["enabled"] is False and info["next_run"] is None and info["cron"] is None
    assert set(beat_schedule(s)) == {"gc"}  # retention runs whatever the retraining settings
    assert beat_schedule(dataclasses.replace(s, gc_cron=None)) == {}


def test_describe_cron_next_run_counts_from_now():
    s = dataclasses.replace(with_cron("0 3 * * *"), retrain_recipe="faithful", retrain_model="m1")
    at = lambda *a: datetime(*a, tzinfo=timezone.utc)  # noqa: E731
    info = describe(s, now=at(2024, 1, 1, 1, 0))
    assert info.pop("gc")["next_run"] == "2024-01-01T04:00:00+00:00"  # the default: daily at 04:00 UTC
    assert info == {"enabled": True, "cron": "0 3 * * *", "model": "m1", "data": "train.csv",
                    "recipe": "faithful", "next_run": "2024-01-01T03:00:00+00:00"}
    assert describe(s, now=at(2024, 1, 1, 3, 0))["next_run"] == "2024-01-02T03:00:00+00:00"
    assert describe(s, now=at(2024, 1, 1, 23, 59, 30))["next_run"] == "2024-01-02T03:00:00+00:00"
    weekdays = with_cron("*/15 * * * 1-5")
    assert describe(weekdays, now=at(2024, 1, 6, 10, 7))["next_run"] == "2024-01-08T00:00:00+00:00"  # Sat -> Mon
    assert describe(weekdays, now=at(2024, 1, 8, 10, 7))["next_run"] == "2024-01-08T10:15:00+00:00"
    # without `now`: the wall clock, on a whole firing time
    nxt = datetime.fromisoformat(describe(s)["next_run"])
    assert (nxt.hour, nxt.minute, nxt.second) == (3, 0, 0)
    assert timedelta(0) < nxt - datetime.now(timezone.utc) <= timedelta(days=1)


def test_describe_every():
    s = with_cron("every 30s")
    now = datetime(2024, 1, 6, 10, 7, tzinfo=timezone.utc)
    assert describe(s, now=now)["next_run"] == "2024-01-06T10:07:30+00:00"


def test_describe_rejects_bad_cron():
    with pytest.raises(ConfigError):
        describe(with_cron("every 0s"))


def test_beat_schedule_entry():
    s = dataclasses.replace(with_cron("every 4s", data="/data/train.csv"), retrain_model="m1",
                            retrain_recipe="faithful")
    entry = beat_schedule(s)["retrain-m1"]
    assert entry["task"] == "digits.retrain" and entry["args"] == ("m1", "/data/train.csv", "faithful")
    assert entry["schedule"].run_every == timedelta(seconds=4)
    assert entry["options"] == {"queue": "predict"}
    with pytest.raises(ConfigError, match="DIGITS_RETRAIN_DATA"):
        beat_schedule(with_cron("every 4s", data=None))
    with pytest.raises(ConfigError, match="DIGITS_RETRAIN_DATA"):  # `digits schedule` says so too
        describe(with_cron("every 4s", data=None))


def test_gc_entry_and_settings(monkeypatch):
    monkeypatch.setenv("DIGITS_GC_CRON", "every 2h")
    monkeypatch.setenv("DIGITS_GC_OLDER_THAN", "3d")
    s = settings.load()
    entry = beat_schedule(s)["gc"]
    assert entry["task"] == "digits.gc" and entry["args"] == (3 * 86400,)
    assert entry["schedule"].run_every == timedelta(hours=2) and entry["options"] == {"queue": "predict"}
    assert describe(s)["gc"]["older_than_seconds"] == 3 * 86400
    monkeypatch.setenv("DIGITS_GC_CRON", "off")
    assert "gc" not in beat_schedule(settings.load())
    monkeypatch.setenv("DIGITS_GC_OLDER_THAN", "a week")
    with pytest.raises(ConfigError, match="DIGITS_GC_OLDER_THAN"):
        settings.load()
    monkeypatch.setenv("DIGITS_GC_OLDER_THAN", "7d")
    monkeypatch.setenv("DIGITS_GC_CRON", "0 25 * * *")
    with pytest.raises(ConfigError, match="DIGITS_GC_CRON"):
        beat_schedule(settings.load())


def test_configure_rereads_the_schedule(monkeypatch):
    from worker.app import app, configure
    old = app.conf.broker_url
    monkeypatch.setenv("DIGITS_RETRAIN_CRON", "every 7s")
    monkeypatch.setenv("DIGITS_RETRAIN_DATA", "/data/train.csv")
    monkeypatch.setenv("DIGITS_RETRAIN_MODEL", "m2")
    try:
        current = configure(old)  # the app the shared tasks follow (not always the module's first one)
        assert current.conf.beat_schedule["retrain-m2"]["schedule"].run_every == timedelta(seconds=7)
    finally:
        monkeypatch.undo()
        current = configure(old)
    assert "retrain-m2" not in current.conf.beat_schedule


# ----------------------------------------------------------------------------- integration

INTERVAL = 4
OBSERVE = 20
ROWS = 60000  # plain recipe (15 epochs, batch 64): a run takes well over the interval


def _log_times(path, pattern):
    """(epoch seconds, match) of log lines matching pattern; the logs use local time."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = re.search(pattern, line)
            if m:
                ts = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
                t = time.mktime(time.strptime(ts.group(1), "%Y-%m-%d %H:%M:%S")) + int(ts.group(2)) / 1000
                out.append((t, m))
    return out


@pytest.fixture
def schedule_env(tmp_path):
    """os.environ for a separate stack with a 4 s retraining schedule; restored afterwards."""
    from celery import current_app
    paths = write_sample(str(tmp_path / "sample"), images=False)
    with open(paths["train"]) as f:
        header, body = f.readline(), f.readlines()
    data = tmp_path / "retrain.csv"
    data.write_text(header + "".join((body * (ROWS // len(body) + 1))[:ROWS]))
    home = tmp_path / "sched-home"
    env = {"DIGITS_HOME": str(home), "DIGITS_STORAGE": str(home / "storage"),
           "DIGITS_PREDICT_CONCURRENCY": "1", "DIGITS_TRAIN_CONCURRENCY": "1",
           "DIGITS_RETRAIN_CRON": f"every {INTERVAL}s", "DIGITS_RETRAIN_MODEL": "sched",
           "DIGITS_RETRAIN_DATA": str(data), "DIGITS_RETRAIN_RECIPE": "plain"}
    drop = ("DIGITS_BROKER_URL", "DIGITS_RESULT_BACKEND")
    old = {k: os.environ.get(k) for k in (*env, *drop)}
    old_broker = current_app.conf.broker_url  # the app the shared tasks follow now
    for k in drop:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from worker.app import configure
        configure(old_broker)  # Stack.start pointed the shared app at this stack


@pytest.mark.integration
def test_beat_retrains_on_schedule_without_overlapping_runs(schedule_env):
    from model.registry.versions import Registry
    from tasks import jobfiles
    from worker.stack.embedded import Stack
    s = settings.load()
    assert s.retrain_cron == f"every {INTERVAL}s" and str(s.home) == schedule_env["DIGITS_HOME"]
    stack = Stack(s, flower=False, scheduler=True, record=False, log=lambda *a: None)
    stack.start()
    logs = s.home / "logs"
    sent_re = r"Sending due task retrain-sched \(digits\.retrain\)"
    try:
        deadline = time.time() + INTERVAL * 3
        while not _log_times(logs / "scheduler.log", sent_re):
            assert time.time() < deadline, "beat never sent the retrain task; see " + str(logs)
            time.sleep(0.2)
        time.sleep(OBSERVE)
        stack.procs["scheduler"].send_signal(signal.SIGTERM)
        stack.procs["scheduler"].wait(15)
        fired = _log_times(logs / "scheduler.log", sent_re)
        # every firing is executed: queued as a training job or skipped
        deadline = time.time() + 30
        while True:
            queued = _log_times(logs / "worker-predict.log", r"retrain of sched queued as (train-[0-9a-f]+)")
            skipped = _log_times(logs / "worker-predict.log", r"retrain of sched skipped: another run")
            if len(queued) + len(skipped) >= len(fired):
                break
            assert time.time() < deadline, f"{len(fired)} firings, {len(queued)} queued, {len(skipped)} skipped"
            time.sleep(0.2)
        ids = [m.group(1) for _, m in queued]
        deadline = time.time() + 60
        while not all(jobfiles.read_manifest(s.storage, i) for i in ids):
            assert time.time() < deadline, "scheduled training runs did not finish"
            time.sleep(0.2)
    finally:
        stack.stop()

    # about one firing per interval
    times = [t for t, _ in fired]
    assert len(fired) >= OBSERVE // INTERVAL, f"only {len(fired)} firings in {OBSERVE}s"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(INTERVAL - 1.5 <= g <= INTERVAL + 1.5 for g in gaps), gaps
    assert len(queued) + len(skipped) == len(fired)
    assert len(queued) >= 2, "the schedule queued fewer than two runs"
    assert len(skipped) >= 1, "no firing overlapped a run: the skip path was not exercised"

    # the training jobs are exactly the queued ones, all finished, one version each
    train_jobs = sorted(os.path.basename(os.path.dirname(p))
                        for p in glob.glob(os.path.join(s.storage, "jobs", "train-*", "job.json")))
    assert train_jobs == sorted(ids)
    manifests = sorted((jobfiles.read_manifest(s.storage, i) for i in ids), key=lambda m: m["submitted_at"])
    assert all(m["state"] == "SUCCESS" and m["name"] == "sched" for m in manifests)
    assert all(json.loads(open(os.path.join(s.storage, "jobs", m["job_id"], "job.json")).read())["config"]
               ["recipe"] == "plain" for m in manifests)
    assert sorted(int(v["version"]) for v in Registry(s.storage).versions("sched")) == \
        list(range(1, len(ids) + 1))
    # never two runs of the model at once: a run is queued only after the previous one ended
    for prev, nxt in zip(manifests, manifests[1:]):
        assert nxt["submitted_at"] >= prev["finished_at"], (prev, nxt)
        assert nxt["finished_at"] - nxt["seconds"] >= prev["finished_at"]
    # and each skip happened while a run was queued or running
    for t, _ in skipped:
        assert any(m["submitted_at"] - 0.5 <= t <= m["finished_at"] + 0.5 for m in manifests), t
