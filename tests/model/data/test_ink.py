"""model.data.ink: the parts of a mask against a flood-fill oracle, Otsu's level, the local background."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model.data import ink


def flood_parts(mask):
    """The oracle: 8-connected parts by a plain flood fill -> (h, w) int, -1 off the mask."""
    h, w = mask.shape
    out = -np.ones((h, w), int)
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and out[y, x] < 0:
                out[y, x], stack = n, [(y, x)]
                while stack:
                    a, b = stack.pop()
                    for c in range(a - 1, a + 2):
                        for d in range(b - 1, b + 2):
                            if 0 <= c < h and 0 <= d < w and mask[c, d] and out[c, d] < 0:
                                out[c, d] = n
                                stack.append((c, d))
                n += 1
    return out


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 25), st.integers(1, 25), st.floats(0.05, 0.8), st.integers(0, 2 ** 32 - 1))
def test_label_finds_the_same_parts_as_a_flood_fill(h, w, density, seed):
    mask = np.random.default_rng(seed).random((h, w)) < density
    got, want = ink.label(mask), flood_parts(mask)
    assert np.array_equal(got >= 0, mask)
    pairs = {(int(g), int(o)) for g, o in zip(got[mask], want[mask])}
    assert len(pairs) == len({g for g, _ in pairs}) == len({o for _, o in pairs})  # a one-to-one match


def test_label_of_a_long_snake_converges():
    mask = np.zeros((61, 61), bool)
    mask[::2, :] = True
    mask[1::4, -1] = True
    mask[3::4, 0] = True  # one path winding through every row
    parts = ink.label(mask)
    assert len(np.unique(parts[mask])) == 1


def test_otsu_splits_two_levels_between_them():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(20, 5, 9000), rng.normal(200, 10, 1000)]).clip(0, 255)
    assert 40 < ink.otsu(a.reshape(100, 100)) < 180
    assert ink.otsu(np.r_[np.zeros(50), np.full(50, 100.0)]) == 50.0  # the middle of the empty gap


def test_flatten_removes_a_gradient_and_keeps_the_strokes():
    """Paper lit from one side (inverted: a background rising 20 -> 135) under a bright bar."""
    H, W = 200, 300
    back = np.linspace(20, 135, W)[None, :].repeat(H, axis=0)
    v = back.copy()
    v[50:150, 140:150] += 100  # a stroke 10 px wide
    out, paper = ink.flatten(v, False, float(np.median(back)))
    assert paper is not None and paper[1] - paper[0] > 90
    assert out[:, :100].max() < 12 and out[:, 200:].max() < 12  # the paper is flat, near 0
    assert out[60:140, 142:148].min() > 85  # the stroke keeps its strength


def test_flatten_leaves_an_even_background_to_one_level():
    v = np.full((120, 90), 30.0)
    v[30:90, 40:50] = 230
    out, paper = ink.flatten(v, True, 30.0)
    assert paper is None and np.array_equal(out, np.maximum(v - 30, 0))


def test_digit_mask_drops_specks_and_keeps_a_broken_stroke():
    a = np.zeros((200, 200))
    a[40:160, 90:100] = 200  # the digit's stem
    a[40:50, 105:150] = 200  # a bar broken off it, 5 px away
    for y, x in ((10, 10), (180, 30), (20, 180), (100, 60)):
        a[y:y + 3, x:x + 3] = 220  # specks
    keep, peak, parts, kept = ink.digit_mask(a, 8, 0.1, 99)
    assert (parts, kept) == (6, 2) and peak == 200
    assert keep[45, 95] and keep[45, 120] and not keep[11, 11] and not keep[101, 61]
