"""CSVs as tools write them (model.data.csvdialect through model.data.sources): every file of
tests/model/data/tool_files.py reads back exactly the pixels it was written from, numbered
1..N as pandas numbers them; normalized files are refused whole."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.data import csvdialect, csvfile, sources
from model.data.block import PIXEL_COLUMNS, TRAIN_COLUMNS
from model.data.csvdialect import Dialect
from model.errors import DataError
from tests.model.data import tool_files

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
N = 230  # records: several chunks of 50 and a blank line every 100 rows


@pytest.fixture(scope="module")
def images():
    from model.data.samples import load_sample
    x = load_sample()["test_x"][:N].copy()
    x[0, :5] = [255, 128, 1, 0, 200]  # values of every width in the first row
    return x


def read_all(ref, chunk_rows=50, training=False, tmp=None):
    """Every chunk of ref -> (pixels (n, 784), labels or None, errors, source)."""
    source = sources.open_source(ref, chunk_rows, training=training, unpack_to=tmp)
    blocks = [source.read(i, labels=training) for i in range(len(source.chunks))]
    for i, b in enumerate(blocks):
        assert len(b) == source.length(i)  # a chunk's count without parsing agrees with its parse
    errors = {}
    first = 0
    for b in blocks:
        errors.update({first + k + 1: v for k, v in b.errors.items()})
        first += len(b)
    pixels = np.concatenate([b.pixels for b in blocks])
    labels = np.concatenate([b.labels for b in blocks]) if training else None
    return pixels, labels, errors, source


@pytest.mark.parametrize("name", sorted(tool_files.WRITERS))
def test_each_tool_file_reads_back_its_pixels(tmp_path, images, name):
    ref = tmp_path / "t.csv"
    ref.write_bytes(tool_files.WRITERS[name](images))
    pixels, _, errors, source = read_all(str(ref))
    assert errors == {}
    assert pixels.shape == (N, 784)
    np.testing.assert_array_equal(pixels, images)  # record n is ImageId n: no gap, no shift


@pytest.mark.parametrize("name, notes", [
    ("pandas index", ["index column '' ignored"]),
    ("pandas Unnamed: 0", ["index column 'Unnamed: 0' ignored"]),
    ("id column", ["index column 'id' ignored"]),
    ("R write.csv", ["index column '' ignored"]),
    ("semicolon", ["separator ';'"]),
    ("tab", ["separator '\\t'"]),
    ("trailing comma", ["empty last field of every line ignored"]),
    ("pandas index QUOTE_ALL semicolon trailing",
     ["separator ';'", "index column '' ignored", "empty last field of every line ignored"]),
    ("plain", []),
])
def test_the_source_says_what_was_ignored(tmp_path, images, name, notes):
    ref = tmp_path / "t.csv"
    ref.write_bytes(tool_files.WRITERS[name](images[:3]))
    source = sources.open_source(str(ref), 10)
    assert source.notes() == notes
    assert sources.from_dict(source.to_dict()).notes() == notes  # the stored plan keeps the dialect


def test_blank_lines_number_records_as_pandas_does(tmp_path, images):
    import pandas as pd
    ref = tmp_path / "blank.csv"
    ref.write_bytes(tool_files.with_blank_lines(images, every=7))
    want = pd.read_csv(ref).to_numpy()  # pandas skips blank lines: its row i is ImageId i + 1
    pixels, _, errors, _ = read_all(str(ref), chunk_rows=13)
    assert errors == {} and len(pixels) == len(want) == N
    np.testing.assert_array_equal(pixels, want)


def test_a_bad_row_among_blank_lines_is_named_by_its_record_number(tmp_path, images):
    lines = tool_files.plain(images[:10]).split(b"\n")
    lines[5] = b"1,2,3"  # data record 5 (lines[0] is the header)
    lines.insert(3, b"")
    lines.insert(3, b"")
    ref = tmp_path / "b.csv"
    ref.write_bytes(b"\n".join(lines))
    _, _, errors, _ = read_all(str(ref))
    assert errors == {5: "expected 784 values, found 3"}


@pytest.mark.parametrize("writer", ["normalized", "normalized, labeled", "normalized, semicolons"])
def test_normalized_values_are_refused_whole_with_how_to_export(tmp_path, images, writer):
    import pandas as pd
    df = pd.DataFrame(images / 255.0, columns=tool_files.PIXELS)
    if writer == "normalized, labeled":
        df.insert(0, "label", 3)
    raw = df.to_csv(index=False, sep=";" if "semicolons" in writer else ",").encode()
    ref = tmp_path / "n.csv"
    ref.write_bytes(raw)
    for call in (lambda: sources.open_source(str(ref), 50), lambda: sources.check_input(str(ref))):
        with pytest.raises(DataError) as e:
            call()
        assert e.value.source == str(ref)
        assert "look normalized" in e.value.reason and "raw pixels 0..255" in e.value.reason
        assert "(x * 255).round()" in e.value.reason


def test_binary_zero_one_integers_are_pixels_not_refused(tmp_path, images):
    """0/1 integers are valid pixel values (very dark images): refused only as fractions."""
    ref = tmp_path / "b.csv"
    ref.write_bytes(tool_files.plain(images > 128))
    pixels, _, errors, _ = read_all(str(ref))
    assert errors == {} and pixels.max() == 1


def test_fractional_values_later_in_a_file_are_bad_records(tmp_path, images):
    lines = tool_files.plain(images[:20]).split(b"\n")
    lines[12] = lines[12].replace(b",0,", b",0.5,", 1)
    ref = tmp_path / "f.csv"
    ref.write_bytes(b"\n".join(lines))
    _, _, errors, _ = read_all(str(ref))
    assert list(errors) == [12]
    assert errors[12].startswith("non-integral value '0.5' in pixel")


@pytest.mark.parametrize("header, training, words", [
    ("pixel0,pixel1", True, "a training file starts 'label,pixel0,...,pixel783'"),
    ("lable," + ",".join(tool_files.PIXELS), True, "column 1 is 'lable', expected 'label'"),
    ("pixel0,pixel1", False, "2 columns, expected 784 (pixel0,pixel1,...,pixel783)"),
    (",".join(tool_files.PIXELS), True, "has no label column: a training file starts 'label,pixel0,...'"),
    ("0,0,0", True, "missing header: the first line is data; expected 'label,pixel0,...,pixel783'"),
])
def test_a_training_file_is_told_the_training_layout(tmp_path, header, training, words):
    ref = tmp_path / "h.csv"
    ref.write_text(header + "\n" + "0," * 783 + "0\n")
    with pytest.raises(DataError) as e:
        sources.check_input(str(ref), training=training)
    assert words in e.value.reason
    if training:
        with pytest.raises(DataError) as e2:
            sources.load_training(str(ref))
        assert words in e2.value.reason


def test_a_training_file_as_tools_write_it_trains(tmp_path, images):
    import pandas as pd
    df = pd.DataFrame(images, columns=tool_files.PIXELS).astype(float)
    df.insert(0, "label", np.arange(N) % 10)
    ref = tmp_path / "train.csv"
    ref.write_bytes(df.to_csv(sep=";", quoting=1).encode())  # index, semicolons, quotes, floats
    ds = sources.load_training(str(ref), block_rows=40)
    np.testing.assert_array_equal(ds.pixels, images)
    assert ds.labels.tolist() == (np.arange(N) % 10).tolist()


# ----------------------------------------------------------------------------- pieces

@pytest.mark.parametrize("line, names, dialect", [
    (b"pixel0,pixel1", ["pixel0", "pixel1"], Dialect()),
    (b'"","pixel0","pixel1"', ["", "pixel0", "pixel1"], Dialect()),
    (b"# pixel0;pixel1;\r", ["pixel0", "pixel1"], Dialect(";", None, True)),
    (b"\xef\xbb\xbfpixel0\tpixel1", ["pixel0", "pixel1"], Dialect("\t")),
    (b"pixel0", ["pixel0"], Dialect()),
])
def test_header_names(line, names, dialect):
    got, d, _ = csvdialect.header_names(line)
    assert got == names and d == dialect


@pytest.mark.parametrize("block, dialect, want", [
    (b'"0","1"\n"2","3"\n', Dialect(), b"0,1\n2,3\n"),
    (b"5,0,1\n6,2,3", Dialect(",", ""), b"0,1\n2,3"),
    (b"0,1,\r\n2,3,\r\n", Dialect(",", None, True), b"0,1\r\n2,3\r\n"),
    (b"7;0,0;1\n\n8;2;3;\n", Dialect(";", "id", True), b"0.0,1\n\n2,3\n"),
    (b"x\n,\n", Dialect(",", "", True), b"x\n\n"),  # a line without a comma keeps its field
])
def test_normalize(block, dialect, want):
    assert csvdialect.normalize(block, dialect, 2) == want


def test_float_reasons_match_the_integer_parser_words():
    values, errors = csvdialect.parse_float_rows(
        b"1.0,2e1\n1.5,3\n,4\nnan,1\n1_0,2\n3.0e5,1\n-1.0,0\n1.0\n", 2, ["a", "b"])
    assert values[0].tolist() == [1, 20]
    assert errors == {1: "non-integral value '1.5' in a (pixels are whole numbers 0..255)",
                      2: "empty value in a", 3: "non-numeric value 'nan' in a",
                      4: "non-numeric value '1_0' in a", 5: "value 3.0e5 in a is outside 0..255",
                      6: "value -1.0 in a is outside 0..255", 7: "expected 2 values, found 1"}


@FAST
@given(st.binary(max_size=2000), st.sampled_from([Dialect(), Dialect(";", "", True), Dialect("\t", "id")]),
       st.integers(0, 1))
def test_normalize_and_parse_of_arbitrary_bytes_never_raise(block, dialect, skip):
    plain = csvdialect.normalize(block, dialect, 3)
    values, errors = csvdialect.parse_block(plain, 3, None, skip)
    assert values.shape[1] == 3 and set(errors) <= set(range(len(values)))
    assert not values[list(errors)].any()


@FAST
@given(st.lists(st.sampled_from([b"1.0", b"2e2", b"0.5", b"x", b"", b"1e999", b"-0.0", b"255.0", b"256",
                                 b" 3 ", b"+1.", b".5", b"1..2", b"e", b"1e", b"-"]), min_size=0, max_size=12))
def test_float_parse_of_hostile_fields_agrees_with_one_by_one(fields):
    line = b",".join(fields)
    n = max(1, len(fields))
    values, errors = csvdialect.parse_float_rows(line + b"\n", n)
    want_row, want_reason = csvdialect._float_line(line, n, None, 0)
    if not line.strip():
        assert len(values) == 0
    elif want_reason is None:
        assert errors == {} and values[0].tolist() == want_row.tolist()
    else:
        assert errors == {0: want_reason}


@FAST
@given(st.binary(max_size=3000))
def test_any_header_line_is_a_layout_or_a_named_error(head):
    try:
        layout = csvfile.csv_layout_of("h.csv", head, len(head))
        assert layout.columns in (PIXEL_COLUMNS, TRAIN_COLUMNS)
    except DataError as e:
        assert e.source == "h.csv" and e.reason


@FAST
@given(st.lists(st.lists(st.sampled_from([b"1.0", b"0.0", b"255.0", b".0", b"5", b"12.5", b"1.0.0", b"x.0", b"-1.0",
                                          b"256.0", b"7.00", b"", b"3.0e0"]), min_size=3, max_size=3),
                max_size=8), st.booleans())
def test_the_integral_float_shortcut_agrees_with_the_float_parse(rows, crlf):
    """parse_block reads pandas' "128.0" through the integer parser: the same records, values
    and bad records as the float parser gives."""
    nl = b"\r\n" if crlf else b"\n"
    block = nl.join(b",".join(r) for r in rows)
    values, errors = csvdialect.parse_block(block, 3, None)
    want_values, want_errors = csvdialect.parse_float_rows(block, 3, None)
    np.testing.assert_array_equal(values, want_values)
    assert set(errors) == set(want_errors)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_records_separated_unlike_the_header_are_refused_at_submit(tmp_path, images, sep):
    raw = tool_files.plain(images[:5])
    head, body = raw.split(b"\n", 1)
    ref = tmp_path / "mixed.csv"
    ref.write_bytes(head + b"\n" + body.replace(b",", sep.encode()))
    with pytest.raises(DataError) as e:
        sources.check_input(str(ref))
    assert e.value.reason == (f"the header is separated by ',' but the first record by {sep!r}; "
                              f"write the file with one separator")


def _cut_reference(block, first, last):
    out = []
    for line in block.split(b"\n"):
        cr = line.endswith(b"\r")
        body = line[:-1] if cr else line
        if first and b"," in body:
            body = body.split(b",", 1)[1]
        if last and body.endswith(b","):
            body = body[:-1]
        out.append(body + (b"\r" if cr else b""))
    return b"\n".join(out)


@FAST
@given(st.lists(st.sampled_from([b"1", b"22", b"x" * 30, b",", b"\r", b"\n", b"\n", b"0,0", b"7" * 40 + b","]),
                max_size=40).map(b"".join), st.booleans(), st.booleans())
def test_cut_fields_matches_a_line_by_line_cut(block, first, last):
    assert csvdialect._cut_fields(block, first, last) == _cut_reference(block, first, last)
