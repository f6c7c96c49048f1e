"""model.data.csvfile and model.data.sources on CSV input: every bad input names the file, the row and the reason."""
import os

import numpy as np
import pytest

from model.data import csvfile, imagefolder, sources
from model.data.block import PIXEL_COLUMNS, TRAIN_COLUMNS
from model.data.samples import load_sample
from model.errors import DataError

TRAIN_HEADER = ",".join(TRAIN_COLUMNS)
TEST_HEADER = ",".join(PIXEL_COLUMNS)


@pytest.fixture(scope="module")
def sample():
    return load_sample()


def csv_row(values):
    return ",".join(str(v) for v in values)


def train_rows(sample, n, start=0):
    x, y = sample["train_x"][start:start + n], sample["train_y"][start:start + n]
    return [csv_row([label, *pixels]) for label, pixels in zip(y.tolist(), x.tolist())]


def write(path, header, rows, trailing_newline=True):
    text = "\n".join(([header] if header is not None else []) + rows)
    path.write_text(text + ("\n" if trailing_newline and rows else ""))
    return str(path)


def raises_data_error(fn, *args, **kwargs):
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    return e.value


# ----------------------------------------------------------------------------- bad CSV rows

def bad_row_cases():
    zeros = [0] * 784
    return {
        # name: (bad row text, expected reason substrings)
        "wrong-column-count": ("1,2,3", ["expected 785 values, found 3"]),
        "too-many-columns": (csv_row([1, *zeros, 0]), ["expected 785 values, found 786"]),
        "non-numeric": (csv_row([1, *zeros[:11], "abc", *zeros[12:]]), ["non-numeric", "'abc'", "pixel11"]),
        "float-value": (csv_row([1, "12.5", *zeros[1:]]), ["non-integral", "12.5", "pixel0"]),
        "pixel-too-big": (csv_row([1, *zeros[:5], 300, *zeros[6:]]), ["300", "pixel5", "outside 0..255"]),
        "pixel-negative": (csv_row([1, *zeros[:783], -4]), ["-4", "pixel783", "outside 0..255"]),
        "label-10": (csv_row([10, *zeros]), ["label 10", "outside 0..9"]),
        "label-255": (csv_row([255, *zeros]), ["label 255", "outside 0..9"]),
        "empty-value": (csv_row([1, "", *zeros[1:]]), ["empty value", "pixel0"]),
    }


@pytest.mark.parametrize("case", list(bad_row_cases()))
def test_bad_row_names_file_row_and_reason(tmp_path, sample, case):
    bad, reasons = bad_row_cases()[case]
    rows = train_rows(sample, 6)
    rows.insert(3, bad)  # data row 4
    ref = write(tmp_path / "train.csv", TRAIN_HEADER, rows)
    e = raises_data_error(sources.load_training, ref)
    assert e.source == ref and e.row == 4
    for r in reasons:
        assert r in e.reason, (r, e.reason)
    assert ref in str(e) and "row 4" in str(e)
    assert "--skip-bad" in e.reason


@pytest.mark.parametrize("label", [-1, 300])
def test_label_outside_byte_range_reports_label_range(tmp_path, sample, label):
    rows = train_rows(sample, 3) + [csv_row([label] + [0] * 784)]
    ref = write(tmp_path / "train.csv", TRAIN_HEADER, rows)
    e = raises_data_error(sources.load_training, ref)
    assert e.source == ref and e.row == 4 and "label" in e.reason
    assert "0..9" in e.reason


def test_first_bad_row_is_named_with_a_count_of_the_others(tmp_path, sample):
    rows = train_rows(sample, 10)
    rows[1] = "1,2"
    rows[6] = csv_row([3] + [999] * 784)
    rows[8] = "x"
    ref = write(tmp_path / "train.csv", TRAIN_HEADER, rows)
    e = raises_data_error(sources.load_training, ref, block_rows=3)
    assert e.row == 2 and "and 2 more bad records" in e.reason


