"""Fast, strict parsing of Kaggle digit CSV rows into uint8 arrays. Pure NumPy, no I/O.

How the fast path works. The block is cut into pieces of whole lines of about 256 KB, so
every temporary array stays in the CPU cache, and each piece is kept with the 3 bytes
before it (the last of them a b"\\n"). With d = byte - 48, a byte is a separator when
d >= 10, so every non-digit byte splits fields and nothing slips through inside a field.
Then, with a few whole-piece passes:

  * counts: separators = lines * n_fields, commas = lines * (n_fields - 1), and every
    n_fields-th separator is a b"\\n": so the bytes are digits, commas and newlines only and
    every line has exactly n_fields values;
  * no two separators touch (no empty value or empty line) and no 4 bytes in a row are
    digits (no value longer than 3 digits);
  * for a field ending just before separator p, with y = "digit followed by a digit, else 0":
    units = d[p-1], tens = y[p-2], hundreds = y[p-3] (a short field reads zeros there);
    4*hundreds + (10*tens + units > 55) <= 8 exactly when the value is <= 255;
  * one np.flatnonzero of the separators and one take of (100*hundreds + 10*tens + units)
    mod 256 give the (lines, n_fields) values.

Blank lines (nothing but spaces, tabs, b"\\r" or a DOS end-of-file b"\\x1a") are not records:
they fail the fast path's checks and _careful drops them before anything else. A block with
more lines than its bytes could hold as rows loses its blank lines before the values are
allocated, so 8 MB of blank lines cost nothing but their bytes (not a 784-wide row each).

Lines ending in b"\\r\\n" take the same path: the b"\\r" is then the last separator of each
line and the pair counts as one line end. A piece mixing both endings (or a b"\\r\\n" block
whose last line has no line break) goes through _careful, which drops those b"\\r" first.

A piece failing any check goes to _careful: the same arithmetic, but it finds which lines
are suspect, keeps the others, and parses only the suspects with plain Python to get the
exact reason (or to accept what the fast path declines, such as "0007" or " 7 ").
"""
import re

import numpy as np

_PAD = 3  # bytes kept before each piece: a field's last digit has at most 3 bytes before it
_CHUNK = 1 << 18  # target bytes per piece, so its temporaries fit the L2 cache
_NL, _COMMA, _CR, _SUB = 10, 44, 13, 26  # _SUB: Ctrl-Z, a DOS file's end-of-file mark
_FIELD = re.compile(rb"[ \t]*([+-]?)0*([0-9]+)[ \t]*")  # sign, value without leading zeros
MAX_LINE = 1 << 16  # bytes: a longer line is reported bad unread (a good row is <= ~3.2 KB)
_RECORD = re.compile(rb"[^ \t\r\x1a\n][^\n]*")  # one match per line that is not blank


class TooManyLines(ValueError):
    """A block of more lines than parse_rows was allowed to give rows to (max_lines)."""

    def __init__(self, lines, limit):
        self.lines, self.limit = lines, limit
        super().__init__(f"{lines} lines, more than the limit of {limit}")


