"""Bulk prediction through the real queue: a running Redis, two predict worker processes.

Every job here is checked against the in-process path (model.batch plan / predict_chunk /
assemble, what `digits predict --local` runs) on the same file.
"""
import csv
import hashlib
import io
import os
import signal
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from model import batch, checkpoint, storage
from model.data import sources
from model.data.block import PIXEL_COLUMNS
from model.errors import ConfigError, JobError
from tasks import jobfiles, keys, records
from tests.conftest import wait_for, write_test_csv
from worker.client import FINAL_STATES, status, submit_prediction

pytestmark = pytest.mark.integration

WAIT = 90  # seconds any single job may take on a busy 2-core machine


# ----------------------------------------------------------------------------- helpers

def submit(live, input_ref, model, out, **kw):
    return submit_prediction(str(input_ref), model, str(out), app=live.app, settings=live.settings, **kw)


def local_predict(input_ref, model_path, out, chunk_rows=10000):
    """The in-process path of `digits predict --local` -> counts."""
    return batch.run(sources.open_source(str(input_ref), chunk_rows), checkpoint.load_model(model_path), str(out))


def read_rows(path):
    """A CSV file -> (header, rows as lists of strings)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def read_submission(path):
    """An ImageId,Label file -> (ids (n,), labels (n,)) int arrays."""
    header, rows = read_rows(path)
    assert header == ["ImageId", "Label"]
    a = np.array(rows, dtype=np.int64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def fast_csv(path, pixels, repeat=1):
    """A test CSV of `pixels` (n, 784) repeated `repeat` times (written as one string)."""
    body = "".join(",".join(map(str, r)) + "\n" for r in np.asarray(pixels).tolist())
    with open(path, "w", newline="") as f:
        f.write(",".join(PIXEL_COLUMNS) + "\n")
        f.write(body * repeat)
    return str(path)


def save_png(path, pixels, side=28):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8).reshape(side, side), "L").save(path)


def chunk_row_ranges(live, job_id):
    """[(first ImageId, last ImageId)] of each chunk of a CSV job, from its stored plan."""
    p = sources.from_dict(jobfiles.read_json(jobfiles.ref(live.settings.storage, job_id, "plan.json")))
    ranges, first = [], 1
    for i in range(len(p.chunks)):
        n = p.length(i)
        ranges.append((first, first + n - 1))
        first += n
    return ranges


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model_path(trained_model):
    return trained_model[1]


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("predict-data")


@pytest.fixture(scope="module")
def test_csv(sample, data_dir):
    """The 500 held-out sample images as a Kaggle test CSV."""
    return write_test_csv(data_dir / "test500.csv", sample["test_x"])


@pytest.fixture(scope="module")
def expected_500(sample, model):
    """In-process labels and confidences of the 500 sample test images."""
    return model.predict(sample["test_x"])


@pytest.fixture(scope="module")
def csv_5000(sample, data_dir):
    return fast_csv(data_dir / "test5000.csv", sample["test_x"], repeat=10)


@pytest.fixture(scope="module")
def csv_20000(sample, data_dir):
    return fast_csv(data_dir / "test20000.csv", sample["test_x"], repeat=40)


@pytest.fixture(scope="module")
def image_folder(sample, data_dir):
    """120 sample test images as PNGs whose sorted path order is not their index order
    (two sub-folders and top-level files, names from a hash) -> (folder, {path: index})."""
    folder = data_dir / "images"
    index = {}
    for i in range(120):
        name = hashlib.sha1(str(i).encode()).hexdigest()[:8] + ".png"
        rel = name if i % 3 == 0 else f"{'ab'[i % 2]}/{name}"
        save_png(str(folder / rel), sample["test_x"][i])
        index[rel] = i
    assert sorted(index) != [r for r, _ in sorted(index.items(), key=lambda kv: kv[1])]
    return str(folder), index


# ----------------------------------------------------------------------------- tests

def test_csv_job_matches_in_process_prediction(live, test_csv, model_path, expected_500, tmp_path):
    job = submit(live, test_csv, model_path, tmp_path / "queue.csv", chunk_rows=73)
    manifest = job.wait(timeout=WAIT)
    assert manifest["state"] == "SUCCESS"
    assert manifest["chunks"] == len(sources.open_source(test_csv, 73).chunks) > 6  # 500 rows / 73 per chunk
    assert (manifest["rows_in"], manifest["rows_ok"], manifest["rows_bad"], manifest["rows_skipped"]) == \
        (500, 500, 0, 0)
    assert manifest["errors"] is None and not os.path.exists(tmp_path / "queue.errors.csv")

    local = local_predict(test_csv, model_path, tmp_path / "local.csv", chunk_rows=73)
    assert local["rows_ok"] == 500
    assert (tmp_path / "queue.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()

    ids, labels = read_submission(tmp_path / "queue.csv")
    np.testing.assert_array_equal(ids, np.arange(1, 501))  # input order
    np.testing.assert_array_equal(labels, expected_500[0])


def test_image_folder_job_sorted_paths_and_same_labels_as_csv(live, sample, image_folder, model_path, model,
                                                              data_dir, tmp_path):
    folder, index = image_folder
    csv_path = write_test_csv(data_dir / "test120.csv", sample["test_x"][:120])
    img_job = submit(live, folder, model_path, tmp_path / "images.csv", chunk_rows=25)
    csv_job = submit(live, csv_path, model_path, tmp_path / "csv.csv", chunk_rows=25)
    m_img, m_csv = img_job.wait(timeout=WAIT), csv_job.wait(timeout=WAIT)
    assert m_img["state"] == m_csv["state"] == "SUCCESS"
    assert (m_img["rows_in"], m_img["rows_ok"], m_img["rows_bad"]) == (120, 120, 0)

    header, rows = read_rows(tmp_path / "images.csv")
    assert header == ["path", "label", "confidence", "preprocessing"]
    paths = [r[0] for r in rows]
    assert paths == sorted(index)  # sorted path order, relative to the folder
    ids, csv_labels = read_submission(tmp_path / "csv.csv")
    np.testing.assert_array_equal(ids, np.arange(1, 121))
    order = [index[p] for p in paths]
    np.testing.assert_array_equal([int(r[1]) for r in rows], csv_labels[order])
    labels, conf = model.predict(sample["test_x"][order])
    np.testing.assert_array_equal([int(r[1]) for r in rows], labels)
    np.testing.assert_allclose([float(r[2]) for r in rows], conf, atol=6e-5)

    local_predict(folder, model_path, tmp_path / "local.csv", chunk_rows=25)
    assert (tmp_path / "images.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()


def test_bad_rows_and_images_are_reported_not_fatal(live, sample, model_path, model, data_dir, tmp_path):
    good = sample["test_x"][:40]
    lines = [",".join(map(str, r)) for r in good.tolist()]
    wrong_count = ",".join(["0"] * 783)
    non_numeric = ",".join(["0"] * 12 + ["abc"] + ["0"] * 771)
    too_big = ",".join(["0"] * 5 + ["300"] + ["0"] * 778)
    garbage = "this is not a digit row"
    # (position in the data rows, line, reason); positions spread over several chunks
    bad = [(3, wrong_count, "expected 784 values, found 783"),
           (11, non_numeric, "non-numeric value 'abc' in pixel12"),
           (20, too_big, "value 300 in pixel5 is outside 0..255"),
           (33, garbage, "expected 784 values, found 1")]
    data_rows = list(lines)
    for pos, line, _ in bad:
        data_rows.insert(pos, line)
    path = data_dir / "bad.csv"
    path.write_text(",".join(PIXEL_COLUMNS) + "\n" + "\n".join(data_rows) + "\n")
    bad_rows = {pos + 1: reason for pos, _, reason in bad}  # 1-based data row numbers
    good_rows = [r for r in range(1, len(data_rows) + 1) if r not in bad_rows]

    folder = data_dir / "bad-images"
    for i in range(6):
        save_png(str(folder / f"ok{i}.png"), sample["test_x"][i])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (folder / "notes.txt").write_text("not an image")
    save_png(str(folder / "big.png"), np.full(32 * 32, 128, np.uint8), side=32)

    csv_job = submit(live, path, model_path, tmp_path / "csv.csv", chunk_rows=7)
    img_job = submit(live, folder, model_path, tmp_path / "img.csv", chunk_rows=3)
    m_csv, m_img = csv_job.wait(timeout=WAIT), img_job.wait(timeout=WAIT)

    assert m_csv["state"] == "SUCCESS" and m_csv["chunks"] > 3
    assert (m_csv["rows_in"], m_csv["rows_ok"], m_csv["rows_bad"]) == (44, 40, 4)
    assert m_csv["rows_in"] == m_csv["rows_ok"] + m_csv["rows_bad"]
    assert m_csv["errors"] == str(tmp_path / "csv.errors.csv")
    header, errs = read_rows(tmp_path / "csv.errors.csv")
    assert header == ["row", "reason"]
    assert {int(r): reason for r, reason in errs} == bad_rows
    ids, labels = read_submission(tmp_path / "csv.csv")
    np.testing.assert_array_equal(ids, good_rows)  # good rows only, with their own row numbers
    np.testing.assert_array_equal(labels, model.predict(good)[0])

    assert m_img["state"] == "SUCCESS"
    assert (m_img["rows_in"], m_img["rows_ok"], m_img["rows_bad"]) == (9, 6, 3)
    header, errs = read_rows(tmp_path / "img.errors.csv")
    assert header == ["path", "reason"]
    reasons = dict(errs)
    assert sorted(reasons) == ["big.png", "corrupt.png", "notes.txt"]
    assert reasons["corrupt.png"].startswith("corrupt or unreadable image")
    assert reasons["notes.txt"].startswith("unknown file type '.txt'")
    assert reasons["big.png"] == "no ink: blank image (an image 32x32 with no digit found)"
    header, rows = read_rows(tmp_path / "img.csv")
    assert [r[0] for r in rows] == [f"ok{i}.png" for i in range(6)]
    assert [int(r[1]) for r in rows] == model.predict(sample["test_x"][:6])[0].tolist()


def test_a_folder_of_phone_photos_and_scans_through_the_queue(live, sample, model_path, model, data_dir, tmp_path):
    """Photos stored turned with EXIF tags, pages lit unevenly, TIFF, WebP, a PNG without an
    extension and a zip of them: the queue's output is the in-process one, byte for byte, and
    says what was done to each image."""
    import zipfile
    from tests.model.data.photos import encode, gray, page
    folder = data_dir / "photos"
    folder.mkdir()
    kinds = {"a-exif6.jpg": dict(orientation=6), "b-exif3.jpg": dict(orientation=3),
             "c-gradient.png": dict(fmt="PNG", light="strong"), "d-shadow.jpg": dict(light="shadow"),
             "e-scan.tiff": dict(fmt="TIFF"), "f-specks.webp": dict(fmt="WEBP", specks=30, noise=10.0),
             "g-no-extension": dict(fmt="PNG", light="mild")}
    for i, (name, kw) in enumerate(kinds.items()):
        fmt, orientation = kw.pop("fmt", "JPEG"), kw.pop("orientation", 1)
        (folder / name).write_bytes(encode(gray(page(sample["test_x"][i], np.random.default_rng(i), **kw)),
                                           fmt, orientation))
    (folder / "h-empty.png").write_bytes(b"")
    with zipfile.ZipFile(folder / "i-more.zip", "w") as zf:  # inside a folder a zip is just a file
        zf.writestr("x.png", b"")
    archive = data_dir / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in sorted(kinds):
            zf.write(folder / name, f"photos/{name}")

    job = submit(live, folder, model_path, tmp_path / "queue.csv", chunk_rows=2)
    zjob = submit(live, archive, model_path, tmp_path / "zip.csv", chunk_rows=3)
    m, mz = job.wait(timeout=WAIT), zjob.wait(timeout=WAIT)
    assert m["state"] == mz["state"] == "SUCCESS"
    assert (m["rows_in"], m["rows_ok"], m["rows_bad"]) == (9, 7, 2)
    assert (mz["rows_in"], mz["rows_ok"], mz["rows_bad"]) == (7, 7, 0)
    local_predict(folder, model_path, tmp_path / "local.csv", chunk_rows=2)
    assert (tmp_path / "queue.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()

    header, rows = read_rows(tmp_path / "queue.csv")
    notes = {r[0]: r[3] for r in rows}
    assert "rotated by EXIF 6; inverted dark-on-light" in notes["a-exif6.jpg"]
    assert "rotated by EXIF 3" in notes["b-exif3.jpg"]
    assert "background flattened" in notes["c-gradient.png"] and "background flattened" in notes["d-shadow.jpg"]
    assert "ink parts" in notes["f-specks.webp"]
    labels = [int(r[1]) for r in rows]
    assert sum(a == b for a, b in zip(labels, model.predict(sample["test_x"][:7])[0])) >= 6
    _, errs = read_rows(tmp_path / "queue.errors.csv")
    assert dict(errs) == {"h-empty.png": "empty file",
                          "i-more.zip": "unknown file type '.zip': not a PNG, JPEG, BMP, GIF, TIFF or WebP image"}
    _, zrows = read_rows(tmp_path / "zip.csv")
    assert [r[0] for r in zrows] == [f"photos.zip::photos/{r[0]}" for r in rows]
    assert [r[1:] for r in zrows] == [r[1:] for r in rows]


def test_empty_inputs_fail_with_header_only_outputs(live, model_path, data_dir, tmp_path):
    """No job succeeds with nothing: an input without records ends FAILURE, saying so."""
    header_only = data_dir / "header-only.csv"
    header_only.write_text(",".join(PIXEL_COLUMNS) + "\n")
    no_newline = data_dir / "header-no-newline.csv"
    no_newline.write_text(",".join(PIXEL_COLUMNS))
    empty_dir = data_dir / "empty-folder"
    empty_dir.mkdir()
    cases = [(header_only, "ImageId,Label\n"), (no_newline, "ImageId,Label\n"),
             (empty_dir, "path,label,confidence,preprocessing\n")]
    submitted = [(submit(live, inp, model_path, tmp_path / f"out{i}.csv"), tmp_path / f"out{i}.csv", want)
                 for i, (inp, want) in enumerate(cases)]
    for job, out, want in submitted:
        m = job.wait(timeout=WAIT)
        assert m["state"] == "FAILURE" and m["error"] == f"job {job.id}: no predictions: the input holds no records"
        assert (m["chunks"], m["rows_in"], m["rows_ok"], m["rows_bad"], m["rows_skipped"]) == (0, 0, 0, 0, 0)
        assert out.read_text() == want
        assert m["errors"] is None
        st = job.progress()
        assert st["state"] == "FAILURE" and st["progress"]["fraction"] == 1.0


def test_cancel_keeps_finished_chunks(live, csv_5000, model_path, expected_500, tmp_path):
    job = submit(live, csv_5000, model_path, tmp_path / "out.csv", chunk_rows=50)
    root = live.settings.storage
    wait_for(lambda: jobfiles.chunks_done(root, job.id) >= 3, WAIT, "3 chunks", poll=0.005)
    job.cancel()
    assert job.progress()["state"] in ("CANCELLING", "CANCELLED")
    m = job.wait(timeout=WAIT)
    assert m["state"] == "CANCELLED"
    assert m["rows_skipped"] > 0 and 3 <= m["chunks_done"] < m["chunks"]
    assert m["rows_ok"] + m["rows_bad"] + m["rows_skipped"] == 5000
    assert m["rows_in"] == m["rows_ok"] + m["rows_bad"] and m["rows_bad"] == 0

    # the kept rows are exactly the rows of the chunks that finished, with their own ImageIds
    ranges = chunk_row_ranges(live, job.id)
    done = [i for i in range(len(ranges)) if os.path.exists(jobfiles.chunk_ref(root, job.id, i))]
    assert len(done) == m["chunks_done"]
    want_ids = np.concatenate([np.arange(ranges[i][0], ranges[i][1] + 1) for i in done])
    ids, labels = read_submission(tmp_path / "out.csv")
    np.testing.assert_array_equal(ids, want_ids)
    assert len(ids) == m["rows_ok"]
    np.testing.assert_array_equal(labels, expected_500[0][(ids - 1) % 500])
    st = job.progress()
    assert st["state"] == "CANCELLED" and st["rows_skipped"] == m["rows_skipped"]


def test_two_jobs_at_once(live, test_csv, csv_5000, model_path, expected_500, tmp_path):
    a = submit(live, csv_5000, model_path, tmp_path / "a.csv", chunk_rows=400)
    b = submit(live, test_csv, model_path, tmp_path / "b.csv", chunk_rows=60)
    mb, ma = b.wait(timeout=WAIT), a.wait(timeout=WAIT)
    assert ma["state"] == mb["state"] == "SUCCESS"
    assert (ma["rows_ok"], mb["rows_ok"]) == (5000, 500)
    ids, labels = read_submission(tmp_path / "a.csv")
    np.testing.assert_array_equal(ids, np.arange(1, 5001))
    np.testing.assert_array_equal(labels, np.tile(expected_500[0], 10))
    ids, labels = read_submission(tmp_path / "b.csv")
    np.testing.assert_array_equal(ids, np.arange(1, 501))
    np.testing.assert_array_equal(labels, expected_500[0])


def test_sigkill_of_a_pool_process_mid_job_loses_and_doubles_nothing(live, csv_20000, model_path, tmp_path):
    local = local_predict(csv_20000, model_path, tmp_path / "local.csv", chunk_rows=500)
    assert local["rows_ok"] == 20000
    children = live.stack.pids("worker-predict")[1:]
    assert len(children) == 2, children
    root = live.settings.storage
    job = submit(live, csv_20000, model_path, tmp_path / "out.csv", chunk_rows=500)
    wait_for(lambda: jobfiles.chunks_done(root, job.id) > 0, WAIT, "a first chunk", poll=0.002)
    assert jobfiles.read_manifest(root, job.id) is None, "the job ended before the kill: make it bigger"
    victim = children[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = jobfiles.chunks_done(root, job.id)
    m = job.wait(timeout=WAIT)
    assert killed_at < m["chunks"]
    assert m["state"] == "SUCCESS"
    assert (m["rows_in"], m["rows_ok"], m["rows_bad"], m["rows_skipped"]) == (20000, 20000, 0, 0)
    ids, labels = read_submission(tmp_path / "out.csv")
    np.testing.assert_array_equal(ids, np.arange(1, 20001))  # every row exactly once, in order
    _, local_labels = read_submission(tmp_path / "local.csv")
    np.testing.assert_array_equal(labels, local_labels)
    assert live.app.backend.client.get(keys.assemble_runs(job.id)) == b"1"  # written once
    # a file the killed process was writing is not counted as a chunk
    n = m["chunks"]
    assert job.progress()["progress"] == {"chunks_done": n, "chunks": n, "fraction": 1.0}
    # the prefork pool reaped the killed process and replaced it
    def replaced():
        pool = live.stack.pids("worker-predict")[1:]
        return victim not in pool and len(pool) == 2
    wait_for(replaced, 30, "a replacement pool process", poll=0.1)


def test_resubmitting_a_job_id_never_duplicates_rows(live, test_csv, model_path, expected_500, tmp_path):
    job_id = f"resubmit-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out.csv"
    first = submit(live, test_csv, model_path, out, job_id=job_id, chunk_rows=73)
    again = submit(live, test_csv, model_path, out, job_id=job_id, chunk_rows=11)  # while it runs
    assert first.id == again.id == job_id
    m1 = first.wait(timeout=WAIT)
    m2 = again.wait(timeout=WAIT)
    assert m1["state"] == m2["state"] == "SUCCESS"
    assert m1["chunks"] == len(sources.open_source(test_csv, 73).chunks)  # planned once, not replanned
    content = out.read_bytes()
    ids, labels = read_submission(out)
    np.testing.assert_array_equal(ids, np.arange(1, 501))
    np.testing.assert_array_equal(labels, expected_500[0])

    assert live.app.backend.client.get(keys.assemble_runs(job_id)) == b"1"  # one assemble wrote it

    # once finished, a resubmission starts the job afresh: planned again, written once again
    m_before = jobfiles.read_manifest(live.settings.storage, job_id)
    out2 = tmp_path / "again.csv"
    third = submit(live, test_csv, model_path, out2, job_id=job_id, chunk_rows=200)
    m3 = third.wait(timeout=WAIT)
    assert m3["submitted_at"] > m_before["submitted_at"] and m3["chunks"] == 3
    assert m3["output"] == str(out2) and out2.read_bytes() == content
    assert (m3["rows_in"], m3["rows_ok"], m3["state"]) == (500, 500, "SUCCESS")
    assert live.app.backend.client.get(keys.assemble_runs(job_id)) == b"1"


def test_status_while_running_and_when_done(live, csv_5000, model_path, tmp_path):
    out = tmp_path / "out.csv"
    job = submit(live, csv_5000, model_path, out, chunk_rows=100)
    n = records.read_job(live.settings.storage, job.id)["chunks"]
    assert 48 <= n <= 52  # about 5000 / 100 (the planner estimates rows from the first MB)
    seen = []
    deadline = time.time() + WAIT
    while True:
        st = status(live.app, live.settings, job.id)
        seen.append(st)
        assert st["job_id"] == job.id and st["kind"] == "predict"
        assert st["output"] == str(out)
        p = st["progress"]
        assert p["chunks"] == n and 0 <= p["chunks_done"] <= n
        assert p["fraction"] == round(p["chunks_done"] / n, 4)
        if st["state"] in FINAL_STATES:
            break
        assert st["state"] in ("PENDING", "PROGRESS")
        assert "rows_ok" not in st
        assert time.time() < deadline, st
        time.sleep(0.02)
    assert seen[0]["state"] in ("PENDING", "PROGRESS")  # the first look was before the end
    done = [s["progress"]["chunks_done"] for s in seen]
    assert done == sorted(done)  # progress never goes back
    assert st["state"] == "SUCCESS"
    assert (st["rows_ok"], st["rows_bad"], st["rows_in"]) == (5000, 0, 5000)
    assert st["progress"] == {"chunks_done": n, "chunks": n, "fraction": 1.0}
    assert st == status(live.app, live.settings, job.id)  # stable once finished
    assert job.wait(timeout=5)["rows_ok"] == 5000


def test_a_job_whose_input_vanishes_ends_partial_with_the_rows_it_read(live, csv_5000, model_path, expected_500,
                                                                       data_dir, tmp_path):
    doomed = data_dir / "doomed.csv"
    doomed.write_bytes(open(csv_5000, "rb").read())
    job = submit(live, doomed, model_path, tmp_path / "out.csv", chunk_rows=50)
    first_two = [jobfiles.chunk_ref(live.settings.storage, job.id, i) for i in (0, 1)]
    # chunks 0 and 1 themselves: a later chunk done first would leave chunk 1 unread, and
    # the row numbers after a chunk that cannot be counted are unknown (its rows failed too)
    wait_for(lambda: all(storage.exists(ref) for ref in first_two), WAIT, "chunks 0 and 1", poll=0.002)
    os.remove(doomed)  # the chunks that run from now on cannot read their rows
    m = job.wait(timeout=WAIT)
    assert m["state"] == "PARTIAL" and job.progress()["state"] == "PARTIAL"
    assert m["failed_chunks"] and "No such file or directory" in m["failed_chunks"][0]["reason"]
    assert str(doomed) in m["failed_chunks"][0]["reason"]  # the reason names the path
    assert m["error"].startswith(f"job {job.id}: ") and "chunk(s) failed" in m["error"]
    assert m["rows_ok"] >= 100 and m["rows_in"] == m["rows_ok"] + m["rows_bad"] + m["rows_failed"]
    ids, labels = read_submission(tmp_path / "out.csv")  # the rows read are there, numbered right
    assert len(ids) == m["rows_ok"]
    np.testing.assert_array_equal(labels, expected_500[0][(ids - 1) % 500])
    header, errs = read_rows(tmp_path / "out.errors.csv")
    assert errs and all("failed" in reason for _, reason in errs)


def test_a_chunk_whose_storage_object_is_unusable_ends_partial(live, test_csv, model_path, tmp_path):
    """Chunk 2's result path is a folder, so it can be neither written nor read: the chunk is
    retried, then failed; the job ends PARTIAL with every other row and chunk 2's rows listed."""
    local = local_predict(test_csv, model_path, tmp_path / "local.csv", chunk_rows=60)
    job_id = f"blocked-{uuid.uuid4().hex[:8]}"
    blocker = jobfiles.chunk_ref(live.settings.storage, job_id, 2)
    os.makedirs(blocker)
    job = submit(live, test_csv, model_path, tmp_path / "out.csv", job_id=job_id, chunk_rows=60)
    m = job.wait(timeout=WAIT)
    p = sources.open_source(test_csv, 60)
    assert m["state"] == "PARTIAL" and m["chunks"] == len(p.chunks) > 3
    assert [f["chunk"] for f in m["failed_chunks"]] == [2]
    reason = m["failed_chunks"][0]["reason"]
    assert blocker in reason, reason
    lost = set(p.names(2, p.length(0) + p.length(1), p.length(2)))
    assert (m["rows_in"], m["rows_ok"], m["rows_failed"]) == (500, 500 - len(lost), len(lost))
    _, local_rows = read_rows(tmp_path / "local.csv")
    _, rows = read_rows(tmp_path / "out.csv")
    assert rows == [r for r in local_rows if int(r[0]) not in lost]
    _, errs = read_rows(tmp_path / "out.errors.csv")
    assert {int(r) for r, _ in errs} == lost and all(why == f"chunk 2 failed: {reason}" for _, why in errs)
    assert live.app.backend.client.get(keys.assemble_runs(job_id)) == b"1"
    assert local["rows_ok"] == 500


