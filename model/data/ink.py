"""Finding the ink of a photographed or scanned digit: the paper's light, a threshold, the digit's parts.

Pure NumPy, no I/O; model.data.preprocess calls these in order on an image whose ink is bright
(dark-on-light images are inverted first):

    ink, paper = flatten(v, divide, level)   # v (H, W) float, ink bright -> ink above the local background
    keep, peak, parts, kept = digit_mask(ink, 8, 0.1, 99)   # (H, W) bool: the digit, specks left out
    floor = noise_floor(ink, keep)       # what sensor noise reaches off the digit

The background is estimated locally, on a copy reduced to at most WORK pixels a side (block
means, which also average sensor noise away): a grey-level opening (a minimum then a maximum
filter, a window of a quarter of the side) removes every stroke narrower than the window and
keeps the light falling on the page, gradients and shadows included; a box filter smooths
it, and it is brought back to full size bilinearly. Light is multiplicative, so for dark
ink on paper the ink is measured as a share of the local paper's brightness (a shadowed
stroke is as dark, relative to its paper, as a lit one).

The digit is the largest 8-connected part of the thresholded ink (counted on the reduced
grid, by ink mass), with every other part lying near it that has KEEP_SHARE of its mass or
spans KEEP_SPAN of its size (a digit broken in two); specks and far-off marks are dropped.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

WORK = 96  # the reduced copy's longest side, in blocks
WINDOW_SHARE = 0.25  # the background window, as a share of the reduced copy's longest side
SMOOTH = 5  # blocks of the box filter that smooths the opening (wider would blur a shadow's edge)
FLAT_SPREAD = 12.0  # a background varying less than this many gray levels counts as even
KEEP_SHARE = 0.08  # a part of the ink near the digit is kept if it has this share of its mass ...
KEEP_SPAN = 0.2  # ... or spans this share of the digit's larger side (a stroke, not a speck)
MIN_LOCAL = 48  # an image under this many pixels a side is the digit alone: one background level
NOISE_PERCENTILE = 99  # the noise floor: this percentile of the ink off the digit
NEAR = 0.35  # "near": within this share of the digit's larger side of its bounding box
MIN_PAPER = 24.0  # the darkest paper level ink is measured against (deep shadow, no division by ~0)


def block_factor(shape):
    """Pixels per block side so that the longer side of shape (H, W) makes at most WORK blocks."""
    return max(1, -(-max(shape) // WORK))


def _blocks(a, f, reduce):
    """(H, W) -> (ceil(H/f), ceil(W/f)) by reduce ("mean" or "any") over f x f blocks, the
    edge blocks padded with their edge values."""
    H, W = a.shape
    ph, pw = -H % f, -W % f
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    b = a.reshape(a.shape[0] // f, f, a.shape[1] // f, f)  # (h, f, w, f)
    return b.mean(axis=(1, 3)) if reduce == "mean" else b.any(axis=(1, 3))


def _filter(a, k, op, odd=False):
    """A k x k separable min, max or mean filter of a (h, w), edges padded with edge values,
    or with odd=True (floats) continued linearly (odd reflection), so that a gradient running
    off the page is followed to its edge rather than flattened there."""
    r = k // 2
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, k - 1 - r)
        padded = np.pad(a, pad, mode="reflect", reflect_type="odd") if odd and a.shape[axis] > k \
            else np.pad(a, pad, mode="edge")
        win = sliding_window_view(padded, k, axis=axis)  # (h, w, k)
        a = op(win, axis=-1)
    return a


def flatten(v, divide, even_level):
    """v (H, W) float, ink brighter than its background -> (ink (H, W) float >= 0, paper).

    divide: True for dark ink on light paper (v inverted), whose ink is then measured against
    the local paper's brightness (255 - background) and scaled back to 0..255. paper: None if
    the background is even (then even_level, the border's median, is subtracted, as before
    any local estimate), else (darkest, lightest) background level in v's own units."""
    H, W = v.shape
    f = block_factor(v.shape)
    small = _blocks(v, f, "mean")  # (h, w) block means: noise averaged
    k = max(3, int(round(max(small.shape) * WINDOW_SHARE)) | 1)
    lo = hi = 0.0
    if min(small.shape) >= 3 and max(small.shape) >= MIN_LOCAL:  # (else one level: the border's)
        back = _filter(_filter(_filter(small, k, np.min, True), k, np.max, True), SMOOTH, np.mean, True)  # (h, w)
        lo, hi = float(back.min()), float(back.max())
    if hi - lo < FLAT_SPREAD:
        return np.maximum(v - even_level, 0), None
    full = np.asarray(Image.fromarray(back.astype(np.float32), "F").resize((W, H), Image.BILINEAR))  # (H, W)
    ink = v - full
    np.maximum(ink, 0, out=ink)
    if divide:
        ink *= 255.0 / np.maximum(255.0 - full, MIN_PAPER)  # share of the local paper's light
    return ink, (lo, hi)


