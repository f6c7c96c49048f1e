"""model.data.imagedecode: files as cameras and scanners write them (EXIF orientation, TIFF, WebP),
read by their bytes whatever their name, and no bytes raise out of the reader."""
import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from model.data import imagedecode, imagefolder, sources
from model.errors import DataError
from tests.model.data.photos import encode, gray, page

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LOSSLESS = {"PNG": {}, "TIFF": {}, "WEBP": {"lossless": True}, "JPEG": {"quality": 100}}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_exif_transpose_does(fmt, orientation):
    """The oracle is PIL.ImageOps.exif_transpose on the same file."""
    rng = np.random.default_rng(orientation)
    a = rng.integers(0, 256, (30, 50), dtype=np.uint8)
    raw = encode(a, fmt, orientation, **LOSSLESS[fmt])
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(raw))).convert("L"))
    Image_, _ = imagedecode.decoders()
    got, w, h, turned = imagedecode._decode_pil(Image_, raw, "x")
    assert np.array_equal(got, want)
    assert turned == ("" if orientation == 1 else f"rotated by EXIF {orientation}")


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_phone_photos_stored_turned_read_as_the_upright_ones(sample, orientation):
    for i in range(5):
        upright = gray(page(sample["test_x"][i], np.random.default_rng(i)))
        straight, note0 = imagefolder.decode_image(encode(upright, "PNG"), "up.png")
        turned, note = imagefolder.decode_image(encode(upright, "PNG", orientation), "turned.png")
        assert np.array_equal(straight, turned)
        assert note.split(": ", 1)[1].startswith(f"rotated by EXIF {orientation}; inverted dark-on-light")
        jpeg, _ = imagefolder.decode_image(encode(upright, "JPEG", orientation), "turned.jpg")
        assert np.corrcoef(jpeg, straight)[0, 1] > 0.9  # the same digit, the same way up


def test_a_28x28_mnist_image_stored_turned_is_turned_back(sample):
    x = sample["test_x"][0].reshape(28, 28)
    pixels, note = imagefolder.decode_image(encode(x, "PNG", 6), "x.png")
    assert np.array_equal(pixels.reshape(28, 28), x) and note == "rotated by EXIF 6"


@pytest.mark.parametrize("garbage", [b"Exif\x00\x00" + b"\xff" * 40, b"Exif\x00\x00MM\x00*\x00\x00\xff\xff",
                                     b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + os.urandom(30)])
def test_a_damaged_exif_block_is_ignored(sample, garbage):
    upright = gray(page(sample["test_x"][1], np.random.default_rng(1)))
    plain, note = imagefolder.decode_image(encode(upright, "JPEG"), "a.jpg")
    raw = encode(upright, "JPEG", exif=garbage)
    pixels, note2 = imagefolder.decode_image(raw, "b.jpg")
    assert np.array_equal(pixels, plain) and "EXIF" not in note2


@pytest.mark.parametrize("fmt,ext", [("TIFF", ".tif"), ("TIFF", ".tiff"), ("WEBP", ".webp")])
def test_tiff_and_webp_are_read_exactly(tmp_path, sample, fmt, ext):
    x = sample["test_x"][2].reshape(28, 28)
    (tmp_path / f"d{ext}").write_bytes(encode(x, fmt, **LOSSLESS[fmt]))
    assert np.array_equal(imagefolder.load_image(str(tmp_path), f"d{ext}"), x.reshape(784))


def test_a_folder_holding_only_tiffs_predicts_them(tmp_path, sample):
    for i in range(6):
        (tmp_path / f"{i}.tiff").write_bytes(encode(sample["test_x"][i].reshape(28, 28), "TIFF",
                                                    compression="tiff_lzw"))
    source = sources.open_source(str(tmp_path), 4)
    blocks = [source.read(i) for i in range(len(source.chunks))]
    assert sum(len(b) for b in blocks) == 6 and all(not b.errors for b in blocks)
    assert np.array_equal(np.concatenate([b.pixels for b in blocks]), sample["test_x"][:6])


def test_a_multi_page_tiff_is_refused_with_its_page_count(tmp_path, sample):
    frames = [Image.fromarray(sample["test_x"][i].reshape(28, 28)) for i in range(3)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="multi-page image of 3 frames"):
        imagefolder.load_image(str(tmp_path), "pages.tif")


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP"])
def test_tiff_and_webp_sizes_are_checked_from_the_header(tmp_path, monkeypatch, fmt):
    (tmp_path / "big").write_bytes(encode(np.zeros((300, 200), np.uint8), fmt, **LOSSLESS[fmt]))
    monkeypatch.setattr(imagedecode, "MAX_IMAGE_PIXELS", 100 * 100)
    decoded = []
    real = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real(self))
    with pytest.raises(DataError, match="image is 200x300, over the limit of 10,000 pixels"):
        imagefolder.load_image(str(tmp_path), "big")
    assert decoded == []