def parse_rows(block, n_fields, columns=None, skip=0, max_lines=None):
    """Parse whole lines of a Kaggle digit CSV (no header) into uint8 values.

    block: complete lines separated by b"\\n" (a trailing b"\\r" on a line is allowed; the
    final line may or may not end with b"\\n"; an empty string after the last b"\\n" is not a
    line). n_fields: values expected per line (785 for train rows label,pixel0..783; 784 for
    test rows). columns: column names for error messages (default "column 1".."column N").
    skip: leading fields taken as they are, unchecked and returned as 0 (a labeled file's
    label column, in prediction).

    Blank lines (empty, or only spaces, tabs, b"\\r", b"\\x1a") are not records: they get no
    row and no index, so records are numbered as pandas numbers them (count_records).

    Returns (values, errors): values is (n_records, n_fields) uint8 with bad lines zero-filled;
    errors maps 0-based record index within the block -> one-line human reason, one of
        "expected 785 values, found 3"
        "empty value in pixel7"
        "non-numeric value 'abc' in pixel12"   (also floats such as '12.0' or '1e3')
        "value 300 in pixel5 is outside 0..255" (also negatives: "value -1 in pixel5 ...")
        "line of 52428800 bytes is longer than the limit of 65536"  (see Memory)
    A value is a decimal integer with an optional sign and optional spaces or tabs around
    it; leading zeros are fine ("007" is 7, "+7" is 7, "-0" is 0), however many. Only the
    first problem of a line is reported. Lines of plain 1-3 digit values take the vectorized
    fast path; anything else is checked by an exact per-line parse, which is slower but rare.
    Memory: the temporaries of one piece (about 256 KB of lines plus at most MAX_LINE
    bytes) whatever the block holds: a line that would make a piece longer is reported
    without being parsed ("line of N bytes is longer than the limit of 65536"); and the
    values, a row per line: max_lines bounds them (TooManyLines, before any is allocated).
    """
    n = int(n_fields)
    if n < 1:
        raise ValueError(f"n_fields must be at least 1, got {n_fields!r}")
    if columns is not None and len(columns) != n:
        raise ValueError(f"{len(columns)} column names given for {n} fields")
    if not 0 <= skip < n:
        raise ValueError(f"skip must be in 0..{n - 1}, got {skip!r}")
    if not block:
        return np.zeros((0, n), np.uint8), {}
    block = bytes(block)
    lines = block.count(b"\n") + 1  # a fast C count
    if lines > len(block) // (2 * n) + 2:  # more lines than rows fit: blank (or bad) ones
        block = drop_blank_lines(block)
        lines = block.count(b"\n") + 1
    if max_lines is not None and lines > max_lines:
        raise TooManyLines(lines, max_lines)
    size = len(block)
    raw = np.frombuffer(block, np.uint8)  # (size,) no copy
    # one row per line, so the values are written in place, never resized
    values = np.empty((lines, n), np.uint8)  # (room, n)
    spill, errors = [], {}
    kept = line0 = 0  # rows written in place into values; lines seen

    def parse(start, end):  # the whole lines block[start:end]
        nonlocal kept, line0
        x = _piece(raw, start, end)  # (PAD + m,)
        out = values[kept:] if not spill else values[:0]  # (room left, n)
        rows = None if skip else _fast(x, n, out)
        if rows is None and not skip:  # a blank line now and then: dropped, then the fast path again
            y = _drop_short_blank(x)
            if y is not None:
                x = y
                rows = _fast(x, n, out) if len(x) > _PAD else out[:0]
        if rows is None:
            rows = _careful(x, n, out, line0, errors, columns, skip)
        if len(rows) <= len(out):
            kept += len(rows)  # written in place
        else:
            spill.append(rows)  # more lines than room: only with very short (bad) lines
        line0 += len(rows)

    def skip_line(start, end):  # one line block[start:end], reported unread
        nonlocal kept, line0
        errors[line0] = too_long(end - start - (block[end - 1:end] == b"\n"))
        if not spill and kept < len(values):
            values[kept] = 0
            kept += 1
        else:
            spill.append(np.zeros((1, n), np.uint8))  # (1, n)
        line0 += 1

    start = 0
    while start < size:
        end = block.find(b"\n", start + _CHUNK)
        end = size if end < 0 else end + 1
        if end - start <= _CHUNK + MAX_LINE:
            parse(start, end)
        else:  # the piece's last line is over MAX_LINE: parse the lines before it, skip it
            cut = max(start, block.rfind(b"\n", start, start + _CHUNK) + 1)
            if cut > start:
                parse(start, cut)
            skip_line(cut, end)
        start = end
    values = np.concatenate([values[:kept]] + spill) if spill else values[:kept]  # (n_lines, n)
    return values, errors


