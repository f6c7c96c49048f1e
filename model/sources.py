"""Input sources: one class per input kind, the only code that knows a format's layout.

    source = open_source(ref, chunk_rows, chunk_images)   # plan the chunks of a CSV or folder
    source.chunks              # [[lo, hi], ...]: byte ranges of a CSV, slices of a sorted file list
    source.read(i)             # chunk i -> data.Block (bad records as data, never raised)
    source.length(i)           # records in chunk i, without decoding them
    source.names(i, first, n)  # names of chunk i's records in outputs: ImageIds or paths
    source.to_dict()           # JSON, stored as the job's plan; from_dict(d) reads it back

Prediction (model.batch) and training (load_training, below) both read through a
source, so a third input format is one more class here and one more entry in KINDS.
"""
import hashlib
import re
import tempfile
from dataclasses import dataclass

import numpy as np

from model import archive, csvdialect, data, imagepack, imagezip, storage
from model.errors import ConfigError, DataError


def _check_step(name, value):
    if int(value) < 1:  # a negative step would plan no chunk at all for a folder
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return int(value)


class CsvSource:
    """A Kaggle CSV (`pixel0..pixel783`, or `label,pixel0..pixel783`) in byte ranges of
    whole lines; record names are 1-based data rows (a test file's ImageId)."""

    kind = "csv"
    output_header = ("ImageId", "Label")
    error_header = ("row", "reason")

    def __init__(self, input, chunks, labeled, data_start, size, dialect=None, unpacked_from=None):
        self.input, self.chunks = str(input), [list(c) for c in chunks]
        self.layout = data.CsvLayout(self.input, bool(labeled), int(data_start), int(size),
                                     csvdialect.Dialect.from_dict(dialect))
        self.unpacked_from = unpacked_from  # the compressed file (or zip member) input was unpacked from

    @classmethod
    def plan(cls, ref, chunk_rows, chunk_images=None, training=False, unpacked_from=None):
        layout = data.read_csv_layout(ref, training)
        chunks = data.plan_csv(layout, _check_step("chunk_rows", chunk_rows))
        return cls(ref, chunks, layout.labeled, layout.data_start, layout.size, layout.dialect.to_dict(),
                   unpacked_from)

    def to_dict(self):
        return {"kind": self.kind, "input": self.input, "chunks": self.chunks,
                "labeled": self.layout.labeled, "data_start": self.layout.data_start,
                "size": self.layout.size, "dialect": self.layout.dialect.to_dict(),
                "unpacked_from": self.unpacked_from}

    def notes(self):
        """How the input was read, a phrase each ("index column '' ignored", "unpacked from
        a.zip::test.csv"): the output's manifest says them."""
        out = [f"unpacked from {self.unpacked_from}"] if self.unpacked_from else []
        return out + self.layout.dialect.notes()

    def read(self, index, labels=False):
        """Chunk `index` -> Block; labels=True checks and returns a training file's labels."""
        lo, hi = self.chunks[index]
        return data.read_csv_range(self.layout, lo, hi, labels=labels)

    def length(self, index):
        lo, hi = self.chunks[index]
        return data.count_lines(self.input, lo, hi, self.layout.dialect, len(self.layout.columns))

    def names(self, index, first, n):
        """ImageIds of chunk `index`, whose first record is the input's record `first` (0-based)."""
        return range(first + 1, first + 1 + n)

    def where(self, index):
        lo, hi = self.chunks[index]
        return f"bytes {lo}-{hi}"

    def progress(self, index):
        """(done, total) once chunk `index` is read: bytes of the file."""
        return self.chunks[index][1], self.layout.size

    def output_lines(self, names, good, labels, confidence, notes):
        """Output lines "ImageId,Label" (bytes) of a chunk's good records: names is the
        chunk's range of ImageIds, good (k,) the indices of its good records, labels (k,)
        their digits; confidence and notes are not written for a CSV."""
        ids = np.arange(names.start, names.stop, dtype=np.int64)[good]  # (k,)
        return submission_lines(ids, labels)


