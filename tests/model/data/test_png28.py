"""model.data.png28, the short path for MNIST-style PNGs: it must decode exactly what PIL decodes,
take only the files it can vouch for, and leave every other file, damaged ones above all,
to PIL with the same outcome as before (compared here through imagefolder.decode_image with the
short path on and off)."""
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.data import imagefolder, png28
from model.data.samples import load_sample
from model.errors import DataError

SIG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    return load_sample()["train_x"][:64].reshape(-1, 28, 28)


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def ihdr(w=28, h=28, depth=8, color=0, interlace=0):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace))


def unfiltered(img, filters):
    """Rows of img (28, 28) uint8 encoded with the given PNG filter type per row."""
    out, prev = bytearray(), np.zeros(28, np.int32)
    for row, f in zip(img.astype(np.int32), filters):
        left = np.concatenate([[0], row[:-1]])
        up_left = np.concatenate([[0], prev[:-1]])
        if f == 0:
            pred = np.zeros(28, np.int32)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:  # Paeth
            p = left + prev - up_left
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        out.append(f)
        out += ((row - pred) % 256).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


def png(img, filters=(0,) * 28, before=(), idat_parts=1, after=b""):
    """A hand-made 28x28 gray PNG: chosen row filters, extra chunks before IDAT, the
    compressed stream split over idat_parts IDAT chunks, bytes after IEND."""
    z = zlib.compress(unfiltered(img, filters))
    step = -(-len(z) // idat_parts)
    idats = b"".join(chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step))
    return SIG + ihdr() + b"".join(before) + idats + chunk(b"IEND", b"") + after


def pil_pixels(raw):
    with Image.open(io.BytesIO(raw)) as img:
        return np.asarray(img)


def outcome(raw, monkeypatch=None, short=True):
    """decode_image's answer, with the short path on or off: pixels and note, or the error."""
    saved = list(png28._LOADER)
    if not short:
        png28._LOADER[:] = [None]
    try:
        pixels, note = imagefolder.decode_image(raw, "x.png")
        return ("ok", pixels.tobytes(), note)
    except DataError as e:
        return ("error", e.reason)
    finally:
        png28._LOADER[:] = saved


def test_pyspng_is_there():
    assert png28._load() is not None, "pyspng is a dependency: without it every file goes to PIL"


@pytest.mark.parametrize("f", range(5))
def test_each_row_filter_decodes_as_pil_does(digits, f):
    for img in digits[:16]:
        raw = png(img, (f,) * 28)
        got = png28.decode(raw)
        assert got is not None and np.array_equal(got, img) and np.array_equal(got, pil_pixels(raw))