def test_skip_bad_keeps_good_rows_and_lists_bad(tmp_path, sample):
    n = 40
    rows = train_rows(sample, n)
    bad_rows = {3: "1,2,3", 17: csv_row([1] + [0] * 100 + ["x"] + [0] * 683),
                25: csv_row([1] + [256] * 784), 40: csv_row([12] + [0] * 784)}
    for r, text in bad_rows.items():
        rows[r - 1] = text
    ref = write(tmp_path / "train.csv", TRAIN_HEADER, rows)
    for block_rows in (5, 7, 1000):  # bad rows on both sides of range boundaries
        td = sources.load_training(ref, skip_bad=True, block_rows=block_rows)
        keep = [i for i in range(n) if i + 1 not in bad_rows]
        assert np.array_equal(td.pixels, sample["train_x"][keep])
        assert np.array_equal(td.labels, sample["train_y"][keep])
        assert td.pixels.dtype == np.uint8 and td.labels.dtype == np.int64
        assert [r for r, _ in td.skipped] == sorted(bad_rows)
        reasons = dict(td.skipped)
        assert "found 3" in reasons[3] and "non-numeric" in reasons[17]
        assert "256" in reasons[25] and "label 12" in reasons[40]
        assert td.source == ref


def test_load_training_of_good_csv(tmp_path, sample):
    ref = write(tmp_path / "train.csv", TRAIN_HEADER, train_rows(sample, 50), trailing_newline=False)
    progress = []
    td = sources.load_training(ref, block_rows=8, progress=lambda done, total: progress.append((done, total)))
    assert np.array_equal(td.pixels, sample["train_x"][:50]) and np.array_equal(td.labels, sample["train_y"][:50])
    assert td.skipped == [] and len(td.fingerprint) == 64
    assert progress[-1][0] == progress[-1][1] == os.path.getsize(ref)
    assert sources.load_training(ref).fingerprint == td.fingerprint  # same data, same fingerprint


def test_crlf_and_bom_are_accepted(tmp_path, sample):
    ref = tmp_path / "train.csv"
    text = "\ufeff" + TRAIN_HEADER + "\r\n" + "\r\n".join(train_rows(sample, 5)) + "\r\n"
    ref.write_bytes(text.encode("utf-8"))
    td = sources.load_training(str(ref))
    assert np.array_equal(td.pixels, sample["train_x"][:5])


def test_test_file_cannot_train(tmp_path, sample):
    ref = write(tmp_path / "test.csv", TEST_HEADER, [csv_row(r) for r in sample["test_x"][:3].tolist()])
    e = raises_data_error(sources.load_training, ref)
    assert e.source == ref and "no label column" in e.reason


# ----------------------------------------------------------------------------- headers and files

def test_missing_header(tmp_path, sample):
    ref = write(tmp_path / "noheader.csv", None, train_rows(sample, 3))
    for fn in (csvfile.read_csv_layout, sources.load_training):
        e = raises_data_error(fn, ref)
        assert e.source == ref and e.row is None and "missing header" in e.reason
        assert ref in str(e)


@pytest.mark.parametrize("header,reason", [
    (TRAIN_HEADER.replace("pixel5,", "pixel_5,"), "column 7 is 'pixel_5', expected 'pixel5'"),
    ("Label," + TEST_HEADER, "column 1 is 'Label', expected 'pixel0'"),
    (TEST_HEADER.rsplit(",", 1)[0], "783 columns, expected 784"),
    (TRAIN_HEADER + ",extra", "786 columns, expected 785"),
    ("ImageId,Label", "column 1 is 'ImageId'"),
])
def test_wrong_header(tmp_path, sample, header, reason):
    ref = write(tmp_path / "wrong.csv", header, train_rows(sample, 2))
    e = raises_data_error(csvfile.read_csv_layout, ref)
    assert e.source == ref and "wrong header" in e.reason and reason in e.reason
    e = raises_data_error(sources.load_training, ref)
    assert e.source == ref and "wrong header" in e.reason


