"""The rows Flower shows for jobs, read through its authenticated HTTP API on the live stack:
a prediction job's own row (task id = job id) counting its chunks while it runs, then
SUCCESS, FAILURE (a chunk failed for good) or REVOKED (cancelled); its chunks as its
children with their true end states; a training run in the Started filter while it runs
and REVOKED when cancelled; a sweep's row with its runs as children."""
import ast
import os
import re
import uuid

import numpy as np
import pytest
import requests

from model.data.samples import write_sample
from model.train import make_config
from tasks import jobfiles, keys, records, states
from tests.conftest import wait_for, write_test_csv

pytestmark = pytest.mark.integration
AUTH = ("tester", "s3cret-test")
WAIT = 120


def get(live, path, **params):
    return requests.get(live.stack.flower_url + path, auth=AUTH, params=params, timeout=10)


def info(live, task_id):
    """Flower's record of a task, or None while it knows none."""
    r = get(live, f"/api/task/info/{task_id}")
    return r.json() if r.status_code == 200 else None


def ended_row(live, task_id, state):
    """Flower's record of task_id once it is in `state` (a final one)."""
    def ended():
        i = info(live, task_id)
        return i if i and i["state"] == state else None
    return wait_for(ended, 30, f"{task_id} {state} in Flower", poll=0.1)


def submit(live, csv, model, out, **kw):
    from worker.client import submit_prediction
    return submit_prediction(csv, model, str(out), app=live.app, settings=live.settings, **kw)


