"""model.data.imagezip and sources.ImageZipSource: a zip of images reads as the image folder it holds."""
import csv
import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from model import batch, checkpoint
from model.data import imagedecode, imagezip, sources
from model.errors import DataError
from tests.model.data.photos import encode, gray, page


def png(x):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(x, np.uint8).reshape(28, 28), "L").save(buf, "PNG")
    return buf.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return str(path)


def test_a_zip_of_images_predicts_as_the_folder(tmp_path, sample, trained_model):
    model, model_path = trained_model
    members = {f"scans/{i:03d}.png": png(sample["test_x"][i]) for i in range(12)}
    members["scans/photo.jpg"] = encode(gray(page(sample["test_x"][12], np.random.default_rng(0))), "JPEG", 6)
    members["scans/notes.txt"] = b"not an image"
    members["scans/sub/"] = b""  # a folder entry
    members["__MACOSX/scans/._000.png"] = b"\x00\x05\x16\x07"  # the macOS archiver's metadata
    z = write_zip(tmp_path / "archive.zip", members)
    folder = tmp_path / "folder"
    for name, raw in members.items():
        if not name.endswith("/") and not name.startswith("__MACOSX"):
            (folder / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(raw)

    source = sources.open_source(z, 5)
    assert isinstance(source, sources.ImageZipSource) and len(source.chunks) == 3
    assert sources.from_dict(source.to_dict()).to_dict() == source.to_dict()
    counts = batch.run(source, checkpoint.load_model(model_path), str(tmp_path / "zip.csv"))
    batch.run(sources.open_source(str(folder), 5), checkpoint.load_model(model_path), str(tmp_path / "dir.csv"))
    assert counts["rows_ok"] == 13 and counts["rows_bad"] == 1
    zipped = (tmp_path / "zip.csv").read_text().splitlines()
    plain = (tmp_path / "dir.csv").read_text().splitlines()
    assert zipped[0] == plain[0] and zipped[1:] == ["archive.zip::" + line for line in plain[1:]]
    assert any(line.startswith("archive.zip::scans/photo.jpg,") and "rotated by EXIF 6" in line for line in zipped)
    with open(tmp_path / "zip.errors.csv", newline="") as f:
        errors = list(csv.reader(f))
    assert errors == [["path", "reason"], ["archive.zip::scans/notes.txt",
                                           "unknown file type '.txt': not a PNG, JPEG, BMP, GIF, TIFF or WebP image"]]


def test_a_training_zip_with_a_folder_per_digit(tmp_path, sample):
    members = {f"mnist/{y}/{i}.png": png(x) for i, (x, y) in
               enumerate(zip(sample["train_x"][:40], sample["train_y"][:40]))}
    members["mnist/README"] = b"digits"
    z = write_zip(tmp_path / "train.zip", members)
    got = sources.load_training(z, skip_bad=True)
    order = sorted(range(40), key=lambda i: f"{sample['train_y'][i]}/{i}.png")
    assert np.array_equal(got.labels, sample["train_y"][order])
    assert np.array_equal(got.pixels, sample["train_x"][order])
    assert got.skipped == [("mnist/README", "not inside a digit sub-folder 0..9")]
    with pytest.raises(DataError, match=r"train.zip::mnist/README: not inside a digit sub-folder"):
        sources.load_training(z)


def test_zip_bomb_and_oversized_members_are_refused_before_inflating(tmp_path, sample, monkeypatch):
    z = write_zip(tmp_path / "bomb.zip", {"bomb.png": b"\x89PNG\r\n\x1a\n" + bytes(20 << 20),
                                          "ok.png": png(sample["test_x"][0])})
    monkeypatch.setattr(imagedecode, "MAX_IMAGE_BYTES", 8 << 20)
    monkeypatch.setattr(imagezip, "MAX_IMAGE_BYTES", 8 << 20)
    inflated = []
    real = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: inflated.append(
        getattr(name, "filename", name)) or real(self, name, *a, **k))
    block = sources.open_source(z, 10).read(0)
    assert block.errors == {0: "file is over the limit of 8 MB"} and "bomb.png" not in inflated
    assert np.array_equal(block.pixels[1], sample["test_x"][0])

    monkeypatch.setattr(imagezip, "MAX_IMAGE_BYTES", 32 << 20)
    monkeypatch.setattr(imagedecode, "MAX_IMAGE_BYTES", 32 << 20)
    block = sources.open_source(z, 10).read(0)
    assert block.errors[0].startswith("inflates 20,971,528 bytes from") and "zip bomb" in block.errors[0]


def test_a_member_whose_header_lies_about_its_size_is_bounded_and_refused(tmp_path, sample):
    """A member declaring 100 bytes that inflates to 1 MB: reading stops at 100, the CRC fails."""
    z = tmp_path / "liar.zip"
    write_zip(z, {"a.png": b"\x89PNG\r\n\x1a\n" + bytes(1 << 20), "b.png": png(sample["test_x"][1])})
    raw = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("a.png")
    lie = (100).to_bytes(4, "little")
    raw[info.header_offset + 22:info.header_offset + 26] = lie  # the local header's size
    central = raw.find(b"PK\x01\x02")  # a.png's entry comes first
    raw[central + 24:central + 28] = lie  # the central directory's size
    z.write_bytes(bytes(raw))
    block = sources.open_source(str(z), 10).read(0)
    assert 0 in block.errors and block.errors[0].startswith("unreadable zip member")
    assert np.array_equal(block.pixels[1], sample["test_x"][1])


def test_a_damaged_zip_and_zips_of_csvs_are_not_image_zips(tmp_path):
    assert not imagezip.is_image_zip(write_zip(tmp_path / "kaggle.zip", {"train.csv": b"label\n", "test.csv": b"x"}))
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + os.urandom(300))
    assert not imagezip.is_image_zip(str(tmp_path / "broken.zip"))
    assert not imagezip.is_image_zip(write_zip(tmp_path / "empty.zip", {}))  # refused at submit as a CSV zip
    assert imagezip.list_members(str(tmp_path / "empty.zip")) == ([], [])


def test_a_corrupt_member_is_its_own_error(tmp_path, sample):
    z = tmp_path / "crc.zip"
    write_zip(z, {"a.png": png(sample["test_x"][0]), "b.png": png(sample["test_x"][1])}, zipfile.ZIP_STORED)
    raw = bytearray(z.read_bytes())
    at = raw.find(b"IDAT") + 10  # a byte of a.png's pixels, stored: the CRC no longer holds
    raw[at] ^= 0xFF
    z.write_bytes(bytes(raw))
    block = sources.open_source(str(z), 10).read(0)
    assert block.errors[0].startswith("unreadable zip member") and "CRC" in block.errors[0]
    assert np.array_equal(block.pixels[1], sample["test_x"][1])


def test_a_zip_on_an_object_store_is_read_by_ranges(tmp_path, sample):
    from model import storage
    members = {f"{i}.png": png(sample["test_x"][i]) for i in range(5)}
    local = write_zip(tmp_path / "remote.zip", members)
    url = f"memory://zip-test/{tmp_path.name}/remote.zip"
    storage.upload(local, url)
    source = sources.open_source(url, 3)
    assert isinstance(source, sources.ImageZipSource) and source.names(0, 0, 2) == ["remote.zip::0.png",
                                                                                   "remote.zip::1.png"]
    blocks = [source.read(i) for i in range(len(source.chunks))]
    assert all(not b.errors for b in blocks)
    assert np.array_equal(np.concatenate([b.pixels for b in blocks]), sample["test_x"][:5])
