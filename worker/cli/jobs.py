"""`digits status`, `watch` and `cancel`: following jobs by id."""
import sys
import time

from worker.cli.common import eprint, print_json


def _job_status(s, job_id, apps):
    """status() of a job, calm about the broker: storage first (it has the final state of
    an ended job and its progress); an unfinished job's state from the broker when one
    answers; BrokerDown when none does. apps caches the Celery app per broker URL.
    An ended job's status imports neither Celery nor Redis nor NumPy."""
    from worker.client import FINAL_STATES, status
    st = status(None, s, job_id)
    if st["state"] in FINAL_STATES:
        return st
    from worker import stack
    url = stack.live_broker(s)
    if url is None:
        from worker.outage import BrokerDown
        raise BrokerDown(f"no broker answers at {s.broker_url or s.embedded_url}")
    if url.startswith("redis+socket://"):  # the embedded stack: its Redis read without Celery
        st = status(stack.TaskMeta(url), s, job_id)
        if st["state"] != "FAILURE":  # a failure's exception is rebuilt by Celery, below
            return st
    if url not in apps:
        from worker.app import configure
        apps.clear()
        apps[url] = configure(url)
    return status(apps[url], s, job_id)


def cmd_status(a, s):
    from worker import exitcodes
    from worker.client import FINAL_STATES, status
    st = status(None, s, a.job)  # storage alone has an ended job's state
    try:
        if st["state"] not in FINAL_STATES:
            st = _job_status(s, a.job, {})
    except ConnectionError as e:
        from worker.outage import BrokerDown  # imported only here: the ended-job path stays light
        if not isinstance(e, BrokerDown):
            raise
        # without a broker nothing runs the job: say so instead of its last known state
        st = status(None, s, a.job)
        st.update(last_state=st["state"], state="STALLED", broker=s.broker_url or s.embedded_url,
                  broker_reachable=False)
    if a.json:
        print_json(st)
        return exitcodes.for_state(st["state"])
    print(f"job {st['job_id']} ({st['kind']}): {st['state']}")
    if st["state"] == "STALLED":
        print(f"broker {st['broker']} is unreachable: nothing runs the job now; it goes on when its "
              f"stack is back (its queued work is kept)")
    p = st.get("progress") or {}
    if st["kind"] == "predict":
        print(f"chunks {p.get('chunks_done', 0)}/{p.get('chunks', 0)}")
    elif "epoch" in p:
        print(f"epoch {p['epoch']}/{p['epochs']} batch {p['batch']}/{p['batches']} loss {p['loss']:.4f} "
              f"val_accuracy {p.get('val_accuracy')}" + ("" if st["state"] == "STALLED" else
                                                         f" eta {p.get('eta_seconds')}s"))
    for key in ("rows_in", "rows_ok", "rows_bad", "version", "val_accuracy", "error"):
        if st.get(key) is not None:
            print(f"{key}: {st[key]}")
    print(f"output: {st.get('output')}")
    return exitcodes.for_state(st["state"])


def cmd_watch(a, s):
    from worker import exitcodes
    from worker.client import FINAL_STATES
    from worker.outage import Outage
    from tqdm import tqdm
    outage = Outage(s.broker_url or s.embedded_url, s.broker_outage, eprint)
    apps = {}
    bar = tqdm(total=None, file=sys.stderr, dynamic_ncols=True, desc=a.job)
    st = None
    try:
        while True:
            st = outage.call(lambda: _job_status(s, a.job, apps)) or st
            p = (st or {}).get("progress") or {}
            if st is None:
                pass
            elif st["kind"] == "predict":
                bar.total, bar.n = p.get("chunks"), p.get("chunks_done", 0)
            elif "epoch" in p:
                from tasks.train import progress_text
                bar.total, bar.n = p["epochs"] * p["batches"], (p["epoch"] - 1) * p["batches"] + p["batch"]
                bar.set_postfix_str(progress_text(p))
            if st is not None:
                bar.set_description(f"{a.job} {st['state'] if outage.since is None else 'reconnecting'}")
                bar.refresh()
                if st["state"] in FINAL_STATES:
                    break
            time.sleep(a.interval)
    finally:
        bar.close()
    print(f"job {a.job}: {st['state']}")
    return exitcodes.for_state(st["state"])


def cmd_cancel(a, s):
    from tasks import jobs
    jobs.read_job(s.storage, a.job)
    if jobs.read_manifest(s.storage, a.job):
        print(f"job {a.job} has already ended")
        return 0
    jobs.request_cancel(s.storage, a.job)
    print(f"cancel requested for job {a.job}: remaining work is skipped, finished work kept")
    return 0