def test_bad_chunk_size_is_refused_before_queuing(live, image_folder, model_path, tmp_path):
    with pytest.raises(ConfigError, match="chunk_rows"):
        submit(live, image_folder[0], model_path, tmp_path / "out.csv", job_id="bad-chunk-size", chunk_rows=-5)
    assert jobfiles.read_json(jobfiles.ref(live.settings.storage, "bad-chunk-size", "job.json")) is None


def test_a_second_live_job_on_the_same_output_is_refused(live, csv_5000, test_csv, model_path, expected_500,
                                                         tmp_path):
    out = tmp_path / "shared.csv"
    first = submit(live, csv_5000, model_path, out, chunk_rows=100)
    with pytest.raises(JobError, match=f"{out} is the output of job {first.id}, which is still running"):
        submit(live, test_csv, model_path, out, chunk_rows=100)
    m = first.wait(timeout=WAIT)
    assert m["state"] == "SUCCESS" and m["rows_ok"] == 5000
    ids, _ = read_submission(out)
    assert len(ids) == 5000  # the first job's rows, untouched by the refused one
    second = submit(live, test_csv, model_path, out, chunk_rows=100)  # the first has ended: allowed
    assert second.wait(timeout=WAIT)["rows_ok"] == 500
    ids, labels = read_submission(out)
    np.testing.assert_array_equal(ids, np.arange(1, 501))
    np.testing.assert_array_equal(labels, expected_500[0])


