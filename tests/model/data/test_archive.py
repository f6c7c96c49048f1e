"""Compressed and packed CSVs (model.data.archive through model.data.sources): known by their bytes,
decompressed once in bounded memory, a zip's member named or chosen by the rule."""
import gzip
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.data import archive, sources
from model.errors import DataError
from tests.model.data import tool_files

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def sample():
    from model.data.samples import load_sample
    return load_sample()


def pixels_of(source):
    return np.concatenate([source.read(i).pixels for i in range(len(source.chunks))])


@pytest.mark.parametrize("name", sorted(tool_files.COMPRESSORS))
def test_compressed_files_read_as_the_plain_file(tmp_path, sample, name):
    x = sample["test_x"][:120]
    suffix, compress = tool_files.COMPRESSORS[name]
    ref = tmp_path / f"test{suffix}"
    ref.write_bytes(compress(tool_files.plain(x)))
    assert archive.sniff(str(ref)) == name.split()[0]
    sources.check_input(str(ref))
    unpack = tmp_path / "unpacked"
    source = sources.open_source(str(ref), 50, unpack_to=str(unpack))
    np.testing.assert_array_equal(pixels_of(source), x)
    assert source.notes()[0].startswith(f"unpacked from {ref}")
    assert source.input.startswith(str(unpack))
    assert sources.from_dict(source.to_dict()).notes() == source.notes()


def test_a_compressed_file_needs_a_folder_to_unpack_into(tmp_path, sample):
    ref = tmp_path / "t.csv.gz"
    ref.write_bytes(gzip.compress(tool_files.plain(sample["test_x"][:3])))
    with pytest.raises(DataError) as e:
        sources.open_source(str(ref), 10)
    assert e.value.source == str(ref) and "gzip" in e.value.reason


def test_kaggle_zip_predicts_test_and_trains_on_train(tmp_path, sample):
    tx, ty, x = sample["train_x"][:90], sample["train_y"][:90], sample["test_x"][:70]
    ref = tmp_path / "digit-recognizer.zip"
    ref.write_bytes(tool_files.kaggle_zip(tx, ty, x))
    source = sources.open_source(str(ref), 50, unpack_to=str(tmp_path / "p"))
    assert source.notes() == [f"unpacked from {ref}::test.csv"]
    np.testing.assert_array_equal(pixels_of(source), x)
    ds = sources.load_training(str(ref))
    np.testing.assert_array_equal(ds.pixels, tx)
    assert ds.labels.tolist() == ty.tolist()
    sources.check_input(str(ref), training=True)
    # named explicitly, the labeled member predicts too (its labels ignored)
    named = sources.open_source(f"{ref}::train.csv", 50, unpack_to=str(tmp_path / "q"))
    np.testing.assert_array_equal(pixels_of(named), tx)


def test_ambiguous_zip_lists_its_members(tmp_path, sample):
    x = sample["test_x"][:5]
    ref = tmp_path / "two.zip"
    ref.write_bytes(tool_files.zipped({"a.csv": tool_files.plain(x), "b.csv": tool_files.plain(x),
                                       "readme.txt": b"hello"}))
    for call in (lambda: sources.check_input(str(ref)),
                 lambda: sources.open_source(str(ref), 10, unpack_to=str(tmp_path / "u"))):
        with pytest.raises(DataError) as e:
            call()
        assert e.value.source == str(ref)
        assert "holds 2 CSV files (a.csv, b.csv)" in e.value.reason
        assert f"{ref}::a.csv" in e.value.reason
    with pytest.raises(DataError) as e:
        sources.check_input(str(ref), training=True)
    assert "no labeled one" in e.value.reason
    source = sources.open_source(f"{ref}::b.csv", 10, unpack_to=str(tmp_path / "u"))
    np.testing.assert_array_equal(pixels_of(source), x)


