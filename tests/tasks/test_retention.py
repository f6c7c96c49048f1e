"""tasks.retention (digits gc): what goes, what always stays. Real storage in a temporary
folder; the result-backend part against the live stack's Redis."""
import os
import time

import pytest

from model import storage
from tasks import index, jobfiles, keys, records
from tasks.retention import collect, summary_line
from tasks.states import JobState

DAY = 86400


def make_job(root, job_id, ended_days_ago=None, kind="predict", output=None):
    """A job with chunk files, a training state and an uploaded input; ended that many
    days ago (None: still running)."""
    now = time.time()
    submitted = now - (ended_days_ago or 0) * DAY - 60
    if kind == "predict":
        rec = records.PredictJob(job_id=job_id, input=storage.join(root, "inputs", job_id, "input.csv"),
                              output=output or f"/elsewhere/{job_id}.csv", chunks=2, submitted_at=submitted)
        for i in range(2):
            storage.write_bytes(jobfiles.chunk_ref(root, job_id, i), b"x" * 1000)
    else:
        rec = records.TrainJob(job_id=job_id, name="digits", data=storage.join(root, "inputs", job_id, "data.csv"),
                            config={"recipe": "faithful", "epochs": 1}, submitted_at=submitted,
                            output="models/digits")
        storage.write_bytes(jobfiles.ref(root, job_id, "state.npz"), b"s" * 5000)
    storage.write_bytes(storage.join(root, "inputs", job_id, "input.csv"), b"i" * 2000)
    rec.write(root)
    if ended_days_ago is not None:
        manifest = rec.failure_manifest("x") if kind == "train" else rec.base_manifest(JobState.SUCCESS)
        manifest["finished_at"] = now - ended_days_ago * DAY
        records.write_manifest(root, job_id, manifest)
    return rec


@pytest.fixture()
def root(tmp_path):
    return str(tmp_path / "storage")


def test_removes_old_jobs_leftovers_and_keeps_the_rest(root):
    make_job(root, "predict-old", ended_days_ago=10)
    make_job(root, "train-old", ended_days_ago=9, kind="train")
    make_job(root, "predict-recent", ended_days_ago=1)
    make_job(root, "predict-running")
    model = storage.join(root, "models", "digits", "1", "model.npz")
    storage.write_bytes(model, b"m" * 100)

    dry = collect(root, 7 * DAY, dry_run=True)
    assert {(r["job_id"], r["what"]) for r in dry["removed"]} == {
        ("predict-old", "chunk files"), ("predict-old", "uploaded input"),
        ("train-old", "training state"), ("train-old", "uploaded input")}
    assert dry["bytes"] == 2000 + 2000 + 5000 + 2000 and storage.exists(jobfiles.chunk_ref(root, "predict-old", 0))
    assert summary_line(dry).startswith("would remove the chunk files of 1 job(s) (2 files), the training state "
                                        "of 1 job(s) (1 files), the uploaded input of 2 job(s) (2 files)")

    done = collect(root, 7 * DAY)
    assert done["removed"] == dry["removed"] and done["jobs"] == 2 and not done["redis_checked"]
    assert not storage.exists(storage.join(root, "jobs", "predict-old", "chunks"))
    assert not storage.exists(jobfiles.ref(root, "train-old", "state.npz"))
    assert not storage.exists(storage.join(root, "inputs", "predict-old"))
    for kept in (jobfiles.chunk_ref(root, "predict-recent", 0), jobfiles.chunk_ref(root, "predict-running", 0),
                 storage.join(root, "inputs", "predict-running", "input.csv"), model,
                 jobfiles.ref(root, "predict-old", "job.json"), jobfiles.ref(root, "predict-old", "manifest.json")):
        assert storage.exists(kept), kept
    assert {e["job_id"] for e in index.list_index(root)} == {"predict-old", "train-old", "predict-recent",
                                                           "predict-running"}  # still listed
    assert collect(root, 7 * DAY)["removed"] == []  # nothing twice
    # a running job is never touched, however old its submission
    assert all(r["job_id"] != "predict-running" for r in collect(root, 0)["removed"])


def test_an_output_inside_a_target_is_kept(root):
    inside = storage.join(root, "inputs", "predict-out", "result.csv")  # the user's --out, by bad luck there
    make_job(root, "predict-out", ended_days_ago=30, output=inside)
    storage.write_text(inside, "ImageId,Label\n")
    report = collect(root, 7 * DAY)
    assert [r["what"] for r in report["removed"]] == ["chunk files"]
    assert report["skipped"][0]["path"] == storage.join(root, "inputs", "predict-out")
    assert storage.exists(inside)


@pytest.mark.integration
def test_result_backend_keys_left_behind_are_removed(live, tmp_path):
    root = str(tmp_path / "storage")
    job_id = f"predict-gc-{os.getpid()}"
    rec = make_job(root, job_id, ended_days_ago=10)
    r = live.app.backend.client
    left = [keys.task_meta(job_id), keys.task_meta(keys.chunk_task_id(job_id, 1)), keys.chunk_marks(job_id)]
    for k in left:
        r.set(k, "{}")  # no expiry: what Celery's expiry would leave behind
    r.set(keys.output_owner(rec.output), job_id)
    other = keys.task_meta("someone-elses-task")
    r.set(other, "{}")
    try:
        report = collect(root, 7 * DAY, redis=r, dry_run=True)
        assert sorted(report["keys"]) == sorted(left + [keys.output_owner(rec.output)])
        assert all(r.exists(k) for k in left)
        collect(root, 7 * DAY, redis=r)
        assert not any(r.exists(k) for k in left) and r.get(keys.output_owner(rec.output)) is None
        assert r.exists(other)
    finally:
        r.delete(other, *left)
