"""Input sources: one class per input kind, the only code that knows a format's layout.

    source = open_source(ref, chunk_rows, chunk_images)   # plan the chunks of a CSV or folder
    source.chunks              # [[lo, hi], ...]: byte ranges of a CSV, slices of a sorted file list
    source.read(i)             # chunk i -> model.data.block.Block (bad records as data, never raised)
    source.length(i)           # records in chunk i, without decoding them
    source.names(i, first, n)  # names of chunk i's records in outputs: ImageIds or paths
    source.to_dict()           # JSON, stored as the job's plan; from_dict(d) reads it back

Prediction (model.batch) and training (load_training, below) both read through a
source, so a third input format is one more class (beside model.data.csvsource and
model.data.imagesources) and one more entry in KINDS.
"""
import hashlib
import tempfile
from dataclasses import dataclass

import numpy as np

from model import storage
from model.data import archive, csvfile, imagezip
from model.data.block import N_PIXELS
from model.data.csvsource import CsvSource, check_step
from model.data.imagesources import ImageFolderSource, ImageZipSource
from model.errors import DataError

KINDS = {cls.kind: cls for cls in (CsvSource, ImageFolderSource, ImageZipSource)}


def open_source(ref, chunk_rows, chunk_images=None, training=False, unpack_to=None):
    """Plan the chunks of a CSV file (about chunk_rows rows each) or an image folder
    (chunk_images files each, default chunk_rows: decoding an image costs far more than
    parsing a row) -> a source. training=True wants labels (a labeled CSV, digit folders).
    A compressed CSV (gzip, bzip2, xz, or a zip's member: `a.zip::test.csv`, else chosen
    by model.data.archive.choose_member) is first decompressed into the folder unpack_to
    (DataError when none is given). DataError names the input when it is missing or
    unreadable."""
    ref = str(ref)
    check_step("chunk_rows", chunk_rows)
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
    """True for a zip, named as a whole, that holds images and no CSV (model.data.imagezip)."""
    return kind == "zip" and member is None and imagezip.is_image_zip(path)


def _member(path, kind, member, training):
    """The zip member to read (the one named, else model.data.archive.choose_member's), None for
    a compressed file."""
    if kind != "zip" or member is not None:
        return member
    with archive.open_zip(path) as zf:
        names = archive.members(zf)

        def labeled(name):
            try:
                head = archive.head(path, kind, name, 1 << 16)
                return csvfile.csv_layout_of(path, head, None).labeled
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
        csvfile.csv_layout_of(shown, archive.head(path, kind, member, csvfile.HEADER_LIMIT), None, training)
    else:
        csvfile.read_csv_layout(path, training)


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
    pixels = np.concatenate(parts_x) if parts_x else np.zeros((0, N_PIXELS), np.uint8)
    labels = np.concatenate(parts_y) if parts_y else np.zeros(0, np.int64)
    if len(labels) < 2:
        raise DataError(ref, f"only {len(labels)} usable labeled images; training needs at least 2")
    return TrainingData(ref, pixels, labels, bad, _fingerprint(pixels, labels))