def test_a_big_job_keeps_only_its_window_in_the_queue(live, csv_20000, test_csv, model_path, tmp_path):
    """A small job submitted right after a big one finishes long before it (fair sharing)."""
    window = live.settings.job_window
    big = submit(live, csv_20000, model_path, tmp_path / "big.csv", chunk_rows=200)  # about 100 chunks
    r = live.app.backend.client
    queued = r.llen("predict")
    assert queued <= window, f"{queued} messages queued, window {window}"
    small = submit(live, test_csv, model_path, tmp_path / "small.csv", chunk_rows=500)
    m_small = small.wait(timeout=WAIT)
    assert m_small["state"] == "SUCCESS"
    assert jobfiles.read_manifest(live.settings.storage, big.id) is None, "the small job waited for the big one"
    m_big = big.wait(timeout=WAIT)
    assert m_big["state"] == "SUCCESS" and m_big["rows_ok"] == 20000 and m_big["chunks"] >= 95


def test_wait_hears_the_end_instead_of_waiting_for_its_next_poll(live, test_csv, model_path, tmp_path):
    """Job.wait is woken by the job's result being published: with a poll interval far longer
    than the job, it still returns as soon as the output is written."""
    job = submit(live, test_csv, model_path, tmp_path / "sub.csv")
    t0 = time.monotonic()
    manifest = job.wait(timeout=WAIT, poll=60)
    assert manifest["state"] == "SUCCESS" and manifest["rows_ok"] == 500
    assert time.monotonic() - t0 < 30  # a poll of 60 s would have slept through the end


