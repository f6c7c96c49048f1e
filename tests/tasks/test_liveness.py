"""Liveness drills on a drill stack (tests/tasks/faultstack.py): a pool process frozen
(SIGSTOP) in the middle of a chunk and never resumed; a whole worker frozen while the
watchdog requeues its work, then resumed. Nothing is lost, nothing doubled, and the
requeue does not cascade into duplicates (tasks/window.py)."""
import signal
import socket
import time
import uuid

import numpy as np
import psutil
import pytest

from model.data import sources
from tasks import deliveries, jobfiles, keys
from tests.conftest import wait_for
from tests.tasks.faultstack import hits, plan
from tests.tasks.test_predict_jobs import fast_csv, local_predict, read_submission
from worker import services
from worker.client import submit_prediction
from worker.watchdog import Watchdog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inputs(sample, trained_model, tmp_path_factory):
    """A 20,000-row test CSV and its uninterrupted in-process output (chunks of 100 rows)."""
    d = tmp_path_factory.mktemp("liveness")
    path = fast_csv(d / "20000.csv", sample["test_x"], repeat=40)
    local_predict(path, trained_model[1], d / "local.csv", chunk_rows=100)
    return {"csv": path, "local": read_submission(d / "local.csv"), "model": trained_model[1]}


def submit(live, inputs, out, job_id, chunk_rows=100):
    return submit_prediction(inputs["csv"], inputs["model"], str(out), app=live.app, settings=live.settings,
                             chunk_rows=chunk_rows, job_id=job_id)


def assert_exact(out, inputs):
    ids, labels = read_submission(out)
    np.testing.assert_array_equal(ids, np.arange(1, 20001))  # every row exactly once, in order
    np.testing.assert_array_equal(labels, inputs["local"][1])


def test_a_pool_process_frozen_mid_chunk_does_not_hold_the_job(fault_stack, inputs, tmp_path):
    live = fault_stack
    job_id, victim = f"frozen-{uuid.uuid4().hex[:8]}", 3
    tid = keys.chunk_task_id(job_id, victim)
    plan(live, {tid: "stop"})  # once: the process stops itself inside the chunk, never resumed here
    job = submit(live, inputs, tmp_path / "out.csv", job_id, chunk_rows=500)
    frozen = wait_for(lambda: hits(live, tid, "stop"), 60, "the chunk's process to freeze")[0]
    t0 = time.monotonic()
    m = job.wait(timeout=120)
    took = time.monotonic() - t0
    print(f"frozen pool process: job ended {m['state']} {took:.1f}s after the freeze")
    assert m["state"] == "SUCCESS" and took < 120
    assert_exact(tmp_path / "out.csv", inputs)
    assert not psutil.pid_exists(frozen) or psutil.Process(frozen).status() == psutil.STATUS_ZOMBIE
    runs = deliveries.chunk_runs(live.app.backend.client, job_id)
    assert runs.pop(victim) == 2  # the frozen delivery (killed at the time limit) and its requeued copy
    assert set(runs.values()) == {1}


def test_a_requeue_after_a_frozen_worker_doubles_nothing_and_cascades_nothing(fault_stack, inputs, tmp_path):
    """The whole predict worker frozen mid-chunk; the watchdog requeues what it held to a
    second worker; the frozen one resumes once its chunk was marked by the copy and marks it
    again: no chunk is predicted twice beyond the requeued ones."""
    live = fault_stack
    host = socket.gethostname()
    live.stack._spawn("worker-predict-2", services.worker_argv("predict", 1, f"predict2@{host}"))
    try:
        wait_for(lambda: any(f"predict2@{host}" in r for r in live.app.control.ping(timeout=0.5) or []), 60,
                 "the second worker")
        job_id, victim = f"requeue-{uuid.uuid4().hex[:8]}", 20
        tid = keys.chunk_task_id(job_id, victim)
        plan(live, {tid: "stop"})
        job = submit(live, inputs, tmp_path / "out.csv", job_id)
        pool_process = wait_for(lambda: hits(live, tid, "stop"), 60, "the chunk's process to freeze")[0]
        worker = psutil.Process(pool_process).parent()  # either worker: the other takes the requeued work
        frozen = [worker] + worker.children(recursive=True)
        for p in frozen:
            p.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            dog, requeued = Watchdog(live.app, grace=1.0, census_timeout=0.5), []
            marks = live.app.backend.client

            def requeued_victim():
                requeued.extend(tid for _, tid in dog.scan())
                return tid in requeued
            wait_for(requeued_victim, 60, "the watchdog to requeue the frozen worker's chunk", poll=0.5)
            wait_for(lambda: marks.hexists(keys.chunk_marks(job_id), victim), 60, "the copy's mark")
        finally:
            for p in frozen:
                p.send_signal(signal.SIGCONT)
        print(f"frozen worker: {len(requeued)} task(s) requeued in {time.monotonic() - t0:.1f}s")
        m = job.wait(timeout=120)
        assert m["state"] == "SUCCESS"
        assert_exact(tmp_path / "out.csv", inputs)
        # the frozen delivery of the victim went on after it woke up
        wait_for(lambda: deliveries.chunk_runs(marks, job_id)[victim] == 2 and
                 int(marks.hget(keys.chunk_deliveries(job_id), f"ended:{victim}") or 0) == 2, 30,
                 "the woken delivery to end")
        again = {keys.chunk_task_id(job_id, i) for i in range(200)} & set(requeued)
        runs = deliveries.chunk_runs(marks, job_id)
        twice = {i: n for i, n in runs.items() if n > 1}
        assert all(keys.chunk_task_id(job_id, i) in again and n == 2 for i, n in twice.items()), twice
        assert len(runs) == len(sources.from_dict(jobfiles.read_json(jobfiles.ref(live.settings.storage, job_id,
                                                                         "plan.json"))).chunks)
    finally:
        live.stack._terminate(["worker-predict-2"], signal.SIGTERM, 10)
