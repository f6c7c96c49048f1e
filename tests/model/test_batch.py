"""Bulk prediction end to end (plan -> predict_chunk -> assemble) with a real trained model."""
import csv
import io
import json
import os
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from model import batch, checkpoint, storage
from model.data import sources
from model.data.block import PIXEL_COLUMNS, TRAIN_COLUMNS
from model.data.samples import load_sample, write_csv
from model.errors import ConfigError, DataError
from model.train import Trainer, make_config

N_ROWS = 200
# data row (1-based ImageId) -> broken text and the reason it must be reported with
BROKEN = {
    10: ("wrong column count", "expected 784 values"),
    50: ("non-numeric", "non-numeric value"),
    120: ("pixel 300", "value 300 in pixel"),
    177: ("one value too many", "expected 784 values, found 785"),
}


@pytest.fixture(scope="module")
def sample():
    return load_sample()


@pytest.fixture(scope="module")
def model(sample):
    """The default recipe trained for 3 epochs on the bundled sample (a real model, no mocks)."""
    t = Trainer(make_config("default", epochs=3), sample["train_x"], sample["train_y"])
    history = t.run()
    assert history[-1].val_accuracy > 0.85
    return checkpoint.make_model(t.params, t.mean, t.std, recipe="default")


def broken_line(kind, pixels):
    if kind == "wrong column count":
        return ",".join(map(str, pixels[:100]))
    if kind == "non-numeric":
        return ",".join(map(str, pixels[:7])) + ",seven," + ",".join(map(str, pixels[8:]))
    if kind == "pixel 300":
        return ",".join(map(str, [300, *pixels[1:]]))
    if kind == "one value too many":
        return ",".join(map(str, [*pixels, 0]))
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def test_csv(sample, tmp_path_factory):
    """A 200-row Kaggle test CSV from the sample with 4 broken rows."""
    x = sample["test_x"][:N_ROWS]
    lines = [",".join(PIXEL_COLUMNS)]
    for i, row in enumerate(x.tolist(), start=1):
        lines.append(broken_line(BROKEN[i][0], row) if i in BROKEN else ",".join(map(str, row)))
    path = tmp_path_factory.mktemp("csv") / "test.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(input_ref, chunk_rows, model, out, skip=(), fail=()):
    """Plan, predict each chunk (None for those in skip, a ChunkFailure for those in fail)
    and assemble -> (source, counts)."""
    p = sources.open_source(input_ref, chunk_rows)
    # the plan is stored as JSON
    p = sources.from_dict(json.loads(json.dumps(p.to_dict())))
    results = []
    for i in range(len(p.chunks)):
        if i in skip:
            results.append(None)
            continue
        if i in fail:
            results.append(batch.ChunkFailure("Permission denied: /store/x"))
            continue
        r = batch.predict_chunk(p, i, model)
        results.append(batch.ChunkResult.from_bytes(r.to_bytes()))  # as stored under jobs/<id>/chunks
    return p, batch.assemble(p, results, out)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_with_broken_rows(test_csv, sample, model, tmp_path):
    out = str(tmp_path / "submission.csv")
    p, counts = run(test_csv, 50, model, out)
    assert p.kind == "csv" and len(p.chunks) >= 3
    good_ids = [i for i in range(1, N_ROWS + 1) if i not in BROKEN]
    rows = read_csv(out)
    assert rows[0] == ["ImageId", "Label"]
    assert len(rows) - 1 == 196
    assert [int(r[0]) for r in rows[1:]] == good_ids
    labels, _ = model.predict(sample["test_x"][np.array(good_ids) - 1])
    assert [int(r[1]) for r in rows[1:]] == labels.tolist()
    accuracy = (labels == sample["test_y"][np.array(good_ids) - 1]).mean()
    assert accuracy > 0.85  # the labels are real predictions, in the right order

    err_path = batch.errors_ref(out)
    assert err_path == str(tmp_path / "submission.errors.csv") and counts["errors"] == err_path
    errors = read_csv(err_path)
    assert errors[0] == ["row", "reason"]
    assert [int(r[0]) for r in errors[1:]] == sorted(BROKEN)
    for (row, reason) in errors[1:]:
        assert BROKEN[int(row)][1] in reason, (row, reason)
    assert counts == {"rows_in": 200, "rows_ok": 196, "rows_bad": 4, "rows_failed": 0, "rows_skipped": 0,
                      "failed_chunks": [], "output": out, "errors": err_path}