@pytest.mark.parametrize("content", ["", "\n", "  \n\n"])
def test_empty_file(tmp_path, content):
    ref = tmp_path / "empty.csv"
    ref.write_text(content)
    e = raises_data_error(csvfile.read_csv_layout, str(ref))
    assert e.source == str(ref) and e.reason == "empty file"
    assert raises_data_error(sources.load_training, str(ref)).reason == "empty file"


def test_header_only_file(tmp_path):
    ref = write(tmp_path / "h.csv", TRAIN_HEADER, [])
    layout = csvfile.read_csv_layout(ref)
    assert layout.labeled and csvfile.plan_csv(layout, 10) == []
    e = raises_data_error(sources.load_training, ref)
    assert e.source == ref and "0 usable" in e.reason


def test_missing_file_and_folder(tmp_path):
    ref = str(tmp_path / "nope.csv")
    e = raises_data_error(sources.load_training, ref)
    assert e.source == ref and "no such" in e.reason
    assert "no such" in raises_data_error(csvfile.read_csv_layout, ref).reason
    assert "no such folder" in raises_data_error(imagefolder.list_images, str(tmp_path / "nodir")).reason
    f = tmp_path / "file.csv"
    f.write_text("x")
    assert "not a folder" in raises_data_error(imagefolder.list_images, str(f)).reason


def test_layouts(tmp_path, sample):
    train = write(tmp_path / "train.csv", TRAIN_HEADER, train_rows(sample, 2))
    test = write(tmp_path / "test.csv", TEST_HEADER, [csv_row(sample["test_x"][0].tolist())])
    lt, ls = csvfile.read_csv_layout(train), csvfile.read_csv_layout(test)
    assert lt.labeled and lt.columns == TRAIN_COLUMNS and lt.data_start == len(TRAIN_HEADER) + 1
    assert not ls.labeled and ls.columns == PIXEL_COLUMNS and ls.size == os.path.getsize(test)
    block = csvfile.read_csv_range(ls, ls.data_start, ls.size)
    assert block.labels is None and np.array_equal(block.pixels, sample["test_x"][:1])


# ----------------------------------------------------------------------------- row ranges

def check_plan(layout, rows_per_chunk, n_rows, expected_pixels):
    ranges = csvfile.plan_csv(layout, rows_per_chunk)
    raw = open(layout.ref, "rb").read()
    assert ranges[0][0] == layout.data_start and ranges[-1][1] == layout.size
    for (s1, e1), (s2, _) in zip(ranges, ranges[1:]):
        assert e1 == s2  # contiguous: every byte exactly once
    for s, e in ranges:
        assert s < e
        assert raw[s - 1:s] == b"\n"  # starts right after a line break
        assert e == layout.size or raw[e - 1:e] == b"\n"  # ends right after one
    blocks = [csvfile.read_csv_range(layout, s, e) for s, e in ranges]
    assert sum(len(b) for b in blocks) == n_rows
    assert all(not b.errors for b in blocks)
    pixels = np.concatenate([b.pixels for b in blocks])
    assert np.array_equal(pixels, expected_pixels)
    return ranges, blocks


@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize("rows_per_chunk", [1, 3, 7, 64, 10000])
def test_plan_csv_covers_rows_once_in_order(tmp_path, sample, trailing_newline, rows_per_chunk):
    n = 120
    ref = write(tmp_path / "train.csv", TRAIN_HEADER, train_rows(sample, n), trailing_newline)
    layout = csvfile.read_csv_layout(ref)
    ranges, blocks = check_plan(layout, rows_per_chunk, n, sample["train_x"][:n])
    labels = np.concatenate([b.labels for b in blocks])
    assert np.array_equal(labels, sample["train_y"][:n])
    if rows_per_chunk == 10000:
        assert len(ranges) == 1
    elif rows_per_chunk >= 3:
        # "about rows_per_chunk lines" each
        sizes = [len(b) for b in blocks]
        assert max(sizes[:-1]) <= 2 * rows_per_chunk + 1 and len(ranges) >= n // (2 * rows_per_chunk + 1)


