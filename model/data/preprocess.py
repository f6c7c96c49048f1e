"""Real-world digit images -> MNIST-style 28x28 digits, the way MNIST itself was made.

Pure functions, no I/O. MNIST's digits are light ink on black, scaled so that the ink
fits a 20x20 box with its aspect ratio kept, and placed in a 28x28 field so that the
centre of mass of the ink sits at the field's centre. A scanned or photographed digit
(any size, usually dark ink on light paper) goes through the same steps:

1. grayscale (an (H, W, 3|4) array is converted with the ITU-R 601 luma weights);
2. polarity: if the border is light (median of the outermost pixels > 127), invert;
3. background: the paper's light is estimated locally and removed (model.data.ink.flatten:
   gradients, shadows), or, on an evenly lit page, the border's median level subtracted;
4. ink: the digit's parts are found at Otsu's level, specks and far-off marks dropped
   (model.data.ink.digit_mask); what stays below `INK_THRESHOLD` of its strength (the 99th
   percentile), or below what noise reaches off the digit, is zeroed (paper grain, sensor
   and JPEG noise), and the ink is stretched so that its strength is 255;
5. crop to the ink's bounding box;
6. scale it to fit 20x20, aspect ratio kept (PIL, Lanczos: antialiased when shrinking);
7. paste it in a 28x28 field, translated by whole pixels so that its centre of mass lands
   on (14, 14), as in MNIST (whose centres of mass sit within half a pixel of it).

    pixels, steps = to_mnist(gray)         # gray (H, W) uint8 -> (28, 28) uint8, [str, ...]
    if needs_preprocessing(gray): ...      # not 28x28, or dark-on-light

`steps` says what was done, e.g. ["inverted dark-on-light", "background flattened (levels
120..235)", "kept 1 of 7 ink parts", "cropped to ink 143x201", "scaled to 14x20", "centred by
mass"]. Nothing raises on odd input: a blank or constant image gives a black 28x28 and the
step "no ink: blank image".
"""
import functools

import numpy as np
from PIL import Image

from model.data import ink
from model.network import SIDE  # the output field

BOX = 20  # the ink is scaled to fit BOX x BOX
CENTRE = 14.0  # where the centre of mass goes (row and column index); MNIST's mean is 14.0
LIGHT = 127  # a border median above this means dark ink on light paper
INK_THRESHOLD = 0.1  # after the background is removed, ink below this share of the peak is zeroed
PEAK_PERCENTILE = 99  # the ink's full strength: this percentile of the digit's ink (not one bright speck)
MIN_CONTRAST = 16  # gray levels between background and peak below which an image counts as blank
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def border(gray):
    """The outermost pixels of a 2-D array (H, W) -> 1-D array (the frame, corners once)."""
    g = np.asarray(gray)
    if g.ndim != 2 or min(g.shape) <= 2:  # empty, 1-D or too thin for a frame: all of it
        return g.reshape(-1)
    return np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])


@functools.lru_cache(maxsize=16)
def _border_index(shape):
    """Flat indices of the outermost pixels of an array of `shape` (H, W), H, W > 2."""
    return border(np.arange(shape[0] * shape[1]).reshape(shape))


def is_dark_on_light(gray):
    """True if the image (H, W) has a light background (median of its border pixels > 127)."""
    g = np.asarray(gray)
    if g.ndim == 2 and g.dtype == np.uint8 and min(g.shape) > 2 and \
            g.take(_border_index(g.shape)).max() <= LIGHT:
        return False  # no border pixel above LIGHT, so neither is their median: no sort needed
    frame = border(_gray(gray)[0])
    return bool(frame.size) and float(np.median(frame)) > LIGHT


def may_be_dark_on_light(pixels):
    """A batch of MNIST-size images (n, 784) uint8 -> (n,) bool, False where is_dark_on_light
    is surely False (no border pixel above LIGHT); is_dark_on_light decides the others."""
    index = _border_index((SIDE, SIDE))
    return np.asarray(pixels)[:, index].max(axis=1, initial=0) > LIGHT  # (n,)


def needs_preprocessing(gray):
    """True if an image (H, W) or (H, W, C) is not an MNIST-ready digit: not 28x28 grayscale,
    or dark ink on a light background."""
    g = np.asarray(gray)
    return g.ndim != 2 or g.shape != (SIDE, SIDE) or is_dark_on_light(g)


