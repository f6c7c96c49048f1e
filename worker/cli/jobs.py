"""`digits status`, `watch`, `cancel`, `jobs` and `gc`: following, listing and cleaning up jobs."""
import time

from worker.cli.common import app_for, close_app, eprint, print_json, print_table


def _job_status(s, job_id, apps, stored=None):
    """status() of a job, calm about the broker: storage first (it has the final state of
    an ended job and its progress; `stored` when the caller has just read it); an unfinished
    job's state from the broker when one answers; BrokerDown when none does. apps caches the
    app per broker URL.
    An ended job's status imports neither Celery nor Redis nor NumPy."""
    from worker.client import FINAL_STATES, status
    st = stored or status(None, s, job_id)
    if st["state"] in FINAL_STATES:
        return st
    from worker.stack import broker
    url = broker.live_broker(s)
    if url is None:
        from worker.outage import BrokerDown
        raise BrokerDown(f"no broker answers at {s.broker_url or s.embedded_url}")
    if url not in apps:
        for app in apps.values():
            close_app(app)
        apps.clear()
        apps[url] = app_for(url)
    return status(apps[url], s, job_id)


def cmd_status(a, s):
    from tasks.records import KINDS
    from tasks.jobfiles import full_ref
    from tasks.times import iso_times
    from tasks.states import JobState
    from worker import exitcodes
    from worker.client import FINAL_STATES, status
    st = stored = status(None, s, a.job)  # storage alone has an ended job's state
    apps = {}
    try:
        if st["state"] not in FINAL_STATES:
            st = _job_status(s, a.job, apps, stored)
    except ConnectionError as e:
        from worker.outage import BrokerDown  # imported only here: the ended-job path stays light
        if not isinstance(e, BrokerDown):
            raise
        # without a broker nothing runs the job: say so instead of its last known state
        st = dict(stored, last_state=stored["state"], state=JobState.STALLED, broker=s.broker_url or s.embedded_url,
                  broker_reachable=False)
    finally:
        for app in apps.values():
            close_app(app)
    st = iso_times(dict(st, output=full_ref(s.storage, st.get("output"))))
    if st["state"] in FINAL_STATES and st.get("progress"):  # what the last update said is left: nothing now
        st["progress"] = {k: v for k, v in st["progress"].items() if k != "eta_seconds"}
    if a.json:
        print_json(st)
        return exitcodes.for_state(st["state"])
    kind = KINDS[st["kind"]]
    print(f"job {st['job_id']} ({st['kind']}): {st['state']}")
    if st["state"] == JobState.STALLED:
        print(f"broker {st['broker']} is unreachable: nothing runs the job now; it goes on when its "
              f"stack is back (its queued work is kept)")
    p = dict(st.get("progress") or {})
    if st["state"] == JobState.STALLED:
        p.pop("eta_seconds", None)
    if kind.bar(p)[1]:
        print(f"progress: {kind.progress_text(p)}")
    if st.get("stopping"):
        print(st["stopping"])
    for line in kind.result_lines(st):
        print(line)
    for key in ("submitted_at", "finished_at"):
        if st.get(key):
            print(f"{key.replace('_at', '')}: {st[key]}")
    print(f"output: {st.get('output')}")
    return exitcodes.for_state(st["state"])


def cmd_watch(a, s):
    from tasks.records import KINDS
    from worker import exitcodes
    from worker.client import FINAL_STATES
    from worker.cli.progress import JobBar
    from worker.outage import Outage
    outage = Outage(s.broker_url or s.embedded_url, s.broker_outage, eprint)
    apps = {}
    bar = JobBar(a.job)
    st = None
    try:
        while True:
            st = outage.call(lambda: _job_status(s, a.job, apps)) or st
            if st is not None:
                state = st["state"] if outage.since is None else "reconnecting"
                bar.update(st["kind"], st.get("progress") or {}, state, force=st["state"] in FINAL_STATES)
                if st["state"] in FINAL_STATES:
                    break
            time.sleep(a.interval)
    finally:
        bar.close()
        for app in apps.values():
            close_app(app)
    print(f"job {a.job}: {st['state']}")
    for line in KINDS[st["kind"]].result_lines(st):
        print(line)
    return exitcodes.for_state(st["state"])