def test_plan_csv_with_rows_of_very_different_lengths(tmp_path, sample):
    # short rows (all zeros) then long rows (real digits with three-digit pixels), test layout
    x = np.concatenate([np.zeros((30, 784), np.uint8), sample["test_x"][:30], np.full((30, 784), 255, np.uint8)])
    ref = write(tmp_path / "test.csv", TEST_HEADER, [csv_row(r) for r in x.tolist()], trailing_newline=False)
    layout = csvfile.read_csv_layout(ref)
    for k in (1, 4, 9, 25):
        check_plan(layout, k, len(x), x)


def test_single_row_file_without_newline(tmp_path, sample):
    ref = write(tmp_path / "one.csv", TEST_HEADER, [csv_row(sample["test_x"][0].tolist())], False)
    layout = csvfile.read_csv_layout(ref)
    assert csvfile.plan_csv(layout, 1) == [(layout.data_start, layout.size)]
    check_plan(layout, 1, 1, sample["test_x"][:1])


def test_read_csv_range_errors_are_block_relative(tmp_path, sample):
    rows = [csv_row(r) for r in sample["test_x"][:6].tolist()]
    rows[4] = "1,2"
    ref = write(tmp_path / "test.csv", TEST_HEADER, rows)
    layout = csvfile.read_csv_layout(ref)
    raw = open(ref, "rb").read()
    third = layout.data_start + sum(len(r) + 1 for r in rows[:2])  # start of data row 3
    assert raw[third - 1:third] == b"\n"
    block = csvfile.read_csv_range(layout, third, layout.size)
    assert len(block) == 4 and list(block.errors) == [2]  # data row 5 is the block's 3rd record
    assert block.ok_mask().tolist() == [True, True, False, True]
    assert not block.pixels[2].any()  # zero-filled
    assert np.array_equal(block.pixels[[0, 1, 3]], sample["test_x"][[2, 3, 5]])