class ImageFolderSource:
    """A folder of image files in slices of its sorted file list; record names are paths
    relative to the folder ("/"-separated, see data.display_name). For training, the
    files of sub-folders 0..9 carry their folder's digit and the others are `unplaced`."""

    kind = "images"
    output_header = ("path", "label", "confidence", "preprocessing")
    error_header = ("path", "reason")

    def __init__(self, input, chunks, paths, labels=None, unplaced=(), pack=None):
        self.input, self.chunks, self.paths = str(input), [list(c) for c in chunks], list(paths)
        self.labels = None if labels is None else list(labels)
        self.unplaced = [tuple(u) for u in unplaced]  # [(path, reason)] left out of training
        self.pack = None if pack is None else [list(e) for e in pack]  # [offset, length, error] per path

    @classmethod
    def plan(cls, ref, chunk_rows, chunk_images=None, training=False):
        """The folder's files in sorted order, in slices of chunk_images; a packed folder
        (model.imagepack: what a client uploads) is planned from its index."""
        step = _check_step("chunk_images", chunk_images or chunk_rows)
        labels, unplaced, pack, listed = None, [], None, None
        if imagepack.is_packed(ref):
            entries = {e[0]: e[1:] for e in imagepack.read_index(ref)}
            listed = sorted(entries)
        if training:
            paths, labels, unplaced = data.list_training_images(ref, listed)
        else:
            paths = data.list_images(ref) if listed is None else listed
        if listed is not None:
            pack = [entries[p] for p in paths]
        chunks = [[lo, min(lo + step, len(paths))] for lo in range(0, len(paths), step)]
        return cls(ref, chunks, paths, labels, unplaced, pack)

    def to_dict(self):
        return {"kind": self.kind, "input": self.input, "chunks": self.chunks, "paths": self.paths,
                "labels": self.labels, "unplaced": self.unplaced, "pack": self.pack}

    def read(self, index, labels=False):
        lo, hi = self.chunks[index]
        fetch = None if self.pack is None else (  # one range request for the chunk, not one per file
            lambda wanted: imagepack.read_entries(self.input, [[self.paths[lo + i]] + self.pack[lo + i]
                                                               for i in wanted]))
        sizes = None if self.pack is None else [e[1] for e in self.pack[lo:hi]]
        return data.read_images(self.input, self.paths[lo:hi],
                                self.labels[lo:hi] if labels and self.labels is not None else None, fetch, sizes)

    def length(self, index):
        lo, hi = self.chunks[index]
        return hi - lo

    def names(self, index, first, n):
        lo = self.chunks[index][0]
        return data.display_names(self.paths[lo:lo + n])

    def where(self, index):
        lo, hi = self.chunks[index]
        return f"files {lo + 1}-{hi}"

    def locate(self, name):
        """A record's name (names() or unplaced) -> where the file is, for an error."""
        return storage.join(self.input, name)

    def progress(self, index):
        return self.chunks[index][1], len(self.paths)

    def notes(self):
        return []

    def output_lines(self, names, good, labels, confidence, notes):
        """Output lines "path,label,confidence,preprocessing" (bytes; preprocessing says what
        was done to the image, empty for an MNIST-style 28x28 image) of a chunk's good
        records: names are the chunk's paths, good (k,) the indices of its good records,
        labels and confidence (k,) theirs, notes {index in chunk: note}."""
        rows = zip(good.tolist(), labels.tolist(), confidence_texts(confidence))
        if notes or _SPECIAL_RE.search("".join(names)):  # a cell to quote, or notes: cell by cell
            cell = csv_cell
            lines = [f"{cell(names[i])},{lab},{c},{cell(notes[i]) if i in notes else ''}\n"
                     for i, lab, c in rows]
        else:  # MNIST-style files with plain names (nearly always): no cell needs a look
            lines = [f"{names[i]},{lab},{c},\n" for i, lab, c in rows]
        return "".join(lines).encode("utf-8")


