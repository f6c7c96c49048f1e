"""Shared storage through fsspec: a local folder or any URL (s3://bucket/prefix, memory://...).

Plain paths and file:// URLs are local; writes are atomic everywhere: a local file is
written beside its target and renamed over it, and object stores replace an object in
one PUT. Readers never see a half-written file.

Local paths are served by os calls directly (fsspec, about 50 ms to import, is imported
only for URLs). Across hosts: URLs are opened without fsspec's listing cache, so a listing or an exists()
always sees what another host wrote since; and every error names its path: an OSError
without a file name gets the path, any other failure (a lost connection to the object
store, say) becomes a StorageError naming it.
"""
import contextlib
import errno
import functools
import os
import posixpath
import shutil
import tempfile

from model.data.walk import walk_local
from model.errors import StorageError, describe

UPLOAD_PART = 16 << 20  # an upload to an object store of 2 parts or more is multipart, parts in parallel
READ_STEP = 64 << 10  # a local read asks for at least this much at a time (a small file: one read and one empty)
_ERRNO = {FileNotFoundError: errno.ENOENT, PermissionError: errno.EACCES, IsADirectoryError: errno.EISDIR,
          NotADirectoryError: errno.ENOTDIR, FileExistsError: errno.EEXIST}


def is_url(ref):
    """True for "scheme://..." references other than file://."""
    ref = str(ref)
    return "://" in ref and not ref.startswith("file://")


def local_path(ref):
    """The local filesystem path of a plain path or file:// URL, else None."""
    ref = str(ref)
    if ref.startswith("file://"):
        return ref[len("file://"):]
    return None if is_url(ref) else ref


def join(base, *parts):
    """Join path parts onto a folder path or URL with "/"."""
    base = str(base)
    if local_path(base) is not None and not base.startswith("file://"):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def filesystem(ref):
    """(fsspec filesystem, path within it) for a path or URL; URLs without a listing cache
    (another host may have written since the last listing)."""
    from fsspec.core import url_to_fs
    ref = str(ref)
    return url_to_fs(ref, use_listings_cache=False) if is_url(ref) else url_to_fs(ref)


def named_error(e, ref):
    """The exception to raise for failure e on path ref: e itself when it names a file, the
    same OSError class with ref as its file name, else a StorageError(ref, reason)."""
    if isinstance(e, OSError) and (e.filename is not None or isinstance(e, StorageError)):
        return e
    code = getattr(e, "errno", None) or _ERRNO.get(type(e))
    if isinstance(e, OSError) and code:
        with contextlib.suppress(Exception):
            return type(e)(code, e.strerror or os.strerror(code), str(ref))
    return StorageError(ref, describe(e))


@contextlib.contextmanager
def naming(ref):
    """Raise any failure inside the block as named_error(failure, ref)."""
    try:
        yield
    except Exception as e:
        new = named_error(e, ref)
        if new is e:
            raise
        raise new from e


def _ask(ref, local, remote):
    """local(path) for a local path, else the filesystem's method `remote`(path); failures named."""
    with naming(ref):
        path = local_path(ref)
        if path is not None:
            return local(path)
        fs, path = filesystem(ref)
        return getattr(fs, remote)(path)


def exists(ref):
    return _ask(ref, os.path.exists, "exists")


def isdir(ref):
    return _ask(ref, os.path.isdir, "isdir")


def size(ref):
    return _ask(ref, lambda path: os.stat(path).st_size, "size")


def listdir(ref):
    """Names (not paths) of the entries directly under a folder; [] if it does not exist."""
    with naming(ref):
        path = local_path(ref)
        if path is not None:
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        fs, path = filesystem(ref)
        if not fs.exists(path):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def walk_files(ref):
    """Paths (relative to ref, "/"-separated) of every file under a folder, sorted
    (symlinked folders are followed, each real folder once)."""
    with naming(ref):
        path = local_path(ref)
        if path is not None:
            return walk_local(path)
        fs, root = filesystem(ref)
        root = root.rstrip("/")
        out = []
        for p in fs.find(root):
            rel = p[len(root):].lstrip("/")
            out.append(rel.replace(os.sep, "/"))
        return sorted(out)