def test_labels_of_a_labeled_file_are_ignored_in_prediction(tmp_path, sample):
    x = sample["train_x"][:4]
    rows = [",".join([lab] + [str(v) for v in px]) for lab, px in zip(["10", "x", "", "3"], x.tolist())]
    ref = tmp_path / "labeled.csv"
    ref.write_text(",".join(TRAIN_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    layout = csvfile.read_csv_layout(ref)
    block = csvfile.read_csv_range(layout, layout.data_start, layout.size, labels=False)
    assert block.errors == {} and block.labels is None and np.array_equal(block.pixels, x)
    trained = csvfile.read_csv_range(layout, layout.data_start, layout.size)  # training checks them
    assert sorted(trained.errors) == [0, 1, 2]


@pytest.mark.parametrize("url", [False, True])  # a URL's next window is fetched ahead, in a thread
def test_csv_range_is_read_in_windows_with_long_lines_skipped(tmp_path, sample, monkeypatch, url):
    monkeypatch.setattr(csvfile, "READ_WINDOW", 4096)
    x = sample["test_x"][:20]
    lines = [",".join(map(str, r)) for r in x.tolist()]
    lines.insert(7, "9" * 200_000)
    text = ",".join(PIXEL_COLUMNS) + "\n" + "\n".join(lines) + "\n"
    ref = f"memory://windows/{tmp_path.name}/long.csv" if url else tmp_path / "long.csv"
    csvfile.storage.write_text(ref, text)
    layout = csvfile.read_csv_layout(ref)
    reads = []
    real = csvfile.storage.read_bytes
    monkeypatch.setattr(csvfile.storage, "read_bytes", lambda r, a=None, b=None: reads.append(b - a) or real(r, a, b))
    block = csvfile.read_csv_range(layout, layout.data_start, layout.size)
    assert max(reads) <= 4096
    assert block.errors == {7: "line of 200000 bytes is longer than the limit of 65536"}
    assert np.array_equal(np.delete(block.pixels, 7, axis=0), x)
    assert csvfile.count_lines(ref, layout.data_start, layout.size) == 21


@pytest.mark.parametrize("rows,per_chunk,chunks", [(500, 73, 7), (10_000, 10_000, 1), (10_000, 3000, 4),
                                                   (1100, 1000, 2), (30, 1, 30)])
def test_plan_spreads_rows_evenly_over_ceil_rows_per_chunk(tmp_path, sample, rows, per_chunk, chunks):
    x = np.tile(sample["test_x"], (rows // 500 + 1, 1))[:rows]
    ref = tmp_path / "t.csv"
    ref.write_text(",".join(PIXEL_COLUMNS) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in x.tolist()))
    layout = csvfile.read_csv_layout(ref)
    sizes = [csvfile.count_lines(ref, s, e) for s, e in csvfile.plan_csv(layout, per_chunk)]
    assert sum(sizes) == rows and len(sizes) == chunks
    assert max(sizes) - min(sizes) <= max(2, rows // chunks // 20), sizes  # even, within 5%


# ----------------------------------------------------------------------------- bounded bad records

def _garbage_file(path, short_lines, bad=b"x\n"):
    """A test CSV: a good row, `short_lines` bad lines (by default of one byte: too short to be
    rows), a good row."""
    row = ",".join(["7"] * 784).encode() + b"\n"
    with open(path, "wb") as f:
        f.write(",".join(PIXEL_COLUMNS).encode() + b"\n" + row + bad * short_lines + row)
    return str(path)


def test_a_chunk_of_millions_of_short_bad_lines_is_refused_whole_in_bounded_memory(tmp_path):
    """8 MB of 2-byte lines would be 4 million records of a 784-wide row each (3 GB): the chunk
    is refused, saying why, before their rows are allocated."""
    import tracemalloc
    ref = _garbage_file(tmp_path / "garbage.csv", 4 << 20)
    layout = csvfile.read_csv_layout(ref)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e:
            csvfile.read_csv_range(layout, layout.data_start, layout.size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.source == ref
    assert f"more than {csvfile.MAX_BAD_RECORDS:,} bad records in one chunk" in e.value.reason
    assert "too short to hold 784 values" in e.value.reason
    assert peak < 100 << 20, f"{peak} bytes traced"


def test_bad_records_up_to_the_cap_are_listed_past_it_the_chunk_fails(tmp_path, monkeypatch):
    from model import batch
    monkeypatch.setattr(csvfile, "MAX_BAD_RECORDS", 50)
    ref = _garbage_file(tmp_path / "fifty.csv", 50)
    block = sources.open_source(ref, 1000).read(0)
    assert len(block) == 52 and len(block.errors) == 50
    ref = _garbage_file(tmp_path / "more.csv", 51)
    with pytest.raises(DataError) as e:
        sources.open_source(ref, 1000).read(0)
    assert "more than 50 bad records in one chunk (53 lines in 3,238 bytes, too short" in e.value.reason
    long_bad = b",".join([b"x"] * 784) + b"\n"  # as long as a row: parsed, then counted
    ref = _garbage_file(tmp_path / "long.csv", 51, long_bad)
    source = sources.open_source(ref, 1000)
    with pytest.raises(DataError) as e:
        source.read(0)
    assert "more than 50 bad records in one chunk (first: non-numeric value 'x' in pixel0)" in e.value.reason

    class Model:
        def predict(self, x):
            return np.zeros(len(x), np.int64), np.ones(len(x), np.float32)
    counts = batch.run(source, Model(), str(tmp_path / "out.csv"))
    assert counts["rows_failed"] == 53 and counts["rows_ok"] == 0 and batch.final_state(counts) == "FAILURE"
    assert "more than 50 bad records" in batch.failure_line(counts)
