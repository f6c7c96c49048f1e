"""Kaggle CSV reader: a training file `label,pixel0..pixel783` or a test file `pixel0..pixel783`,
one image a row, as pandas, R, numpy or Excel write it (model.data.csvdialect: separator,
quotes, index column, floats). Files are read in byte ranges of whole lines, so memory
does not grow with the file; records are numbered 1.. as pandas does, blank lines not
counted (for a test file, record n is ImageId n). Ranges are returned as Blocks (model.data.block).
"""
import math
import re
from dataclasses import dataclass

import numpy as np

from model import storage
from model.data import archive, csvdialect
from model.data.block import N_PIXELS, PIXEL_COLUMNS, TRAIN_COLUMNS, Block
from model.data.csvparse import MAX_LINE, TooManyLines, count_records, too_long
from model.errors import DataError

HEADER_LIMIT = 1 << 20  # bytes searched for the end of the header line
READ_WINDOW = 4 << 20  # bytes of a CSV range read at a time
PLAN_SLACK = 0.03  # chunks may be this much larger than asked rather than one more chunk be added
MAX_BAD_RECORDS = 100_000  # bad records in one chunk past which it fails whole (bounds its memory)
_LABEL_RANGE = re.compile(r"^value (\S+) in label is outside 0\.\.255$")


@dataclass(frozen=True)
class CsvLayout:
    """What the header of a Kaggle CSV says."""

    ref: str  # path or URL
    labeled: bool  # True for label,pixel0..783; False for pixel0..783
    data_start: int  # byte offset of the first data row
    size: int  # file size in bytes
    dialect: csvdialect.Dialect = csvdialect.Dialect()  # separator, index column, trailing field

    @property
    def columns(self):
        return TRAIN_COLUMNS if self.labeled else PIXEL_COLUMNS


def read_csv_layout(ref, training=False):
    """Check the header of a Kaggle CSV -> CsvLayout; DataError names the file and the reason
    (training: a wrong header is told the training layout)."""
    ref = str(ref)
    try:
        size = storage.size(ref)
        head = storage.read_bytes(ref, 0, min(size, HEADER_LIMIT))
    except FileNotFoundError:
        raise DataError(ref, "no such file") from None
    except (IsADirectoryError, OSError) as e:
        raise DataError(ref, f"cannot read ({e})") from None
    kind = archive.kind_of(head)
    if kind:
        raise DataError(ref, f"a {kind} file: give it as it is to `digits predict` or `digits train`, "
                        f"which decompress it, or decompress it first")
    return csv_layout_of(ref, head, size, training)


def csv_layout_of(ref, head, size, training=False):
    """The first bytes of a CSV (up to HEADER_LIMIT) and its size (None: unknown, as for a
    compressed file being checked) -> CsvLayout. Refuses a file whose first values look
    normalized (fractions in 0..1): read as pixels they would be predicted silently wrong."""
    if not head.strip(b" \t\r\n\x1a"):
        raise DataError(ref, "empty file")
    end = head.find(b"\n")
    line = head if end < 0 else head[:end]
    data_start = len(head) if end < 0 else end + 1
    names, dialect, _ = csvdialect.header_names(line)
    layouts = [TRAIN_COLUMNS] if training else [TRAIN_COLUMNS, PIXEL_COLUMNS]
    layout, dialect = csvdialect.match_layout(names, dialect, layouts)
    if layout is None and training:
        if csvdialect.match_layout(names, dialect, [PIXEL_COLUMNS])[0]:
            raise DataError(ref, "has no label column: a training file starts 'label,pixel0,...'")
    if layout is None:
        _wrong_header(ref, names, training)
    labeled = layout is TRAIN_COLUMNS
    other = csvdialect.other_separator(head[data_start:], dialect, len(layout))
    if other:
        raise DataError(ref, f"the header is separated by {dialect.sep!r} but the first record by {other!r}; "
                        f"write the file with one separator")
    got = csvdialect.looks_normalized(_sample_lines(head[data_start:], dialect, len(layout)), len(layout),
                                      skip=int(labeled))
    if got:
        row, col, text = got
        raise DataError(ref, f"the values look normalized (fractions in 0..1, such as {text} in record "
                        f"{row + 1}, {layout[col]}); export raw pixels 0..255 instead, e.g. "
                        f"(x * 255).round().astype(int) before writing the CSV")
    size = len(head) if size is None else size
    return CsvLayout(ref, labeled, min(data_start, size), size, dialect)


def _sample_lines(data, dialect, n_fields):
    """The whole lines at the start of `data` (bytes after the header), normalized."""
    cut = data.rfind(b"\n") + 1
    return csvdialect.normalize(data[:cut] if cut else data, dialect, n_fields)