def drop_blank_lines(block):
    """bytes -> the same lines without the blank ones (see parse_rows), a piece of about
    _CHUNK bytes at a time (memory: the output plus a few times one piece)."""
    block = bytes(block)
    raw = np.frombuffer(block, np.uint8)  # (size,)
    parts, start = [], 0
    while start < len(block):
        end = block.find(b"\n", start + _CHUNK)
        end = len(block) if end < 0 else end + 1
        x = _piece(raw, start, end)  # (PAD + m,) a b"\n" added after a last line without one
        kept = _drop_blank(x)[_PAD:]
        if kept.size and raw[end - 1] != _NL:
            kept = kept[:-1]  # the b"\n" _piece added
        parts.append(kept.tobytes())
        start = end
    return b"".join(parts)


def count_records(block):
    """Records (lines that are not blank) in whole lines of bytes, as parse_rows counts them."""
    return len(_RECORD.findall(block))


def too_long(length):
    """The reason given for a line of `length` bytes (without its line break) left unread."""
    return f"line of {length} bytes is longer than the limit of {MAX_LINE}"


def _piece(raw, start, end):
    """Lines raw[start:end] with the 3 bytes before them, the last a b"\\n" -> (PAD + m,) uint8.

    A view of raw when possible; a copy for the first piece (nothing before it) and for a
    last line without its b"\\n" (one is added).
    """
    if start >= _PAD and raw[end - 1] == _NL:
        return raw[start - _PAD:end]  # raw[start - 1] is the previous line's b"\n"
    x = np.empty(_PAD + end - start + (raw[end - 1] != _NL), np.uint8)  # (PAD + m,)
    x[:_PAD] = _NL  # reads as "a line just ended"
    x[_PAD:_PAD + end - start] = raw[start:end]
    x[-1] = _NL
    return x


def _drop_cr(x):
    """Remove every b"\\r" directly before a b"\\n" from piece x (PAD + m,)."""
    c = x[_PAD:]  # (m,)
    cr = c == _CR  # (m,)
    cr[:-1] &= c[1:] == _NL
    cr[-1] = False  # the piece's last byte is its b"\n"
    n_cr = np.count_nonzero(cr)
    if not n_cr:
        return x
    out = np.empty(len(x) - n_cr, np.uint8)  # (PAD + m - n_cr,)
    out[:_PAD] = _NL
    np.compress(~cr, c, out=out[_PAD:])
    return out


def _drop_blank(x):
    """Remove the blank lines (nothing but spaces, tabs, b"\\r", b"\\x1a") from piece x."""
    c = x[_PAD:]  # (m,)
    content = ~((c == _NL) | (c == 32) | (c == 9) | (c == _CR) | (c == _SUB))  # (m,)
    ends = np.flatnonzero(c == _NL)  # (k,)
    per_line = np.diff(np.cumsum(content)[ends], prepend=0)  # (k,) content bytes per line
    blank = per_line == 0  # (k,)
    if not blank.any():
        return x
    keep = np.repeat(~blank, np.diff(ends, prepend=-1))  # (m,) the bytes of the other lines
    out = np.empty(_PAD + int(np.count_nonzero(keep)), np.uint8)  # (PAD + m',)
    out[:_PAD] = _NL
    np.compress(keep, c, out=out[_PAD:])
    return out


_SHORT = 16  # bytes: a blank line this short or shorter is dropped before the fast path is tried again
_FEW = 64  # ... when a piece has at most this many short lines (else _careful sorts them out)