@functools.cache
def file_mode():
    """Mode of a new file under this process's umask (0o644 under 022), read once.

    mkstemp creates 0600 whatever the umask, so written files get this mode instead.
    Linux reports the umask in /proc; elsewhere it is read by setting it and putting it
    back, which is only safe before other threads create files, hence once, at first use.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):  # no /proc (not Linux): read it the other way, below
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def read_bytes(ref, start=None, end=None):
    """The bytes of a file, or of its byte range [start, end)."""
    with naming(ref):
        path = local_path(ref)
        if path is not None:
            return _read_range(path, start, end)
        fs, path = filesystem(ref)
        if start is None and end is None:
            return fs.cat_file(path)
        return fs.cat_file(path, start=start, end=end)


def _read_range(path, start=None, end=None):
    """Bytes [start, end) of a local file (None: its start, its end; negative: from the end)."""
    with open(path, "rb") as f:
        if start is None and end is None:
            return f.read()
        n = os.fstat(f.fileno()).st_size
        start = 0 if start is None else (max(n + start, 0) if start < 0 else start)
        end = n if end is None else (max(n + end, 0) if end < 0 else min(end, n))
        f.seek(start)
        return f.read(max(end - start, 0))


def read_many(refs, limit=None):
    """The first `limit` bytes (None: all) of each of several files of one filesystem, in one
    batch of requests (concurrent on object stores) -> list of bytes, or of the exception
    that reading that file raised."""
    if not refs:
        return []
    local = [local_path(r) for r in refs]
    if all(p is not None for p in local):  # plain reads: a tenth of fsspec's cost per small file
        return [_read_head(p, limit) for p in local]
    fs, _ = filesystem(refs[0])
    paths = [filesystem(r)[1] for r in refs]
    if limit is None:
        got = fs.cat(paths, on_error="return")
        got = [got.get(p, FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), p)) for p in paths]
    else:
        got = fs.cat_ranges(paths, [0] * len(paths), [limit] * len(paths), on_error="return")
    return [g if isinstance(g, (bytes, BaseException)) else bytes(g) for g in got]


def _read_head(path, limit):
    """The first `limit` bytes (None: all) of a local file, or the exception reading it
    raised. Plain os calls: a small file costs half of what a file object costs."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except Exception as e:  # returned, as fsspec's cat_ranges(on_error="return") does
        return e
    try:
        # reads of at least READ_STEP until the end or the limit; no fstat (a third of the
        # cost of a small file), and a limit of 32 MB never allocates 32 MB for a small file
        parts, got = [], 0
        while limit is None or got < limit:
            step = max(READ_STEP, got) if limit is None else min(limit - got, max(READ_STEP, got))
            parts.append(os.read(fd, step))
            if not parts[-1]:
                break
            got += len(parts[-1])
        return b"".join(parts)  # one part: that same bytes object, not a copy
    except Exception as e:
        return e
    finally:
        os.close(fd)


def read_ranges(ref, starts, ends):
    """The bytes of several ranges [start, end) of one file, in one batch of requests
    (concurrent on object stores) -> list of bytes."""
    if not starts:
        return []
    with naming(ref):
        path = local_path(ref)
        if path is not None:
            return [_read_range(path, a, b) for a, b in zip(starts, ends)]
        fs, path = filesystem(ref)
        out = fs.cat_ranges([path] * len(starts), list(starts), list(ends), on_error="return")
    for part in out:  # cat_ranges hands back a failed range's exception in its place
        if isinstance(part, BaseException):
            raise named_error(part, ref) from part
    return out


def write_bytes(ref, data):
    """Write bytes atomically: the target holds either its old content or all of data."""
    with naming(ref):
        _write_bytes(ref, data)


def _write_bytes(ref, data):
    path = local_path(ref)
    if path is None:
        fs, p = filesystem(ref)
        fs.makedirs(posixpath.dirname(p), exist_ok=True)
        fs.pipe_file(p, data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class AtomicFile:
    """A binary file that appears at `ref` all at once, streamed to a temporary file first
    (so memory stays flat however much is written): beside the target for a local path,
    renamed over it by commit(); for a URL, in the local temp folder, then put to the
    object store in one upload. discard() (or leaving a `with` block by an exception)
    drops it; the target keeps its old content either way.

        with storage.AtomicFile(ref) as f:
            f.write(b"...")
    """

    def __init__(self, ref):
        self.ref = str(ref)
        self.path = local_path(self.ref)
        if self.path is None:
            fd, self.tmp = tempfile.mkstemp(prefix=".tmp-digits-")
        else:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-",
                                            suffix="-" + os.path.basename(self.path))
        try:
            os.fchmod(fd, file_mode())
            self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise

    def write(self, data):
        return self.file.write(data)

    def commit(self):
        """Put the written bytes in place (fsynced first)."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.path is not None:
                os.replace(self.tmp, self.path)
            else:
                fs, p = filesystem(self.ref)
                fs.makedirs(posixpath.dirname(p), exist_ok=True)
                fs.put_file(self.tmp, p)
        finally:
            self.discard()

    def discard(self):
        self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_text(ref, text):
    write_bytes(ref, text.encode("utf-8"))


def read_text(ref):
    return read_bytes(ref).decode("utf-8")


def remove(ref, recursive=False):
    with naming(ref):
        path = local_path(ref)
        if path is not None:
            if os.path.isdir(path) and not os.path.islink(path):
                if not recursive:
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            return
        fs, path = filesystem(ref)
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


def upload(local, ref):
    """Copy a local file or folder to a storage path or URL (recursively for folders; to an
    object store the files of a folder go up concurrently, and a file of 2 x UPLOAD_PART
    bytes or more in parallel parts of a multipart upload)."""
    with naming(local if not os.path.exists(local) else ref):
        fs, path = filesystem(ref)
        extra = {"chunksize": UPLOAD_PART} if "s3" in fs.protocol else {}
        if os.path.isdir(local):
            fs.makedirs(path, exist_ok=True)
            fs.put(str(local).rstrip("/") + "/", path.rstrip("/") + "/", recursive=True, **extra)
        else:
            fs.makedirs(posixpath.dirname(path) if is_url(ref) else os.path.dirname(path), exist_ok=True)
            fs.put_file(str(local), path, **extra)


def download(ref, local):
    """Copy a storage file to a local path atomically (written beside it, then renamed)."""
    with naming(ref):
        fs, path = filesystem(ref)
        folder = os.path.dirname(os.path.abspath(local))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(local))
        os.close(fd)
        try:
            fs.get_file(path, tmp)
            os.chmod(tmp, file_mode())
            os.replace(tmp, local)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
