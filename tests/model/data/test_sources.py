"""Input sources under arbitrary bytes: every record is a prediction or an error, and no
reader raises (property-based, with hypothesis)."""
import io
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.data import csvout, imagedecode, imagefolder, sources
from model.data.block import PIXEL_COLUMNS
from model.data.csvparse import count_records, parse_rows
from model.data.samples import load_sample
from model.errors import DataError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROW = ",".join(["0"] * 783 + ["255"])


@pytest.fixture(scope="module")
def sample():
    return load_sample()


def png_bytes(array, mode="L"):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG")
    return buf.getvalue()


def lines_of(block):
    """Records of a block as the parser counts them: blank lines are none."""
    return count_records(block)


# ----------------------------------------------------------------------------- CSV

@FAST
@given(st.binary(max_size=4000))
def test_parser_never_raises_and_accounts_for_every_line(block):
    values, errors = parse_rows(block, 784)
    assert values.shape == (lines_of(block), 784) and values.dtype == np.uint8
    assert set(errors) <= set(range(len(values)))
    assert all(isinstance(r, str) and r for r in errors.values())
    assert not values[list(errors)].any()  # bad lines are zero rows


@FAST
@given(st.lists(st.sampled_from([ROW.encode(), b"", b"x", b"1,2", b"\xff\x00,", b"0" * 5000, b"\r",
                                 ("0," * 783 + "0007").encode(), ("-1," * 784)[:-1].encode()]),
                max_size=30),
       st.binary(max_size=50))
def test_parser_on_mixed_good_and_hostile_lines(lines, noise):
    block = b"\n".join(lines) + noise
    values, errors = parse_rows(block, 784)
    assert len(values) == lines_of(block)
    records = [line for line in block.split(b"\n") if line.strip(b" \t\r\x1a")]
    for i, line in enumerate(records[:len(values)]):
        if line.rstrip(b"\r") == ROW.encode():
            assert i not in errors and values[i, -1] == 255


@FAST
@given(st.binary(max_size=3000))
def test_csv_file_of_arbitrary_bytes_is_a_data_error_or_records(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_bytes(",".join(PIXEL_COLUMNS).encode() + b"\n" + body)
    source = sources.open_source(str(path), 3)
    total = 0
    for i in range(len(source.chunks)):
        block = source.read(i)
        assert len(block) == source.length(i)
        total += len(block)
    assert total == lines_of(body.translate(None, b'"'))  # quotes are removed before lines are counted


@FAST
@given(st.binary(max_size=3000))
def test_any_header_is_accepted_or_named(tmp_path_factory, head):
    path = tmp_path_factory.mktemp("csv") / "h.csv"
    path.write_bytes(head)
    try:
        sources.open_source(str(path), 10)
    except DataError as e:
        assert e.source == str(path) and e.reason


# ----------------------------------------------------------------------------- images

@FAST
@given(st.binary(max_size=2000), st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp", "", ".dat"]))
def test_image_of_arbitrary_bytes_is_an_image_or_a_named_error(tmp_path_factory, raw, ext):
    folder = tmp_path_factory.mktemp("img")
    (folder / f"x{ext}").write_bytes(raw)
    try:
        pixels = imagefolder.load_image(str(folder), f"x{ext}")
        assert pixels.shape == (784,) and pixels.dtype == np.uint8
    except DataError as e:
        assert e.source.endswith(f"x{ext}") and e.reason


@FAST
@given(st.data())
def test_mutated_real_images_never_raise(tmp_path_factory, sample, draw):
    good = png_bytes(sample["test_x"][draw.draw(st.integers(0, 99))].reshape(28, 28))
    raw = bytearray(good)
    for _ in range(draw.draw(st.integers(1, 8))):
        raw[draw.draw(st.integers(0, len(raw) - 1))] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(1, len(raw)))
    folder = tmp_path_factory.mktemp("mut")
    for i, blob in enumerate((bytes(raw), bytes(raw[:cut]))):
        (folder / f"{i}.png").write_bytes(blob)
    block = imagefolder.read_images(str(folder), ["0.png", "1.png"])
    assert len(block) == 2
    for i in range(2):
        assert (i in block.errors) or block.pixels[i].shape == (784,)


def png_claiming(width, height, rows=None):
    """A PNG whose header says width x height of 8-bit gray; its data holds `rows` rows of
    zeros (default all), compressed as they are made so that no full image is ever held."""
    def chunk(kind, body):
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    z = zlib.compressobj(9)
    line = bytes(width + 1)
    idat = b"".join(z.compress(line) for _ in range(height if rows is None else rows)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_an_error_not_a_crash(tmp_path, sample):
    bomb = png_claiming(20000, 20000, rows=1)
    assert len(bomb) < 400
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "good.png").write_bytes(png_bytes(sample["test_x"][0].reshape(28, 28)))
    block = imagefolder.read_images(str(tmp_path), ["bomb.png", "good.png"])
    assert block.errors == {0: "image is 20000x20000, over the limit of 16,777,216 pixels"}
    assert np.array_equal(block.pixels[1], sample["test_x"][0])


def test_huge_image_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    (tmp_path / "huge.png").write_bytes(png_claiming(12000, 12000))
    decoded = []
    real = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real(self))
    with pytest.raises(DataError, match="image is 12000x12000, over the limit of 16,777,216 pixels"):
        imagefolder.load_image(str(tmp_path), "huge.png")
    assert decoded == []