@pytest.fixture(scope="module")
def csv_10000(sample, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rows")
    return write_test_csv(folder / "in.csv", np.tile(sample["test_x"], (20, 1)))  # 10,000 rows


def test_a_running_job_s_row_counts_its_chunks_then_ends_success(live, csv_10000, trained_model, tmp_path):
    job = submit(live, csv_10000, trained_model[1], tmp_path / "out.csv", chunk_rows=50)  # 200 chunks
    counts, listed_started = [], False
    while job.result() is None:  # until the manifest is written
        row = info(live, job.id)
        assert row is None or row["state"] in ("PENDING", "STARTED", "SUCCESS"), row
        if row and row["state"] == "STARTED":
            m = re.match(r"chunks (\d+)/(\d+) done", row.get("result") or "")
            assert m and int(m.group(2)) == 200, row.get("result")
            counts.append(int(m.group(1)))
            # the dashboard's Active link and the task list's Started filter
            listed_started = listed_started or job.id in get(live, "/api/tasks", state="STARTED").json()
    # it moved while we looked (two chunks marked at once may publish in either order: a
    # count can be followed by the one before it, never by an older one)
    assert len(set(counts)) >= 2 and counts[-1] > counts[0], counts
    assert all(b >= max(counts[:i + 1]) - 1 for i, b in enumerate(counts[1:])), counts
    assert listed_started
    manifest = job.wait(timeout=WAIT)
    row = ended_row(live, job.id, "SUCCESS")
    assert row["name"] == "digits.predict_job" and row["result"] == records.PredictJob.summary(manifest)
    assert row["result"].startswith("10000 rows in: 10000 ok; output ")
    kwargs = ast.literal_eval(row["kwargs"])  # labelled: input, model name:version, output, chunks
    assert kwargs["chunks"] == 200 and kwargs["output"] == str(tmp_path / "out.csv")
    assert kwargs["input"] == csv_10000 and re.fullmatch(r"model\.npz:\w+", kwargs["model"])
    chunk = ended_row(live, keys.chunk_task_id(job.id, 7), "SUCCESS")
    assert (chunk["root_id"], chunk["parent_id"]) == (job.id, job.id)  # linked to the job's row
    assert re.fullmatch(r"'chunk 7/200: \d+ rows, \d+\.\d\ds'", chunk["result"]), chunk["result"]
    assert keys.chunk_task_id(job.id, 7) in ended_row(live, job.id, "SUCCESS")["children"]
    found = get(live, "/api/tasks", search="result:bad").json()
    assert not [t for t in found if t.startswith(job.id)]  # no task of a job without bad rows says "bad"


def test_a_chunk_that_fails_for_good_fails_its_row_and_the_job_s(live, sample, trained_model, tmp_path):
    """Chunk 2's result path is a folder: retried, then failed for good; the job ends PARTIAL."""
    csv = write_test_csv(tmp_path / "in.csv", sample["test_x"])
    job_id = f"blocked-{uuid.uuid4().hex[:8]}"
    os.makedirs(jobfiles.chunk_ref(live.settings.storage, job_id, 2))
    job = submit(live, csv, trained_model[1], tmp_path / "out.csv", job_id=job_id, chunk_rows=60)
    manifest = job.wait(timeout=WAIT)
    assert manifest["state"] == "PARTIAL"
    row = ended_row(live, job_id, "FAILURE")
    assert row["result"] == manifest["error"] + f" ({records.PredictJob.summary(dict(manifest, error=None))})"
    assert row["result"].startswith(f"job {job_id}: 1 chunk(s) failed (2), ") and row["exception"]
    chunk = ended_row(live, keys.chunk_task_id(job_id, 2), "FAILURE")
    assert "chunk 2/" in chunk["exception"] and "failed for good" in chunk["exception"]
    assert chunk["retries"] >= 1 and chunk["args"].startswith(f"job={job_id}, chunk=2/")  # retries keep the labels
    assert ended_row(live, keys.chunk_task_id(job_id, 1), "SUCCESS")
    failed = get(live, "/api/tasks", state="FAILURE").json()
    assert {job_id, keys.chunk_task_id(job_id, 2)} <= set(failed)
    assert live.app.backend.get_task_meta(job_id)["status"] == "FAILURE"  # the job's result key says so too


def test_a_cancelled_job_s_row_and_skipped_chunks_are_revoked(live, csv_10000, trained_model, tmp_path):
    job = submit(live, csv_10000, trained_model[1], tmp_path / "out.csv", chunk_rows=50)
    wait_for(lambda: (info(live, job.id) or {}).get("state") == "STARTED", 30, "the job's row STARTED", poll=0.02)
    job.cancel()
    manifest = job.wait(timeout=WAIT)
    assert manifest["state"] == "CANCELLED" and manifest["rows_skipped"] > 0
    row = ended_row(live, job.id, "REVOKED")
    assert row["result"] == records.PredictJob.summary(manifest) and "skipped" in row["result"]
    marks = {int(k): v for k, v in live.app.backend.client.hgetall(keys.chunk_marks(job.id)).items()}
    skipped = [i for i, m in marks.items() if b'"skipped"' in m]
    assert skipped
    for i in skipped[:5]:
        chunk = ended_row(live, keys.chunk_task_id(job.id, i), "REVOKED")  # never a green SUCCESS
        assert "skipped: the job was cancelled" in chunk["result"]


def test_training_is_started_while_it_runs_and_revoked_when_cancelled(live, tmp_path):
    paths = write_sample(str(tmp_path / "sample"), images=False)
    with open(paths["train"]) as f:
        header, body = f.readline(), f.readlines()
    big = tmp_path / "big.csv"
    big.write_text(header + "".join(body * 8))  # 20,000 rows
    from worker.client import submit_training
    job = submit_training(str(big), "flowercancel", make_config("faithful", epochs=30, batch_size=8),
                          app=live.app, settings=live.settings)

    def running():
        row = info(live, job.id)
        if row and row["state"] == "STARTED" and re.search(r"epoch \d+/30 batch \d+/\d+ loss \d", row["result"] or ""):
            return row
        return None

    wait_for(running, 60, "the training run STARTED with its progress in Flower", poll=0.1)
    assert job.id in get(live, "/api/tasks", state="STARTED").json()  # the Started filter finds it
    job.cancel()
    manifest = job.wait(timeout=WAIT)
    assert manifest["state"] == "CANCELLED"
    row = ended_row(live, job.id, "REVOKED")
    assert "cancelled after" in row["result"] and manifest["checkpoint"] in row["result"]
    assert live.app.backend.get_task_meta(job.id)["status"] == "REVOKED"


def test_a_sweep_has_a_row_whose_children_are_its_runs(live, tmp_path):
    from worker.client import submit_sweep, sweep_status
    train = write_sample(str(tmp_path / "sample"), images=False)["train"]
    sweep_id = submit_sweep(train, "flowersweep", "faithful", {"lr": [0.1, 0.05], "epochs": [1]}, app=live.app,
                            settings=live.settings)
    wait_for(lambda: sweep_status(live.app, live.settings, sweep_id)["state"] in states.FINAL, WAIT,
             "the sweep's end", poll=0.5)
    st = sweep_status(live.app, live.settings, sweep_id)
    assert st["state"] == "SUCCESS"
    row = ended_row(live, sweep_id, "SUCCESS")
    assert row["name"] == "digits.sweep" and row["result"].startswith("SUCCESS: 2 runs; best flowersweep:")
    runs = [r["job_id"] for r in st["runs"]]
    for run in runs:
        r = ended_row(live, run, "SUCCESS")
        assert (r["root_id"], r["parent_id"]) == (sweep_id, sweep_id) and f"sweep={sweep_id}" in r["args"]
    assert set(runs) <= set(row["children"])
