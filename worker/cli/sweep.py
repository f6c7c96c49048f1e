"""`digits sweep`: hyperparameter sweeps fanned out over the train workers."""
import dataclasses
import time

from model.errors import ConfigError, UsageError
from tasks.states import JobState
from worker.cli.common import eprint, print_json, print_table, queue_app

ACTIONS = ("list", "status", "cancel")


def boolean(text):
    """"true"/"yes"/"1" or "false"/"no"/"0" -> bool."""
    if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(text)
    return text.lower() in ("1", "true", "yes")


def _fields():
    """{option: type} of the training options a grid may set."""
    from model.train import TrainConfig
    types = {"int": int, "float": float, "str": str, "bool": boolean}
    return {f.name: types.get(getattr(f.type, "__name__", str(f.type)), str)
            for f in dataclasses.fields(TrainConfig) if f.name != "recipe"}


def cmd_sweep(a, s):
    if a.target in ACTIONS:
        for given, option in ((a.grid, "--grid"), (a.no_wait, "--no-wait"), (a.skip_bad, "--skip-bad")):
            if given:
                raise UsageError(f"{option} is for a new sweep (digits sweep DATA --grid ...), not `sweep {a.target}`")
        if a.target == "list":
            if a.sweep:
                raise UsageError(f"unexpected argument {a.sweep!r}: digits sweep list takes no id")
            return _list(a, s)
        if not a.sweep:
            raise UsageError(f"digits sweep {a.target} needs the sweep id (see `digits sweep list`)")
        return (_status if a.target == "status" else _cancel)(a, s)
    if a.sweep:
        raise UsageError(f"unexpected argument {a.sweep!r}: digits sweep DATA --grid ... (or list, or status/cancel ID)")
    from tasks.sweep import parse_grid
    from worker.client import submit_sweep
    try:
        grid = parse_grid(a.grid or [], _fields())
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if not grid:
        raise UsageError("give at least one --grid NAME=V1,V2,...")
    with queue_app(s, keep_alive=a.no_wait) as app:
        sweep_id = submit_sweep(a.target, a.name, a.recipe, grid, app=app, settings=s, skip_bad=a.skip_bad)
        if a.no_wait:
            print(sweep_id)
            return 0
        eprint(f"sweep {sweep_id}: {len(_runs(app, s, sweep_id))} training jobs of model {a.name!r}")
        st = _follow(app, s, sweep_id)
    if a.json:
        print_json(st)
    else:
        _table(st)
    return 0 if st["state"] == JobState.SUCCESS else 1


def _runs(app, s, sweep_id):
    from worker.client import sweep_status
    return sweep_status(app, s, sweep_id)["runs"]


def _follow(app, s, sweep_id, poll=1.0):
    """Wait for a sweep to end, with one line per run as it ends -> its final status. A broker
    outage is ridden out as by `digits watch` (one line; BrokerUnreachable past DIGITS_BROKER_OUTAGE)."""
    from worker.client import FINAL_STATES, sweep_status
    from worker.outage import Outage, say_stderr
    outage = Outage(app.conf.broker_url, s.broker_outage, say_stderr)
    reported = set()
    while True:
        st = outage.call(lambda: sweep_status(app, s, sweep_id))
        if st is None:  # the broker is unreachable: poll again
            time.sleep(poll)
            continue
        for r in st["runs"]:
            if r["state"] in FINAL_STATES and r["job_id"] not in reported:
                reported.add(r["job_id"])
                eprint(f"  {len(reported)}/{len(st['runs'])} {_config(r['config'])}: {r['state']}"
                       + (f" val_accuracy {r['val_accuracy']:.4f}" if r.get("val_accuracy") is not None else ""))
        if st["state"] in FINAL_STATES:
            return st
        time.sleep(poll)


def _config(config):
    return " ".join(f"{k}={v}" for k, v in config.items())


def _table(st):
    best = (st.get("best") or {}).get("job_id")
    print(f"sweep {st['sweep_id']} (model {st['name']}): {st['state']}")
    print(f"  {'run':<40} {'state':<10} {'epoch':>7} {'val_acc':>8} {'version':>7}")
    for r in st["runs"]:
        acc = f"{r['val_accuracy']:.4f}" if r.get("val_accuracy") is not None else "-"
        epoch = f"{r['epoch']}/{r['epochs']}" if r.get("epoch") else "-"
        mark = " *" if r["job_id"] == best else ""
        print(f"  {_config(r['config']):<40} {r['state']:<10} {epoch:>7} {acc:>8} {r.get('version') or '-':>7}{mark}")
    promo = st.get("promotion")
    if promo:
        verdict = "promoted to production" if promo.get("promoted") else "not promoted"
        print(f"best (*): version {st['best']['version']}, {verdict}: {promo.get('reason')}")


def _status(a, s):
    from worker.app import configure
    from worker.client import sweep_status
    from worker.stack import broker
    url = broker.live_broker(s)
    st = sweep_status(configure(url) if url else None, s, a.sweep)
    if a.json:
        print_json(st)
    else:
        _table(st)
    return 0 if st["state"] in (JobState.SUCCESS, JobState.PENDING, JobState.PROGRESS) else 1


LIST_HEADER = ["SWEEP", "MODEL", "STATE", "RUNS", "BEST", "PROMOTED", "SUBMITTED (UTC)"]


def _list(a, s):
    """`digits sweep list`: every sweep, newest first (storage only, like `digits jobs`)."""
    from tasks.sweep import list_sweeps
    from tasks.times import iso, iso_times
    found = list_sweeps(s.storage)
    if a.json:
        print_json(iso_times(found))
        return 0
    if not found:
        print(f"no sweeps under {s.storage}")
        return 0
    rows = [LIST_HEADER]
    for e in found:
        best = f"v{e['best_version']} {e['best_val_accuracy']:.4f}" if e.get("best_val_accuracy") is not None else \
            f"v{e['best_version']}" if e.get("best_version") else "-"
        promoted = "-" if e.get("promoted") is None else "yes" if e["promoted"] else "no"
        rows.append([e["sweep_id"], str(e["name"]), e["state"], f"{e['runs_ended']}/{e['runs']} ended", best,
                     promoted, iso(e.get("submitted_at")) or "-"])
    print_table(rows)
    return 0


def _cancel(a, s):
    from worker.client import cancel_sweep
    asked = cancel_sweep(s, a.sweep)
    print(f"cancel requested for sweep {a.sweep}: {len(asked)} unfinished run(s) stop, finished runs kept")
    return 0
