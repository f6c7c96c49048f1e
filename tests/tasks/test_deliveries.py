"""Poison drills on a drill stack (tests/tasks/faultstack.py): a chunk whose pool process is
SIGKILLed on every delivery, a training run killed on every delivery. Each ends in minutes,
failed with the reason, with every other row exact and no chunk run twice."""
import os
import signal
import threading
import time
import uuid

import numpy as np
import psutil
import pytest

from tasks import deliveries, jobfiles, keys
from tests.tasks.faultstack import hits, plan
from tests.tasks.test_predict_jobs import chunk_row_ranges, fast_csv, local_predict, read_rows, read_submission
from worker.client import status, submit_prediction, submit_training
from model.train import make_config

pytestmark = pytest.mark.integration
CHUNK_ROWS = 250


@pytest.fixture(scope="module")
def csv_5000(sample, tmp_path_factory):
    return fast_csv(tmp_path_factory.mktemp("poison") / "5000.csv", sample["test_x"], repeat=10)


def test_a_chunk_that_kills_its_process_on_every_delivery_ends_the_job_partial(fault_stack, csv_5000,
                                                                               trained_model, tmp_path):
    live, model_path = fault_stack, trained_model[1]
    local_predict(csv_5000, model_path, tmp_path / "local.csv", chunk_rows=CHUNK_ROWS)
    job_id, victim = f"poison-{uuid.uuid4().hex[:8]}", 7
    plan(live, {keys.chunk_task_id(job_id, victim): "kill"})
    t0 = time.monotonic()
    job = submit_prediction(csv_5000, model_path, str(tmp_path / "out.csv"), app=live.app,
                            settings=live.settings, chunk_rows=CHUNK_ROWS, job_id=job_id)
    m = job.wait(timeout=180)
    took = time.monotonic() - t0
    print(f"poison chunk: job ended {m['state']} in {took:.1f}s")
    reason = deliveries.poison_reason(3)
    assert m["state"] == "PARTIAL" and took < 180
    assert len(hits(live, keys.chunk_task_id(job_id, victim), "kill")) == 3  # three real SIGKILLs
    assert [(f["chunk"], f["reason"]) for f in m["failed_chunks"]] == [(victim, reason)]
    assert reason in m["error"] and reason in status(live.app, live.settings, job_id)["error"]
    ranges = chunk_row_ranges(live, job_id)
    lo, hi = ranges[victim]  # the victim's ImageIds
    ids, labels = read_submission(tmp_path / "out.csv")
    others = np.r_[1:lo, hi + 1:5001]
    np.testing.assert_array_equal(ids, others)  # every other row exactly once, in order
    _, local_labels = read_submission(tmp_path / "local.csv")
    np.testing.assert_array_equal(labels, local_labels[others - 1])
    _, errors = read_rows(tmp_path / "out.errors.csv")
    assert [int(r[0]) for r in errors] == list(range(lo, hi + 1))
    assert all(r[1] == f"chunk {victim} failed: {reason}" for r in errors)
    assert (m["rows_in"], m["rows_ok"], m["rows_failed"]) == (5000, 5000 - (hi - lo + 1), hi - lo + 1)
    runs = deliveries.chunk_runs(live.app.backend.client, job_id)
    assert runs.pop(victim) == 4  # three that died, the fourth failed it without running
    assert runs == {i: 1 for i in range(len(ranges)) if i != victim}  # no other chunk ran twice


def kill_first_deliveries(live, job_id, n, stop):
    """SIGKILL the process running training job_id as each of its first n deliveries begins
    (its poison counter moves): the OOM killer's way -> the PIDs killed."""
    r, killed, seen = live.app.backend.client, [], 0
    while len(killed) < n and not stop.is_set():
        begun = int(r.hget(keys.train_deliveries(job_id), "begun") or 0)
        owner = (r.get(keys.lock_owner(job_id)) or b"").decode().rpartition(":")[2]
        if begun > seen and owner.isdigit() and int(owner) not in killed and psutil.pid_exists(int(owner)):
            os.kill(int(owner), signal.SIGKILL)
            killed.append(int(owner))
            seen = begun
        time.sleep(0.005)
    return killed


def test_a_training_job_killed_on_every_delivery_ends_failed_and_resumes_by_its_id(fault_stack, tmp_path):
    from model.data.samples import write_sample
    live = fault_stack
    data = write_sample(str(tmp_path / "sample"), images=False)["train"]
    job_id = f"train-poison-{uuid.uuid4().hex[:8]}"
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=lambda: killed.extend(kill_first_deliveries(live, job_id, 3, stop)))
    watcher.start()
    t0 = time.monotonic()
    try:
        job = submit_training(data, "poisoned", make_config("default", epochs=2), app=live.app,
                              settings=live.settings, job_id=job_id)
        with pytest.raises(Exception, match=r"killed its worker 3 times \(out of memory\?\)"):
            job.wait(timeout=180)
    finally:
        stop.set()
        watcher.join()
    print(f"poison training job: FAILURE in {time.monotonic() - t0:.1f}s")
    assert len(killed) == 3
    m = jobfiles.read_manifest(live.settings.storage, job_id)
    assert m["state"] == "FAILURE" and m["error"] == f"job {job_id}: {deliveries.poison_reason(3)}"
    assert status(live.app, live.settings, job_id)["error"] == m["error"]
    # resubmitted by its id (the process no longer dies), it runs to the end
    job = submit_training(data, "poisoned", make_config("default", epochs=2), app=live.app,
                          settings=live.settings, job_id=job_id)
    assert job.wait(timeout=180)["state"] == "SUCCESS"