@pytest.mark.parametrize("chunk_rows", [1, 7, 37, 64])
def test_chunking_does_not_change_the_output(test_csv, model, tmp_path, chunk_rows):
    one_out = str(tmp_path / "one.csv")
    p1, c1 = run(test_csv, 10_000, model, one_out)
    assert len(p1.chunks) == 1
    many_out = str(tmp_path / f"many{chunk_rows}.csv")
    p2, c2 = run(test_csv, chunk_rows, model, many_out)
    assert len(p2.chunks) > 1
    assert open(many_out, "rb").read() == open(one_out, "rb").read()
    assert open(batch.errors_ref(many_out), "rb").read() == open(batch.errors_ref(one_out), "rb").read()
    assert {k: v for k, v in c1.items() if k not in ("output", "errors")} == \
        {k: v for k, v in c2.items() if k not in ("output", "errors")}


def test_file_without_trailing_newline(sample, model, tmp_path):
    ref = tmp_path / "t.csv"
    x = sample["test_x"][:30]
    ref.write_text(",".join(PIXEL_COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in x.tolist()))
    for k in (4, 100):
        out = str(tmp_path / f"o{k}.csv")
        _, counts = run(str(ref), k, model, out)
        rows = read_csv(out)[1:]
        assert [int(r[0]) for r in rows] == list(range(1, 31))
        assert [int(r[1]) for r in rows] == model.predict(x)[0].tolist()
        assert counts["rows_in"] == 30 and counts["errors"] is None
        # a skipped last chunk (no trailing newline) is still counted right
        _, counts = run(str(ref), k, model, out, skip={len(sources.open_source(str(ref), k).chunks) - 1})
        assert counts["rows_in"] + counts["rows_skipped"] == 30


def test_cancelled_chunk_keeps_later_image_ids(test_csv, sample, model, tmp_path):
    p = sources.open_source(test_csv, 40)
    assert len(p.chunks) >= 4
    skipped_chunk = 1
    lengths = [len(p.read(i)) for i in range(len(p.chunks))]
    assert [p.length(i) for i in range(len(p.chunks))] == lengths
    assert sum(lengths) == N_ROWS
    out = str(tmp_path / "partial.csv")
    _, counts = run(test_csv, 40, model, out, skip={skipped_chunk})
    lo = lengths[0] + 1
    hi = lengths[0] + lengths[1]  # ImageIds lo..hi were never predicted
    expected_ids = [i for i in range(1, N_ROWS + 1) if i not in BROKEN and not lo <= i <= hi]
    rows = read_csv(out)[1:]
    assert [int(r[0]) for r in rows] == expected_ids
    labels, _ = model.predict(sample["test_x"][np.array(expected_ids) - 1])
    assert [int(r[1]) for r in rows] == labels.tolist()
    bad_in_skipped = [r for r in BROKEN if lo <= r <= hi]
    errors = read_csv(batch.errors_ref(out))[1:]
    assert [int(r[0]) for r in errors] == [r for r in sorted(BROKEN) if r not in bad_in_skipped]
    assert counts["rows_skipped"] == lengths[skipped_chunk]
    assert counts["rows_in"] == N_ROWS - lengths[skipped_chunk]
    assert counts["rows_in"] == counts["rows_ok"] + counts["rows_bad"]
    assert counts["rows_bad"] == 4 - len(bad_in_skipped)


def test_all_good_input_removes_stale_errors_file(sample, model, tmp_path):
    ref = str(tmp_path / "good.csv")
    write_csv(ref, PIXEL_COLUMNS, sample["test_x"][:20])
    out = str(tmp_path / "out.csv")
    stale = batch.errors_ref(out)
    with open(stale, "w") as f:
        f.write("row,reason\n1,old\n")
    _, counts = run(ref, 8, model, out)
    assert counts["errors"] is None and not os.path.exists(stale)
    assert counts["rows_ok"] == 20 and len(read_csv(out)) == 21


def test_labeled_csv_can_be_predicted(sample, model, tmp_path):
    ref = str(tmp_path / "train.csv")
    write_csv(ref, TRAIN_COLUMNS, np.column_stack([sample["train_y"][:25], sample["train_x"][:25]]))
    out = str(tmp_path / "pred.csv")
    p, counts = run(ref, 10, model, out)
    assert p.layout.labeled and counts["rows_ok"] == 25
    assert [int(r[1]) for r in read_csv(out)[1:]] == model.predict(sample["train_x"][:25])[0].tolist()


