"""A zip of images read as an image folder: `digits predict photos.zip`, `digits train digits.zip`.

    is_image_zip(ref)                 # a zip (by its bytes) with no CSV in it
    names, sizes = list_members(ref)  # its files, sorted; folders and macOS metadata left out
    raws = read_members(ref, names)   # each member's bytes, or the DataError that stands for it

A zip holding a CSV is not an image zip (the CSV readers take it). Members are read one at a
time, each bounded before it is inflated: a member declaring more than MAX_IMAGE_BYTES, or
inflating more than MAX_RATIO times its compressed size (a zip bomb), is that member's error,
and inflating stops at the declared size whatever the stream holds (zipfile checks it and
the CRC). `__MACOSX/` entries (resource forks the macOS archiver adds) are not images and are
left out. The zip may be on any storage: an object store's is read by byte ranges.
"""
import io
import zipfile

from model import storage
from model.data.archive import RangeReader
from model.data.imagedecode import MAX_IMAGE_BYTES
from model.errors import DataError, describe

MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first bytes (a member, or an empty zip's end record)
MAX_RATIO = 200  # a member inflating more than this many times its compressed size is refused
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".tsv")
SKIPPED = ("__MACOSX/",)  # folders of archiver metadata, never images


def _open(ref):
    """A zipfile.ZipFile over storage path ref (a local file directly, else by ranges)."""
    path = storage.local_path(ref)
    return zipfile.ZipFile(path if path is not None else io.BufferedReader(RangeReader(ref), 1 << 16))


def is_image_zip(ref):
    """True if the file at ref is a readable zip (by its first bytes, whatever its name)
    holding files and no CSV; False for anything else (an empty zip included: the CSV
    reader names what it lacks), never raising."""
    try:
        if storage.read_bytes(ref, 0, 4) not in MAGIC:
            return False
        with _open(ref) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir() and not i.filename.startswith(SKIPPED)]
            return bool(names) and not any(n.lower().endswith(CSV_SUFFIXES) for n in names)
    except Exception:  # not a zip after all, or unreadable: the other readers say why
        return False


def list_members(ref):
    """The files of an image zip -> (sorted member names, their declared sizes); DataError
    naming the zip when it cannot be read."""
    try:
        with _open(ref) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith(SKIPPED)]
    except Exception as e:
        raise DataError(ref, f"cannot read the zip ({describe(e, 200)})") from None
    infos.sort(key=lambda i: i.filename)
    return [i.filename for i in infos], [i.file_size for i in infos]


def read_members(ref, names):
    """The bytes of each named member (in order) -> list of bytes or DataError (naming
    `ref::name` and the reason); the whole list is DataErrors when the zip cannot be opened."""
    try:
        zf = _open(ref)
    except Exception as e:
        return [DataError(record_name(ref, n), f"cannot read the zip ({describe(e, 200)})") for n in names]
    with zf:
        return [_member(zf, ref, n) for n in names]


def _member(zf, ref, name):
    where = record_name(ref, name)
    try:
        info = zf.getinfo(name)
        if info.file_size > MAX_IMAGE_BYTES:
            raise DataError(where, f"file is over the limit of {MAX_IMAGE_BYTES >> 20} MB")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > (1 << 16):
            raise DataError(where, f"inflates {info.file_size:,} bytes from {info.compress_size:,}: "
                            f"over {MAX_RATIO} times (a zip bomb?)")
        if info.flag_bits & 0x1:
            raise DataError(where, "encrypted zip member")
        with zf.open(info) as f:
            return f.read(MAX_IMAGE_BYTES + 1)  # zipfile stops at file_size and checks the CRC
    except DataError as e:
        return e
    except Exception as e:  # a damaged member, whatever the failure
        return DataError(where, f"unreadable zip member ({describe(e, 200)})")


def record_name(ref, name):
    """How a member is named in outputs and errors: `archive.zip::path/in/zip.png`."""
    return f"{str(ref).rstrip('/').rsplit('/', 1)[-1]}::{name}"
