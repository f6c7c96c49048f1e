"""Fast, strict parsing of Kaggle digit CSV rows into uint8 arrays. Pure NumPy, no I/O.

The block is cut into ~256 KB pieces of whole lines so every temporary stays in the CPU
cache. For each piece a handful of vectorized byte passes checks that it holds only digits,
commas and newlines, that each line has the right number of commas, and that every field
has 1 to 3 digits; one np.compress then picks, at each separator, a uint16 code built from
the 3 bytes before it:

    code = 100 * (hundreds + separator byte) + 10 * tens + units

where a digit only counts as tens/hundreds when the byte after it is a digit too, so short
fields get zeros there. The separator byte (b"," = 44 or b"\\n" = 10) tells, per field,
whether it ends its line, and code - 100 * separator is the value, checked against 255.
A piece that fails any check is redone line by line: vectorized again for locating the
suspect lines, and a plain Python parse of just those lines gives the exact reason.
"""
import re

import numpy as np

_PAD = 3  # bytes kept before each piece: the 3 bytes before a field's last digit
_CHUNK = 1 << 18  # target bytes per piece (fits the L2 cache)
_NL, _COMMA, _CR = 10, 44, 13
_FIELD = re.compile(rb"[ \t]*([+-]?[0-9]+)[ \t]*")


def parse_rows(block, n_fields, columns=None):
    """Parse whole lines of a Kaggle digit CSV (no header) into uint8 values.

    block: complete lines separated by b"\\n" (a trailing b"\\r" on a line is allowed; the
    final line may or may not end with b"\\n"; an empty string after the last b"\\n" is not a
    line). n_fields: values expected per line (785 for train rows label,pixel0..783; 784 for
    test rows). columns: column names for error messages (default "column 1".."column N").

    Returns (values, errors): values is (n_lines, n_fields) uint8 with bad lines zero-filled;
    errors maps 0-based line index within the block -> one-line human reason:
        "empty line"                          (also a blank last line: b"...\\n\\n" is 2 lines)
        "expected 785 values, found 3"
        "empty value in pixel7"
        "non-numeric value 'abc' in pixel12"  (also floats such as '12.0' and '1e3')
        "value 300 in pixel5 is outside 0..255"  (also negatives: "value -1 in ...")
    A value is a decimal integer, optionally signed, with optional spaces or tabs around it;
    leading zeros are fine ("007" is 7, "-0" is 0, "+5" is 5). The fast path takes only
    fields of 1-3 plain digits; anything else goes through the exact per-line parse.
    """
    n = int(n_fields)
    if n < 1:
        raise ValueError(f"n_fields must be at least 1, got {n_fields}")
    if columns is not None and len(columns) != n:
        raise ValueError(f"{len(columns)} column names given for {n} fields")
    if not block:
        return np.zeros((0, n), np.uint8), {}
    block = bytes(block)
    size = len(block)
    tail = not block.endswith(b"\n")  # the last line lacks its b"\n": add one
    buf = np.empty(_PAD + size + tail, np.uint8)  # (PAD + size [+ 1],)
    buf[:_PAD] = _NL  # reads as "a line just ended"
    buf[_PAD:_PAD + size] = np.frombuffer(block, np.uint8)
    if tail:
        buf[-1] = _NL
    has_cr = b"\r" in block
    parts, errors, line0, start = [], {}, 0, _PAD
    while start < len(buf):
        end = block.find(b"\n", start - _PAD + _CHUNK)
        end = len(buf) if end < 0 else end + _PAD + 1
        x = buf[start - _PAD:end]  # (PAD + m,) 3 bytes ending in b"\n", then whole lines
        if has_cr:
            x = _drop_cr(x)
        k = np.count_nonzero(x[_PAD:] == _NL)  # lines in this piece
        rows = _fast(x, n, k)
        if rows is None:
            rows = _careful(x, n, k, line0, errors, columns)
        parts.append(rows)
        line0 += k
        start = end
    values = parts[0] if len(parts) == 1 else np.concatenate(parts)  # (n_lines, n)
    return values, errors


def _drop_cr(x):
    """Remove each b"\\r" that directly precedes b"\\n" (the prefix stays 3 bytes)."""
    c = x[_PAD:]  # (m,)
    cr = c == _CR  # (m,)
    cr[:-1] &= c[1:] == _NL  # the last byte is always b"\n"
    cr[-1] = False
    n_cr = np.count_nonzero(cr)
    if not n_cr:
        return x
    out = np.empty(len(x) - n_cr, np.uint8)  # (PAD + m - n_cr,)
    out[:_PAD] = _NL
    np.compress(~cr, c, out=out[_PAD:])
    return out


