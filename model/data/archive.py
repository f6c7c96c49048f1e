"""Compressed and packed inputs: gzip, bzip2, xz and zip files, known by their first bytes
(whatever their names say).

A compressed CSV is decompressed once, as a stream, to a plain file (unpack) and then
planned and read in byte ranges like any CSV: a compressed stream has no byte ranges (a
chunk in the middle would decompress everything before it), and one pass at submission
costs less than one per chunk. Memory stays at one PIECE whatever the size.

A zip holds members; `archive.zip::test.csv` names one. Without a name, choose_member
applies the documented rule (docs/formats.md): the only CSV; else, for prediction, the
only CSV without a label column (Kaggle's digit-recognizer.zip: test.csv), for training
the only labeled one (train.csv); else a DataError listing the members.

For other kinds of members (a zip of images): open_zip(ref) and members(zf) list them,
read_member(zf, name, limit) reads one, bounded.
"""
import bz2
import contextlib
import gzip
import io
import lzma
import posixpath
import zipfile

from model import storage
from model.errors import DataError, describe

MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
         (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"))  # first bytes -> kind (an empty zip too)
STREAMS = {"gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "bzip2": lambda f: bz2.BZ2File(f, "rb"),
           "xz": lambda f: lzma.LZMAFile(f, "rb")}  # kind -> a reader of a binary file's decompressed bytes
SUFFIXES = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zip": ".zip"}
MEMBER_SEP = "::"  # archive.zip::member.csv
PIECE = 1 << 20  # bytes decompressed at a time


def kind_of(head):
    """The first bytes of a file -> "gzip", "bzip2", "xz", "zip" or None (not compressed)."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    return None


def sniff(ref):
    """kind_of the file at `ref`; None when it is not compressed or cannot be read (its
    reader then names the reason)."""
    try:
        return kind_of(storage.read_bytes(str(ref), 0, 8))
    except Exception:  # unreadable, a folder: not an archive as far as this says
        return None


def split_member(ref):
    """"archive.zip::test.csv" -> ("archive.zip", "test.csv"); any other ref -> (ref, None)."""
    ref = str(ref)
    path, sep, member = ref.rpartition(MEMBER_SEP)
    if sep and path and member and not storage.exists(ref):
        return path, member
    return ref, None


class RangeReader(io.RawIOBase):
    """A seekable file over storage.read_bytes ranges (zipfile seeks; an object store's file
    is read a range at a time, never whole)."""

    def __init__(self, ref):
        self.ref, self.pos, self.size = ref, 0, storage.size(ref)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = max(0, {0: 0, 1: self.pos, 2: self.size}[whence] + offset)  # zipfile seeks back from the end
        return self.pos

    def readinto(self, buf):
        end = min(self.size, self.pos + len(buf))
        if end <= self.pos:
            return 0
        raw = storage.read_bytes(self.ref, self.pos, end)
        buf[:len(raw)] = raw
        self.pos += len(raw)
        return len(raw)


def open_zip(ref):
    """A zip file on storage -> zipfile.ZipFile (close it); DataError when it is not one."""
    ref = str(ref)
    try:
        path = storage.local_path(ref)
        return zipfile.ZipFile(path if path is not None else io.BufferedReader(RangeReader(ref), PIECE))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise DataError(ref, f"corrupt zip file ({describe(e)})") from None


def members(zf):
    """The files of an open zip, in its order: folders and macOS resource files left out."""
    return [i.filename for i in zf.infolist()
            if not i.is_dir() and not i.filename.startswith("__MACOSX/")
            and not posixpath.basename(i.filename).startswith("._")]


def read_member(zf, name, limit):
    """Up to `limit` bytes of member `name` of an open zip -> bytes (a longer one is cut at
    limit + 1 bytes, so the caller can tell it is over)."""
    with zf.open(name) as f:
        return f.read(limit + 1)


@contextlib.contextmanager
def open_stream(ref, kind, member=None):
    """The decompressed bytes of a compressed file (or of a zip's member) as a binary file."""
    ref = str(ref)
    if kind == "zip":
        with open_zip(ref) as zf:
            try:
                f = zf.open(member)
            except KeyError:
                raise DataError(ref, f"has no member {member!r}; it holds {_listing(members(zf))}") from None
            with f:
                yield f
        return
    path = storage.local_path(ref)
    raw = open(path, "rb") if path is not None else io.BufferedReader(RangeReader(ref), PIECE)
    with raw, STREAMS[kind](raw) as f:
        yield f


def head(ref, kind, member=None, n=1 << 20):
    """The first n decompressed bytes (fewer for a shorter file); DataError when they cannot
    be decompressed."""
    try:
        with open_stream(ref, kind, member) as f:
            out = b""
            while len(out) < n:
                piece = f.read(min(PIECE, n - len(out)))
                if not piece:
                    break
                out += piece
            return out
    except DataError:
        raise
    except Exception as e:  # a damaged stream fails in many ways: each is this file's error
        raise DataError(ref, f"cannot decompress ({kind}: {describe(e, 200)})") from None


def unpack(ref, kind, target, member=None):
    """Decompress `ref` (or its zip member) to storage `target`, PIECE bytes at a time
    -> target. DataError naming ref when the stream is damaged; nothing is left at target."""
    try:
        with open_stream(ref, kind, member) as f, storage.AtomicFile(target) as out:
            while True:
                piece = f.read(PIECE)
                if not piece:
                    break
                out.write(piece)
    except (DataError, OSError) as e:
        if isinstance(e, DataError) or getattr(e, "filename", None):
            raise  # a storage error names its path
        raise DataError(ref, f"cannot decompress ({kind}: {describe(e, 200)})") from None
    except Exception as e:  # zlib.error, lzma.LZMAError, EOFError, ...
        raise DataError(ref, f"cannot decompress ({kind}: {describe(e, 200)})") from None
    return target


def plain_name(ref, kind, member=None):
    """A name for the unpacked file: the member's, or the file's without its suffix."""
    name = posixpath.basename(member) if member else posixpath.basename(str(ref).rstrip("/"))
    suffix = SUFFIXES[kind]
    if not member and name.lower().endswith(suffix):
        name = name[:-len(suffix)]
    return name or "unpacked"


def choose_member(ref, names, training, labeled):
    """The zip member to read when none was named -> name (see the module's rule).

    names: the zip's members; labeled(name) -> True (label column), False (test layout) or
    None (not a digit CSV)."""
    if not names:
        raise DataError(ref, "empty zip file")
    csvs = [n for n in names if n.lower().endswith(".csv")] or names
    if len(csvs) == 1:
        return csvs[0]
    kinds = {n: labeled(n) for n in csvs}
    want = [n for n in csvs if kinds[n] is (True if training else False)]
    if not want and not training:
        want = [n for n in csvs if kinds[n] is True]  # a labeled file predicts too
    if len(want) == 1:
        return want[0]
    which = "labeled" if training else "unlabeled"
    raise DataError(ref, f"holds {len(csvs)} CSV files ({_listing(csvs)}) and "
                    f"{'no' if not want else len(want)} {which} one{'s' if len(want) > 1 else ''}: "
                    f"name the one to read, as {ref}{MEMBER_SEP}{(want or csvs)[0]}")


def _listing(names, limit=10):
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