# ----------------------------------------------------------------------------- image folders

@pytest.fixture(scope="module")
def image_folder(sample, tmp_path_factory):
    """60 good PNGs in two levels, plus a corrupt image, a text file and a wrong-size image."""
    root = tmp_path_factory.mktemp("imgs") / "pred"
    good = {}
    for i, x in enumerate(sample["test_x"][:60]):
        rel = f"{i:03d}.png" if i % 3 else f"sub/{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x.reshape(28, 28), "L").save(root / rel)
        good[rel] = i
    (root / "030-corrupt.png").write_bytes(b"this is not a png")
    (root / "notes.txt").write_text("hello")
    (root / "sub" / "big.png").parent.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(root / "sub" / "big.png")
    bad = {"030-corrupt.png": "corrupt", "notes.txt": "unknown file type", "sub/big.png": "no ink"}  # a blank 32x32
    return str(root), good, bad


@pytest.mark.parametrize("chunk_rows", [7, 1000])
def test_image_folder(image_folder, sample, model, tmp_path, chunk_rows):
    root, good, bad = image_folder
    out = str(tmp_path / "labels.csv")
    p, counts = run(root, chunk_rows, model, out)
    assert p.kind == "images" and p.paths == sorted(list(good) + list(bad))
    rows = read_csv(out)
    assert rows[0] == ["path", "label", "confidence", "preprocessing"]
    paths = [r[0] for r in rows[1:]]
    assert paths == sorted(good)  # sorted relative paths, bad ones left out
    idx = [good[pth] for pth in paths]
    labels, conf = model.predict(sample["test_x"][idx])
    assert [int(r[1]) for r in rows[1:]] == labels.tolist()
    assert [r[2] for r in rows[1:]] == [f"{c:.4f}" for c in conf.tolist()]
    assert all(0 < float(r[2]) <= 1 for r in rows[1:])
    errors = read_csv(batch.errors_ref(out))
    assert errors[0] == ["path", "reason"]
    assert [r[0] for r in errors[1:]] == sorted(bad)
    for pth, reason in errors[1:]:
        assert bad[pth] in reason
    assert counts["rows_in"] == 63 and counts["rows_ok"] == 60 and counts["rows_bad"] == 3


def test_image_folder_with_cancelled_chunk(image_folder, model, tmp_path):
    root, good, bad = image_folder
    out = str(tmp_path / "labels.csv")
    p, counts = run(root, 10, model, out, skip={2})
    lo, hi = p.chunks[2]
    missing = set(p.paths[lo:hi])
    paths = [r[0] for r in read_csv(out)[1:]]
    assert paths == [q for q in sorted(good) if q not in missing]
    assert counts["rows_skipped"] == hi - lo and counts["rows_in"] == 63 - (hi - lo)


def test_csv_and_image_folder_agree(sample, model, tmp_path):
    x = sample["test_x"][:N_ROWS]
    csv_ref = str(tmp_path / "test.csv")
    write_csv(csv_ref, PIXEL_COLUMNS, x)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, row in enumerate(x, start=1):
        Image.fromarray(row.reshape(28, 28), "L").save(folder / f"{i:05d}.png")
    _, c1 = run(csv_ref, 64, model, str(tmp_path / "from_csv.csv"))
    _, c2 = run(str(folder), 64, model, str(tmp_path / "from_images.csv"))
    from_csv = read_csv(tmp_path / "from_csv.csv")[1:]
    from_images = read_csv(tmp_path / "from_images.csv")[1:]
    assert len(from_csv) == len(from_images) == N_ROWS
    assert [int(r[0]) for r in from_csv] == [int(r[0][:5]) for r in from_images]
    assert [r[1] for r in from_csv] == [r[1] for r in from_images]
    assert (np.array([int(r[1]) for r in from_csv]) == sample["test_y"][:N_ROWS]).mean() > 0.85
    assert c1["rows_ok"] == c2["rows_ok"] == N_ROWS


def test_chunk_result_round_trip():
    r = batch.ChunkResult(np.array([3, -1, 7], np.int16), np.array([0.9, 0, 0.5], np.float32),
                          {1: "empty line"})
    back = batch.ChunkResult.from_bytes(r.to_bytes())
    assert back.labels.tolist() == [3, -1, 7] and back.labels.dtype == np.int16
    assert np.array_equal(back.confidence, r.confidence) and back.errors == {1: "empty line"}
    assert len(back) == 3


