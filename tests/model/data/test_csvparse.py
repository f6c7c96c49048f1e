"""model.data.csvparse.parse_rows: exact values on good data, exact reasons on bad lines.

A tiny piece size (monkeypatched _CHUNK) makes small blocks cross many piece boundaries,
so line numbering and the fast/careful split are exercised without big inputs.
"""
import io
import re

import numpy as np
import pytest

from model.data import csvparse
from model.data.csvparse import parse_rows

TRAIN = ["label"] + [f"pixel{i}" for i in range(784)]
_INT = re.compile(rb"[ \t]*([+-]?[0-9]+)[ \t]*")


def reference(block, n, columns=None):
    """Straightforward line-by-line parse of the documented contract (blank lines are no records)."""
    lines = block.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    lines = [line for line in lines if line.strip(b" \t\r\x1a")]
    values, errors = np.zeros((len(lines), n), np.uint8), {}
    for i, line in enumerate(lines):
        line = line[:-1] if line.endswith(b"\r") else line
        fields = line.split(b",")
        if len(fields) != n:
            errors[i] = f"expected {n} values, found {len(fields)}"
        else:
            for j, f in enumerate(fields):
                name = columns[j] if columns else f"column {j + 1}"
                text = f.strip(b" \t").decode("utf-8", "replace")
                m = _INT.fullmatch(f)
                if not text:
                    errors[i] = f"empty value in {name}"
                elif m is None:
                    errors[i] = f"non-numeric value {text!r} in {name}"
                elif not 0 <= int(m.group(1)) <= 255:
                    errors[i] = f"value {text} in {name} is outside 0..255"
                else:
                    values[i, j] = int(m.group(1))
                    continue
                values[i] = 0
                break
    return values, errors


def to_csv(rows, newline=b"\n", final=True):
    """(k, n) integers -> CSV bytes, with or without the last line's newline."""
    text = newline.join(b",".join(str(v).encode() for v in r) for r in rows.tolist())
    return text + newline if final and len(rows) else text


@pytest.fixture(params=[1 << 18, 97], ids=["big-pieces", "tiny-pieces"])
def pieces(request, monkeypatch):
    monkeypatch.setattr(csvparse, "_CHUNK", request.param)


# ---------------------------------------------------------------- well-formed data

