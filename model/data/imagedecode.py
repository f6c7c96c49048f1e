"""One image file's bytes -> an MNIST-style digit: the format read from the bytes, EXIF orientation, preprocessing.

    pixels, note = decode_image(raw, path)   # bytes -> (784,) uint8, what was done ("" if nothing)
    kind = sniff(raw[:16])                   # "PNG", "JPEG", ... or None: the bytes decide, not the name

PNG, JPEG, BMP, GIF, TIFF and WebP are read, whatever the file is called (a file named only
`.png`, or with no or a wrong extension, is read by its content); no other PIL decoder is ever
used. Every size is checked from the header before a pixel is decoded (MAX_IMAGE_PIXELS), a
file over MAX_IMAGE_BYTES is refused unread, and any failure is a DataError naming the path.
A photo's EXIF Orientation tag (2..8) is applied, so a phone picture stored on its side is
read upright ("rotated by EXIF 6"); a damaged EXIF block is ignored. An image that is not 28x28
light ink on black then goes through model.data.preprocess.to_mnist.
"""
import functools
import io
import posixpath
import warnings

import numpy as np

from model.data import png28
from model.errors import DataError, describe

SIDE = 28
N_PIXELS = SIDE * SIDE
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # names of images
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # the only decoders PIL may use
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, TIFF or WebP"
MAX_IMAGE_BYTES = 32 << 20  # a larger image file is refused unread
MAX_IMAGE_PIXELS = 4096 * 4096  # a larger image is refused from its header, undecoded
REDUCE_TO = 1024  # a larger image is reduced to this many pixels a side as it is decoded
JPEG_DRAFT = 16  # a baseline JPEG may have this many times MAX_IMAGE_PIXELS (decoded reduced)
ORIENTATION = 0x0112  # the EXIF tag
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
SNIFF_BYTES = 16  # enough of a file's start for sniff
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif")  # ISO-BMFF images


def sniff(head):
    """The first bytes of a file -> the image format they start ("PNG", ..., "WEBP"), or None."""
    head = bytes(head[:SNIFF_BYTES])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, kind in SIGNATURES:
        if head.startswith(magic):
            return kind
    return None


def not_an_image(ext, head=b""):
    """The reason given for a file that is no image we read: neither its name nor its bytes
    say one (an iPhone's HEIC photo is named as such)."""
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "HEIC/HEIF image: not read; export it as JPEG or PNG (most phones can)"
    return f"unknown file type {ext or '(none)'!r}: not a {FORMAT_NAMES} image"


def decode_image(raw, path):
    """The bytes of one image file -> ((784,) uint8 grayscale, light ink on black as in MNIST,
    note: what was done, "" for an MNIST-style 28x28 image).

    Any failure becomes a DataError naming the path and the reason: an empty file, bytes of
    no known image format, the decoders' own exceptions whatever they are, a file over
    MAX_IMAGE_BYTES, a size over MAX_IMAGE_PIXELS (read from the header, before any pixel is
    decoded), an animated or multi-page image, no ink. An image that is not 28x28, or is
    dark ink on a light background, or was stored turned (EXIF), goes through
    model.data.preprocess.to_mnist (the steps MNIST itself used); a large one is first reduced
    to at most REDUCE_TO pixels a side while decoding.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a decoder's warnings about a damaged file
        return decode(raw, path)


@functools.cache
def decoders():
    """(PIL.Image, model.data.preprocess), imported at the first image (a CSV job never loads
    PIL), with PIL's own size check off: decode checks an image's size from its header
    against its own limits before any pixel is decoded; PIL's check would raise first,
    about attacks."""
    from PIL import Image

    from model.data import preprocess
    Image.MAX_IMAGE_PIXELS = None
    return Image, preprocess


UNTRIED = object()  # decode's gray when png28 has not looked at the bytes yet


def decode(raw, path, gray=UNTRIED):
    """decode_image without its warnings filter (imagefolder.read_images sets it once for a whole
    batch); gray: png28.decode(raw) when the caller already has it ((28, 28) pixels, or None)."""
    Image, pre = decoders()
    if gray is UNTRIED:
        gray = png28.decode(raw)  # (28, 28) for an MNIST-style PNG, else None: PIL decides
    turned = ""
    if gray is not None:
        w = h = SIDE
    else:
        gray, w, h, turned = _decode_pil(Image, raw, path)
    if not turned and not pre.needs_preprocessing(gray):
        return gray.reshape(N_PIXELS), ""
    steps = [turned] if turned else []
    if pre.needs_preprocessing(gray):
        pixels, more = pre.to_mnist(gray)  # (28, 28)
        if more and more[-1].startswith("no ink"):
            raise DataError(path, f"{more[-1]} (an image {w}x{h} with no digit found)")
        steps += more
    else:  # upright now, and MNIST-style
        pixels = gray
    note = (f"{w}x{h}: " if (w, h) != (SIDE, SIDE) else "") + "; ".join(steps)
    return pixels.reshape(N_PIXELS), note


def _decode_pil(Image, raw, path):
    """Any image file's bytes -> ((H, W) uint8 grayscale upright, W, H, "rotated by EXIF n"
    or "") through PIL, or DataError."""
    if not raw:
        raise DataError(path, "empty file")
    try:
        if len(raw) > MAX_IMAGE_BYTES:
            raise DataError(path, f"file is over the limit of {MAX_IMAGE_BYTES >> 20} MB")
        if sniff(raw) is None:
            ext = posixpath.splitext(posixpath.basename(str(path)))[1].lower()
            raise DataError(path, f"corrupt or unreadable image (not a {FORMAT_NAMES} image)"
                            if ext in IMAGE_TYPES else not_an_image(ext, raw[:SNIFF_BYTES]))
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as img:
            w, h = img.size
            _check_size(img, path, w, h)
            orientation = _orientation(img)
            if (w, h) == (SIDE, SIDE) and img.mode == "L" and "transparency" not in img.info \
                    and getattr(img, "n_frames", 1) == 1 and orientation == 1:  # MNIST-style: short
                img.load()
                return np.frombuffer(img.tobytes(), np.uint8).reshape(SIDE, SIDE), w, h, ""  # (28, 28)
            gray = _load_gray(img, path, w, h)  # (H, W)
            if img.format == "PNG" and orientation == 1:  # an eXIf chunk after the pixels, read now
                orientation = _orientation(img)
            # PIL turns a TIFF upright itself as it loads it (its tag is gone after): not twice
            pending = _orientation(img) if img.format == "TIFF" else orientation
            return _upright(gray, pending), w, h, f"rotated by EXIF {orientation}" if orientation != 1 else ""
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise DataError(path, f"corrupt or unreadable image (not a {FORMAT_NAMES} image)") from None
    except Exception as e:  # a decoder's failure, whatever it is, is this image's error
        raise DataError(path, f"corrupt or unreadable image ({describe(e, 200)})") from None


def _orientation(img):
    """The EXIF Orientation (1..8) of an opened image; 1 (as stored) when it has none, or its
    EXIF block is damaged or says something else. Read from the header only: a PNG's EXIF is
    taken from an eXIf chunk before its pixels (PIL's getexif would decode them all to look
    for one after)."""
    try:
        if img.format in ("PNG", "GIF", "BMP"):
            raw = img.info.get("exif")
            if not raw:
                return 1
            exif = _exif_of(raw)
        else:
            exif = img.getexif()
        value = exif.get(ORIENTATION, 1)
        value = int(value[0] if isinstance(value, (tuple, list)) else value)
    except Exception:  # a damaged EXIF block: the pixels are read as stored
        return 1
    return value if 1 <= value <= 8 else 1


def _exif_of(raw):
    """An EXIF block's bytes (with or without the "Exif\\0\\0" prefix) -> PIL.Image.Exif."""
    from PIL import Image
    exif = Image.Exif()
    exif.load(raw)
    return exif