def test_chunk_result_reads_the_npz_of_earlier_versions():
    """A job that was running across an upgrade has chunk results in the old form."""
    buf = io.BytesIO()
    np.savez(buf, labels=np.array([3, -1], np.int16), confidence=np.array([0.9, 0], np.float32),
             errors=np.array('{"1": "empty line"}'), notes=np.array('{"0": "inverted"}'))
    back = batch.ChunkResult.from_bytes(buf.getvalue())
    assert back.labels.tolist() == [3, -1] and back.errors == {1: "empty line"} and back.notes == {0: "inverted"}


def test_chunk_result_cut_or_damaged_is_a_value_error():
    raw = batch.ChunkResult(np.arange(5, dtype=np.int16), np.ones(5, np.float32), {}, {2: "inverted"}).to_bytes()
    for bad in (b"", b"junk", raw[:10], raw[:40], raw[:-1], raw + b"x"):
        with pytest.raises(ValueError):
            batch.ChunkResult.from_bytes(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 120))
def test_chunk_result_from_any_bytes_raises_only_value_error(junk, cut):
    raw = batch.ChunkResult(np.arange(7, dtype=np.int16), np.ones(7, np.float32), {1: "x"}, {}).to_bytes()
    for candidate in (junk, raw[:cut] + junk, raw[:30] + junk, b"PK" + junk):
        try:
            back = batch.ChunkResult.from_bytes(candidate)
        except ValueError:
            continue
        assert len(back.labels) == len(back.confidence)


def test_errors_ref():
    assert batch.errors_ref("out/sub.csv") == "out/sub.errors.csv"
    assert batch.errors_ref("out/SUB.CSV") == "out/SUB.errors.csv"
    assert batch.errors_ref("memory://x/out") == "memory://x/out.errors.csv"


def test_plan_missing_input(tmp_path):
    with pytest.raises(DataError, match="no such file or folder") as e:
        sources.open_source(str(tmp_path / "nope.csv"), 10)
    assert e.value.source == str(tmp_path / "nope.csv")


def test_inputs_and_outputs_on_memory_storage(sample, model):
    """Claim-check through storage URLs: the CSV, the image folder and the outputs live in memory://."""
    root = f"memory://batch-{uuid.uuid4().hex}"
    x = sample["test_x"][:30]
    storage.write_text(root + "/in/test.csv", ",".join(PIXEL_COLUMNS) + "\n"
                       + "\n".join(",".join(map(str, r)) for r in x.tolist()) + "\n")
    for i in range(12):
        buf = io.BytesIO()
        Image.fromarray(x[i].reshape(28, 28), "L").save(buf, "PNG")
        storage.write_bytes(f"{root}/in/images/{i:02d}.png", buf.getvalue())
    storage.write_bytes(root + "/in/images/zz.png", b"broken")
    want = model.predict(x)[0].tolist()

    _, counts = run(root + "/in/test.csv", 7, model, root + "/out/sub.csv")
    lines = storage.read_text(root + "/out/sub.csv").splitlines()
    assert lines[0] == "ImageId,Label" and lines[1:] == [f"{i},{lab}" for i, lab in enumerate(want, 1)]
    assert counts["rows_ok"] == 30 and counts["errors"] is None

    _, counts = run(root + "/in/images", 5, model, root + "/out/img.csv")
    rows = list(csv.reader(io.StringIO(storage.read_text(root + "/out/img.csv"))))
    assert [r[0] for r in rows[1:]] == [f"{i:02d}.png" for i in range(12)]
    assert [int(r[1]) for r in rows[1:]] == want[:12]
    assert counts["errors"] == root + "/out/img.errors.csv"
    errors = storage.read_text(counts["errors"]).splitlines()
    assert errors[0] == "path,reason" and errors[1].startswith("zz.png,") and "corrupt" in errors[1]


@pytest.mark.parametrize("chunk_rows", [0, -5])
def test_plan_rejects_chunk_rows_below_one(test_csv, chunk_rows):
    with pytest.raises(ConfigError, match="chunk_rows"):
        sources.open_source(test_csv, chunk_rows)


# ----------------------------------------------------------------------------- failed chunks