def to_mnist(gray):
    """An image of one digit, any size -> (pixels (28, 28) uint8, steps list of str).

    gray: (H, W) grayscale, or (H, W, 3|4) RGB(A), values 0..255 (uint8 or any numeric
    dtype). Either polarity: dark ink on light paper is detected from the border and
    inverted. pixels: light ink on black, the ink scaled to fit 20x20 (aspect ratio kept)
    and centred by its centre of mass, as MNIST's digits are. steps: what was done, in
    order, in short words. A blank, constant, empty or degenerate image never raises: it
    gives a black image and ["no ink: blank image"] after any earlier steps.
    """
    g, steps = _gray(gray)
    blank = np.zeros((SIDE, SIDE), np.uint8)
    if g.ndim != 2 or g.size == 0:
        return blank, steps + ["no ink: blank image"]
    dark_on_light = float(np.median(border(g))) > LIGHT
    if dark_on_light:
        g = 255.0 - g
        steps.append("inverted dark-on-light")
    level = float(np.median(border(g)))
    g, paper = ink.flatten(g, dark_on_light, level)
    if float(g.max()) < MIN_CONTRAST:
        return blank, steps + ["no ink: blank image"]
    if paper is None and level >= 1:
        steps.append(f"removed background level {level:.0f}")
    elif paper is not None:
        lo, hi = (255 - paper[1], 255 - paper[0]) if dark_on_light else paper
        steps.append(f"background flattened (levels {lo:.0f}..{hi:.0f})")
    keep, peak, parts, kept = ink.digit_mask(g, MIN_CONTRAST / 2, INK_THRESHOLD, PEAK_PERCENTILE)
    if parts > kept:
        steps.append(f"kept {kept} of {parts} ink parts")
    noise = ink.noise_floor(g, keep)
    g = np.where(keep, g, 0)
    if peak < MIN_CONTRAST:
        return blank, steps + ["no ink: blank image"]
    cut = min(max(INK_THRESHOLD * peak, noise), peak)  # paper grain and sensor noise (the peak stays)
    np.minimum(g, peak, out=g)
    g[g < cut] = 0
    g *= 255.0 / peak
    rows = np.flatnonzero(g.any(axis=1))
    cols = np.flatnonzero(g.any(axis=0))
    g = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = g.shape
    steps.append(f"cropped to ink {w}x{h}")
    f = BOX / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    if (nh, nw) != (h, w):
        g = np.asarray(Image.fromarray(g.astype(np.float32), "F").resize((nw, nh), Image.LANCZOS))
        g = np.clip(g, 0, None)  # Lanczos rings slightly below zero at sharp edges
        top = float(g.max())
        if top > 0:
            g = g * (255.0 / top)  # a thin stroke shrunk below a pixel keeps full ink
        steps.append(f"scaled to {nw}x{nh}")
    out = _place(g)
    steps.append("centred by mass")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), steps


def _gray(image):
    """Any image array -> (float32 (H, W) array, steps); (H, W, C) is converted with LUMA."""
    g = np.asarray(image)
    steps = []
    if g.ndim == 3 and g.shape[2] in (3, 4):
        g = g[..., :3].astype(np.float32) @ np.array(LUMA, np.float32)  # (H, W)
        steps.append("converted to grayscale")
    elif g.ndim == 3 and g.shape[2] == 1:
        g = g[..., 0]
    g = np.nan_to_num(np.asarray(g, np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(g, 0, 255), steps


def _place(ink):
    """Paste ink (h, w) float, h, w <= 20, in a 28x28 field so that its centre of mass lands
    on (14, 14) to the nearest pixel, kept inside the field -> float (28, 28)."""
    h, w = ink.shape
    mass = ink.sum()
    cy = (ink.sum(axis=1) @ np.arange(h)) / mass
    cx = (ink.sum(axis=0) @ np.arange(w)) / mass
    top = int(np.clip(np.rint(CENTRE - cy), 0, SIDE - h))
    left = int(np.clip(np.rint(CENTRE - cx), 0, SIDE - w))
    out = np.zeros((SIDE, SIDE))
    out[top:top + h, left:left + w] = ink
    return out