def _upright(gray, orientation):
    """Pixels (H, W) as stored -> as the EXIF Orientation says to show them (what
    PIL.ImageOps.exif_transpose does, on the array)."""
    return {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
            5: np.transpose, 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).T,
            8: lambda a: np.rot90(a, 1)}[orientation](gray)


def _check_size(img, path, w, h):
    """DataError unless an opened image's header size (w, h) may be decoded: at most
    MAX_IMAGE_PIXELS, or, for a baseline JPEG (decoded at up to 1/8 scale, a strip at a time:
    a 50-megapixel phone photo), at most JPEG_DRAFT times as many."""
    limit = MAX_IMAGE_PIXELS
    if img.format == "JPEG" and not img.info.get("progressive") and not img.info.get("progression"):
        limit *= JPEG_DRAFT
    if w * h > limit or w < 1 or h < 1:
        raise DataError(path, f"image is {w}x{h}, over the limit of {limit:,} pixels")


def _load_gray(img, path, w, h):
    """An opened image of any size and mode -> (H, W) uint8 grayscale: its size checked
    from the header, animations and multi-page files refused, a large one reduced while
    decoded."""
    _check_size(img, path, w, h)
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        what = "multi-page image of" if img.format == "TIFF" else "animated image of"
        raise DataError(path, f"{what} {frames} frames; give one frame")
    factor = -(-max(w, h) // REDUCE_TO)
    if factor > 1 and img.format == "JPEG":
        img.draft(img.mode, (w // factor, h // factor))  # decode at a reduced scale
    img.load()
    factor = -(-max(img.size) // REDUCE_TO)
    return _gray8(img if factor <= 1 else img.reduce(factor))  # (H, W)


def _gray8(img):
    """A PIL image -> (H, W) uint8 grayscale; 16-bit grayscale is scaled, not clipped;
    floating-point (TIFF) levels are taken as 0..255 (or 0..1 when none exceeds 1);
    transparency is composited (see _composite)."""
    if img.mode.startswith("I;16") or (img.mode == "I" and np.asarray(img).max() > 255):
        wide = np.asarray(img, dtype=np.int64)  # (H, W) 0..65535
        return ((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)
    if img.mode == "F":
        f = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # (H, W)
        if f.size and f.max() <= 1.0:
            f = f * 255
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint16)  # (H, W)
        gray = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.uint16)  # (H, W)
        if alpha.min() < 255:
            return _composite(gray, alpha)
        return gray.astype(np.uint8)
    gray = img if img.mode == "L" else img.convert("L")
    w, h = gray.size
    return np.frombuffer(gray.tobytes(), np.uint8).reshape(h, w)  # (H, W), read-only


def _composite(gray, alpha):
    """Gray levels and alpha (H, W) 0..255 -> (H, W) uint8, light ink on black.

    The ink is what is opaque. Light ink (its alpha-weighted mean gray >= 128) is laid
    over black; dark ink over white and then inverted, so a black stroke drawn in the
    alpha channel comes out as MNIST draws it. A fully transparent image is black.
    """
    weight = int(alpha.sum())
    light = weight == 0 or int((gray * alpha).sum()) >= 128 * weight
    ink = gray if light else 255 - gray  # (H, W)
    return ((ink * alpha + 127) // 255).astype(np.uint8)