def _codes(x, d, g, m, sep):
    """Per-field codes 100*(hundreds + separator byte) + 10*tens + units -> (n_sep,) uint16.

    x: (PAD+m,) bytes, d: (PAD+m,) x - 48, g: (PAD+m,) is-digit, sep: (m,) separator mask.
    """
    gu = g.view(np.uint8)
    both = gu[:-1] & gu[1:]  # (m+2,) 1 where a digit is followed by a digit
    y = np.multiply(d[:-1], both, out=both)  # (m+2,) such a digit's value, else 0
    lo = y[1:m + 1] * np.uint8(10)  # (m,) tens, for a field ending just before each byte
    lo += d[2:m + 2]  # (m,) + units
    hi = y[:m] + x[_PAD:]  # (m,) hundreds + the byte itself (the separator)
    v = hi * np.uint16(100)  # (m,) uint16
    v += lo
    return np.compress(sep, v)  # (n_sep,)


def _fast(x, n, k):
    """Values (k, n) uint8 of a piece x (PAD+m,) holding k lines, or None if any looks off."""
    m = len(x) - _PAD
    c = x[_PAD:]  # (m,) the piece's own bytes
    d = x - np.uint8(48)  # (PAD+m,) digit values; every other byte wraps to >= 10
    g = d < 10  # (PAD+m,) is-digit
    n_comma = np.count_nonzero(c == _COMMA)
    if n_comma != k * (n - 1) or np.count_nonzero(g[_PAD:]) + n_comma + k != m:
        return None  # a byte other than digit/comma/newline, or a wrong count somewhere
    gu = g.view(np.uint8)
    w2 = gu[:-1] + gu[1:]  # (m+2,) digits among bytes q, q+1
    if w2[2:].min() == 0 or (w2[:m] + w2[2:]).max() == 4:
        return None  # two separators in a row (empty field or line), or 4+ digits in a row
    f = _codes(x, d, g, m, ~g[_PAD:]).reshape(k, n)  # (k, n) uint16
    # last column must be b"\n" codes (1000 + value), the others b"," codes (4400 + value)
    if f[:, -1].max() > 1255 or (n > 1 and f[:, :-1].max() > 4655):
        return None  # a line's fields are misaligned, or a value is over 255
    rows = f.astype(np.uint8)  # (k, n) low bytes: (48 + value) mod 256, last column 232 + value
    rows -= np.uint8(48)
    rows[:, -1] -= np.uint8(232 - 48)
    return rows


def _careful(x, n, k, line0, errors, columns):
    """Like _fast, but finds the bad lines, parses those one by one, and records reasons."""
    m = len(x) - _PAD
    c = x[_PAD:]  # (m,)
    ends = np.flatnonzero(c == _NL)  # (k,) each line's b"\n"
    starts = np.concatenate(([0], ends[:-1] + 1))  # (k,)
    d = x - np.uint8(48)  # (PAD+m,)
    g = d < 10  # (PAD+m,)
    comma = c == _COMMA  # (m,)
    gu = g.view(np.uint8)
    w2 = gu[:-1] + gu[1:]  # (m+2,)
    odd = (~g[_PAD:] & ~comma & (c != _NL)) | (w2[2:] == 0) | (w2[:m] + w2[2:] == 4)  # (m,)
    flag = np.zeros(k, bool)  # (k,) lines that need the slow parse
    flag[np.searchsorted(ends, np.flatnonzero(odd))] = True
    upto = np.cumsum(comma)[ends]  # (k,) commas up to each line's end
    per = np.diff(upto, prepend=0)  # (k,) commas in each line
    flag |= per != n - 1
    f = _codes(x, d, g, m, comma | (c == _NL))  # (n_sep,) codes of all fields
    rows = np.zeros((k, n), np.uint8)  # (k, n)
    ok = np.flatnonzero(~flag)  # (n_ok,)
    first = upto[ok] - per[ok] + ok  # (n_ok,) index of each good line's first field
    vals = f[first[:, None] + np.arange(n)].astype(np.int32) - 100 * _COMMA  # (n_ok, n)
    vals[:, -1] += 100 * (_COMMA - _NL)  # the last field ends at b"\n"
    over = (vals > 255).any(axis=1)  # (n_ok,)
    rows[ok[~over]] = vals[~over]
    flag[ok[over]] = True
    for i in np.flatnonzero(flag):
        line = c[starts[i]:ends[i]].tobytes()
        row, reason = _parse_line(line, n, columns)
        if reason is None:
            rows[i] = row
        else:
            errors[line0 + int(i)] = reason
    return rows


def _parse_line(line, n, columns):
    """One line (no b"\\n", its b"\\r" already gone) -> ((n,) uint8, None) or (None, reason)."""
    if not line.strip():
        return None, "empty line"
    parts = line.split(b",")
    if len(parts) != n:
        return None, f"expected {n} values, found {len(parts)}"
    row = np.empty(n, np.uint8)  # (n,)
    for j, part in enumerate(parts):
        match = _FIELD.fullmatch(part)
        value = int(match.group(1)) if match else None
        if value is not None and 0 <= value <= 255:
            row[j] = value
            continue
        name = columns[j] if columns is not None else f"column {j + 1}"
        text = part.strip().decode("utf-8", "replace")
        if not text:
            return None, f"empty value in {name}"
        shown = text if len(text) <= 20 else text[:20] + "..."
        if value is None:
            return None, f"non-numeric value {shown!r} in {name}"
        return None, f"value {shown} in {name} is outside 0..255"
    return row, None