def test_missing_member_and_member_of_a_plain_file(tmp_path, sample):
    ref = tmp_path / "one.zip"
    ref.write_bytes(tool_files.zipped({"test.csv": tool_files.plain(sample["test_x"][:2])}))
    with pytest.raises(DataError) as e:
        sources.check_input(f"{ref}::nope.csv")
    assert "has no member 'nope.csv'; it holds test.csv" in e.value.reason
    plain = tmp_path / "p.csv"
    plain.write_bytes(tool_files.plain(sample["test_x"][:2]))
    with pytest.raises(DataError) as e:
        sources.check_input(f"{plain}::x.csv")
    assert "is not a zip file" in e.value.reason


@pytest.mark.parametrize("damage", ["truncated gzip", "garbage after gzip magic", "corrupt zip", "empty zip"])
def test_damaged_archives_are_named_errors_and_leave_nothing(tmp_path, sample, damage):
    raw = tool_files.plain(sample["test_x"][:200])
    if damage == "truncated gzip":
        bad = gzip.compress(raw)[:-300]
    elif damage == "garbage after gzip magic":
        bad = b"\x1f\x8b" + bytes(range(256)) * 4
    elif damage == "corrupt zip":
        bad = tool_files.zipped({"test.csv": raw})[:200]
    else:
        bad = tool_files.zipped({})
    ref = tmp_path / "bad.csv.gz"
    ref.write_bytes(bad)
    unpack = tmp_path / "u"
    with pytest.raises(DataError) as e:
        sources.open_source(str(ref), 10, unpack_to=str(unpack))
    assert e.value.source == str(ref) and e.value.reason
    assert not unpack.exists() or not [p for p in unpack.iterdir() if not p.name.startswith(".tmp")]


def test_unpacking_streams_in_bounded_memory(tmp_path):
    """50 MB of rows from a 60 KB gzip: the decompression holds one piece at a time."""
    import tracemalloc
    row = (",".join(["0"] * 784) + "\n").encode()
    ref = tmp_path / "big.csv.gz"
    with gzip.open(ref, "wb") as f:
        f.write(",".join(tool_files.PIXELS).encode() + b"\n")
        for _ in range(50):
            f.write(row * 640)  # ~1 MB
    tracemalloc.start()
    try:
        source = sources.open_source(str(ref), 10 ** 6, unpack_to=str(tmp_path / "u"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert source.layout.size > 50_000_000
    assert peak < 16 << 20, f"{peak} bytes traced while unpacking {source.layout.size} bytes"


def test_zip_helpers_for_other_members(tmp_path):
    ref = tmp_path / "imgs.zip"
    with zipfile.ZipFile(ref, "w") as z:
        z.writestr("a/1.png", b"x" * 10)
        z.writestr("__MACOSX/a/._1.png", b"junk")
        z.writestr("b/", b"")
    with archive.open_zip(str(ref)) as zf:
        assert archive.members(zf) == ["a/1.png"]
        assert archive.read_member(zf, "a/1.png", 4) == b"xxxxx"  # limit + 1: over the limit


@FAST
@given(st.sampled_from([b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"PK\x03\x04", b"PK\x05\x06"]), st.binary(max_size=600))
def test_arbitrary_bytes_after_a_magic_never_raise_out_of_the_reader(tmp_path_factory, magic, body):
    folder = tmp_path_factory.mktemp("arc")
    ref = folder / "x.csv"
    ref.write_bytes(magic + body)
    for call in (lambda: sources.check_input(str(ref)),
                 lambda: sources.open_source(str(ref), 10, unpack_to=str(folder / "u"))):
        try:
            call()
        except DataError as e:
            assert e.source.startswith(str(ref)) and e.reason


@FAST
@given(st.binary(max_size=1500))
def test_compressed_arbitrary_bytes_are_records_or_a_named_error(tmp_path_factory, body):
    folder = tmp_path_factory.mktemp("gz")
    ref = folder / "x.csv.gz"
    ref.write_bytes(gzip.compress(",".join(tool_files.PIXELS).encode() + b"\n" + body))
    source = sources.open_source(str(ref), 3, unpack_to=str(folder / "u"))
    for i in range(len(source.chunks)):
        block = source.read(i)
        assert len(block) == source.length(i)
