"""How tools write a Kaggle digit CSV, and how their lines become the plain digits that
model.data.csvparse reads fast. Pure: bytes in, bytes or arrays out, no I/O.

pandas, R, numpy and Excel write the same pixels in different clothes:
  separator       `,`, `;` or a tab, found from the header line (Dialect.sep)
  quotes          `"pixel0"`, `"0"` (csv.QUOTE_ALL, R's write.csv): removed
  index column    pandas' `,pixel0,...` or `Unnamed: 0,...`, R's `"",...`, an `id` or
                  `index` column: its values are dropped (Dialect.index)
  trailing field  `...,pixel783,` and `...,0,` on every line: dropped (Dialect.trailing)
  numpy header    `# pixel0,...` (np.savetxt's comment prefix): a header like the others
  floats          `128.0`, `1.28e+02`, `0.000000000000000000e+00`: a pixel when integral;
                  a file of fractions in 0..1 is refused as normalized (check_not_normalized)
Blank lines and a DOS end-of-file Ctrl-Z are dropped by the parser (model.data.csvparse).
"""
import re
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from model.data.csvparse import TooManyLines, drop_blank_lines, parse_rows

SEPARATORS = (",", ";", "\t")
INDEX_NAMES = ("", "unnamed: 0", "id", "index", "imageid")  # a first column read as a row index
_FLOAT = re.compile(rb"[ \t]*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[ \t]*")
_FLOAT_BYTES = np.zeros(256, bool)  # bytes a line of float values may hold
_FLOAT_BYTES[list(b"0123456789.eE+-, \t\r\n")] = True


@dataclass(frozen=True)
class Dialect:
    """What a file's header says about how its lines are written (see the module)."""

    sep: str = ","  # the field separator
    index: str | None = None  # the header name of a leading index column, None when there is none
    trailing: bool = False  # every line ends with an empty field (a separator before the line break)

    @property
    def plain(self):
        return self.sep == "," and self.index is None and not self.trailing

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**(d or {}))

    def notes(self):
        """What reading the file ignores or converts, a phrase each (for the output and manifest)."""
        out = []
        if self.sep != ",":
            out.append(f"separator {self.sep!r}")
        if self.index is not None:
            out.append(f"index column {self.index!r} ignored")
        if self.trailing:
            out.append("empty last field of every line ignored")
        return out


def header_names(line):
    """A header line (bytes, without its line break) -> (names, Dialect, numpy_comment):
    the separator is the most frequent of , ; and tab; quotes and spaces around names are
    removed; a trailing empty name sets Dialect.trailing. Index columns are decided by the
    caller, which knows the layouts."""
    text = line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
    comment = text.startswith("#")
    if comment:
        text = text[1:].lstrip()
    sep = max(SEPARATORS, key=text.count)
    names = [_unquote(c) for c in text.split(sep)]
    trailing = len(names) > 1 and names[-1] == ""
    if trailing:
        names.pop()
    return names, Dialect(sep if text.count(sep) else ",", None, trailing), comment


def _unquote(name):
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('""', '"').strip()
    return name


def match_layout(names, dialect, layouts):
    """names and their Dialect -> (layout, Dialect with its index column) for the first of
    `layouts` (lists of column names) they match, with or without a leading index column;
    (None, dialect) when none does."""
    for layout in layouts:
        if names == layout:
            return layout, dialect
    if names and names[0].lower() in INDEX_NAMES:
        for layout in layouts:
            if names[1:] == layout:
                return layout, Dialect(dialect.sep, names[0], dialect.trailing)
    return None, dialect


# ----------------------------------------------------------------------------- lines

_TO_COMMA = {sep: bytes.maketrans(b"," + sep.encode(), b"." + b",") for sep in SEPARATORS if sep != ","}


def normalize(block, dialect, n_fields):
    """Whole lines written in `dialect` -> the same lines as plain comma-separated fields:
    quotes removed, the separator made a comma (a comma in a `;` or tab file is a decimal
    comma: it becomes a point), an index column and a trailing empty field dropped.
    n_fields: the values a line holds once normalized (to spot a block of blank lines)."""
    block = bytes(block)
    if b'"' in block:
        block = block.translate(None, b'"')
    if dialect.sep != ",":
        block = block.translate(_TO_COMMA[dialect.sep])
    if dialect.index is None and not dialect.trailing:
        return block
    if block.count(b"\n") > len(block) // (2 * n_fields) + 2:  # mostly short lines: blank ones first
        block = drop_blank_lines(block)
    return _cut_fields(block, dialect.index is not None, dialect.trailing)


