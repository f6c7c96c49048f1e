"""Sweeps: one training job per configuration of a grid, their joint status, cancelling them."""
import time

from tasks import jobfiles
from tasks.states import JobState
from worker.client.handles import FINAL_STATES, status
from worker.client.staging import stage_data
from worker.client.submission import check_training, submit_training


def submit_sweep(data_ref, name, recipe, grid, *, app, settings, skip_bad=False, overrides=None):
    """Queue one training job per configuration of `grid` ({option: [values]}, on top of
    `recipe` and `overrides`) -> the sweep id. The runs spread over the train workers; the
    best one's version is offered to the promotion gate when the last run ends."""
    from model.train import make_config
    from tasks import events, sweep
    s = settings
    configs = sweep.configurations(grid)
    built = [make_config(recipe, **dict(overrides or {}, **c)) for c in configs]  # all checked first
    check_training(data_ref)
    sweep_id = sweep.new_sweep_id()
    staged = stage_data(s, sweep_id, data_ref, "data")  # once for every run
    job_ids = [jobfiles.new_job_id("train") for _ in configs]
    record = {"sweep_id": sweep_id, "kind": "sweep", "name": name, "data": staged, "recipe": recipe,
              "grid": grid, "configs": configs, "jobs": job_ids, "submitted_at": time.time()}
    jobfiles.write_json(sweep.ref(s.storage, sweep_id, "sweep.json"), record)
    events.sweep_sent(app, record)  # the sweep's row in Flower, before its runs
    for job_id, config in zip(job_ids, built):
        submit_training(staged, name, config, app=app, settings=s, skip_bad=skip_bad, job_id=job_id,
                        sweep=sweep_id)
    return sweep_id


def sweep_status(app, s, sweep_id):
    """A sweep's state and one row per run: {"sweep_id", "state", "name", "runs": [{"job_id",
    "config", "state", "epoch", "epochs", "val_accuracy", "version"}], "best", "promotion"}."""
    from tasks import sweep
    record = sweep.read_sweep(s.storage, sweep_id)
    done = sweep.read_manifest(s.storage, sweep_id)
    runs = []
    for job_id, config in zip(record["jobs"], record["configs"]):
        st = status(app, s, job_id)
        p = st.get("progress") or {}
        runs.append({"job_id": job_id, "config": config, "state": st["state"], "epoch": p.get("epoch"),
                     "epochs": p.get("epochs"), "val_accuracy": st.get("val_accuracy", p.get("val_accuracy")),
                     "version": st.get("version")})
    out = {"sweep_id": sweep_id, "kind": "sweep", "name": record["name"], "runs": runs,
           "submitted_at": record["submitted_at"]}
    if done:
        return dict(out, state=done["state"], best=done["best"], promotion=done["promotion"],
                    finished_at=done["finished_at"])
    ended = sum(r["state"] in FINAL_STATES for r in runs)
    state = JobState.CANCELLING if jobfiles.read_json(sweep.ref(s.storage, sweep_id, "cancel")) else \
        JobState.PROGRESS if ended or any(r["state"] == JobState.PROGRESS for r in runs) else JobState.PENDING
    return dict(out, state=state, best=None, promotion=None)


def cancel_sweep(s, sweep_id):
    """Ask every run of a sweep to stop (finished runs are kept) -> the job ids asked."""
    from tasks import sweep
    record = sweep.read_sweep(s.storage, sweep_id)
    jobfiles.write_json(sweep.ref(s.storage, sweep_id, "cancel"), {"requested_at": time.time()})
    asked = [j for j in record["jobs"] if not jobfiles.read_manifest(s.storage, j)]
    for job_id in asked:
        jobfiles.request_cancel(s.storage, job_id)
    return asked