def test_a_late_copy_of_a_cleared_job_s_tasks_stores_no_failure(live):
    """A chunk or an assemble of a job whose record is gone (cleared for a resubmission, with
    the new record not written yet) does nothing and stores no FAILURE under the job id, where
    the resubmitted job's status would read it."""
    from tasks.predict import assemble, predict_chunk
    job_id = f"gone-{uuid.uuid4().hex[:8]}"
    r = assemble.apply_async((job_id,), task_id=keys.assemble_task_id(job_id))
    assert r.get(timeout=WAIT) == f"job {job_id} has no record (cleared for a resubmission?): nothing assembled"
    assert live.app.backend.get_task_meta(keys.assemble_task_id(job_id))["status"] == "SUCCESS"
    assert live.app.backend.get_task_meta(job_id)["status"] == "PENDING"  # nothing under the job id
    chunk_id = keys.chunk_task_id(job_id, 0)
    predict_chunk.apply_async((job_id, 0, 0, 10), task_id=chunk_id)
    # a chunk stores no result (its state is its mark): wait until its message was taken and
    # acknowledged, i.e. is neither in the queue nor among the unacked deliveries
    with live.app.connection_for_write() as conn:
        channel = conn.default_channel
        broker = channel.client

        def gone():
            raws = broker.lrange("predict", 0, -1) + broker.hvals(channel.unacked_key)
            return not any(chunk_id.encode() in raw for raw in raws)
        deadline = time.time() + WAIT
        while not gone():
            assert time.time() < deadline, "the late chunk was never run"
            time.sleep(0.05)
    assert not live.app.backend.client.exists(keys.chunk_marks(job_id))
    assert live.app.backend.get_task_meta(chunk_id)["status"] == "PENDING"  # nothing stored, no FAILURE


