"""Readers and validators for the two formats users bring.

Kaggle CSV: a training file `label,pixel0..pixel783` or a test file `pixel0..pixel783`,
one image a row. Files are read in byte ranges of whole lines, so memory does not grow
with the file; data row numbers are 1-based (for a test file, row n is ImageId n).

Image folders: for training, one sub-folder per digit `0`..`9`; for prediction, every
file under the folder, sorted by relative path. PNG, JPEG, BMP and GIF are read and
converted to 8-bit grayscale; an image must be 28x28 (others are rejected, not resized).

Every reader returns a Block: pixels (n, 784) uint8 with bad records zero-filled,
labels (n,) or None, and errors {record index: reason}. Nothing is dropped silently.
"""
import hashlib
import io
import posixpath
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from model import network, storage
from model.csvparse import parse_rows
from model.errors import DataError

N_PIXELS = network.N_IN
SIDE = 28
PIXEL_COLUMNS = [f"pixel{i}" for i in range(N_PIXELS)]
TRAIN_COLUMNS = ["label"] + PIXEL_COLUMNS
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
HEADER_LIMIT = 1 << 20  # bytes searched for the end of the header line
_LABEL_RANGE = re.compile(r"^value (\S+) in label is outside 0\.\.255$")


@dataclass
class Block:
    """Records read from one range of an input."""

    pixels: np.ndarray  # (n, 784) uint8, zero rows where errors holds a reason
    labels: np.ndarray | None  # (n,) int64 for labeled data
    errors: dict = field(default_factory=dict)  # record index within the block -> reason

    def __len__(self):
        return self.pixels.shape[0]

    def ok_mask(self):
        """(n,) bool: True for the good records."""
        mask = np.ones(len(self), bool)
        mask[list(self.errors)] = False
        return mask


# ----------------------------------------------------------------------------- CSV

@dataclass(frozen=True)
class CsvLayout:
    """What the header of a Kaggle CSV says."""

    ref: str  # path or URL
    labeled: bool  # True for label,pixel0..783; False for pixel0..783
    data_start: int  # byte offset of the first data row
    size: int  # file size in bytes

    @property
    def columns(self):
        return TRAIN_COLUMNS if self.labeled else PIXEL_COLUMNS


def read_csv_layout(ref):
    """Check the header of a Kaggle CSV -> CsvLayout; DataError names the file and the reason."""
    ref = str(ref)
    try:
        size = storage.size(ref)
        head = storage.read_bytes(ref, 0, min(size, HEADER_LIMIT))
    except FileNotFoundError:
        raise DataError(ref, "no such file") from None
    except (IsADirectoryError, OSError) as e:
        raise DataError(ref, f"cannot read ({e})") from None
    if size == 0 or not head.strip():
        raise DataError(ref, "empty file")
    end = head.find(b"\n")
    line = head if end < 0 else head[:end]
    data_start = size if end < 0 else end + 1
    text = line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
    names = [c.strip().strip('"') for c in text.split(",")]
    if names == TRAIN_COLUMNS:
        return CsvLayout(ref, True, data_start, size)
    if names == PIXEL_COLUMNS:
        return CsvLayout(ref, False, data_start, size)
    if names and names[0].isdigit():
        raise DataError(ref, "missing header: the first line is data; expected "
                        "'label,pixel0,...,pixel783' or 'pixel0,...,pixel783'", row=None)
    expected = TRAIN_COLUMNS if names and names[0] == "label" else PIXEL_COLUMNS
    for i, (got, want) in enumerate(zip(names, expected)):
        if got != want:
            raise DataError(ref, f"wrong header: column {i + 1} is {got[:40]!r}, expected {want!r}")
    raise DataError(ref, f"wrong header: {len(names)} columns, expected {len(expected)} "
                    f"({expected[0]},...,{expected[-1]})")