def otsu(ink):
    """The threshold (float) between paper and ink of ink (H, W) >= 0 by Otsu's method on a
    256-bin histogram of its values clipped to 0..255 (the level maximizing the between-class
    variance; the middle of the levels that tie, 128.0 for a constant image)."""
    hist = np.bincount(np.clip(ink, 0, 255).astype(np.int64).ravel(), minlength=256)[:256].astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)  # (256,) pixels at or below each level
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2  # (256,)
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # flat across an empty gap:
    return float(best[0] + best[-1]) / 2 + 0.5  # its middle, not its lower end


def label(mask):
    """8-connected parts of a boolean (h, w) -> int64 (h, w): -1 off the mask, else the flat
    index of the part's representative pixel (union-find with pointer jumping, vectorized)."""
    h, w = mask.shape
    idx = np.arange(h * w).reshape(h, w)
    parent = np.where(mask, idx, -1).ravel()
    pairs = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each neighbour pair once
        x0, x1 = max(0, -dx), w - max(0, dx)  # columns whose neighbour (y + dy, x + dx) exists
        both = mask[:h - dy, x0:x1] & mask[dy:, x0 + dx:x1 + dx]
        pairs.append((idx[:h - dy, x0:x1][both], idx[dy:, x0 + dx:x1 + dx][both]))
    p = np.concatenate([x for x, _ in pairs]) if pairs else np.zeros(0, np.int64)
    q = np.concatenate([y for _, y in pairs]) if pairs else np.zeros(0, np.int64)
    while True:
        rp, rq = parent[p], parent[q]
        differ = rp != rq
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(rp, rq)[differ], np.minimum(rp, rq)[differ])  # hook high root to low
        while True:  # pointer jumping: every pixel straight to its root
            up = parent[np.maximum(parent, 0)]
            up[parent < 0] = -1
            if np.array_equal(up, parent):
                break
            parent = up
    return parent.reshape(h, w)


def digit_mask(ink, floor, low_share, percentile):
    """ink (H, W) >= 0 -> (keep (H, W) bool, peak, parts, kept).

    The ink is thresholded on the reduced grid (block means: sensor noise averaged away) at
    Otsu's level (at least floor), and the digit's parts are found there (see the module
    doc); its full strength peak is the given percentile of their ink; keep then grows them,
    by hysteresis, over every block whose mean ink is at least low_share of peak and that
    touches them (the strokes' soft edges, at any resolution), plus one block around. parts
    and kept count the parts of thresholded ink and those kept. keep is all False and peak
    0.0 when nothing is above the threshold."""
    H, W = ink.shape
    f = block_factor(ink.shape)
    small = _blocks(ink, f, "mean")  # (h, w)
    threshold = max(otsu(small), floor)
    grid = small > threshold  # (h, w)
    mass = np.where(grid, small, 0)  # (h, w) ink mass per block
    roots, inverse = np.unique(label(grid).ravel(), return_inverse=True)
    inverse = inverse.reshape(grid.shape)
    on = roots >= 0
    if not on.any():
        return np.zeros((H, W), bool), 0.0, 0, 0
    weight = np.bincount(inverse.ravel(), weights=mass.ravel(), minlength=len(roots))
    weight[~on] = -1
    main = int(np.argmax(weight))
    ys, xs = np.nonzero(inverse == main)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    reach = NEAR * max(y1 - y0 + 1, x1 - x0 + 1)
    keep_ids = [main]
    side = max(y1 - y0 + 1, x1 - x0 + 1)
    for j in np.flatnonzero(on):
        if j == main:
            continue
        py, px = np.nonzero(inverse == j)
        span = max(py.max() - py.min() + 1, px.max() - px.min() + 1)
        near = py.min() <= y1 + reach and py.max() >= y0 - reach and px.min() <= x1 + reach and px.max() >= x0 - reach
        if near and (weight[j] >= KEEP_SHARE * weight[main] or span >= KEEP_SPAN * side):
            keep_ids.append(int(j))
    chosen = np.isin(inverse, keep_ids)  # (h, w)
    core = _upsample(chosen, f, H, W)  # (H, W)
    core &= ink > threshold
    peak = float(np.percentile(ink[core], percentile)) if core.any() else float(small[chosen].max())
    low = (small >= low_share * peak) | chosen  # (h, w)
    grown = label(low)
    grown = np.isin(grown, np.unique(grown[chosen]))  # the low parts that hold the digit's
    grown = _filter(grown.astype(np.uint8), 3, np.max).astype(bool)  # and one block around
    return _upsample(grown, f, H, W), peak, int(on.sum()), len(keep_ids)


def noise_floor(ink, keep, percentile=NOISE_PERCENTILE):
    """The level (float) that sensor noise reaches off the digit: the given percentile of ink
    (H, W) where keep (H, W) is False, 0.0 if it is everywhere. Ink below it near the digit is
    noise too (it would widen the crop by the margin's grain)."""
    off = ink[~keep]
    if off.size == 0:
        return 0.0
    step = max(1, off.size // 50000)  # a sample is enough for a percentile
    return float(np.percentile(off[::step], percentile))


def _upsample(grid, f, H, W):
    """A block grid (h, w) -> (H, W), each block f x f pixels."""
    return np.repeat(np.repeat(grid, f, axis=0), f, axis=1)[:H, :W]
