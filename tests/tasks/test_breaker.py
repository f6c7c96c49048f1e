"""The job-wide circuit breaker (tasks/breaker.py), drilled on a real full disk: a drill
stack whose storage is a small tmpfs, filled in the middle of a 1,000-chunk job. The job
stops early as PARTIAL within a minute (instead of retrying each chunk for a minute, hours
in all), `digits status` says why while it happens, and every row predicted before the disk
filled is in the output, exactly."""
import contextlib
import errno
import os
import subprocess
import shutil
import time
import uuid

import numpy as np
import pytest

from tasks import deliveries, jobfiles
from tests.conftest import wait_for
from tests.tasks.faultstack import drill_stack
from tests.tasks.test_predict_jobs import chunk_row_ranges, fast_csv, local_predict, read_submission
from worker.client import status, submit_prediction
from worker.cli.progress import wait as cli_wait

pytestmark = pytest.mark.integration
CHUNK_ROWS = 20  # 20,000 rows: 1,000 chunks


@contextlib.contextmanager
def small_disk(path, size="16m"):
    """A tmpfs of `size` mounted at path (root only) -> path; unmounted at exit."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder):
    """Write a file in folder until the disk is full -> its path."""
    path = os.path.join(folder, "filler")
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)
    with pytest.raises(OSError) as e, open(os.path.join(folder, "probe"), "wb", buffering=0) as f:
        f.write(b"\0" * 4096)
    assert e.value.errno == errno.ENOSPC
    return path


def test_a_full_disk_stops_a_1000_chunk_job_early_with_its_reason(stack_env, sample, trained_model, tmp_path,
                                                                  capfd):
    model_path = trained_model[1]
    csv = fast_csv(tmp_path / "20000.csv", sample["test_x"], repeat=40)
    local_predict(csv, model_path, tmp_path / "local.csv", chunk_rows=CHUNK_ROWS)
    _, local_labels = read_submission(tmp_path / "local.csv")
    with small_disk(tmp_path / "disk") as disk, drill_stack(tmp_path / "home", storage=disk / "storage") as live:
        job_id = f"full-disk-{uuid.uuid4().hex[:8]}"
        job = submit_prediction(csv, model_path, str(tmp_path / "out.csv"), app=live.app, settings=live.settings,
                                chunk_rows=CHUNK_ROWS, job_id=job_id)
        ranges = chunk_row_ranges(live, job_id)
        assert len(ranges) == 1000
        wait_for(lambda: jobfiles.chunks_done(live.settings.storage, job_id) >= 50, 120, "50 chunks done")
        filler = fill(str(disk))
        full_at = time.monotonic()
        why = wait_for(lambda: status(live.app, live.settings, job_id).get("stopping"), 60, "the job to stop early")
        tripped_after = time.monotonic() - full_at
        assert "chunks in a row failed with No space left on device" in why
        cli = subprocess.run([shutil.which("digits"), "status", job_id], capture_output=True, text=True, timeout=60)
        assert why in cli.stdout, cli.stdout + cli.stderr
        assert jobfiles.read_manifest(live.settings.storage, job_id) is None, "the job ended before its client waited"
        os.unlink(filler)  # room for the manifest again: an operator freeing the disk
        capfd.readouterr()
        m = cli_wait(job, "predict")  # the waiting client says why, once
        took = time.monotonic() - full_at
        assert capfd.readouterr().err.count(why) == 1
        runs = deliveries.chunk_runs(live.app.backend.client, job_id)
    print(f"full disk: breaker tripped {tripped_after:.1f}s after the disk filled, job {m['state']} after {took:.1f}s")
    assert m["state"] == "PARTIAL" and took < 60
    failed = {f["chunk"] for f in m["failed_chunks"]}
    assert len(failed) == len(m["failed_chunks"]) and len(failed) <= 1000 - 50
    ok_ids = np.concatenate([np.arange(lo, hi + 1) for i, (lo, hi) in enumerate(ranges) if i not in failed])
    ids, labels = read_submission(tmp_path / "out.csv")
    np.testing.assert_array_equal(ids, ok_ids)  # the rows of every chunk done, once, in order
    np.testing.assert_array_equal(labels, local_labels[ok_ids - 1])
    assert m["rows_in"] == 20000 and m["rows_ok"] == len(ok_ids) and m["rows_failed"] == 20000 - len(ok_ids)
    reasons = {f["reason"] for f in m["failed_chunks"]}
    assert why in reasons and all("No space left on device" in x for x in reasons)
    # the chunks failed by the breaker did not run: only those that hit the full disk did
    assert sum(1 for i in failed if runs.get(i)) < 20