def _drop_short_blank(x):
    """Piece x without its short blank lines -> a new piece, or None when it has none (or
    too many short lines to look at one by one). Longer blank lines are _careful's."""
    c = x[_PAD:]  # (m,)
    ends = np.flatnonzero(c == _NL)  # (k,)
    lengths = np.diff(ends, prepend=-1) - 1  # (k,) bytes before each b"\n"
    short = np.flatnonzero(lengths <= _SHORT)  # (s,)
    if not len(short) or len(short) > _FEW:
        return None
    blank = np.zeros(len(ends), bool)  # (k,)
    for i in short.tolist():
        end = int(ends[i])
        blank[i] = not c[end - int(lengths[i]):end].tobytes().strip(b" \t\r\x1a")
    if not blank.any():
        return None
    keep = np.repeat(~blank, lengths + 1)  # (m,) the bytes of the other lines
    out = np.empty(_PAD + int(np.count_nonzero(keep)), np.uint8)  # (PAD + m',)
    out[:_PAD] = _NL
    np.compress(keep, c, out=out[_PAD:])
    return out


def _values(d, both, m):
    """For each byte p of a piece read as a field's end: (value mod 256, over), both (m,) uint8.

    d: (PAD+m,) bytes - 48; both: (PAD+m-1,) uint8, 1 where a digit is followed by a digit
    (reused as scratch). over = 4*hundreds + (10*tens + units > 55), which is > 8 exactly
    when the value is over 255. Exact wherever the field is 1-3 digits between separators.
    """
    y = np.multiply(d[:-1], both, out=both)  # (PAD+m-1,) digit value if a digit follows, else 0
    lo = y[1:m + 1] * np.uint8(10)  # (m,) 10 * tens
    lo += d[2:m + 2]  # (m,) + units
    val = y[:m] * np.uint8(4)  # (m,) 4 * hundreds
    over = np.greater(lo, 55).view(np.uint8)  # (m,)
    over += val
    val *= np.uint8(25)
    val += lo  # (m,) 100 * hundreds + lo, mod 256
    return val, over


def _fast(x, n, out):
    """Values (k, n) uint8 of the k lines in piece x (PAD+m,), or None if anything is off.

    The values go to out[:k] when out (rows, n) has room for them, else to a new array.

    When the piece's last line ends in b"\\r\\n", every line must: the b"\\r" then counts as
    one more separator per line, right before the b"\\n", and its "field" is dropped.
    """
    m = len(x) - _PAD
    c = x[_PAD:]  # (m,) the piece's own bytes
    crlf = m > 1 and c[-2] == _CR
    per = n + crlf  # separators per line
    d = x - np.uint8(48)  # (PAD+m,) digit values; every other byte wraps to >= 10
    s = d >= 10  # (PAD+m,) separators
    ends = np.flatnonzero(s[_PAD:])  # (F,) where each field ends
    k = len(ends) // per
    if k * per != len(ends) or np.count_nonzero(c == _COMMA) != k * (n - 1):
        return None
    nl = ends[per - 1::per]  # (k,) every per-th separator must end a line
    if not (c[nl] == _NL).all():
        return None
    if crlf and not ((c[nl - 1] == _CR) & (ends[n - 1::per] == nl - 1)).all():
        return None  # (k,) ... right after the b"\r" that is the n-th separator
    su = s.view(np.uint8)
    w2 = su[:-1] + su[1:]  # (PAD+m-1,) separators among bytes q, q+1
    if crlf:
        w2[nl + 2] = 1  # (k,) a b"\r\n" pair is one line end, not an empty value
    if w2[2:].max() > 1 or (w2[:m] + w2[2:]).min() == 0:
        return None  # an empty value or line, or a value of 4+ digits
    val, over = _values(d, np.equal(w2, 0).view(np.uint8), m)  # (m,), (m,)
    over *= s[_PAD:].view(np.uint8)  # (m,) only separators count
    if crlf:
        over[nl] = 0  # (k,) the b"\n" after b"\r" ends no value
    if over.max() > 8:
        return None  # a value over 255
    rows = out[:k] if k <= len(out) else np.empty((k, n), np.uint8)  # (k, n)
    if crlf:
        rows[:] = val.take(ends).reshape(k, per)[:, :n]  # (k, n+1) less the b"\n" column
    else:
        val.take(ends, out=rows.reshape(-1))
    return rows


