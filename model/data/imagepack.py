"""An image folder as one object: what a client uploads for a local folder.

An object store answers per request, so a folder of 10,000 small files costs 10,000
uploads and 10,000 reads. Packed, it is two objects under the folder's storage path:

    <ref>/.digits-images.pack         the files' bytes, back to back, in sorted path order
    <ref>/.digits-images.index.json   {"format": 1, "files": [[path, offset, length, error], ...]}

paths are those imagefolder.list_images gives for the local folder ("/"-separated, relative);
error is null, or why the file's bytes are not in the pack (unreadable, over the size
limit), which the reader reports as that file's error, as it would for the folder itself.
A worker reads a chunk's images with one range request (read_entries, as imagefolder.read_images'
fetch).
Outputs are the same, byte for byte, as for the folder read file by file.
"""
import json
import os

from model import storage
from model.data.imagedecode import SNIFF_BYTES, not_an_image, sniff
from model.errors import DataError, describe

PACK = ".digits-images.pack"
INDEX = ".digits-images.index.json"
FORMAT = 1
MAX_RUN = 64 << 20  # bytes fetched by one range request at most


def is_packed(ref):
    """True when storage path ref holds a packed image folder."""
    return storage.exists(storage.join(str(ref), INDEX))


def pack(folder, target, image_types, max_bytes):
    """Pack local folder `folder` to storage path `target` (a folder path or URL) -> files packed.

    Files whose name has no extension of image_types and whose first bytes are no image's
    (imagedecode.sniff) are listed without their bytes, with the reason the reader gives;
    files over max_bytes, or unreadable, likewise.
    The pack is streamed (memory stays flat) and uploaded in one piece; the index last, so
    a pack without its index is never read."""
    rels = storage.walk_files(folder)
    entries, offset = [], 0
    with storage.AtomicFile(storage.join(str(target), PACK)) as out:
        for rel in rels:
            path = os.path.join(folder, *rel.split("/"))
            error, data = None, b""
            try:
                ext = os.path.splitext(rel)[1].lower()
                if ext not in image_types:  # no image's name: its first bytes decide
                    with open(path, "rb") as f:
                        head = f.read(SNIFF_BYTES)
                    if not sniff(head):
                        error = not_an_image(ext, head) if head else "empty file"
                if error is None:
                    size = os.path.getsize(path)
                    if size > max_bytes:
                        error = f"file is over the limit of {max_bytes >> 20} MB"
                    else:
                        with open(path, "rb") as f:
                            data = f.read(max_bytes + 1)
            except OSError as e:
                error = f"unreadable ({describe(e, 200)})"
            out.write(data)
            entries.append([rel, offset, len(data), error])
            offset += len(data)
    storage.write_text(storage.join(str(target), INDEX), json.dumps({"format": FORMAT, "files": entries}))
    return len(entries)


def read_index(ref):
    """The entries [[path, offset, length, error], ...] of the pack at storage path ref;
    DataError naming the index for anything else its bytes hold."""
    where = storage.join(str(ref), INDEX)
    try:
        index = json.loads(storage.read_bytes(where).decode("utf-8"))
    except ValueError as e:  # not UTF-8, not JSON
        raise DataError(where, f"not an image pack index ({describe(e, 200)})") from None
    files = index.get("files") if isinstance(index, dict) and index.get("format") == FORMAT else None
    if not isinstance(files, list) or not all(_entry(e) for e in files):
        raise DataError(where, f"not an image pack index of format {FORMAT}")
    return [list(e) for e in files]


def _entry(e):
    """True for [path, offset, length, error] as pack() writes it."""
    return (isinstance(e, list) and len(e) == 4 and isinstance(e[0], str)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in e[1:3])
            and (e[3] is None or isinstance(e[3], str)))


def read_entries(ref, entries):
    """The bytes of each entry (in order) -> list of bytes, or of the DataError that stands
    for an entry packed without its bytes. Neighbouring entries are fetched together: one
    range request per run of up to MAX_RUN bytes (one batch of concurrent requests)."""
    runs, out = [], [None] * len(entries)  # runs: [start, end, [entry indices]]
    for i, (rel, offset, length, error) in enumerate(entries):
        if error is not None:
            out[i] = DataError(storage.join(str(ref), rel), error)
            continue
        if not length:  # not an image (refused by name) or an empty file
            out[i] = b""
            continue
        if runs and runs[-1][1] == offset and offset + length - runs[-1][0] <= MAX_RUN:
            runs[-1][1] = offset + length
            runs[-1][2].append(i)
        else:
            runs.append([offset, offset + length, [i]])
    got = storage.read_ranges(storage.join(str(ref), PACK), [r[0] for r in runs], [r[1] for r in runs])
    for (start, _, members), data in zip(runs, got):
        for i in members:
            offset, length = entries[i][1], entries[i][2]
            out[i] = bytes(data[offset - start:offset - start + length])
    return out