def _wrong_header(ref, names, training):
    """DataError for a header that matches no layout, naming the first column that differs."""
    if names and names[0].isdigit():
        raise DataError(ref, "missing header: the first line is data; expected "
                        + ("'label,pixel0,...,pixel783'" if training else
                           "'label,pixel0,...,pixel783' or 'pixel0,...,pixel783'"), row=None)
    expected = TRAIN_COLUMNS if training or (names and names[0] == "label") else PIXEL_COLUMNS
    shape = f"{expected[0]},{expected[1]},...,{expected[-1]}"
    for i, (got, want) in enumerate(zip(names, expected)):
        if got != want:
            raise DataError(ref, f"wrong header: column {i + 1} is {got[:40]!r}, expected {want!r} "
                            f"(a {'training' if expected is TRAIN_COLUMNS else 'test'} file starts '{shape}')")
    raise DataError(ref, f"wrong header: {len(names)} columns, expected {len(expected)} ({shape})")


PLAN_WINDOW = 1 << 13  # bytes read at each planned chunk boundary (a good row is <= ~3.2 KB;
# a longer line is read on until its end), so a plan of 100 or 10,000 chunks costs little memory


def plan_csv(layout, rows_per_chunk):
    """Split the data rows into byte ranges [(start, end), ...]: ceil(rows / rows_per_chunk)
    ranges of about equal size, the row count estimated from the first MB (exact when the
    data fits in it). The estimate is as rough as the sample is typical: a 1 MB sample of the
    MNIST test rows is off by about 0.5%, which at 100 chunks is half a chunk. So chunks are
    allowed to be up to PLAN_SLACK larger than rows_per_chunk instead of one more being
    added: 100,000 rows in chunks of 10,000 make 10 chunks, not 10 and a sliver or 11.

    Range ends are moved forward to the next line break, so every range holds whole lines
    and a worker reads only its own bytes. Reads the sample, then one small window per
    boundary, all in one request batch (concurrent on object stores).
    """
    start, size = layout.data_start, layout.size
    if start >= size:
        return []
    sample = storage.read_bytes(layout.ref, start, min(size, start + (1 << 20)))
    if start + len(sample) >= size:  # all the data is in the sample: split by exact line counts
        ends = (np.flatnonzero(np.frombuffer(sample, np.uint8) == 10) + 1).tolist()
        if not ends or ends[-1] != len(sample):
            ends.append(len(sample))
        n = -(-len(ends) // rows_per_chunk)
        cuts = [start + ends[-(-len(ends) * k // n) - 1] for k in range(1, n)]
    else:
        row_bytes = max(1.0, len(sample) / max(1, sample.count(b"\n")))
        x = (size - start) / row_bytes / rows_per_chunk  # chunks, estimated
        n = max(1, math.floor(x) if x <= math.floor(x) * (1 + PLAN_SLACK) else math.ceil(x))
        guesses = [start + (size - start) * k // n for k in range(1, n)]
        windows = storage.read_ranges(layout.ref, [g - 1 for g in guesses],  # 8 KB each: memory flat
                                      [min(size, g - 1 + PLAN_WINDOW) for g in guesses])
        cuts = [_next_line_start(layout.ref, g, w, size) for g, w in zip(guesses, windows)]
    ranges, lo = [], start
    for cut in cuts + [size]:
        if cut > lo:
            ranges.append((lo, cut))
            lo = cut
    return ranges


def _next_line_start(ref, at, window, size):
    """The offset just after the first b"\\n" at or after byte at - 1, given the window of
    bytes from at - 1; reads further (a very long line) when the window has none."""
    pos = at - 1
    while True:
        nl = window.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(window)
        if pos >= size or not window:
            return size
        window = storage.read_bytes(ref, pos, min(size, pos + (1 << 16)))


def line_blocks(ref, start, end, window=None):
    """Bytes [start, end) of a file, read `window` bytes at a time -> yields blocks of whole
    lines (bytes), or, for a line longer than MAX_LINE, its length (int), the line unkept.

    Memory stays about window (default READ_WINDOW) + MAX_LINE bytes whatever the lines
    are. The last line of
    the range need not end with b"\\n".
    """
    window = window or READ_WINDOW
    carry, skipped, pos = b"", None, start  # skipped: length so far of an overlong line
    for raw in _windows(ref, start, end, window):
        if not raw:
            raise DataError(ref, f"file ended at byte {pos}, expected {end} (changed while read?)")
        pos += len(raw)
        if skipped is not None:
            nl = raw.find(b"\n")
            if nl < 0:
                skipped += len(raw)
                continue
            yield skipped + nl
            skipped, raw = None, raw[nl + 1:]
        buf = carry + raw if carry else raw
        cut = len(buf) if pos >= end else buf.rfind(b"\n") + 1
        if cut:
            yield buf[:cut]
        carry = buf[cut:]
        if len(carry) > MAX_LINE:
            skipped, carry = len(carry), b""
    if skipped is not None:
        yield skipped


AHEAD = 3  # windows of an object store's file fetched ahead of the one being parsed


def _windows(ref, start, end, window):
    """The bytes of [start, end), `window` at a time (b"" where the file ends early). On an
    object store the next AHEAD windows are fetched, concurrently, while the current one is
    parsed (memory: AHEAD + 1 windows), so a chunk costs about its parsing or its transfer,
    not the sum of one round trip per window."""
    if not storage.is_url(ref):
        pos = start
        while pos < end:
            raw = storage.read_bytes(ref, pos, min(end, pos + window))
            yield raw
            if not raw:
                return
            pos += len(raw)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    starts = deque(range(start, end, window))
    with ThreadPoolExecutor(AHEAD, thread_name_prefix="digits-read") as pool:
        pending = deque()
        while starts or pending:
            while starts and len(pending) <= AHEAD:
                at = starts.popleft()
                pending.append((min(end, at + window) - at,
                                pool.submit(storage.read_bytes, ref, at, min(end, at + window))))
            want, future = pending.popleft()
            raw = future.result()
            yield raw
            if len(raw) < want:  # the file ended early (it changed): what follows is b""
                if raw:
                    yield b""
                return


def count_lines(ref, start, end, dialect=None, n_fields=N_PIXELS):
    """Records in bytes [start, end) of a CSV, counted without parsing them, as
    read_csv_range counts them (blank lines are not records)."""
    n = 0
    for block in line_blocks(ref, start, end):
        if isinstance(block, int):
            n += 1
        else:
            n += count_records(block if dialect is None or dialect.plain and b'"' not in block
                               else csvdialect.normalize(block, dialect, n_fields))
    return n


def read_csv_range(layout, start, end, labels=True):
    """Parse the whole lines in bytes [start, end) -> Block.

    labels: for a training file, check and return its label column; with labels=False (a
    labeled file given to predict) the label column is ignored, unchecked. Reads at most
    READ_WINDOW bytes at a time (see line_blocks).

    Memory: a row of values and an error entry per bad record, so the bad records of one
    range are bounded: past MAX_BAD_RECORDS (lines too short to be rows, garbage) the range
    is refused whole (DataError saying how many), before their rows are allocated."""
    n_fields = len(layout.columns)
    skip = int(layout.labeled and not labels)
    parts, errors, n = [], {}, 0
    for block in line_blocks(layout.ref, start, end):
        if isinstance(block, int):
            values, errs = np.zeros((1, n_fields), np.uint8), {0: too_long(block)}  # (1, n_fields)
        else:
            block = csvdialect.normalize(block, layout.dialect, n_fields)
            rows_fit = len(block) // (2 * n_fields - 1) + 1  # good rows the bytes could hold
            try:
                values, errs = csvdialect.parse_block(block, n_fields, layout.columns, skip,
                                                      max_lines=rows_fit + MAX_BAD_RECORDS - len(errors))
            except TooManyLines as e:
                lines = e.lines - block.endswith(b"\n")  # parse_rows counts a last, empty one
                raise DataError(layout.ref, _too_many_bad(start, end, f"{lines:,} lines in {len(block):,} "
                                                          f"bytes, too short to hold {n_fields} values")) from None
        if len(errors) + len(errs) > MAX_BAD_RECORDS:
            raise DataError(layout.ref, _too_many_bad(start, end, f"first: {next(iter(errs.values()))}"))
        errors.update((n + i, reason) for i, reason in errs.items())
        parts.append(values)
        n += len(values)
    values = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else \
        np.zeros((0, n_fields), np.uint8)  # (n, 785 or 784)
    if not layout.labeled:
        return Block(values, None, errors)
    pixels = np.ascontiguousarray(values[:, 1:])  # (n, 784)
    if not labels:
        return Block(pixels, None, errors)
    labels = values[:, 0].astype(np.int64)  # (n,)
    for i, reason in errors.items():  # the parser knows pixels' range; say the label's
        m = _LABEL_RANGE.match(reason)
        if m:
            errors[i] = f"label {m.group(1)} is outside 0..9"
    for i in np.flatnonzero(labels > 9):
        if int(i) not in errors:
            errors[int(i)] = f"label {labels[i]} is outside 0..9"
    return Block(pixels, labels, errors)


def _too_many_bad(start, end, detail):
    return (f"bytes {start}-{end}: more than {MAX_BAD_RECORDS:,} bad records in one chunk ({detail}); "
            f"not read record by record")