@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("final", [True, False], ids=["final-newline", "no-final-newline"])
@pytest.mark.parametrize("n", [785, 784, 5, 1])
def test_random_blocks_match_loadtxt(pieces, newline, final, n):
    rng = np.random.default_rng(n)
    rows = rng.integers(0, 256, (37, n), dtype=np.uint8)  # (37, n)
    rows[:, : n // 2] = np.where(rng.random((37, n // 2)) < 0.7, 0, rows[:, : n // 2])  # MNIST-ish
    block = to_csv(rows, newline, final)
    values, errors = parse_rows(block, n)
    assert errors == {}
    assert values.dtype == np.uint8 and values.shape == (37, n)
    np.testing.assert_array_equal(values, rows)
    expected = np.loadtxt(io.BytesIO(block), dtype=np.uint8, delimiter=",", ndmin=2)
    np.testing.assert_array_equal(values, expected.reshape(37, n))


def test_real_digits_across_many_pieces():
    """Real MNIST pixels in a block much larger than one piece."""
    try:
        x = np.load("/work/shared/data/mnist-test-images.npz")["x"][:600].reshape(600, -1)
    except OSError:
        x = np.random.default_rng(0).integers(0, 256, (600, 784), dtype=np.uint8)
    labels = (np.arange(600) % 10).astype(np.uint8)[:, None]  # (600, 1)
    rows = np.hstack([labels, x])  # (600, 785)
    block = to_csv(rows)
    assert len(block) > 3 * csvparse._CHUNK
    values, errors = parse_rows(block, 785, TRAIN)
    assert errors == {}
    np.testing.assert_array_equal(values, rows)


@pytest.mark.parametrize("newline, final", [(b"\n", True), (b"\n", False), (b"\r\n", True)])
def test_well_formed_data_stays_on_the_fast_path(pieces, monkeypatch, newline, final):
    def careful(*args):
        raise AssertionError("well-formed lines went to the careful path")

    monkeypatch.setattr(csvparse, "_careful", careful)
    rows = np.random.default_rng(7).integers(0, 256, (50, 785), dtype=np.uint8)  # (50, 785)
    values, errors = parse_rows(to_csv(rows, newline, final), 785)
    assert errors == {}
    np.testing.assert_array_equal(values, rows)


def test_padded_and_signed_values_are_accepted(pieces):
    block = b"007,0,00,255\n0007,+5, 9 ,\t-0\n000,0255,10,1\r\n"
    values, errors = parse_rows(block, 4)
    assert errors == {}
    assert values.tolist() == [[7, 0, 0, 255], [7, 5, 9, 0], [0, 255, 10, 1]]


def test_accepts_bytearray_and_memoryview():
    for block in (bytearray(b"1,2\n3,4\n"), memoryview(b"1,2\n3,4\n")):
        values, errors = parse_rows(block, 2)
        assert values.tolist() == [[1, 2], [3, 4]] and errors == {}


# ---------------------------------------------------------------- edges

@pytest.mark.parametrize("block", [b"", bytearray()])
def test_empty_block(block):
    values, errors = parse_rows(block, 785)
    assert values.shape == (0, 785) and values.dtype == np.uint8 and errors == {}


@pytest.mark.parametrize("block, n_lines, errors", [
    (b"1,2,3\n", 1, {}),
    (b"1,2,3", 1, {}),
    (b"1,2,3\r\n", 1, {}),
    (b"1,2,3\r", 1, {}),
    (b"1,2,3\n\n", 1, {}),
    (b"1,2,3\r\n\r\n", 1, {}),
    (b"1,2,3\n   ", 1, {}),
    (b"\n", 0, {}),
    (b"\n1,2,3", 1, {}),
    (b"\n\n \t\n\r\n1,2,3\n\n\n1,2,3\n\n", 2, {}),
    (b"1,2,3\r\n\x1a", 1, {}),  # a DOS end-of-file mark
    (b"1,2,3\r\n1,2,3\r\n\x1a\r\n", 2, {}),
    (b"1,2\n\n1,2,3", 2, {0: "expected 3 values, found 2"}),
])
def test_blank_and_final_lines(pieces, block, n_lines, errors):
    values, got = parse_rows(block, 3)
    assert values.shape == (n_lines, 3)
    assert got == errors
    for i in range(n_lines):
        assert values[i].tolist() == ([0, 0, 0] if i in errors else [1, 2, 3])


def test_many_short_bad_lines(pieces):
    """More lines than well-formed rows of this width could make (the output grows)."""
    good = _line([v % 256 for v in range(785)])
    block = good + b"\n" + b"\n" * 300 + b"1\n" * 300 + good
    values, errors = parse_rows(block, 785)
    assert values.shape == (302, 785)
    assert errors == {i: "expected 785 values, found 1" for i in range(1, 301)}
    assert values[0].tolist() == values[301].tolist() == [v % 256 for v in range(785)]
    assert not values[1:301].any()


@pytest.mark.parametrize("every", [1, 7, 100])
def test_blank_lines_are_no_records_and_numbering_has_no_gaps(pieces, every):
    rng = np.random.default_rng(every)
    rows = rng.integers(0, 256, (300, 784), dtype=np.uint8)  # (300, 784)
    lines = to_csv(rows).split(b"\n")[:-1]
    with_blanks = []
    for i, line in enumerate(lines):
        with_blanks.append(line)
        if i % every == 0:
            with_blanks.append(b"" if i % 2 else b"  \r")
    values, errors = parse_rows(b"\n".join(with_blanks) + b"\n", 784)
    assert errors == {}
    np.testing.assert_array_equal(values, rows)
    bad = b"\n".join(with_blanks[:5] + [b"1,2"] + with_blanks[5:]) + b"\n"
    values, errors = parse_rows(bad, 784)
    record = sum(1 for line in with_blanks[:5] if line.strip(b" \r"))  # records before the bad line
    assert errors == {record: "expected 784 values, found 2"} and len(values) == 301
    assert csvparse.count_records(bad) == 301


def test_blank_lines_cost_no_rows_of_memory():
    """8 MB of blank lines between two rows: the parse allocates about the input's size, not
    a 784-wide row per blank line (4 million lines would be 3 GB)."""
    import tracemalloc
    row = ",".join(["5"] * 784).encode()
    block = row + b"\n" + b"\n" * (8 << 20) + b" \r\n" * 1000 + row + b"\n"
    tracemalloc.start()
    try:
        values, errors = parse_rows(block, 784)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert values.shape == (2, 784) and errors == {}
    assert peak < 3 * len(block), f"{peak} bytes traced for {len(block)} bytes of input"


def test_bad_arguments():
    with pytest.raises(ValueError):
        parse_rows(b"1\n", 0)
    with pytest.raises(ValueError):
        parse_rows(b"1,2\n", 2, ["only one"])


# ---------------------------------------------------------------- bad lines

def _line(values):
    return ",".join(map(str, values)).encode()


BAD = {  # name -> (line for a 785-value train row, reason)
    "three values": (b"1,2,3", "expected 785 values, found 3"),
    "one extra value": (_line([0] * 786), "expected 785 values, found 786"),
    "trailing comma": (_line([0] * 785) + b",", "expected 785 values, found 786"),
    "word": (_line([0] * 13) + b",abc," + _line([0] * 771), "non-numeric value 'abc' in pixel12"),
    "float": (_line([3] * 6) + b",12.0," + _line([0] * 778), "non-numeric value '12.0' in pixel5"),
    "300": (_line([1] * 6) + b",300," + _line([0] * 778), "value 300 in pixel5 is outside 0..255"),
    "256": (_line([1] * 6) + b",256," + _line([0] * 778), "value 256 in pixel5 is outside 0..255"),
    "999": (b"999," + _line([0] * 784), "value 999 in label is outside 0..255"),
    "1234": (_line([1] * 6) + b",1234," + _line([0] * 778), "value 1234 in pixel5 is outside 0..255"),
    "negative": (_line([1] * 6) + b",-1," + _line([0] * 778), "value -1 in pixel5 is outside 0..255"),
    "empty value": (_line([1] * 8) + b",," + _line([0] * 776), "empty value in pixel7"),
    "empty first value": (b"," + _line([0] * 784), "empty value in label"),
    "empty last value": (_line([0] * 784) + b",", "empty value in pixel783"),
    "stray CR": (_line([1] * 6) + b",4\r2," + _line([0] * 778), "non-numeric value '4\\r2' in pixel5"),
    "tab inside": (_line([1] * 6) + b",4\t2," + _line([0] * 778), "non-numeric value '4\\t2' in pixel5"),
    "NUL byte": (_line([1] * 6) + b",\x00," + _line([0] * 778), "non-numeric value '\\x00' in pixel5"),
    "high byte": (_line([1] * 6) + b",\xff," + _line([0] * 778), "non-numeric value '\ufffd' in pixel5"),
    "semicolons": (b";".join([b"0"] * 785), "expected 785 values, found 1"),
}


@pytest.mark.parametrize("where", [0, 7, 19], ids=["first", "middle", "last"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_line_is_reported_and_neighbours_kept(pieces, case, where):
    bad, reason = BAD[case]
    rng = np.random.default_rng(len(case))
    rows = rng.integers(0, 256, (20, 785), dtype=np.uint8)  # (20, 785)
    lines = [_line(r) for r in rows.tolist()]
    lines[where] = bad
    for newline in (b"\n", b"\r\n"):
        for final in (True, False):
            block = newline.join(lines) + (newline if final else b"")
            if not final and where == 19 and bad == b"":
                continue  # an empty last line without its newline is no line at all
            values, errors = parse_rows(block, 785, TRAIN)
            assert errors == {where: reason}, (newline, final)
            good = np.arange(20) != where
            np.testing.assert_array_equal(values[good], rows[good])
            assert not values[where].any()


def test_mistakes_that_cancel_out_in_counts_are_both_caught(pieces):
    """One line too long and one too short keep the piece's totals right; both are found."""
    block = b"1,2,3,4\n5,6\n7,8,9\n1.2,3\n"
    values, errors = parse_rows(block, 3)
    assert errors == {0: "expected 3 values, found 4", 1: "expected 3 values, found 2",
                      3: "expected 3 values, found 2"}
    assert values.tolist() == [[0, 0, 0], [0, 0, 0], [7, 8, 9], [0, 0, 0]]


def test_default_column_names():
    _, errors = parse_rows(b"1,2,x\n1,2,300\n", 3)
    assert errors == {0: "non-numeric value 'x' in column 3",
                      1: "value 300 in column 3 is outside 0..255"}


def test_long_values_are_shortened_in_reasons():
    _, errors = parse_rows(b"1," + b"9" * 40 + b"\n", 2)
    assert errors == {0: f"value {'9' * 20}... in column 2 is outside 0..255"}


def test_several_bad_lines_among_many_good(pieces):
    rows = np.random.default_rng(1).integers(0, 256, (200, 6), dtype=np.uint8)
    lines = [_line(r) for r in rows.tolist()]
    bad = {3: (b"1,2,3", "expected 6 values, found 3"),
           50: (b"1,2,3,4,5,256", "value 256 in column 6 is outside 0..255"),
           51: (b" , ", "expected 6 values, found 2"),
           199: (b"a,1,1,1,1,1", "non-numeric value 'a' in column 1")}
    for i, (line, _) in bad.items():
        lines[i] = line
    values, errors = parse_rows(b"\n".join(lines), 6)
    assert errors == {i: r for i, (_, r) in bad.items()}
    good = np.ones(200, bool)
    good[list(bad)] = False
    np.testing.assert_array_equal(values[good], rows[good])
    assert not values[~good].any()


# ---------------------------------------------------------------- fuzz against the reference

TRICKY = [b",", b"\n", b"\r", b" ", b"\t", b"-", b"+", b".", b"a", b"\x00", b"\xff", b"\x1a", b"\n\n",
          b"0", b"9", b"5", b"2"]


@pytest.mark.parametrize("seed", range(300))
def test_mutated_blocks_match_reference(seed, monkeypatch):
    """Random small edits to a good block: the result always equals the reference parse."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(csvparse, "_CHUNK", int(rng.choice([13, 64, 1 << 18])))
    n = int(rng.choice([1, 2, 4]))
    rows = rng.integers(0, 256, (int(rng.integers(1, 30)), n))
    rows[rng.random(rows.shape) < 0.3] = rng.choice([0, 255, 256, 199, 200, 99, 100])
    block = bytearray(to_csv(rows, b"\r\n" if seed % 3 == 0 else b"\n", final=seed % 2 == 0))
    for _ in range(int(rng.integers(0, 4))):
        pos = int(rng.integers(0, len(block) + 1))
        op = rng.integers(0, 3)
        if op == 0:
            block[pos:pos] = TRICKY[rng.integers(len(TRICKY))]
        elif op == 1:
            del block[pos:pos + 1]
        else:
            block[pos:pos + 1] = TRICKY[rng.integers(len(TRICKY))]
    block = bytes(block)
    values, errors = parse_rows(block, n)
    want_values, want_errors = reference(block, n)
    assert errors == want_errors, block
    np.testing.assert_array_equal(values, want_values)


# ----------------------------------------------------------------------------- hostile lines

def test_thousands_of_leading_zeros_are_a_value_not_a_crash():
    # Python refuses int() of strings over 4300 digits; the parser must not ask it to
    good = ",".join(["0" * 5000 + "7"] + ["1"] * 783)
    big = ",".join(["0" * 10 + "9" * 5000] + ["1"] * 783)
    values, errors = parse_rows((good + "\n" + big + "\n").encode(), 784)
    assert values[0, 0] == 7 and values[0, 1] == 1 and 0 not in errors
    assert errors[1].startswith("value 0000000000999") and errors[1].endswith("in column 1 is outside 0..255")


def test_a_50_mb_line_is_reported_in_bounded_memory():
    import tracemalloc
    row = ",".join(["5"] * 784)
    block = (row + "\n" + "1," * (25 << 20) + "1\n" + row + "\n").encode()
    tracemalloc.start()
    values, errors = parse_rows(block, 784)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert values.shape == (3, 784) and (values[[0, 2]] == 5).all() and not values[1].any()
    assert errors == {1: f"line of {(50 << 20) + 1} bytes is longer than the limit of 65536"}
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_long_line_between_good_lines_at_every_piece_position():
    row = ",".join(["3"] * 784)
    long = "9" * 400_000  # longer than a piece (256 KB) plus MAX_LINE
    for before in (0, 1, 100, 200):  # good lines before the long one (0: it starts the block)
        block = "\n".join([row] * before + [long] + [row] * 5) + "\n"
        values, errors = parse_rows(block.encode(), 784)
        assert len(values) == before + 6
        assert list(errors) == [before] and "longer than the limit" in errors[before]
        assert (np.delete(values, before, axis=0) == 3).all()


@pytest.mark.parametrize("label", ["x", "10", "", "-1", "1e3", " 7 "])
def test_skipped_label_field_is_not_checked(label):
    row = ",".join([label] + ["2"] * 784)
    values, errors = parse_rows((row + "\n" + row + "\n").encode(), 785, skip=1)
    assert errors == {} and values.shape == (2, 785)
    assert (values[:, 0] == 0).all() and (values[:, 1:] == 2).all()
    bad = ",".join([label] + ["2"] * 783 + ["256"])
    values, errors = parse_rows((bad + "\n").encode(), 785, skip=1)
    assert errors == {0: "value 256 in column 785 is outside 0..255"}