class ImageZipSource(ImageFolderSource):
    """A zip of image files read as an image folder (model.imagezip): slices of its sorted
    member list; record names are `archive.zip::path/in/zip.png`. For training, the members
    of digit sub-folders 0..9 carry their digit (under one common top folder, if all are)."""

    kind = "imagezip"

    def __init__(self, input, chunks, paths, labels=None, unplaced=(), sizes=None):
        super().__init__(input, chunks, paths, labels, unplaced)
        self.sizes = None if sizes is None else list(sizes)

    @classmethod
    def plan(cls, ref, chunk_rows, chunk_images=None, training=False):
        step = _check_step("chunk_images", chunk_images or chunk_rows)
        paths, sizes = imagezip.list_members(ref)
        labels, unplaced = None, []
        if training:
            top = {p.split("/", 1)[0] for p in paths}
            lead = top.pop() + "/" if len(top) == 1 and all("/" in p for p in paths) and \
                paths[0].split("/", 1)[0] not in tuple("0123456789") else ""
            size_of = dict(zip(paths, sizes))
            rels, labels, unplaced = data.list_training_images(ref, [p[len(lead):] for p in paths])
            paths = [lead + r for r in rels]
            unplaced = [(lead + p, reason) for p, reason in unplaced]
            sizes = [size_of[p] for p in paths]
        chunks = [[lo, min(lo + step, len(paths))] for lo in range(0, len(paths), step)]
        return cls(ref, chunks, paths, labels, unplaced, sizes)

    def to_dict(self):
        d = super().to_dict()
        del d["pack"]
        d["sizes"] = self.sizes
        return d

    def read(self, index, labels=False):
        lo, hi = self.chunks[index]
        names = self.paths[lo:hi]
        return data.read_images(self.input, names,
                                self.labels[lo:hi] if labels and self.labels is not None else None,
                                lambda wanted: imagezip.read_members(self.input, [names[i] for i in wanted]),
                                None if self.sizes is None else self.sizes[lo:hi])

    def names(self, index, first, n):
        lo = self.chunks[index][0]
        return data.display_names([imagezip.record_name(self.input, p) for p in self.paths[lo:lo + n]])

    def locate(self, name):
        return name if "::" in name else imagezip.record_name(self.input, name)


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


_SPECIAL_RE = re.compile('[,"\r\n]')  # what makes a CSV cell need quotes


def csv_cell(text):
    """One CSV field: quoted, its quotes doubled, when it holds a comma, a quote or a line
    break (\\r or \\n), else as it is; csv.reader reads it back as it was. csv.writer
    writes the same, except that it leaves a lone \\r unquoted."""
    if not _SPECIAL_RE.search(text):
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


KINDS = {cls.kind: cls for cls in (CsvSource, ImageFolderSource, ImageZipSource)}


def open_source(ref, chunk_rows, chunk_images=None, training=False, unpack_to=None):
    """Plan the chunks of a CSV file (about chunk_rows rows each) or an image folder
    (chunk_images files each, default chunk_rows: decoding an image costs far more than
    parsing a row) -> a source. training=True wants labels (a labeled CSV, digit folders).
    A compressed CSV (gzip, bzip2, xz, or a zip's member: `a.zip::test.csv`, else chosen
    by model.archive.choose_member) is first decompressed into the folder unpack_to
    (DataError when none is given). DataError names the input when it is missing or
    unreadable."""
    ref = str(ref)
    _check_step("chunk_rows", chunk_rows)
    path, member, kind, folder = _locate(ref)
    if _image_zip(path, kind, member):  # a zip of images is read as an image folder
        return ImageZipSource.plan(path, chunk_rows, chunk_images, training)
    if kind:
        if unpack_to is None:
            raise DataError(ref, f"a {kind} file, and no folder was given to decompress it into")
        member = _member(path, kind, member, training)
        target = storage.join(str(unpack_to), "unpacked-" + archive.plain_name(path, kind, member))
        archive.unpack(path, kind, target, member)
        return CsvSource.plan(target, chunk_rows, chunk_images, training,
                              unpacked_from=path + (archive.MEMBER_SEP + member if member else ""))
    cls = ImageFolderSource if folder else CsvSource
    return cls.plan(path, chunk_rows, chunk_images, training)