def _careful(x, n, out, line0, errors, columns, skip=0):
    """Values (k, n) of piece x like _fast, recording errors[line0 + i] for its bad lines.

    Vectorized except for the suspect lines: a line with a byte other than digit, comma or
    newline, touching separators, 4+ digits in a row, a wrong comma count or a value over
    255 is parsed by _parse_line; the others are read with the fast path's arithmetic.
    With skip > 0 every line goes through _parse_line, which leaves its first fields unread.
    """
    x = _drop_blank(_drop_cr(x))
    m = len(x) - _PAD
    c = x[_PAD:]  # (m,)
    ends = np.flatnonzero(c == _NL)  # (k,) each line's b"\n"
    starts = np.concatenate(([0], ends[:-1] + 1))  # (k,)
    k = len(ends)
    d = x - np.uint8(48)  # (PAD+m,)
    s = d >= 10  # (PAD+m,)
    su = s.view(np.uint8)
    w2 = su[:-1] + su[1:]  # (PAD+m-1,)
    comma = c == _COMMA  # (m,)
    # a byte other than digit/comma/newline, two separators in a row, 4 digits in a row
    odd = (s[_PAD:] & ~comma & (c != _NL)) | (w2[2:] > 1) | (w2[:m] + w2[2:] == 0)  # (m,)
    flag = np.zeros(k, bool)  # (k,) lines for the exact per-line parse
    flag[np.searchsorted(ends, np.flatnonzero(odd))] = True
    upto = np.cumsum(comma)[ends]  # (k,) commas up to each line's end
    per = np.diff(upto, prepend=0)  # (k,) commas in each line
    flag |= per != n - 1
    if skip:
        flag[:] = True
    ok = np.flatnonzero(~flag)  # (n_ok,)
    seps = np.flatnonzero(comma | (c == _NL))  # (n_sep,) where each field ends
    at = seps[(upto[ok] - per[ok] + ok)[:, None] + np.arange(n)]  # (n_ok, n) field ends
    val, over = _values(d, np.equal(w2, 0).view(np.uint8), m)  # (m,), (m,)
    big = (over[at] > 8).any(axis=1)  # (n_ok,) a value over 255
    rows = out[:k] if k <= len(out) else np.empty((k, n), np.uint8)  # (k, n)
    rows[:] = 0
    rows[ok[~big]] = val[at[~big]]
    flag[ok[big]] = True
    for i in np.flatnonzero(flag):
        row, reason = _parse_line(c[starts[i]:ends[i]].tobytes(), n, columns, skip)
        if reason is None:
            rows[i] = row
        else:
            errors[line0 + int(i)] = reason
    return rows


def _parse_line(line, n, columns, skip=0):
    """One line (no b"\\n", its b"\\r" already gone) -> ((n,) uint8, None) or (None, reason).

    The first `skip` fields are not checked (0 in the row)."""
    if not line.strip(b" \t"):
        return None, "empty line"
    parts = line.split(b",")
    if len(parts) != n:
        return None, f"expected {n} values, found {len(parts)}"
    row = np.zeros(n, np.uint8)  # (n,)
    for j, part in enumerate(parts):
        if j < skip:
            continue
        match = _FIELD.fullmatch(part)
        value = None
        if match:  # at most 4 significant digits reach int(): no int-string limit, no 300 digits parsed
            digits = match.group(2)
            value = int(digits) if len(digits) <= 4 else 10 ** 4
            value = -value if match.group(1) == b"-" else value
        if value is not None and 0 <= value <= 255:
            row[j] = value
            continue
        name = columns[j] if columns is not None else f"column {j + 1}"
        text = part.strip(b" \t").decode("utf-8", "replace")
        if not text:
            return None, f"empty value in {name}"
        shown = text if len(text) <= 20 else text[:20] + "..."
        if value is None:
            return None, f"non-numeric value {shown!r} in {name}"
        return None, f"value {shown} in {name} is outside 0..255"
    return row, None
