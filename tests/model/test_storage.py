"""Shared storage: atomic local writes, byte ranges, and memory:// URLs through fsspec."""
import os
import uuid

import pytest

from model import storage


def leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-"))


def test_write_then_read_local(tmp_path):
    ref = str(tmp_path / "a" / "b" / "f.bin")  # missing folders are created
    storage.write_bytes(ref, b"hello")
    assert storage.read_bytes(ref) == b"hello"
    storage.write_text(ref, "h\u00e9llo\n")
    assert storage.read_text(ref) == "h\u00e9llo\n"
    assert storage.size(ref) == len("h\u00e9llo\n".encode())
    assert leftovers(tmp_path / "a" / "b") == []


def test_crash_at_rename_keeps_the_old_file(tmp_path, monkeypatch):
    ref = tmp_path / "model.npz"
    storage.write_bytes(str(ref), b"old content")

    def crash(src, dst):
        raise OSError("killed before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed before rename"):
        storage.write_bytes(str(ref), b"new content that never lands")
    assert ref.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []


def test_crash_halfway_through_the_write_keeps_the_old_file(tmp_path, monkeypatch):
    ref = tmp_path / "out.csv"
    storage.write_bytes(str(ref), b"A" * 1000)
    real_fdopen = os.fdopen

    class HalfWriter:
        """A file that writes half of what it is given, then fails (disk full, killed...)."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError("no space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: HalfWriter(real_fdopen(fd, mode, *a, **k)))
    with pytest.raises(OSError, match="no space"):
        storage.write_bytes(str(ref), b"B" * 5000)
    monkeypatch.undo()
    assert ref.read_bytes() == b"A" * 1000
    assert leftovers(tmp_path) == []


def test_crash_at_fsync_keeps_the_old_file_and_a_new_file_is_not_created(tmp_path, monkeypatch):
    old = tmp_path / "old.txt"
    old.write_bytes(b"keep me")

    def crash(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        storage.write_bytes(str(old), b"x")
    with pytest.raises(OSError):
        storage.write_bytes(str(tmp_path / "fresh.txt"), b"x")
    monkeypatch.undo()
    assert old.read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["old.txt"]  # no half file, no temp file


def test_interrupt_is_cleaned_up_too(tmp_path, monkeypatch):
    ref = tmp_path / "f"
    ref.write_bytes(b"v1")

    def interrupt(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(str(ref), b"v2")
    assert ref.read_bytes() == b"v1" and leftovers(tmp_path) == []


def test_file_url_is_local(tmp_path):
    ref = "file://" + str(tmp_path / "u.txt")
    storage.write_text(ref, "via url")
    assert (tmp_path / "u.txt").read_text() == "via url"
    assert storage.read_text(ref) == "via url"
    assert storage.local_path(ref) == str(tmp_path / "u.txt")
    assert not storage.is_url(ref) and storage.is_url("s3://b/k") and storage.is_url("memory://x")
    assert storage.local_path("memory://x") is None


@pytest.mark.parametrize("start,end,want", [
    (None, None, b"0123456789"), (0, 4, b"0123"), (3, 7, b"3456"), (7, 10, b"789"),
    (9, 10, b"9"), (5, 5, b""), (8, 100, b"89"),
])
def test_read_bytes_ranges(tmp_path, start, end, want):
    ref = str(tmp_path / "digits.txt")
    storage.write_bytes(ref, b"0123456789")
    assert storage.read_bytes(ref, start, end) == want


def test_read_bytes_ranges_on_memory_url():
    ref = f"memory://st-{uuid.uuid4().hex}/r.bin"
    storage.write_bytes(ref, bytes(range(100)))
    assert storage.read_bytes(ref, 10, 20) == bytes(range(10, 20))
    assert storage.read_bytes(ref, 95, 100) == bytes(range(95, 100))


def test_memory_urls_write_read_listdir_exists():
    root = f"memory://st-{uuid.uuid4().hex}"
    assert not storage.exists(root + "/jobs/1/manifest.json")
    assert storage.listdir(root + "/jobs") == []
    storage.write_text(root + "/jobs/1/manifest.json", '{"ok": true}')
    storage.write_bytes(root + "/jobs/1/chunks/0", b"\x00\x01")
    storage.write_bytes(root + "/jobs/2/chunks/0", b"\x02")
    assert storage.exists(root + "/jobs/1/manifest.json")
    assert storage.read_text(root + "/jobs/1/manifest.json") == '{"ok": true}'
    assert storage.read_bytes(root + "/jobs/1/chunks/0") == b"\x00\x01"
    assert storage.listdir(root + "/jobs") == ["1", "2"]
    assert storage.listdir(root + "/jobs/1") == ["chunks", "manifest.json"]
    assert storage.isdir(root + "/jobs/1") and not storage.isdir(root + "/jobs/1/manifest.json")
    assert storage.size(root + "/jobs/1/chunks/0") == 2
    assert storage.walk_files(root + "/jobs") == ["1/chunks/0", "1/manifest.json", "2/chunks/0"]
    assert storage.join(root, "jobs", "1") == root + "/jobs/1"
    storage.write_bytes(root + "/jobs/1/chunks/0", b"replaced")
    assert storage.read_bytes(root + "/jobs/1/chunks/0") == b"replaced"
    storage.remove(root + "/jobs/1", recursive=True)
    assert not storage.exists(root + "/jobs/1/manifest.json")
    assert storage.listdir(root + "/jobs") == ["2"]
    storage.remove(root + "/jobs/nothing-here")  # removing what is not there is fine


def test_local_listdir_walk_and_join(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_bytes(b"b")
    (tmp_path / "d" / "sub" / "a.txt").write_bytes(b"a")
    d = str(tmp_path / "d")
    assert storage.listdir(d) == ["b.txt", "sub"]
    assert storage.walk_files(d) == ["b.txt", "sub/a.txt"]
    assert storage.listdir(str(tmp_path / "missing")) == []
    assert storage.join(d, "sub", "a.txt") == os.path.join(d, "sub", "a.txt")


def test_upload_folder_to_memory(tmp_path):
    (tmp_path / "src" / "7").mkdir(parents=True)
    (tmp_path / "src" / "7" / "x.png").write_bytes(b"png")
    (tmp_path / "src" / "top.csv").write_bytes(b"csv")
    dest = f"memory://up-{uuid.uuid4().hex}/in"
    storage.upload(str(tmp_path / "src"), dest)
    assert storage.walk_files(dest) == ["7/x.png", "top.csv"]
    assert storage.read_bytes(dest + "/7/x.png") == b"png"


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Outputs, models, reports and job files (everything goes through write_bytes) get the
    mode the umask gives a new file, not mkstemp's 0600: other users of a shared folder
    read them. A fresh process per umask, since the mode is read once per process."""
    import subprocess
    import sys
    code = ("import os, sys; os.umask(int(sys.argv[1], 8)); from model import storage; "
            "storage.write_bytes(sys.argv[2], b'x'); storage.write_text(sys.argv[3], 'y')")
    a, b = tmp_path / "sub" / "out.csv", tmp_path / "meta.json"
    subprocess.run([sys.executable, "-c", code, oct(umask), str(a), str(b)], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert (a.stat().st_mode & 0o777, b.stat().st_mode & 0o777) == (mode, mode)


def test_every_storage_error_names_its_path(tmp_path):
    from model.errors import StorageError
    missing = str(tmp_path / "nope" / "x.csv")
    for call in (lambda: storage.read_bytes(missing), lambda: storage.size(missing),
                 lambda: storage.read_ranges(missing, [0], [1]), lambda: storage.upload(missing, str(tmp_path / "u"))):
        with pytest.raises(OSError) as e:
            call()
        assert "x.csv" in str(e.value), str(e.value)
    with pytest.raises(OSError) as e:  # a failure that is no OSError at all becomes a StorageError naming it
        storage.read_bytes("memory://" + "x" * 3 + "/../\0bad")
    assert isinstance(e.value, OSError)
    err = storage.named_error(RuntimeError("connection reset"), "s3://b/k")
    assert isinstance(err, StorageError) and str(err) == "s3://b/k: RuntimeError: connection reset"
    err = storage.named_error(FileNotFoundError(2, "No such file or directory"), "s3://b/k")
    assert isinstance(err, FileNotFoundError) and err.filename == "s3://b/k"


def test_upload_and_download_a_file(tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"pixel0\n1\n")
    storage.upload(str(src), str(tmp_path / "store" / "inputs" / "j" / "input.csv"))
    assert (tmp_path / "store" / "inputs" / "j" / "input.csv").read_bytes() == b"pixel0\n1\n"
    storage.download(str(tmp_path / "store" / "inputs" / "j" / "input.csv"), str(tmp_path / "back.csv"))
    assert (tmp_path / "back.csv").read_bytes() == b"pixel0\n1\n"
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- streamed atomic writes

def test_atomic_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.csv"
    target.write_bytes(b"old")
    f = storage.AtomicFile(str(target))
    for _ in range(1000):
        f.write(b"new,")
    assert target.read_bytes() == b"old"  # nothing shows before commit
    f.commit()
    assert target.read_bytes() == b"new," * 1000
    assert (target.stat().st_mode & 0o777) == storage.file_mode()
    with pytest.raises(RuntimeError):
        with storage.AtomicFile(str(target)) as g:
            g.write(b"half")
            raise RuntimeError("the writer failed mid-way")
    assert target.read_bytes() == b"new," * 1000  # the old content stays
    g = storage.AtomicFile(str(target))
    g.write(b"dropped")
    g.discard()
    assert target.read_bytes() == b"new," * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temporary file left


def test_atomic_file_to_a_url_is_one_upload():
    ref = f"memory://atomic-{uuid.uuid4().hex}/sub/out.csv"
    with storage.AtomicFile(ref) as f:
        f.write(b"a" * 100_000)
        assert not storage.exists(ref)
    assert storage.read_bytes(ref) == b"a" * 100_000


def test_read_many_of_local_files_matches_fsspec(tmp_path):
    from fsspec.implementations.local import LocalFileSystem
    sizes = [0, 1, 254, 5000]
    paths = []
    for n in sizes:
        p = tmp_path / f"f{n}"
        p.write_bytes(bytes(range(256)) * (n // 256) + bytes(range(n % 256)))
        paths.append(str(p))
    refs = paths + [str(tmp_path / "missing"), str(tmp_path)]
    for limit in (1, 254, 300, 32 << 20):
        got = storage.read_many(refs, limit)
        want = LocalFileSystem().cat_ranges(refs, [0] * len(refs), [limit] * len(refs), on_error="return")
        assert got[:len(paths)] == [bytes(w) for w in want[:len(paths)]]
        assert [len(g) for g in got[:len(paths)]] == [min(n, limit) for n in sizes]
        assert isinstance(got[-2], FileNotFoundError) and isinstance(got[-1], IsADirectoryError)


def test_local_calls_match_fsspec_on_the_same_tree(tmp_path):
    """Local paths are served by os calls, not fsspec: the answers must be the same."""
    from fsspec.implementations.local import LocalFileSystem
    fs = LocalFileSystem()
    (tmp_path / "d" / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").write_bytes(b"h")
    (tmp_path / "d" / "b.txt").write_bytes(b"0123456789")
    (tmp_path / "d" / "sub" / "deeper" / "a.txt").write_bytes(b"a")
    (tmp_path / "d" / "empty").mkdir()
    d = str(tmp_path / "d")
    assert storage.walk_files(d) == sorted(os.path.relpath(p, d) for p in fs.find(d))
    assert storage.listdir(d) == sorted(os.path.basename(p) for p in fs.ls(d, detail=False))
    for ref in (d, d + "/b.txt", d + "/missing"):
        assert storage.exists(ref) == fs.exists(ref) and storage.isdir(ref) == fs.isdir(ref)
    for start, end in ((None, None), (2, 5), (-3, None), (8, 100), (20, 30), (None, -4)):
        assert storage.read_bytes(d + "/b.txt", start, end) == fs.cat_file(d + "/b.txt", start=start, end=end)
    assert storage.read_ranges(d + "/b.txt", [0, 4], [2, 6]) == [b"01", b"45"]
    assert [bytes(x) for x in storage.read_many([d + "/b.txt", d + "/.hidden"])] == [b"0123456789", b"h"]
    with pytest.raises(FileNotFoundError) as e:
        storage.size(d + "/missing")
    assert e.value.filename == d + "/missing"
    with pytest.raises(IsADirectoryError):
        storage.remove(d + "/sub")  # a folder goes only with recursive=True
    storage.remove(d + "/sub", recursive=True)
    storage.remove(d + "/b.txt")
    assert storage.walk_files(d) == [".hidden"]


def test_walk_follows_symlinked_folders_once(tmp_path):
    (tmp_path / "d" / "7").mkdir(parents=True)
    (tmp_path / "d" / "7" / "x.png").write_bytes(b"x")
    os.symlink(tmp_path / "d" / "7", tmp_path / "d" / "seven")  # the same folder under a second name
    os.symlink(tmp_path / "d", tmp_path / "d" / "7" / "loop")  # and a loop
    assert storage.walk_files(str(tmp_path / "d")) == ["7/x.png"]


def test_read_many_whole_files_on_a_url():
    storage.write_bytes("memory://many/a", b"a" * 5)
    storage.write_bytes("memory://many/b", b"")
    got = storage.read_many(["memory://many/a", "memory://many/b", "memory://many/missing"])
    assert got[:2] == [b"aaaaa", b""] and isinstance(got[2], FileNotFoundError)
