"""Image-folder reader: for training, one sub-folder per digit `0`..`9`; for prediction, every
file under the folder, sorted by relative path. PNG, JPEG, BMP, GIF, TIFF and WebP are read
(by their bytes, whatever their name) and converted to 8-bit grayscale; an MNIST-style PNG
(28x28, 8-bit gray) is decoded by model.data.png28, any other file by model.data.imagedecode, and an
image that is not 28x28 light ink on black goes through model.data.preprocess. Reads return
Blocks (model.data.block).
"""
import posixpath
import warnings

import numpy as np

from model import storage
from model.data import png28
from model.data.block import N_PIXELS, SIDE, Block
from model.data.imagedecode import (  # noqa: F401
    IMAGE_TYPES,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    REDUCE_TO,
    SNIFF_BYTES,
    decode,
    decode_image,
    decoders,
    not_an_image,
    sniff,
)
from model.errors import DataError, describe

READ_GROUP_BYTES = 64 << 20  # a chunk's files are fetched in groups of about this many bytes
READ_GROUP_FILES = 32  # ... or of this many files when their sizes are not known


def list_images(folder):
    """Every file under an image folder, as sorted "/"-separated paths relative to it."""
    folder = str(folder)
    if not storage.exists(folder):
        raise DataError(folder, "no such folder")
    if not storage.isdir(folder):
        raise DataError(folder, "not a folder")
    return storage.walk_files(folder)


def display_name(rel):
    """A relative path as written to outputs and errors files: bytes of a file name that
    are not UTF-8 (kept by the OS layer as surrogate escapes) become \\xNN."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def display_names(rels):
    """display_name of each path in a list -> list; a list of valid UTF-8 names (nearly
    always) is checked in one encode and returned as it is."""
    try:
        "\0".join(rels).encode("utf-8")
        return list(rels)
    except UnicodeEncodeError:  # some name holds surrogate escapes: each is converted
        return [display_name(r) for r in rels]


def check_image_type(path, head=b""):
    """DataError unless the file is an image by its name (an IMAGE_TYPES extension) or by its
    first bytes `head` (see imagedecode.sniff): a PNG named `.png`, `scan` or `x.dat` is read."""
    ext = posixpath.splitext(posixpath.basename(str(path)))[1].lower()
    if ext in IMAGE_TYPES or sniff(head):
        return
    if not head:
        raise DataError(path, "empty file")
    raise DataError(path, not_an_image(ext, head))


def load_image(folder, rel):
    """One image file -> (784,) uint8, light ink on black (decode_image, without its note)."""
    path = storage.join(str(folder), rel)
    raw = storage.read_many([path], MAX_IMAGE_BYTES + 1)[0]
    if isinstance(raw, BaseException):
        raise DataError(path, f"cannot read ({describe(raw, 200)})")
    check_image_type(path, raw[:SNIFF_BYTES])
    return decode_image(raw, path)[0]


def _groups(wanted, sizes):
    """wanted indices in fetch groups: runs of up to READ_GROUP_BYTES of known sizes
    (sizes[i], a packed folder's lengths), or of READ_GROUP_FILES files of unknown size, so
    that a chunk of large photos never holds all of its files' bytes at once."""
    group, budget = [], 0
    for i in wanted:
        size = sizes[i] if sizes is not None else None
        cost = READ_GROUP_BYTES // READ_GROUP_FILES if size is None else size
        if group and budget + cost > READ_GROUP_BYTES:
            yield group
            group, budget = [], 0
        group.append(i)
        budget += cost
    if group:
        yield group


def _fetched(wanted, paths, fetch, sizes):
    """(index, bytes or the exception reading it) for each wanted file, fetched a group at a
    time (concurrent within a group on object stores)."""
    for group in _groups(wanted, sizes):
        try:
            raws = fetch(group) if fetch else storage.read_many([paths[i] for i in group], MAX_IMAGE_BYTES + 1)
        except Exception as e:  # the batch itself failed: each file is tried alone
            raws = [e] * len(group)
        yield from zip(group, raws)


def read_images(folder, rels, labels=None, fetch=None, sizes=None):
    """Load images -> Block; a bad image becomes a zero row plus its reason, a preprocessed
    one gets a note. The files are fetched in groups (concurrent on object stores, see
    _groups); fetch(indices) -> [bytes or exception] instead fetches the images of rels[i]
    for i in indices (a packed folder's: model.data.imagepack), whose failures are then final,
    and sizes[i] is then the byte length of rels[i] when known."""
    pixels = np.zeros((len(rels), N_PIXELS), np.uint8)  # (n, 784)
    errors, notes = {}, {}
    paths = [storage.join(str(folder), rel) for rel in rels]
    wanted = []
    for i, path in enumerate(paths):
        try:  # a name without an image extension: its first bytes decide (a packed file's, its entry)
            if fetch is None and posixpath.splitext(rels[i])[1].lower() not in IMAGE_TYPES:
                check_image_type(path, storage.read_bytes(path, 0, SNIFF_BYTES))
            wanted.append(i)
        except Exception as e:  # not an image, or unreadable: this file's own error
            errors[i] = e.reason if isinstance(e, DataError) else f"unreadable ({describe(e, 200)})"
    quick = []  # indices of the MNIST-style PNGs (png28), their polarity checked at once below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoders' warnings about damaged files (set once a batch)
        for i, raw in _fetched(wanted, paths, fetch, sizes):
            try:
                if isinstance(raw, BaseException):
                    if fetch or isinstance(raw, DataError):
                        raise raw
                    raw = storage.read_bytes(paths[i], 0, MAX_IMAGE_BYTES + 1)  # once more, alone
                gray = png28.decode(raw)  # (28, 28) or None
                if gray is not None:
                    pixels[i] = gray.reshape(N_PIXELS)
                    quick.append(i)
                    continue
            except Exception as e:  # a failed read: this file's own error
                errors[i] = e.reason if isinstance(e, DataError) else f"unreadable ({describe(e, 200)})"
                continue
            _decode_into(pixels, notes, errors, i, raw, paths[i], None)
        if quick:  # the few that may be dark ink on light paper go on to preprocessing
            index = np.array(quick, np.int64)
            for i in index[decoders()[1].may_be_dark_on_light(pixels[index])].tolist():
                _decode_into(pixels, notes, errors, i, None, paths[i], pixels[i].reshape(SIDE, SIDE).copy())
    lab = None if labels is None else np.asarray(labels, np.int64)
    return Block(pixels, lab, errors, notes)


def _decode_into(pixels, notes, errors, i, raw, path, gray):
    """decode(raw, path, gray) into row i of pixels (n, 784) and notes[i], or errors[i]
    (the row zeroed) for whatever goes wrong with it."""
    try:
        pixels[i], note = decode(raw, path, gray)
        if note:
            notes[i] = note
    except Exception as e:  # a DataError names the reason; anything else is still this file's
        pixels[i] = 0
        errors[i] = e.reason if isinstance(e, DataError) else f"unreadable ({describe(e, 200)})"


def list_training_images(folder, listed=None):
    """Labeled files of a training folder -> (sorted relative paths, labels, errors).

    listed: the folder's files when already known (a packed folder's index), else listed.
    errors is [(path, reason)] for files outside the digit sub-folders 0..9.
    """
    rels, labels, errors = [], [], []
    for rel in list_images(folder) if listed is None else listed:
        top = rel.split("/", 1)[0]
        if "/" in rel and top in tuple("0123456789"):
            rels.append(rel)
            labels.append(int(top))
        else:
            errors.append((rel, "not inside a digit sub-folder 0..9"))
    return rels, labels, errors