def cmd_cancel(a, s):
    from tasks import jobfiles, records
    records.read_job(s.storage, a.job)
    if jobfiles.read_manifest(s.storage, a.job):
        print(f"job {a.job} has already ended")
        return 0
    jobfiles.request_cancel(s.storage, a.job)
    print(f"cancel requested for job {a.job}: remaining work is skipped, finished work kept")
    return 0


def list_jobs(s, state=None, kind=None, since=None, limit=None, now=None, sweep=None):
    """Index entries of recent jobs, newest first, filtered (sweep: the runs of that sweep);
    an unfinished job's state and progress are read from storage (PENDING, PROGRESS or
    CANCELLING); outputs as full paths or URLs (tasks.jobfiles.full_ref) -> list of dicts."""
    from tasks import index, jobfiles, records
    from tasks import states
    now = time.time() if now is None else now
    out = []
    for e in index.list_index(s.storage):
        if (kind and e.get("kind") != kind) or (sweep and e.get("sweep") != sweep):
            continue
        if since is not None and (e.get("submitted_at") or 0) < now - since:
            break  # newest first: the rest is older
        if e.get("state") not in states.FINAL:
            try:
                record = records.load(s.storage, e["job_id"])
            except Exception:  # removed meanwhile
                continue
            e["progress"] = record.progress(s.storage)
            e["state"] = record.storage_state(s.storage, e["progress"])
        if state and e["state"] != state:
            continue
        end = e.get("finished_at") or (None if e["state"] in states.FINAL else now)
        e["duration_seconds"] = round(end - e["submitted_at"], 1) if end and e.get("submitted_at") else None
        e["output"] = jobfiles.full_ref(s.storage, e.get("output"))
        out.append(e)
        if limit and len(out) >= limit:
            break
    return out


def _row(e):
    """One `digits jobs` line's cells."""
    from tasks.records import KINDS
    from tasks.times import format_seconds, iso
    kind = KINDS[e["kind"]]
    if e.get("progress") is not None and kind.bar(e["progress"])[1]:
        done, total = kind.bar(e["progress"])
        progress = f"{done / total:.0%}"
    else:
        progress = "100%" if e["state"] == "SUCCESS" else "-"
    amount = kind.amount_text(e)
    model = f"{e.get('model')}:{e['version']}" if e.get("version") else str(e.get("model"))
    duration = format_seconds(e["duration_seconds"]) if e.get("duration_seconds") is not None else "-"
    return [e["job_id"], e["kind"], e["state"], progress, amount, model, e.get("sweep") or "-",
            iso(e.get("submitted_at")) or "-", duration, str(e.get("output"))]


HEADER = ["JOB", "KIND", "STATE", "PROGRESS", "ROWS/EPOCHS", "MODEL", "SWEEP", "SUBMITTED (UTC)", "DURATION",
          "OUTPUT"]


def cmd_jobs(a, s):
    from tasks.times import iso_times
    found = list_jobs(s, state=a.state, kind=a.kind, since=a.since, limit=a.limit, sweep=a.sweep)
    if a.json:
        print_json(iso_times(found))
        return 0
    if not found:
        print(f"no jobs{' matching' if (a.state or a.kind or a.since or a.sweep) else ''} under {s.storage}")
        return 0
    rows = [HEADER] + [_row(e) for e in found]
    print_table(rows)
    return 0


def cmd_gc(a, s):
    from tasks.retention import collect, format_bytes, summary_line
    from worker.stack import broker
    from worker.app import configure
    url = broker.live_broker(s)  # the result backend's keys too, when a broker answers (none is started)
    redis = configure(url).backend.client if url else None
    report = collect(s.storage, a.older_than, dry_run=a.dry_run, redis=redis)
    if a.json:
        print_json(report)
        return 0
    verb = "would remove" if a.dry_run else "removed"
    for r in report["removed"]:
        print(f"{verb} {r['what']} of {r['job_id']}: {r['path']} ({r['files']} files, {format_bytes(r['bytes'])})")
    for k in report["skipped"]:
        print(f"kept {k['path']}: {k['reason']}")
    if redis is None:
        print(f"no broker answers at {s.broker_url or s.embedded_url}: result-backend keys not checked "
              f"(they expire after DIGITS_RESULT_EXPIRES)")
    print(summary_line(report))
    return 0
