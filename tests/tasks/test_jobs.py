"""tasks.records, tasks.jobfiles and tasks.index: the typed records, their manifests and Flower summaries, and the jobs index
(real storage in a temporary folder; no stack)."""
import json
import time

import pytest

from model import storage
from model.errors import JobError
from tasks import index, jobfiles, records, states, times
from tasks.states import JobState


def predict_record(job_id="predict-1", submitted_at=1000.0, **kw):
    return records.PredictJob(job_id=job_id, input="/in/test.csv", output="/out/sub.csv", download_to="/out/sub.csv",
                           model={"ref": "/m.npz", "version": "abc", "name": "digits", "registry_version": "3"},
                           chunks=4, input_kind="csv", window=4, submitted_at=submitted_at, **kw)


def test_records_round_trip_and_read_older_records(tmp_path):
    root = str(tmp_path)
    rec = predict_record()
    rec.write(root)
    assert records.load(root, "predict-1") == rec
    assert records.read_job(root, "predict-1")["kind"] == "predict"
    # a record written by an older version or by hand, with fields missing: defaults fill them
    old = records.record_from_dict({"job_id": "predict-old", "kind": "predict", "chunks": 3, "output": "/x.csv"})
    assert old.user_output == "/x.csv" and old.window is None
    train = records.TrainJob.new("train-1", "digits", "/d.csv", {"recipe": "faithful", "epochs": 3})
    assert train.output == "models/digits" and train.kind == "train"
    with pytest.raises(JobError, match="unknown kind"):
        records.record_from_dict({"job_id": "x", "kind": "nope"})
    with pytest.raises(JobError, match="unknown job"):
        records.load(root, "missing")


def test_parser_states_are_the_records_states():
    from worker.cli.parser import STATES
    assert STATES == states.RECORDED


def test_train_summary_is_short_and_says_the_outcome():
    history = [{"epoch": i, "train_loss": 0.1, "val_accuracy": 0.9 + i / 1000, "val_loss": 0.2,
                "train_accuracy": 0.95, "lr": 0.05, "seconds": 1.0} for i in range(1, 46)]
    rec = records.TrainJob.new("train-1", "digits", "/d.csv", {"recipe": "default", "epochs": 45})
    registered = {"version": "4", "path": "/s/models/digits/4", "model": "/s/models/digits/4/model.npz",
                  "report": "/s/models/digits/4/report.html",
                  "promotion": {"promoted": False, "reason": "val_accuracy 0.9450 < production version 3 0.9900"}}
    manifest = rec.manifest(JobState.SUCCESS, history, skipped_records=0, seconds=12.5, registered=registered)
    assert manifest["val_accuracy"] == history[-1]["val_accuracy"] and manifest["epochs_done"] == 45
    summary = records.TrainJob.summary(dict(manifest, name="digits"))
    assert len(repr(summary)) < 400 < len(repr(manifest))  # Flower cuts a result at about 1,000 characters
    assert summary == ("digits:4 val_accuracy 0.9450, not promoted (val_accuracy 0.9450 < production version 3 "
                       "0.9900); 45 epochs, 12s; report /s/models/digits/4/report.html")  # rounded, no "0 skipped"
    skipped = records.TrainJob.summary(dict(manifest, name="digits", skipped_records=3))
    assert "45 epochs, 3 skipped records, 12s" in skipped
    cancelled = records.TrainJob.summary(dict(manifest, state=JobState.CANCELLED, checkpoint="/s/jobs/t/state.npz"))
    assert cancelled == "cancelled after 45 epochs, 12s; checkpoint /s/jobs/t/state.npz"
    assert records.TrainJob.summary({"state": JobState.FAILURE, "error": "disk full"}) == "failed: disk full"
    lines = records.TrainJob.result_lines(dict(manifest, name="digits"))
    assert lines[0] == ("model digits version 4: val_accuracy 0.9450; not promoted (val_accuracy 0.9450 < "
                        "production version 3 0.9900)")
    promoted = records.TrainJob.promotion_text({"promoted": True, "reason": "first version: no production model yet"})
    assert promoted == "promoted to production (first version: no production model yet)"


def test_progress_text_is_one_format():
    p = {"epoch": 3, "epochs": 10, "batch": 400, "batches": 844, "loss": 0.08123, "val_accuracy": 0.97414,
         "eta_seconds": 125.0}
    assert records.TrainJob.progress_text(p) == "epoch 3/10 batch 400/844 loss 0.0812 val_accuracy 0.9741 eta 2m05s"
    assert records.TrainJob.bar(p) == (2 * 844 + 400, 8440)
    assert records.PredictJob.progress_text({"chunks_done": 2, "chunks": 5}) == "chunks 2/5 done"
    assert records.PredictJob.progress_text({"chunks_done": 47, "chunks": 101, "failed": 0, "retrying": 1, "skipped": 0,
                                          "eta_seconds": 6.2}) == "chunks 47/101 done, 1 retrying, eta 6.2s"


def test_a_prediction_summary_puts_key_facts_first_and_leaves_zero_counts_out():
    m = {"rows_in": 10000, "rows_ok": 9998, "rows_bad": 2, "rows_failed": 0, "rows_skipped": 0,
         "output": "/o.csv", "timings": {"wall_seconds": 3.21}}
    assert records.PredictJob.summary(m) == "10000 rows in: 9998 ok, 2 bad; output /o.csv; 3.2s"
    partial = dict(m, rows_ok=9000, rows_bad=0, rows_failed=1000, error="job j: 1 chunk(s) failed (3), ...")
    assert records.PredictJob.summary(partial) == ("job j: 1 chunk(s) failed (3), ... (10000 rows in: 9000 ok, "
                                                "1000 failed; output /o.csv; 3.2s)")