@pytest.mark.parametrize("name", [".png", "scan", "photo.dat", "digit.jpg", "x.gif"])
def test_files_are_read_by_their_bytes_whatever_their_name(tmp_path, sample, name):
    x = sample["test_x"][3]
    (tmp_path / name).write_bytes(encode(x.reshape(28, 28), "PNG"))  # a PNG, whatever it is called
    assert np.array_equal(imagefolder.load_image(str(tmp_path), name), x)
    block = imagefolder.read_images(str(tmp_path), [name])
    assert block.errors == {} and np.array_equal(block.pixels[0], x)


def test_empty_and_non_image_files_are_named_for_what_they_are(tmp_path, sample):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "README").write_text("hello")
    (tmp_path / "ok").write_bytes(encode(sample["test_x"][0].reshape(28, 28), "PNG"))
    rels = ["README", "empty", "empty.png", "notes.txt", "ok"]
    block = imagefolder.read_images(str(tmp_path), rels)
    assert block.errors == {0: "unknown file type '(none)': not a PNG, JPEG, BMP, GIF, TIFF or WebP image",
                            1: "empty file", 2: "empty file",
                            3: "unknown file type '.txt': not a PNG, JPEG, BMP, GIF, TIFF or WebP image"}
    assert np.array_equal(block.pixels[4], sample["test_x"][0])


@FAST
@given(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                        b"RIFF\x00\x00\x00\x00WEBPVP8 "]), st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_out_of_the_image_reader(magic, tail):
    """Any bytes, starting like an image or not: pixels and a note, or a DataError."""
    try:
        pixels, note = imagefolder.decode_image(magic + tail, "x")
        assert pixels.shape == (784,) and pixels.dtype == np.uint8 and isinstance(note, str)
    except DataError as e:
        assert e.source == "x" and e.reason


@FAST
@given(st.data())
def test_mutated_photos_never_raise(sample, draw):
    """A real EXIF-tagged JPEG, TIFF or WebP with bytes changed and cut: an image or a DataError."""
    fmt = draw.draw(st.sampled_from(["JPEG", "TIFF", "WEBP"]))
    raw = bytearray(encode(gray(page(sample["test_x"][0], np.random.default_rng(0), scale=2)), fmt, 6))
    for _ in range(draw.draw(st.integers(1, 6))):
        raw[draw.draw(st.integers(0, len(raw) - 1))] = draw.draw(st.integers(0, 255))
    raw = bytes(raw[:draw.draw(st.integers(1, len(raw)))])
    block = imagefolder.read_images("/nowhere", ["x"], fetch=lambda wanted: [raw for _ in wanted])
    assert len(block) == 1 and (0 in block.errors or block.pixels[0].shape == (784,))


def test_a_50_megapixel_baseline_jpeg_is_decoded_reduced_a_progressive_one_refused(monkeypatch):
    """A baseline JPEG is decoded at 1/8 scale a strip at a time, so a phone's 50 MP photo is
    read; a progressive one would hold all its coefficients at once, so the header limit holds."""
    a = np.full((6000, 8000), 230, np.uint8)
    a[2000:4000, 3900:4100] = 20  # a "1" with a foot
    a[3800:4000, 3600:4400] = 20
    sizes = []
    real = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: sizes.append(self.size) or real(self))
    pixels, note = imagefolder.decode_image(encode(a, "JPEG", quality=80), "big.jpg")
    assert note.startswith("8000x6000: inverted dark-on-light") and max(sizes[-1]) <= 1024
    with pytest.raises(DataError, match="image is 8000x6000, over the limit of 16,777,216 pixels"):
        imagefolder.decode_image(encode(a, "JPEG", quality=80, progressive=True), "big.jpg")


def test_a_png_exif_chunk_after_the_pixels_is_applied():
    import struct
    import zlib
    a = np.full((40, 60), 200, np.uint8)
    a[5:35, 10:15] = 10
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    raw = encode(a, "PNG")
    late = raw[:-12] + chunk + raw[-12:]  # just before IEND
    pixels, note = imagefolder.decode_image(late, "late.png")
    upright, _ = imagefolder.decode_image(encode(np.rot90(a, -1).copy(), "PNG"), "up.png")
    assert "rotated by EXIF 6" in note and np.array_equal(pixels, upright)


def test_an_iphone_heic_photo_is_named_for_what_it_is(tmp_path):
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + os.urandom(200)
    (tmp_path / "IMG_0001.HEIC").write_bytes(heic)
    block = imagefolder.read_images(str(tmp_path), ["IMG_0001.HEIC"])
    assert block.errors == {0: "HEIC/HEIF image: not read; export it as JPEG or PNG (most phones can)"}