@pytest.mark.parametrize("fmt", ["PPM", "PCX", "ICO", "TGA"])
def test_unlisted_decoders_are_never_used(tmp_path, sample, fmt):
    """A PPM, PCX, ICO or TGA (formats PIL knows) named .png is not decoded."""
    Image.fromarray(sample["test_x"][0].reshape(28, 28), "L").save(tmp_path / "other.png", fmt)
    with pytest.raises(DataError, match="not a PNG, JPEG, BMP, GIF, TIFF or WebP image"):
        imagefolder.load_image(str(tmp_path), "other.png")


def test_oversized_file_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_BYTES", 1000)
    monkeypatch.setattr(imagedecode, "MAX_IMAGE_BYTES", 1000)
    (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    with pytest.raises(DataError, match="over the limit"):
        imagefolder.load_image(str(tmp_path), "big.png")


@given(st.lists(st.integers(0, 10 ** 12), max_size=60), st.data())
@settings(max_examples=200, deadline=None)
def test_submission_lines_are_the_f_string_lines(ids, data_):
    labels = data_.draw(st.lists(st.integers(0, 9), min_size=len(ids), max_size=len(ids)))
    want = "".join(f"{i},{lab}\n" for i, lab in zip(ids, labels)).encode()
    assert csvout.submission_lines(np.array(ids, np.int64), np.array(labels, np.int16)) == want


def test_submission_lines_around_powers_of_ten():
    ids = np.array([0, 1, 9, 10, 11, 99, 100, 999, 1000, 9999, 10000, 999999, 1000000, 10 ** 18 - 1])
    labels = np.arange(len(ids)) % 10
    want = "".join(f"{i},{lab}\n" for i, lab in zip(ids.tolist(), labels.tolist())).encode()
    assert csvout.submission_lines(ids, labels) == want


def test_submission_lines_of_a_chunk_of_equally_long_ids():
    ids, labels = np.arange(990001, 1000001), np.arange(10000) % 10  # one width: the fast path
    want = "".join(f"{i},{lab}\n" for i, lab in zip(ids.tolist(), labels.tolist())).encode()
    assert csvout.submission_lines(ids, labels) == want


CELL = st.text(st.sampled_from(list('ab,"\r\n é\\\t\x00;')), max_size=8)


@given(st.lists(st.tuples(CELL, st.integers(0, 9), st.floats(0, 1), st.one_of(st.none(), CELL)), min_size=1,
                max_size=12), st.data())
@settings(max_examples=300, deadline=None)
def test_image_output_lines_read_back_as_their_cells(rows, data_):
    """Paths and notes holding commas, quotes, line breaks: csv.reader gets each cell back,
    on the quick path (plain names, no notes) and the cell-by-cell one."""
    import csv
    names = [r[0] for r in rows]
    good = np.array(sorted(data_.draw(st.sets(st.integers(0, len(rows) - 1), min_size=1))))
    notes = {i: r[3] for i, r in enumerate(rows) if r[3] is not None}
    labels = np.array([rows[i][1] for i in good])
    conf = np.array([rows[i][2] for i in good])
    src = sources.ImageFolderSource("f", [[0, len(rows)]], names)
    text = src.output_lines(names, good, labels, conf, notes).decode("utf-8")
    want = [[names[i], str(rows[i][1]), f"{rows[i][2]:.4f}", notes.get(i, "")] for i in good.tolist()]
    assert list(csv.reader(io.StringIO(text, newline=""))) == want


@given(st.lists(st.text(st.sampled_from(list("ab/é\udc80\udcff")), max_size=6), max_size=8))
@settings(max_examples=200, deadline=None)
def test_display_names_are_display_name_of_each(rels):
    assert imagefolder.display_names(rels) == [imagefolder.display_name(r) for r in rels]


@given(st.lists(st.floats(0, 1, width=32), max_size=40))
@settings(max_examples=300, deadline=None)
def test_confidence_texts_are_the_f_string_texts(values):
    c = np.array(values, np.float32)
    assert csvout.confidence_texts(c) == [f"{x:.4f}" for x in c.tolist()]


def test_confidence_texts_at_ties_and_edges():
    ties = np.array([k / 10000 + d for k in range(0, 10001, 7) for d in (0, 0.00005)], np.float32)
    ties = np.concatenate([ties, np.nextafter(ties, 0), np.nextafter(ties, 1), [0.03125, 0.00005, 1.0, 0.0]])
    c = np.clip(ties, 0, 1).astype(np.float32)
    assert csvout.confidence_texts(c) == [f"{x:.4f}" for x in c.tolist()]
    odd = np.array([np.nan, 1.5, -0.0], np.float32)  # out of range, NaN: formatted one by one
    assert csvout.confidence_texts(odd) == [f"{x:.4f}" for x in odd.tolist()]
    assert csvout.confidence_texts(np.array([0.25, 0.5])) == ["0.2500", "0.5000"]  # float64: one by one