def test_a_chunk_line_puts_key_facts_first():
    from tasks.predict import chunk_line
    assert chunk_line(3, 101, {"state": "done", "rows": 10000, "bad": 0, "seconds": 0.2412}) == \
        "chunk 3/101: 10000 rows, 0.24s"
    assert chunk_line(3, 101, {"state": "done", "rows": 10000, "bad": 2, "seconds": 0.2}) == \
        "chunk 3/101: 10000 rows, 2 bad, 0.20s"
    assert chunk_line(3, 101, {"state": "failed", "reason": "disk full"}) == "chunk 3/101 failed for good: disk full"
    assert chunk_line(3, 101, {"state": "skipped"}) == "chunk 3/101 skipped: the job was cancelled"
    from tasks.train import progress_text
    assert progress_text is records.TrainJob.progress_text  # what Flower's Result field shows


def test_iso_times():
    st = {"submitted_at": 0, "finished_at": 86400.5, "promotion": {"decided_at": "2024-01-01T00:00:00+00:00"},
          "rows_at": "x", "flag_at": True}
    out = times.iso_times(st)
    assert out["submitted_at"] == "1970-01-01T00:00:00+00:00" and out["finished_at"] == "1970-01-02T00:00:00+00:00"
    assert out["promotion"] == st["promotion"] and out["rows_at"] == "x" and out["flag_at"] is True


def test_index_is_written_at_submit_and_end_newest_first(tmp_path):
    root = str(tmp_path)
    first, second = predict_record("predict-a", 1000.0), predict_record("predict-b", 2000.0)
    first.write(root)
    second.write(root)
    assert [e["job_id"] for e in index.list_index(root)] == ["predict-b", "predict-a"]
    assert index.list_index(root)[1]["state"] == JobState.PENDING
    counts = {"rows_in": 10, "rows_ok": 9, "rows_bad": 1, "rows_failed": 0, "rows_skipped": 0,
              "failed_chunks": [], "output": "/out/sub.csv", "errors": None}
    records.write_manifest(root, "predict-a", first.manifest(counts, JobState.SUCCESS, 4, 1.0, 0.1))
    entry = {e["job_id"]: e for e in index.list_index(root)}["predict-a"]
    assert (entry["state"], entry["rows_in"], entry["rows_bad"], entry["model"], entry["version"]) == \
        ("SUCCESS", 10, 1, "digits", "3")
    records.reopen(root, "predict-a")
    assert {e["job_id"]: e for e in index.list_index(root)}["predict-a"]["state"] == JobState.PENDING
    jobfiles.clear(root, "predict-a")
    assert [e["job_id"] for e in index.list_index(root)] == ["predict-b"]


def test_a_job_without_an_index_entry_gets_one(tmp_path):
    """Jobs written before the index existed (or whose entry was lost) are listed too."""
    root = str(tmp_path)
    rec = records.TrainJob.new("train-old", "digits", "/d.csv", {"recipe": "faithful", "epochs": 2})
    jobfiles.write_json(jobfiles.ref(root, rec.job_id, "job.json"), rec.to_dict())  # no index entry
    jobfiles.write_json(jobfiles.ref(root, rec.job_id, "manifest.json"), rec.failure_manifest("boom"))
    storage.write_text(jobfiles.index_ref(root, "train-broken"), "{not json")  # a damaged entry is ignored
    entries = index.list_index(root)
    assert [(e["job_id"], e["state"], e["error"]) for e in entries] == [("train-old", "FAILURE", "boom")]
    assert storage.exists(jobfiles.index_ref(root, "train-old"))


def test_many_jobs_list_in_one_pass(tmp_path):
    """1,000 entries come back complete and in order (bench/bench_jobs.py times this)."""
    root = str(tmp_path)
    now = time.time()
    for i in range(1000):
        jobfiles.write_json(jobfiles.index_ref(root, f"predict-{i:04d}"),
                        predict_record(f"predict-{i:04d}", now - i).index_entry())
    entries = index.list_index(root)
    assert [e["job_id"] for e in entries] == [f"predict-{i:04d}" for i in range(1000)]
    assert json.loads(json.dumps(entries)) == entries


def test_chunk_results_are_read_under_their_earlier_name_too(tmp_path):
    """A job that ran across an upgrade has chunk results named <n>.npz, in the .npz form."""
    import io

    import numpy as np

    from model import batch
    root = str(tmp_path)
    new = batch.ChunkResult(np.array([1, 2], np.int16), np.array([0.5, 0.25], np.float32), {}, {})
    storage.write_bytes(jobfiles.chunk_ref(root, "j1", 0), new.to_bytes())
    buf = io.BytesIO()
    np.savez(buf, labels=np.array([7], np.int16), confidence=np.array([0.75], np.float32),
             errors=np.array("{}"), notes=np.array("{}"))
    storage.write_bytes(jobfiles.chunk_ref(root, "j1", 1, ".npz"), buf.getvalue())
    assert batch.ChunkResult.from_bytes(jobfiles.read_chunk(root, "j1", 0)).labels.tolist() == [1, 2]
    assert batch.ChunkResult.from_bytes(jobfiles.read_chunk(root, "j1", 1)).labels.tolist() == [7]
    assert jobfiles.chunks_done(root, "j1") == 2
    storage.write_bytes(jobfiles.chunk_ref(root, "j1", 1), new.to_bytes())  # chunk 1 run again since
    assert jobfiles.chunks_done(root, "j1") == 2
    assert batch.ChunkResult.from_bytes(jobfiles.read_chunk(root, "j1", 1)).labels.tolist() == [1, 2]
    with pytest.raises(Exception, match=r"000002\.result"):  # the current name in the error
        jobfiles.read_chunk(root, "j1", 2)