def test_a_settling_wait_is_cut_short_by_the_jobs_end(live, test_csv, model_path, expected_500, tmp_path):
    """Job.wait(settle=...) polls nothing until then, but hears the assemble's result: a
    short job ends the wait long before a 60 s settle would: the job's final state is stored
    under the job id, on the channel the client listens to."""
    job = submit_prediction(str(test_csv), model_path, str(tmp_path / "settled.csv"), app=live.app,
                            settings=live.settings)
    t0 = time.monotonic()
    manifest = job.wait(timeout=WAIT, settle=60)
    assert manifest["state"] == "SUCCESS" and time.monotonic() - t0 < 30
    _, labels = read_submission(tmp_path / "settled.csv")
    np.testing.assert_array_equal(labels, expected_500[0])
    meta = live.app.backend.get_task_meta(job.id)
    assert meta["status"] == "SUCCESS" and meta["result"] == records.PredictJob.summary(manifest)


def test_damaged_or_missing_chunk_results_fail_their_rows_and_only_theirs(sample, model, tmp_path):
    """assemble over stored chunk results of every kind: good, an earlier version's .npz
    (under its old name), arbitrary bytes, cut short, gone. The unreadable ones' rows are
    failed with the reason, the others' rows are all there, numbered right, none twice."""
    from tasks.predict import _outcomes
    path = fast_csv(tmp_path / "in.csv", sample["test_x"][:250])
    source = sources.open_source(path, 50)
    n = len(source.chunks)
    assert n == 5
    root = str(tmp_path / "storage")
    rows = []
    for i in range(n):
        result = batch.predict_chunk(source, i, model)
        rows.append(len(result))
        if i == 1:  # as an earlier version stored it
            buf = io.BytesIO()
            np.savez(buf, labels=result.labels, confidence=result.confidence, errors=np.array("{}"),
                     notes=np.array("{}"))
            storage.write_bytes(jobfiles.chunk_ref(root, "j", i, ".npz"), buf.getvalue())
        else:
            raw = result.to_bytes()
            bad = {2: os.urandom(len(raw)), 3: raw[:-7]}
            if i != 4:  # chunk 4's result is gone
                storage.write_bytes(jobfiles.chunk_ref(root, "j", i), bad.get(i, raw))
    marks = {i: {"state": "done", "rows": rows[i]} for i in range(n)}
    counts = batch.assemble(source, _outcomes(root, "j", source, marks), str(tmp_path / "out.csv"))
    failed = sum(rows[2:])
    assert counts["rows_ok"] == rows[0] + rows[1] and counts["rows_failed"] == failed
    assert counts["rows_in"] == 250 == counts["rows_ok"] + counts["rows_bad"] + counts["rows_failed"]
    assert [c["chunk"] for c in counts["failed_chunks"]] == [2, 3, 4]
    assert all("its result cannot be read" in c["reason"] for c in counts["failed_chunks"])
    assert "000004.result" in counts["failed_chunks"][2]["reason"]  # the missing file is named
    ids, _ = read_submission(tmp_path / "out.csv")
    assert ids.tolist() == list(range(1, rows[0] + rows[1] + 1))  # chunks 0 and 1, in order, once
    _, errors = read_rows(counts["errors"])
    assert [int(r[0]) for r in errors] == list(range(rows[0] + rows[1] + 1, 251))  # each failed row once
