"""Prediction outputs as CSV text: confidence texts, quoted cells, submission lines."""
import re

import numpy as np

_FOUR_PLACES = []  # "0.0000" .. "1.0000", made at the first use


def confidence_texts(confidence):
    """Confidences (k,) float32 in 0..1 -> [f"{c:.4f}"] for each, looked up, not formatted:
    a float32 times 10,000 is exact in float64, so rounding it half to even is what the
    f-string's correctly rounded formatting does. Other values are formatted one by one."""
    c = np.asarray(confidence)
    if c.dtype != np.float32 or not ((c >= 0) & (c <= 1)).all():  # NaN fails both tests
        return [f"{x:.4f}" for x in c.tolist()]
    if not _FOUR_PLACES:
        _FOUR_PLACES.extend(f"{k // 10000}.{k % 10000:04d}" for k in range(10001))
    table = _FOUR_PLACES
    return [table[k] for k in np.rint(c.astype(np.float64) * 10000).astype(np.int64).tolist()]


SPECIAL_RE = re.compile('[,"\r\n]')  # what makes a CSV cell need quotes


def csv_cell(text):
    """One CSV field: quoted, its quotes doubled, when it holds a comma, a quote or a line
    break (\\r or \\n), else as it is; csv.reader reads it back as it was. csv.writer
    writes the same, except that it leaves a lone \\r unquoted."""
    if not SPECIAL_RE.search(text):
        return text
    return '"' + text.replace('"', '""') + '"'


_POW10 = 10 ** np.arange(19, dtype=np.int64)  # (19,) 1, 10, ..., 10**18


def submission_lines(ids, labels):
    """b"ImageId,Label\n" lines of ids (k,) non-negative integers and labels (k,) digits
    0..9 -> bytes, built with array arithmetic (a Python f-string per row costs 5x more)."""
    ids, labels = np.asarray(ids, np.int64), np.asarray(labels)  # (k,), (k,)
    if len(ids) == 0:
        return b""
    if ids.min() < 0 or labels.min() < 0 or labels.max() > 9:
        return "".join(f"{i},{lab}\n" for i, lab in zip(ids.tolist(), labels.tolist())).encode()
    digits = np.searchsorted(_POW10, ids, side="right")  # (k,) decimal digits of each id (0 has 1)
    digits = np.maximum(digits, 1)
    d = int(digits[0])
    if (digits == d).all():  # the usual chunk: every id as long, lines of one width
        out = np.empty((len(ids), d + 3), np.uint8)  # (k, d + 3)
        for k in range(d):
            out[:, k] = (ids // _POW10[d - 1 - k]) % 10 + 48
        out[:, d] = ord(",")
        out[:, d + 1] = labels.astype(np.uint8) + 48
        out[:, d + 2] = ord("\n")
        return out.tobytes()
    ends = np.cumsum(digits + 3)  # (k,) one past each line's b"\n"
    starts = ends - (digits + 3)  # (k,)
    out = np.empty(int(ends[-1]), np.uint8)  # (total bytes,)
    for k in range(int(digits.max())):  # the k-th digit of every id that has one
        has = digits > k  # (k,)
        place = _POW10[digits[has] - 1 - k]
        out[starts[has] + k] = (ids[has] // place) % 10 + 48
    out[starts + digits] = ord(",")
    out[starts + digits + 1] = labels.astype(np.uint8) + 48
    out[ends - 1] = ord("\n")
    return out.tobytes()