@pytest.mark.parametrize("kind", ["csv", "images"])
def test_a_failed_chunk_ends_partial_with_every_other_row(test_csv, image_folder, model, tmp_path, kind):
    ref = test_csv if kind == "csv" else image_folder[0]
    full_out, out = str(tmp_path / "full.csv"), str(tmp_path / "partial.csv")
    p, full = run(ref, 20, model, full_out)
    _, counts = run(ref, 20, model, out, fail={1})
    assert batch.final_state(counts) == "PARTIAL" and batch.final_state(full) == "SUCCESS"
    lost = p.length(1)
    assert counts["rows_failed"] == lost and counts["rows_in"] == full["rows_in"]
    assert counts["rows_in"] == counts["rows_ok"] + counts["rows_bad"] + counts["rows_failed"]
    assert counts["failed_chunks"] == [{"chunk": 1, "where": p.where(1), "reason": "Permission denied: /store/x",
                                        "rows": lost}]
    names = list(p.names(1, p.length(0), lost))
    full_rows, rows = read_csv(full_out)[1:], read_csv(out)[1:]
    assert rows == [r for r in full_rows if (int(r[0]) if kind == "csv" else r[0]) not in names]
    errors = read_csv(counts["errors"])[1:]
    failed = [r for r in errors if r[1] == "chunk 1 failed: Permission denied: /store/x"]
    assert [(int(r[0]) if kind == "csv" else r[0]) for r in failed] == names
    assert "chunk(s) failed (1), %d records not predicted: Permission denied: /store/x" % lost \
        in batch.failure_line(counts)


def test_a_failed_chunk_that_cannot_be_counted_is_reported_not_renumbered(sample, model, tmp_path):
    ref = tmp_path / "t.csv"
    write_csv(str(ref), PIXEL_COLUMNS, sample["test_x"][:30])
    p = sources.open_source(str(ref), 10)
    results = [batch.predict_chunk(p, i, model) for i in range(3)]
    os.remove(ref)  # chunk 1 can no longer be counted
    counts = batch.assemble(p, [results[0], batch.ChunkFailure("gone"), results[2]], str(tmp_path / "o.csv"))
    assert counts["rows_ok"] == 10 and counts["rows_failed"] == 10  # chunk 2's 10, chunk 1's unknown
    assert [int(r[0]) for r in read_csv(tmp_path / "o.csv")[1:]] == list(range(1, 11))
    errors = read_csv(counts["errors"])[1:]
    assert [r[0] for r in errors] == [p.where(1), p.where(2)]
    assert "chunk 1 failed: gone" == errors[0][1] and "row numbers are unknown" in errors[1][1]


def test_run_contains_a_chunk_that_raises(test_csv, model, tmp_path, monkeypatch):
    p = sources.open_source(test_csv, 50)
    real = p.read

    def read(i, labels=False):
        if i == 2:
            raise PermissionError(13, "Permission denied", "/store/in.csv")
        return real(i, labels)

    monkeypatch.setattr(p, "read", read)
    counts = batch.run(p, model, str(tmp_path / "o.csv"))
    assert batch.final_state(counts) == "PARTIAL"
    assert counts["failed_chunks"][0]["reason"] == "Permission denied: /store/in.csv"
    assert counts["rows_in"] == N_ROWS and counts["rows_failed"] == p.length(2)


def test_assemble_streams_and_a_failed_assemble_keeps_the_old_output(test_csv, model, tmp_path, monkeypatch):
    """The output and errors files are streamed to temporary files and renamed into place:
    an assemble that fails mid-way leaves the previous files as they were, and no temporary
    file behind."""
    out = tmp_path / "sub.csv"
    p, counts = run(test_csv, 37, model, str(out))
    good, errors = out.read_bytes(), (tmp_path / "sub.errors.csv").read_bytes()
    assert counts["rows_ok"] == N_ROWS - len(BROKEN) and counts["errors"] == str(tmp_path / "sub.errors.csv")
    results = [batch.predict_chunk(p, i, model) for i in range(len(p.chunks))]

    def outcomes():
        yield from results[:3]
        raise OSError("disk full (simulated) after three chunks")

    with pytest.raises(OSError, match="disk full"):
        batch.assemble(p, outcomes(), str(out))
    assert out.read_bytes() == good and (tmp_path / "sub.errors.csv").read_bytes() == errors
    assert sorted(f.name for f in tmp_path.iterdir()) == ["sub.csv", "sub.errors.csv"]
    again = batch.assemble(p, iter(results), str(out))  # and a whole one writes the same bytes
    assert again == counts and out.read_bytes() == good


