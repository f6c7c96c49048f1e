"""model.data.imagepack: a packed folder reads exactly as the folder itself, file by file."""
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model import storage
from model.data import imagefolder, imagepack, sources
from model.data.samples import write_sample


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory, sample):
    """Digit sub-folders of real images, plus what a real folder holds besides: a note, a
    damaged PNG, an empty file, a dangling link, a name that is not UTF-8, a big image."""
    root = str(tmp_path_factory.mktemp("odd"))
    write_sample(root, images=True)
    train = os.path.join(root, "images", "train")
    (open(os.path.join(train, "README.txt"), "w")).write("not an image")
    open(os.path.join(train, "3", "broken.png"), "wb").write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    open(os.path.join(train, "4", "empty.png"), "wb").close()
    os.symlink(os.path.join(train, "missing.png"), os.path.join(train, "5", "dangling.png"))
    name = os.fsencode(os.path.join(train, "6")) + b"/caf\xe9.png"
    Image.fromarray(sample["train_x"][0].reshape(28, 28), "L").save(name.decode("utf-8", "surrogateescape"))
    Image.fromarray(np.full((300, 300), 255, np.uint8), "L").save(os.path.join(train, "7", "big.png"))
    Image.fromarray(sample["train_x"][1].reshape(28, 28), "L").save(os.path.join(train, "2", "scan"), "PNG")
    Image.fromarray(255 - sample["train_x"][2].reshape(28, 28), "L").save(os.path.join(train, "1", "page.tif"))
    open(os.path.join(train, "9", "blank"), "wb").close()
    return train


def same_reads(a, b):
    assert a.paths == b.paths and a.chunks == b.chunks
    for i in range(len(a.chunks)):
        x, y = a.read(i, labels=a.labels is not None), b.read(i, labels=b.labels is not None)
        assert np.array_equal(x.pixels, y.pixels) and x.errors == y.errors and x.notes == y.notes
        assert a.names(i, 0, len(x)) == b.names(i, 0, len(y))
        if a.labels is not None:
            assert np.array_equal(x.labels, y.labels)


@pytest.mark.parametrize("to_url", [False, True])
def test_packed_folder_reads_as_the_folder(odd_folder, tmp_path, to_url):
    target = "memory://pack-test/" + tmp_path.name if to_url else str(tmp_path / "packed")
    n = imagepack.pack(odd_folder, target, imagefolder.IMAGE_TYPES, imagefolder.MAX_IMAGE_BYTES)
    assert n == len(storage.walk_files(odd_folder)) and imagepack.is_packed(target)
    assert storage.listdir(target) == sorted([imagepack.INDEX, imagepack.PACK])  # two objects, not one per file
    plain, packed = sources.open_source(odd_folder, 64, 64), sources.open_source(target, 64, 64)
    assert packed.pack is not None and plain.pack is None
    same_reads(plain, packed)
    errors = {}
    for i in range(len(packed.chunks)):
        block = packed.read(i)
        errors.update((packed.paths[packed.chunks[i][0] + k], r) for k, r in block.errors.items())
    assert set(errors) == {"README.txt", "3/broken.png", "4/empty.png", "5/dangling.png", "7/big.png",  # no ink
                           "9/blank"}
    assert "unreadable" in errors["5/dangling.png"] and "unknown file type" in errors["README.txt"]
    assert errors["4/empty.png"] == errors["9/blank"] == "empty file"  # "2/scan", a PNG, is read
    # training from the pack: the same labels, the same files left out
    plain_t = sources.open_source(odd_folder, 64, 64, training=True)
    packed_t = sources.open_source(target, 64, 64, training=True)
    assert plain_t.unplaced == packed_t.unplaced == [("README.txt", "not inside a digit sub-folder 0..9")]
    same_reads(plain_t, packed_t)
    a, b = sources.load_training(odd_folder, skip_bad=True), sources.load_training(target, skip_bad=True)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.labels, b.labels)
    assert [r for _, r in a.skipped] == [r for _, r in b.skipped]


def test_a_file_over_the_limit_is_packed_without_its_bytes(odd_folder, tmp_path):
    target = str(tmp_path / "packed")
    imagepack.pack(odd_folder, target, imagefolder.IMAGE_TYPES, max_bytes=400)
    entries = {e[0]: e for e in imagepack.read_index(target)}
    big = entries["7/big.png"]
    assert big[2] == 0 and big[3] == "file is over the limit of 0 MB"
    assert os.path.getsize(os.path.join(target, imagepack.PACK)) == sum(e[2] for e in entries.values())
    got = imagepack.read_entries(target, [big, entries["0/" + sorted(os.listdir(os.path.join(odd_folder, "0")))[0]]])
    assert isinstance(got[0], imagefolder.DataError) and got[0].reason.startswith("file is over the limit")
    assert isinstance(got[1], bytes) and got[1].startswith(b"\x89PNG")


def test_one_range_request_per_chunk(odd_folder, tmp_path, monkeypatch):
    target = str(tmp_path / "packed")
    imagepack.pack(odd_folder, target, imagefolder.IMAGE_TYPES, imagefolder.MAX_IMAGE_BYTES)
    source = sources.open_source(target, 100, 100)
    calls = []
    real = storage.read_ranges
    monkeypatch.setattr(storage, "read_ranges", lambda ref, s, e: calls.append(len(s)) or real(ref, s, e))
    source.read(0)
    assert calls == [1]  # 100 images, one range


def test_a_damaged_index_is_a_data_error(tmp_path):
    target = tmp_path / "packed"
    target.mkdir()
    (target / imagepack.INDEX).write_text('{"format": 99}')
    with pytest.raises(imagefolder.DataError, match="not an image pack index"):
        sources.open_source(str(target), 10, 10)


@given(st.binary(max_size=200) | st.builds(lambda o: json.dumps(o).encode(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["format", "files", "x"]), inner,
                                                                max_size=3), max_leaves=12)))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_an_index_of_arbitrary_bytes_is_a_data_error_or_an_index(tmp_path, raw):
    target = tmp_path / "packed"
    target.mkdir(exist_ok=True)
    (target / imagepack.INDEX).write_bytes(raw)
    try:
        entries = imagepack.read_index(str(target))
    except imagefolder.DataError as e:
        assert imagepack.INDEX in str(e)
    else:  # only what pack() writes gets through
        assert all(isinstance(e[0], str) and e[1] >= 0 and e[2] >= 0 for e in entries)


def test_a_pack_that_cannot_be_written_names_its_path_and_leaves_no_index(odd_folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    target = str(blocker / "packed")  # its folder would have to be inside a file
    with pytest.raises(OSError) as e:
        imagepack.pack(odd_folder, target, imagefolder.IMAGE_TYPES, imagefolder.MAX_IMAGE_BYTES)
    assert str(blocker) in str(e.value)
    assert not imagepack.is_packed(target)
