"""Digits made the way phones and scanners make them, for the image tests: an MNIST digit drawn
large on paper, lit unevenly, with sensor noise and specks, stored rotated with an EXIF tag."""
import io

import numpy as np
from PIL import Image

# how a camera stores an upright picture for each EXIF Orientation (the inverse of what a viewer does)
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def page(x, rng, light="even", noise=4.0, specks=0, paper=(235, 235, 235), ink=(25, 25, 25), scale=5):
    """A digit (784,) or (28, 28) uint8 drawn `scale` times larger, dark ink on paper, at a
    random place on a canvas with margins -> (H, W, 3) uint8.

    light: "even", "mild" (paper 185 -> 235 across the page), "strong" (120 -> 235) or
    "shadow" (a soft-edged shadow, 60% of the light, over part of the page)."""
    x = np.asarray(x, np.uint8).reshape(28, 28)
    side = 28 * scale
    H, W = side + int(rng.integers(60, 160)), side + int(rng.integers(60, 160))
    big = np.asarray(Image.fromarray(x).resize((side, side), Image.BICUBIC), np.float64) / 255
    a = np.zeros((H, W))
    top, left = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    a[top:top + side, left:left + side] = np.clip(big, 0, 1)
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    if light in ("mild", "strong"):
        lo = (185 if light == "mild" else 120) / 235
        t = (xx - xx.min()) / (xx.max() - xx.min())
        lit = lo + (1 - lo) * t
    elif light == "shadow":
        lit = 1 - 0.4 / (1 + np.exp(-(xx - yy + 0.1) / 0.03))
    else:
        lit = np.ones((H, W))
    img = (np.array(paper, float) * (1 - a[..., None]) + np.array(ink, float) * a[..., None]) * lit[..., None]
    img += rng.normal(0, noise, img.shape)
    for _ in range(specks):
        r, cy, cx = int(rng.integers(1, 3)), int(rng.integers(0, H)), int(rng.integers(0, W))
        img[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = rng.uniform(10, 60)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def encode(pixels, fmt="JPEG", orientation=1, **kw):
    """Pixels (H, W) or (H, W, 3) shown upright -> file bytes stored as a camera would for
    EXIF `orientation` (turned, and tagged), in format fmt."""
    img = Image.fromarray(pixels)
    if fmt == "JPEG":
        kw.setdefault("quality", 88)
    if STORED[orientation] is not None:
        img = img.transpose(STORED[orientation])
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gray(pixels):
    """(H, W, 3) -> (H, W) by its first channel (the test pages are gray unless coloured)."""
    return np.ascontiguousarray(pixels[..., 0])