def test_names_with_commas_quotes_and_line_breaks_read_back_from_both_files(sample, model, tmp_path):
    """A path holding a comma, a quote, a \\r or a \\n is one cell in the output and in the
    errors file alike (csv.writer would have left a lone \\r bare in the errors file)."""
    root = tmp_path / "odd"
    root.mkdir()
    names = ['a,b.png', 'say "hi".png', 'cr\rname.png', 'nl\nname.png']
    for k, name in enumerate(names):
        Image.fromarray(sample["test_x"][k].reshape(28, 28), "L").save(root / name, format="PNG")
        (root / ("bad" + name)).write_bytes(b"not an image")
    out = str(tmp_path / "odd.csv")
    run(str(root), 1000, model, out)
    assert sorted(r[0] for r in read_csv(out)[1:]) == sorted(names)
    errors = read_csv(batch.errors_ref(out))
    assert sorted(r[0] for r in errors[1:]) == sorted("bad" + n for n in names)
    assert all(len(r) == 2 and "corrupt" in r[1] for r in errors[1:])


def test_no_prediction_at_all_is_a_failure_with_its_most_common_reason(tmp_path):
    """All records bad, or none at all: FAILURE (never SUCCESS), one line with the most common
    kind of reason and its count; a cancelled job stays CANCELLED."""
    ref = tmp_path / "bad.csv"
    rows = ["x," + ",".join(["0"] * 783)] * 5 + [",".join(["0"] * 783 + ["300"])] * 2 + ["1,2"]
    ref.write_text(",".join(PIXEL_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    p = sources.open_source(str(ref), 3)
    blocks = [predict_block_of(p, i) for i in range(len(p.chunks))]
    counts = batch.assemble(p, blocks, str(tmp_path / "out.csv"))
    assert (counts["rows_in"], counts["rows_ok"], counts["rows_bad"]) == (8, 0, 8)
    assert batch.final_state(counts) == "FAILURE"
    assert batch.final_state(counts, cancelled=True) == "CANCELLED"
    assert counts["top_reason"] == {"reason": "non-numeric value 'x' in pixel0", "records": 5}
    assert batch.failure_line(counts) == ("no predictions: all 8 records are bad; 5 of them: non-numeric value 'x' "
                                          "in pixel0 (the most common reason)")
    empty = batch.assemble(p, [], str(tmp_path / "out2.csv")) if not p.chunks else None
    none = {"rows_in": 0, "rows_ok": 0, "rows_bad": 0, "rows_skipped": 0, "failed_chunks": []}
    assert batch.final_state(none) == "FAILURE" and empty is None
    assert batch.failure_line(none) == "no predictions: the input holds no records"
    assert batch.reason_kind("value 300 in pixel783 is outside 0..255") == "value # in pixel# is outside #"


def predict_block_of(source, index):
    """A chunk's ChunkResult without a model: every good record labelled 0."""
    block = source.read(index)
    labels = np.where(block.ok_mask(), 0, -1).astype(np.int16)
    return batch.ChunkResult(labels, np.ones(len(block), np.float32), dict(block.errors))


def test_a_failed_chunk_of_millions_of_records_is_written_streaming(sample, tmp_path):
    """assemble writes a failed chunk's errors lines a slice at a time: its peak memory does not
    grow with the chunk (2,000,000 records, about 80 MB of lines, cost under 8 MB)."""
    import tracemalloc
    path = str(tmp_path / "in.csv")
    write_csv(path, PIXEL_COLUMNS, sample["test_x"][:2])
    source = sources.open_source(path, 1, 1000)
    n = 2_000_000
    outcomes = [batch.ChunkFailure("No space left on device: /x", rows=n), None]
    tracemalloc.start()
    try:
        counts = batch.assemble(source, iter(outcomes), str(tmp_path / "out.csv"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts["rows_failed"] == n and counts["failed_chunks"][0]["rows"] == n
    with open(counts["errors"]) as f:
        assert f.readline() == "row,reason\n"
        lines = sum(1 for _ in f)
    assert lines == n
    assert peak < 8 * 2 ** 20, f"assemble peaked at {peak / 2 ** 20:.1f} MB"