@given(st.integers(0, 63), st.lists(st.integers(0, 4), min_size=28, max_size=28), st.integers(1, 4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mixed_filters_and_split_idat_decode_as_pil_does(digits, i, filters, parts):
    raw = png(digits[i], filters, idat_parts=parts)
    got = png28.decode(raw)
    assert got is not None and np.array_equal(got, digits[i]) and np.array_equal(got, pil_pixels(raw))


def test_files_pil_writes_take_the_short_path(digits, tmp_path):
    for k, img in enumerate(digits[:16]):
        buf = io.BytesIO()
        Image.fromarray(img, "L").save(buf, "PNG", optimize=bool(k % 2))
        got = png28.decode(buf.getvalue())
        assert got is not None and np.array_equal(got, img)


def test_harmless_ancillary_chunks_are_taken(digits):
    before = [chunk(b"gAMA", struct.pack(">I", 45455)), chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
              chunk(b"sRGB", b"\x00"), chunk(b"tIME", struct.pack(">HBBBBB", 2026, 12, 1, 0, 0, 0)),
              chunk(b"bKGD", b"\x00\x00")]
    raw = png(digits[0], before=before)
    assert png28.is_plain(raw) and np.array_equal(png28.decode(raw), pil_pixels(raw))


@pytest.mark.parametrize("why, raw", [
    ("transparency", lambda img: png(img, before=[chunk(b"tRNS", b"\x00\x00")])),
    ("animation", lambda img: png(img, before=[chunk(b"acTL", struct.pack(">II", 1, 0))])),
    ("unknown chunk", lambda img: png(img, before=[chunk(b"zzZz", b"hello")])),
    ("text chunk", lambda img: png(img, before=[chunk(b"tEXt", b"Comment\x00hi")])),
    ("gAMA of the wrong length", lambda img: png(img, before=[chunk(b"gAMA", b"\x00\x01")])),
    ("chunk after IDAT", lambda img: png(img)[:-12] + chunk(b"gAMA", b"\0\0\0\1") + chunk(b"IEND", b"")),
    ("bytes after IEND", lambda img: png(img, after=b"\x00")),
    ("no IEND", lambda img: png(img)[:-12]),
    ("bad CRC", lambda img: png(img)[:-1] + b"\x00"),
    ("other size", lambda img: SIG + ihdr(w=27) + png(img)[33:]),
    ("interlaced", lambda img: SIG + ihdr(interlace=1) + png(img)[33:]),
    ("16-bit", lambda img: SIG + ihdr(depth=16) + png(img)[33:]),
    ("RGB", lambda img: SIG + ihdr(color=2) + png(img)[33:]),
    ("a second IHDR", lambda img: png(img)[:33] + ihdr() + png(img)[33:]),
    ("not a PNG", lambda img: b"GIF89a" + png(img)[6:]),
])
def test_files_it_cannot_vouch_for_go_to_pil(digits, why, raw):
    b = raw(digits[0])
    assert not png28.is_plain(b) and png28.decode(b) is None, why


def test_a_stream_cut_short_or_failing_its_checksum_goes_to_pil(digits):
    z = zlib.compress(unfiltered(digits[0], (0,) * 28))
    bad_sum = z[:-1] + bytes([z[-1] ^ 1])  # libspng alone would decode this one
    for stream in (z[:-30], bad_sum):
        raw = SIG + ihdr() + chunk(b"IDAT", stream) + chunk(b"IEND", b"")  # every CRC holds
        assert not png28.is_plain(raw) and png28.decode(raw) is None
        assert outcome(raw) == outcome(raw, short=False)


def test_a_stream_that_inflates_past_one_image_goes_to_pil(digits):
    rows = unfiltered(digits[0], (0,) * 28)
    raw = SIG + ihdr() + chunk(b"IDAT", zlib.compress(rows + bytes(1 << 20))) + chunk(b"IEND", b"")
    assert png28.decode(raw) is None and outcome(raw) == outcome(raw, short=False)


def test_without_pyspng_everything_goes_to_pil(digits):
    raw = png(digits[3])
    saved = list(png28._LOADER)
    png28._LOADER[:] = [None]
    try:
        assert png28.decode(raw) is None
        assert np.array_equal(imagefolder.decode_image(raw, "x.png")[0], digits[3].reshape(784))
    finally:
        png28._LOADER[:] = saved


def test_a_dark_on_light_mnist_png_is_still_preprocessed(digits):
    raw = png(255 - digits[5])
    assert png28.decode(raw) is not None
    assert outcome(raw) == outcome(raw, short=False) and outcome(raw)[2]  # a note: it was inverted


@given(st.integers(0, 63), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 420), st.sampled_from([0, 1, 2, 3, 4]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_files_get_the_same_answer_with_and_without_the_short_path(digits, i, flips, cut, f):
    raw = bytearray(png(digits[i], (f,) * 28, idat_parts=1 + i % 3))
    for at, value in flips:
        raw[at % len(raw)] = value
    raw = bytes(raw[:max(cut, 1)] if cut < len(raw) else raw)
    assert outcome(raw) == outcome(raw, short=False)


@given(st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_bytes_never_raise_out_of_the_short_path(raw):
    assert png28.decode(raw) is None or png28.decode(raw).shape == (28, 28)
    assert png28.decode(SIG + ihdr() + raw) is None or outcome(SIG + ihdr() + raw) == outcome(SIG + ihdr() + raw,
                                                                                           short=False)


@given(st.integers(0, 63), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=3),
       st.integers(0, 400), st.sampled_from([0, 1, 2, 3, 4]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_streams_under_valid_crcs_get_the_same_answer(digits, i, flips, cut, f):
    """The hard case: the chunk list checks out, the compressed pixels inside do not
    (flipped bytes, a stream cut short, as a broken writer makes them)."""
    z = bytearray(zlib.compress(unfiltered(digits[i], (f,) * 28)))
    for at, value in flips:
        z[at % len(z)] = value
    z = bytes(z[:max(cut, 1)] if cut < len(z) else z)
    raw = SIG + ihdr() + chunk(b"IDAT", z) + chunk(b"IEND", b"")
    assert outcome(raw) == outcome(raw, short=False)


def test_filter_bytes_out_of_range_get_the_same_answer(digits):
    rows = bytearray(unfiltered(digits[7], (0,) * 28))
    for bad in (5, 17, 255):
        rows[29 * 3] = bad
        raw = SIG + ihdr() + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
        assert outcome(raw) == outcome(raw, short=False)


def test_a_folder_reads_the_same_with_and_without_the_short_path(digits, tmp_path):
    """read_images checks the polarity of the short path's images in one go: inverted digits
    still get preprocessed with their note, a white page is still an error."""
    images = {"plain.png": digits[0], "inverted.png": 255 - digits[1], "white.png": np.full((28, 28), 255, np.uint8),
              "black.png": np.zeros((28, 28), np.uint8), "grey-border.png": np.pad(digits[2][1:-1, 1:-1], 1,
                                                                                   constant_values=200)}
    for name, img in images.items():
        (tmp_path / name).write_bytes(png(img, (4,) * 28))
    (tmp_path / "broken.png").write_bytes(png(digits[3])[:80])
    rels = sorted(p.name for p in tmp_path.iterdir())
    quick = imagefolder.read_images(str(tmp_path), rels)
    saved = list(png28._LOADER)
    png28._LOADER[:] = [None]
    try:
        slow = imagefolder.read_images(str(tmp_path), rels)
    finally:
        png28._LOADER[:] = saved
    assert np.array_equal(quick.pixels, slow.pixels) and quick.errors == slow.errors and quick.notes == slow.notes
    at = {r: i for i, r in enumerate(rels)}
    assert "inverted" in quick.notes[at["inverted.png"]] and "no ink" in quick.errors[at["white.png"]]
    assert at["broken.png"] in quick.errors and at["plain.png"] not in quick.notes