_NEAR = 24  # bytes searched for a line's first comma before every comma is listed


def _cut_fields(block, first, last):
    """Remove each line's first field with its comma (first) and a comma right before each
    line's end (last); a line without a comma keeps its first field."""
    c = np.frombuffer(block, np.uint8)  # (size,)
    size = len(c)
    if not size:
        return block
    ends = np.flatnonzero(c == 10)  # (k,) each b"\n"
    if c[-1] != 10:
        ends = np.append(ends, size)  # (k,) a last line without its b"\n"
    starts = np.concatenate(([0], ends[:-1] + 1))  # (k,)
    keep = np.ones(size, bool)  # (size,) the bytes kept
    if first:
        comma = _first_commas(c, starts, ends)  # (k,) each line's first comma, -1 for none
        has = comma >= 0
        width = comma[has] - starts[has] + 1  # (h,) bytes cut from each line that has a comma
        if len(width) and width.max() <= _NEAR:  # short index values (nearly always): one gather
            at = starts[has][:, None] + np.arange(_NEAR)  # (h, NEAR)
            keep[at[np.arange(_NEAR) < width[:, None]]] = False
        elif len(width):
            cut = np.zeros(size + 1, np.int8)  # (size + 1,) +1 where a cut starts, -1 after it ends
            cut[starts[has]] += 1
            cut[comma[has] + 1] -= 1
            keep &= np.cumsum(cut[:size], dtype=np.int8) == 0
    if last:
        at = ends - 1  # (k,) the byte before each line's end
        at = np.where((at >= starts) & (c[np.maximum(at, 0)] == 13), at - 1, at)  # before a b"\r"
        keep[at[(at >= starts) & (c[np.maximum(at, 0)] == 44)]] = False
    return c[keep].tobytes()


def _first_commas(c, starts, ends):
    """The offset of each line's first comma in c (size,), -1 for a line without one: looked
    for in the first _NEAR bytes of each line, then among all commas for the others."""
    size = len(c)
    at = np.minimum(starts[:, None] + np.arange(_NEAR), size - 1)  # (k, NEAR)
    near = (c[at] == 44) & (at < ends[:, None])  # (k, NEAR)
    found = near.any(axis=1)  # (k,)
    out = np.where(found, starts + near.argmax(axis=1), -1)  # (k,)
    rest = np.flatnonzero(~found & (ends - starts > _NEAR))  # (r,) long first fields: rare
    if len(rest):
        commas = np.flatnonzero(c == 44)  # (n_commas,)
        j = np.searchsorted(commas, starts[rest])  # (r,)
        ok = j < len(commas)
        ok[ok] = commas[j[ok]] < ends[rest][ok]
        out[rest[ok]] = commas[j[ok]]
    return out


def parse_block(block, n_fields, columns, skip=0, max_lines=None):
    """Plain lines (normalize's output) -> (values (n, n_fields) uint8, errors) as
    model.data.csvparse.parse_rows (max_lines too), and floats too: a block with a `.`, `e` or
    `E` goes through parse_float_rows."""
    if b"." in block and _after_digits(block):  # pandas' "128.0": integers with ".0" take the fast path
        ints = block.replace(b".0,", b",").replace(b".0\n", b"\n").replace(b".0\r", b"\r")
        ints = ints[:-2] if ints.endswith(b".0") else ints
        if b"." not in ints and b"e" not in ints and b"E" not in ints:
            return parse_rows(ints, n_fields, columns, skip, max_lines)
    if b"." in block or b"e" in block or b"E" in block:
        return parse_float_rows(block, n_fields, columns, skip, max_lines)
    return parse_rows(block, n_fields, columns, skip, max_lines)


def _after_digits(block):
    """True when every b"." of the block follows a digit (so dropping a ".0" leaves a number)."""
    c = np.frombuffer(block, np.uint8)  # (size,)
    dots = np.flatnonzero(c == 46)  # (d,)
    return dots[0] > 0 and bool(((c[dots - 1] - np.uint8(48)) < 10).all())


