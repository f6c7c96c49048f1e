"""tasks.events against a real Redis (no workers): the job's result key and the row's fields."""
from types import SimpleNamespace

import pytest

from tasks import events


@pytest.fixture()
def app(tmp_path, monkeypatch):
    from tests.conftest import start_redis
    from worker import settings
    from worker.app import make_app
    sock = tmp_path / "r.sock"
    proc = start_redis(sock)
    url = f"redis+socket://{sock}"
    monkeypatch.setenv("DIGITS_RESULT_BACKEND", url)
    yield make_app(settings.load(), url)
    proc.kill()
    proc.wait()


JOB = {"job_id": "predict-e1", "chunks": 10, "submitted_at": 0.0, "input": "/in.csv", "output": "/o.csv",
       "download_to": "/home/o.csv", "model": {"name": "digits", "registry_version": "4", "version": "ab12"}}


def test_progress_is_stored_under_the_job_id_until_the_job_has_ended(app):
    task = SimpleNamespace(app=app, request=SimpleNamespace(hostname="predict@h"))
    p = events.job_progress(task, JOB, {"done": 4, "failed": 1}, retrying=2)
    assert (p["chunks_done"], p["failed"], p["retrying"], p["chunks"]) == (4, 1, 2, 10)
    assert p["eta_seconds"] is not None  # 5 of 10 ended since the epoch: measured
    meta = app.backend.get_task_meta("predict-e1")
    assert meta["status"] == "STARTED" and meta["result"] == p
    manifest = {"job_id": "predict-e1", "state": "SUCCESS", "rows_in": 10, "rows_ok": 10, "output": "/o.csv",
                "timings": {"wall_seconds": 1.0}}
    events.job_ended(task, JOB, manifest)
    events.job_progress(task, JOB, {"done": 9})  # a chunk's mark arriving after the end
    meta = app.backend.get_task_meta("predict-e1")
    assert meta["status"] == "SUCCESS" and meta["result"] == "10 rows in: 10 ok; output /o.csv; 1.0s"


def test_a_partial_job_is_a_failure_and_a_cancelled_one_revoked_under_its_id(app):
    task = SimpleNamespace(app=app, request=SimpleNamespace(hostname="predict@h"))
    partial = {"job_id": "predict-e1", "state": "PARTIAL", "rows_in": 10, "rows_ok": 5, "rows_failed": 5,
               "output": "/o.csv", "error": "job predict-e1: 1 chunk(s) failed (3), 5 records not predicted: x"}
    events.job_ended(task, JOB, partial)
    meta = app.backend.get_task_meta("predict-e1")
    assert meta["status"] == "FAILURE" and str(meta["result"]).startswith("job predict-e1: 1 chunk(s) failed (3)")
    events.job_ended(task, dict(JOB, job_id="predict-e2"), dict(partial, job_id="predict-e2", state="CANCELLED",
                                                                error=None, rows_failed=0, rows_skipped=5))
    assert app.backend.get_task_meta("predict-e2")["status"] == "REVOKED"


def test_a_row_names_its_model_and_labels_its_arguments():
    row = events.predict_row(JOB)
    assert row["name"] == "digits.predict_job" and row["root_id"] == "predict-e1"
    assert row["kwargs"] == "{'input': '/in.csv', 'model': 'digits:4', 'output': '/home/o.csv', 'chunks': 10}"
    assert events.model_label({"ref": "/m/model.npz", "version": "a81c1f82530bef29"}) == "model.npz:a81c1f82530b"