def plan_csv(layout, rows_per_chunk):
    """Split the data rows into byte ranges [(start, end), ...] of about rows_per_chunk lines.

    Range ends are moved forward to the next line break, so every range holds whole lines
    and a worker reads only its own bytes. Reads a sample and one small window per boundary.
    """
    start, size = layout.data_start, layout.size
    if start >= size:
        return []
    sample = storage.read_bytes(layout.ref, start, min(size, start + (1 << 20)))
    lines = max(1, sample.count(b"\n"))
    row_bytes = max(1, len(sample) // lines)
    step = max(1, rows_per_chunk * row_bytes)
    ranges = []
    while start < size:
        end = start + step
        if end >= size:
            end = size
        else:
            window = storage.read_bytes(layout.ref, end - 1, min(size, end - 1 + (1 << 16)))
            nl = window.find(b"\n")
            while nl < 0 and end < size:  # a very long line: keep looking
                end = min(size, end + (1 << 16))
                window = storage.read_bytes(layout.ref, end - 1, min(size, end - 1 + (1 << 16)))
                nl = window.find(b"\n")
            end = size if nl < 0 else end - 1 + nl + 1
        ranges.append((start, end))
        start = end
    return ranges


def read_csv_range(layout, start, end):
    """Parse the whole lines in bytes [start, end) -> Block (labels set for a training file)."""
    data = storage.read_bytes(layout.ref, start, end)
    values, errors = parse_rows(data, len(layout.columns), layout.columns)  # (n, 785 or 784)
    if not layout.labeled:
        return Block(values, None, errors)
    labels = values[:, 0].astype(np.int64)  # (n,)
    for i, reason in errors.items():  # the parser knows pixels' range; say the label's
        m = _LABEL_RANGE.match(reason)
        if m:
            errors[i] = f"label {m.group(1)} is outside 0..9"
    for i in np.flatnonzero(labels > 9):
        if int(i) not in errors:
            errors[int(i)] = f"label {labels[i]} is outside 0..9"
    return Block(np.ascontiguousarray(values[:, 1:]), labels, errors)


# ----------------------------------------------------------------------------- images

def list_images(folder):
    """Every file under an image folder, as sorted "/"-separated paths relative to it."""
    folder = str(folder)
    if not storage.exists(folder):
        raise DataError(folder, "no such folder")
    if not storage.isdir(folder):
        raise DataError(folder, "not a folder")
    return storage.walk_files(folder)


def load_image(folder, rel):
    """One image file -> (784,) uint8 grayscale; DataError naming the path and the reason."""
    path = storage.join(str(folder), rel)
    ext = posixpath.splitext(rel)[1].lower()
    if ext not in IMAGE_TYPES:
        raise DataError(path, f"unknown file type {ext or '(none)'!r}; expected one of "
                        + ", ".join(IMAGE_TYPES))
    try:
        data = storage.read_bytes(path)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.size != (SIDE, SIDE):
                raise DataError(path, f"image is {img.size[0]}x{img.size[1]}, expected {SIDE}x{SIDE}")
            return _gray8(img).reshape(N_PIXELS)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = "corrupt or unreadable image" if isinstance(e, UnidentifiedImageError) else \
            f"corrupt or unreadable image ({e})"
        raise DataError(path, reason) from None


def _gray8(img):
    """A PIL image -> (28, 28) uint8 grayscale; 16-bit grayscale is scaled, not clipped."""
    if img.mode.startswith("I;16") or (img.mode == "I" and np.asarray(img).max() > 255):
        wide = np.asarray(img, dtype=np.int64)  # (28, 28) 0..65535
        return ((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)
    gray = img if img.mode == "L" else img.convert("L")
    return np.asarray(gray, dtype=np.uint8)


def read_images(folder, rels, labels=None):
    """Load images -> Block; a bad image becomes a zero row plus its reason."""
    pixels = np.zeros((len(rels), N_PIXELS), np.uint8)  # (n, 784)
    errors = {}
    for i, rel in enumerate(rels):
        try:
            pixels[i] = load_image(folder, rel)
        except DataError as e:
            errors[i] = e.reason
    lab = None if labels is None else np.asarray(labels, np.int64)
    return Block(pixels, lab, errors)


def list_training_images(folder):
    """Labeled files of a training folder -> (sorted relative paths, labels, errors).

    errors is [(path, reason)] for files outside the digit sub-folders 0..9.
    """
    rels, labels, errors = [], [], []
    for rel in list_images(folder):
        top = rel.split("/", 1)[0]
        if "/" in rel and top in tuple("0123456789"):
            rels.append(rel)
            labels.append(int(top))
        else:
            errors.append((rel, "not inside a digit sub-folder 0..9"))
    return rels, labels, errors


# ----------------------------------------------------------------------------- training data

@dataclass
class TrainingData:
    """A whole labeled dataset in memory."""

    source: str
    pixels: np.ndarray  # (N, 784) uint8
    labels: np.ndarray  # (N,) int64
    skipped: list  # [(row number or path, reason)] of bad records left out
    fingerprint: str  # sha256 of pixels and labels: the same data gives the same value


def _fingerprint(pixels, labels):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pixels).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def load_training(ref, skip_bad=False, block_rows=20000, progress=None):
    """A training CSV or a folder of digit sub-folders -> TrainingData.

    A bad record raises DataError (naming file and row or image, with a count of the
    others) unless skip_bad is true, in which case it is listed in .skipped.
    progress(done_bytes_or_files, total) is called as the input is read.
    """
    ref = str(ref)
    if not storage.exists(ref):
        raise DataError(ref, "no such file or folder")
    if storage.isdir(ref):
        rels, labels, bad = list_training_images(ref)

        def blocks():  # (block, where each of its records is, done, total)
            for lo in range(0, len(rels), block_rows):
                hi = lo + block_rows
                yield read_images(ref, rels[lo:hi], labels[lo:hi]), rels[lo:hi], min(hi, len(rels)), len(rels)
    else:
        layout = read_csv_layout(ref)
        if not layout.labeled:
            raise DataError(ref, "has no label column: a training file starts 'label,pixel0,...'")
        bad = []

        def blocks():
            row = 1  # the 1-based data row of the block's first line
            for start, end in plan_csv(layout, block_rows):
                block = read_csv_range(layout, start, end)
                yield block, range(row, row + len(block)), end, layout.size
                row += len(block)

    parts_x, parts_y = [], []
    for block, where, done, total in blocks():
        bad += [(where[i], reason) for i, reason in sorted(block.errors.items())]
        keep = block.ok_mask()
        parts_x.append(block.pixels[keep])
        parts_y.append(block.labels[keep])
        if progress:
            progress(done, total)
    if bad and not skip_bad:
        where, reason = bad[0]
        more = f" (and {len(bad) - 1} more bad records)" if len(bad) > 1 else ""
        if isinstance(where, int):
            raise DataError(ref, f"{reason}{more}; pass --skip-bad to train on the good ones", row=where)
        raise DataError(storage.join(ref, where), f"{reason}{more}; pass --skip-bad to train on the good ones")
    pixels = np.concatenate(parts_x) if parts_x else np.zeros((0, N_PIXELS), np.uint8)
    labels = np.concatenate(parts_y) if parts_y else np.zeros(0, np.int64)
    if len(labels) < 2:
        raise DataError(ref, f"only {len(labels)} usable labeled images; training needs at least 2")
    return TrainingData(ref, pixels, labels, bad, _fingerprint(pixels, labels))