def parse_float_rows(block, n, columns=None, skip=0, max_lines=None):
    """Lines of decimal values such as `128.0`, `1.28e+02` -> (values (k, n) uint8, errors),
    as parse_rows: a value must be integral and in 0..255 ("non-integral value '12.5' in
    pixel3"); blank lines are no records. About 20x slower than parse_rows: rare files."""
    block = drop_blank_lines(block)
    count = block.count(b"\n") + (not block.endswith(b"\n"))
    if max_lines is not None and count > max_lines:
        raise TooManyLines(count, max_lines)
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    values = np.zeros((len(lines), n), np.uint8)  # (k, n)
    errors = {}
    fast = _fast_floats(lines, n)  # (k, n) float64 or None
    todo = range(len(lines))
    if fast is not None:
        part = fast[:, skip:]  # (k, n - skip)
        good = ((part >= 0) & (part <= 255) & (part == np.floor(part))).all(axis=1)  # (k,)
        values[good, skip:] = part[good]
        todo = np.flatnonzero(~good).tolist()
    for i in todo:
        row, reason = _float_line(lines[i], n, columns, skip)
        if reason is None:
            values[i] = row
        else:
            errors[i] = reason
    return values, errors


def _fast_floats(lines, n):
    """Every value of the lines (k, n) float64 in one C parse, or None when any line looks
    off (a byte that no number holds, a wrong comma count, a value the parse stops at)."""
    if not lines:
        return None
    text = b",".join(lines)
    if not _FLOAT_BYTES[np.frombuffer(text, np.uint8)].all():
        return None
    if text.count(b",") != len(lines) * n - 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a value the parse stops at warns: the count then says it
        try:
            x = np.fromstring(text, dtype=np.float64, sep=",")  # (k * n,)
        except ValueError:
            return None
    if x.size != len(lines) * n or not np.isfinite(x).all():
        return None
    return x.reshape(len(lines), n)  # (k, n)


def _float_line(line, n, columns, skip):
    """One line of decimal values -> ((n,) uint8, None) or (None, reason), as csvparse's
    per-line parse words it."""
    parts = line.split(b",")
    if len(parts) != n:
        return None, f"expected {n} values, found {len(parts)}"
    row = np.zeros(n, np.uint8)  # (n,)
    for j, part in enumerate(parts):
        if j < skip:
            continue
        name = columns[j] if columns is not None else f"column {j + 1}"
        text = part.strip(b" \t").decode("utf-8", "replace")
        shown = text if len(text) <= 20 else text[:20] + "..."
        match = _FLOAT.fullmatch(part)
        if not text:
            return None, f"empty value in {name}"
        if match is None:
            return None, f"non-numeric value {shown!r} in {name}"
        value = float(match.group(1))
        if not 0 <= value <= 255:
            return None, f"value {shown} in {name} is outside 0..255"
        if value != int(value):
            return None, f"non-integral value {shown!r} in {name} (pixels are whole numbers 0..255)"
        row[j] = int(value)
    return row, None


def other_separator(data, dialect, n_fields):
    """The bytes after the header -> the separator its first record is written with when
    that is not the header's (a `,` header over `;` records), else None."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r").translate(None, b'"')
    want = n_fields + (dialect.index is not None) + dialect.trailing  # fields as written
    if not first.strip(b" \t\x1a") or first.count(dialect.sep.encode()) + 1 == want:
        return None
    for sep in SEPARATORS:
        if sep != dialect.sep and first.count(sep.encode()) + 1 == want:
            return sep
    return None


def looks_normalized(sample, n, skip=0):
    """A sample of plain lines -> (row, column index, text) of a first fractional value when
    every value (past the first `skip` columns) is in 0..1 and one is fractional: a file of
    normalized pixels, which read as 0 or 1 would be predicted silently wrong; else None."""
    lines = drop_blank_lines(sample).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines or not (b"." in sample or b"e" in sample or b"E" in sample):
        return None
    first, top = None, 0.0
    for i, line in enumerate(lines):
        for j, part in enumerate(line.rstrip(b"\r").split(b",")[skip:], start=skip):
            match = _FLOAT.fullmatch(part)
            if match is None:
                continue
            value = float(match.group(1))
            top = max(top, abs(value))
            if top > 1:
                return None
            if first is None and value != int(value):
                first = (i, j, match.group(1).decode())
    return first