def _locate(ref):
    """ref -> (path, zip member or None, compression kind or None, is a folder); DataError
    when it is missing or unreadable, or names a member of a file that is no zip."""
    path, member = archive.split_member(ref)
    try:
        if not storage.exists(path):
            raise DataError(ref, "no such file or folder")
        folder = storage.isdir(path)
    except OSError as e:
        raise DataError(ref, f"cannot read ({e})") from None
    kind = None if folder else archive.sniff(path)
    if member is not None and kind != "zip":
        raise DataError(ref, f"{path} is not a zip file, so it has no member {member!r}")
    return path, member, kind, folder


def _image_zip(path, kind, member):
    """True for a zip, named as a whole, that holds images and no CSV (model.imagezip)."""
    return kind == "zip" and member is None and imagezip.is_image_zip(path)


def _member(path, kind, member, training):
    """The zip member to read (the one named, else model.archive.choose_member's), None for
    a compressed file."""
    if kind != "zip" or member is not None:
        return member
    with archive.open_zip(path) as zf:
        names = archive.members(zf)

        def labeled(name):
            try:
                head = archive.head(path, kind, name, 1 << 16)
                return data.csv_layout_of(path, head, None).labeled
            except DataError:
                return None
        return archive.choose_member(path, names, training, labeled)


def check_input(ref, training=False):
    """Check an input before anything is started or queued, without decompressing it whole:
    it exists; a CSV's (or a compressed CSV's) header and first values are read as
    open_source would read them (the separator found, normalized values refused, a training
    file's header checked against the training layout). DataError names the reason."""
    ref = str(ref)
    path, member, kind, folder = _locate(ref)
    if folder or _image_zip(path, kind, member):
        if training:
            (ImageFolderSource if folder else ImageZipSource).plan(path, 10 ** 9, 10 ** 9, training=True)
        return
    if kind:
        member = _member(path, kind, member, training)
        shown = path + (archive.MEMBER_SEP + member if member else "")
        data.csv_layout_of(shown, archive.head(path, kind, member, data.HEADER_LIMIT), None, training)
    else:
        data.read_csv_layout(path, training)


def from_dict(d):
    """A source from its to_dict() (a stored plan)."""
    d = dict(d)
    return KINDS[d.pop("kind")](**d)


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
    with tempfile.TemporaryDirectory(prefix="digits-unpack-") as unpack_to:  # a compressed file's plain copy
        return _load_training(ref, open_source(ref, block_rows, block_rows, training=True, unpack_to=unpack_to),
                              skip_bad, progress)


def _load_training(ref, source, skip_bad, progress):
    bad = list(getattr(source, "unplaced", []))
    parts_x, parts_y, first = [], [], 0
    for i in range(len(source.chunks)):
        block = source.read(i, labels=True)
        names = source.names(i, first, len(block))
        bad += [(names[j], reason) for j, reason in sorted(block.errors.items())]
        keep = block.ok_mask()
        parts_x.append(block.pixels[keep])
        parts_y.append(block.labels[keep])
        first += len(block)
        if progress:
            progress(*source.progress(i))
    if bad and not skip_bad:
        where, reason = bad[0]
        more = f" (and {len(bad) - 1} more bad records)" if len(bad) > 1 else ""
        if isinstance(where, int):
            raise DataError(ref, f"{reason}{more}; pass --skip-bad to train on the good ones", row=where)
        raise DataError(source.locate(where), f"{reason}{more}; pass --skip-bad to train on the good ones")
    pixels = np.concatenate(parts_x) if parts_x else np.zeros((0, data.N_PIXELS), np.uint8)
    labels = np.concatenate(parts_y) if parts_y else np.zeros(0, np.int64)
    if len(labels) < 2:
        raise DataError(ref, f"only {len(labels)} usable labeled images; training needs at least 2")
    return TrainingData(ref, pixels, labels, bad, _fingerprint(pixels, labels))
