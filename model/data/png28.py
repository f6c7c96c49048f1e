"""The short path for MNIST-style PNG files: 28x28, 8-bit grayscale, nothing else.

    gray = png28.decode(raw)   # bytes -> (28, 28) uint8, or None: let PIL decide

Most image folders users bring are MNIST exports: tiny PNGs whose decoding through PIL
costs about 20 us of Python bookkeeping for 784 pixels. Here the file's chunk list is
checked with plain byte arithmetic and the pixels are decoded by libspng (pyspng), about
4x faster. The check is strict on purpose: the file must start with a 28x28 8-bit
grayscale non-interlaced header, every chunk's CRC must hold, only IDAT, IEND and a few
ancillary chunks that cannot change a gray pixel may follow, in the order PNG requires,
nothing may trail IEND, and the pixel stream must inflate whole to 28 rows with its
checksum verified (libspng alone decodes a stream whose checksum fails). Anything else (transparency, animation, a damaged byte, an
unknown chunk, pyspng missing or failing) returns None, and the caller's PIL path gives
the answer it always gave: this module never raises, never rejects and never decodes
differently from PIL (tests/model/data/test_png28.py compares the two on valid and damaged
files).
"""
import struct
import zlib

from model.network import SIDE

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# signature, IHDR length and type, width 28, height 28, depth 8, gray, deflate, filter 0, no interlace
HEADER = SIGNATURE + struct.pack(">I4sIIBBBBB", 13, b"IHDR", SIDE, SIDE, 8, 0, 0, 0, 0)
IHDR_CRC = struct.pack(">I", zlib.crc32(HEADER[12:]))  # the CRC of that IHDR chunk
IEND = struct.pack(">I4sI", 0, b"IEND", zlib.crc32(b"IEND"))  # the whole IEND chunk
# ancillary chunks PIL reads without changing an L image's pixels, with the only length
# PIL accepts for each (another length, or any other chunk, goes to PIL)
HARMLESS = {b"gAMA": 4, b"pHYs": 9, b"sRGB": 1, b"cHRM": 32, b"tIME": 7, b"bKGD": 2}
_U32 = struct.Struct(">I")
ROW_BYTES = SIDE * (SIDE + 1)  # the inflated stream: per row, a filter byte and 28 pixels
_LOADER = []  # [pyspng.load or None], filled at the first call


def _load():
    if not _LOADER:
        try:
            import pyspng
            _LOADER.append(pyspng.load)
        except Exception:  # not installed or not loadable here: every file goes to PIL
            _LOADER.append(None)
    return _LOADER[0]


def is_plain(raw):
    """True if raw is a complete, undamaged 28x28 8-bit grayscale PNG made only of IHDR,
    harmless ancillary chunks, IDAT and IEND, whose pixel stream inflates whole (see the
    module doc)."""
    if not raw.startswith(HEADER):
        return False
    if raw.startswith(IHDR_CRC, len(HEADER)) and raw.endswith(IEND) and raw.startswith(b"IDAT", 37):
        length = _U32.unpack_from(raw, 33)[0]  # the common file: IHDR, one IDAT, IEND
        if 45 + length + len(IEND) == len(raw):
            return zlib.crc32(raw[37:41 + length]) == _U32.unpack_from(raw, 41 + length)[0] \
                and _rows_sound(raw[41:41 + length])
    n, pos, idat = len(raw), 8, []  # idat: the compressed stream's parts
    unpack = _U32.unpack_from
    while pos + 12 <= n:
        length = unpack(raw, pos)[0]
        end = pos + 8 + length
        if end + 4 > n or zlib.crc32(raw[pos + 4:end]) != unpack(raw, end)[0]:
            return False
        kind = raw[pos + 4:pos + 8]
        if kind == b"IEND":
            return bool(idat) and length == 0 and end + 4 == n and _rows_sound(b"".join(idat))
        if kind == b"IDAT":
            idat.append(raw[pos + 8:end])
        elif idat or (HARMLESS.get(kind) != length and not (kind == b"IHDR" and pos == 8)):
            return False  # a chunk after IDAT began, or one not known harmless
        pos = end + 4
    return False


def _rows_sound(stream):
    """True if the zlib stream inflates, checksum verified, to exactly 28 rows of a filter
    byte 0..4 and 28 pixels (libspng would decode a stream whose checksum fails, PIL not)."""
    inflate = zlib.decompressobj()
    try:
        rows = inflate.decompress(stream, ROW_BYTES + 1)  # bounded: a bomb stops here
    except zlib.error:
        return False
    return inflate.eof and len(rows) == ROW_BYTES and max(rows[::SIDE + 1]) <= 4


def decode(raw):
    """The bytes of a file -> its (28, 28) uint8 pixels if is_plain(raw) and libspng
    decodes it, else None (never raises)."""
    load = _load()
    if load is None or not is_plain(raw):
        return None
    try:
        gray = load(raw)
    except Exception:  # a stream libspng refuses: PIL decides
        return None
    if getattr(gray, "shape", None) != (SIDE, SIDE) or gray.dtype.itemsize != 1 or gray.dtype.kind != "u":
        return None
    return gray
