"""Real-world images -> MNIST-style digits: MNIST digits rendered large, inverted and
off-centre; digits drawn with a font; and the odd images that must not raise."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont

from model import checkpoint
from model.data.preprocess import (
    border,
    is_dark_on_light,
    needs_preprocessing,
    to_mnist,
)
from model.train import Trainer, make_config


@pytest.fixture(scope="module")
def model(sample):
    """A model trained on the bundled sample (15 epochs of the default recipe, a few seconds)."""
    t = Trainer(make_config("default", epochs=15), sample["train_x"], sample["train_y"])
    t.run()
    return checkpoint.make_model(t.params, t.mean, t.std)


def accuracy(model, images, labels):
    X = np.stack([np.asarray(im, np.uint8).reshape(-1) for im in images])
    return float((model.predict(X)[0] == np.asarray(labels)).mean())


def render_large(x, i, rng):
    """An MNIST digit (784,) drawn 3 to 5.5 times as large, dark on light, off-centre on a
    non-square canvas. (Stretching the digit itself would change its shape, which no
    preprocessing undoes: MNIST keeps the aspect ratio.)"""
    size = [(112, 112), (84, 84), (154, 154)][i % 3]  # (width, height)
    big = np.asarray(Image.fromarray(x.reshape(28, 28)).resize(size, Image.BILINEAR))
    H, W = size[1] + 40 + 17 * (i % 4), size[0] + 60 + 13 * (i % 5)
    canvas = np.zeros((H, W), np.uint8)
    top, left = rng.integers(0, H - size[1] + 1), rng.integers(0, W - size[0] + 1)
    canvas[top:top + size[1], left:left + size[0]] = big
    return 255 - canvas


def test_mnist_digits_rendered_large_inverted_and_off_centre(model, sample):
    X, y = sample["test_x"], sample["test_y"]  # 500 held-out real digits
    rng = np.random.default_rng(0)
    large = [render_large(x, i, rng) for i, x in enumerate(X)]
    assert all(needs_preprocessing(im) and is_dark_on_light(im) for im in large)
    converted = [to_mnist(im) for im in large]
    pixels = [p for p, _ in converted]
    assert all(p.shape == (28, 28) and p.dtype == np.uint8 for p in pixels)
    steps = converted[0][1]
    assert steps[0] == "inverted dark-on-light" and steps[-1] == "centred by mass"
    assert any(s.startswith("cropped to ink ") for s in steps) and any(s.startswith("scaled to ") for s in steps)
    original = accuracy(model, X, y)
    assert original > 0.9
    assert accuracy(model, pixels, y) >= original - 0.01, (accuracy(model, pixels, y), original)
    # 28x28 light-on-dark digits need nothing, and going through to_mnist anyway costs nothing
    assert not any(needs_preprocessing(x.reshape(28, 28)) for x in X)
    again = [to_mnist(x.reshape(28, 28))[0] for x in X]
    assert accuracy(model, again, y) >= original - 0.01


def test_output_matches_mnist_geometry(sample):
    """Ink fits 20x20 with its long side 20, and its centre of mass is within a pixel of (14, 14)."""
    for x in sample["test_x"][:50]:
        big = 255 - np.asarray(Image.fromarray(x.reshape(28, 28)).resize((140, 140), Image.BILINEAR))
        p, _ = to_mnist(big)
        rows, cols = np.flatnonzero(p.any(axis=1)), np.flatnonzero(p.any(axis=0))
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert max(h, w) == 20 and min(h, w) >= 1
        m = p.astype(float)
        cy = m.sum(axis=1) @ np.arange(28) / m.sum()
        cx = m.sum(axis=0) @ np.arange(28) / m.sum()
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)


def font_digits(size):
    """The digits 0..9 in PIL's default font at `size`, black on white, with a margin."""
    font = ImageFont.load_default(size=size)
    images = []
    for d in range(10):
        im = Image.new("L", (2 * size, 2 * size), 255)
        ImageDraw.Draw(im).text((size // 2, size // 4), str(d), fill=0, font=font)
        images.append(np.asarray(im))
    return images


def test_digits_drawn_with_a_font_at_several_sizes(model):
    sizes = (16, 28, 48, 96)
    scores = {}
    for size in sizes:
        converted = [to_mnist(im) for im in font_digits(size)]
        assert all(s[0] == "inverted dark-on-light" for _, s in converted)
        scores[size] = accuracy(model, [p for p, _ in converted], range(10))
    # a model of handwriting trained on 2,250 images reads most printed digits (a font's 1 and 6
    # look unlike MNIST's); without preprocessing none of these images would even fit
    assert np.mean(list(scores.values())) >= 0.7, scores
    assert min(scores.values()) >= 0.6, scores


def test_rgb_and_light_on_dark_of_any_size():
    im = np.zeros((60, 40), np.uint8)
    im[10:50, 18:23] = 255  # a light bar on black: no inversion
    p, steps = to_mnist(im)
    assert steps == ["cropped to ink 5x40", "scaled to 2x20", "centred by mass"]
    assert p.max() == 255
    rgb = np.stack([255 - im] * 3, axis=-1)  # the same bar, dark on white, as RGB
    p2, steps2 = to_mnist(rgb)
    assert steps2[:2] == ["converted to grayscale", "inverted dark-on-light"]
    assert np.array_equal(p, p2)


def test_background_of_paper_is_removed():
    rng = np.random.default_rng(1)
    im = (200 + rng.integers(-10, 10, (90, 70))).astype(np.uint8)  # grey paper with grain
    im[20:70, 30:38] = 40  # dark ink
    p, steps = to_mnist(im)
    assert steps[0] == "inverted dark-on-light" and steps[1].startswith("removed background level ")
    assert "cropped to ink 8x50" in steps
    rows = np.flatnonzero(p.any(axis=1))
    assert rows[-1] - rows[0] + 1 == 20  # the grain was not taken for ink


@pytest.mark.parametrize("image", [
    np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8), np.full((50, 30), 128, np.uint8),
    np.zeros((1, 1), np.uint8), np.full((1, 1), 255, np.uint8), np.zeros((0, 5), np.uint8),
    np.zeros((3,), np.uint8), np.full((7, 900), 17, np.uint8),
], ids=["black", "white", "grey", "1px-black", "1px-white", "empty", "1-D", "constant-wide"])
def test_blank_and_degenerate_images_do_not_raise(image):
    p, steps = to_mnist(image)
    assert p.shape == (28, 28) and p.dtype == np.uint8 and not p.any()
    assert steps[-1] == "no ink: blank image"


@pytest.mark.parametrize("shape", [(2, 1000), (1000, 2), (1, 5), (5, 1), (3, 3)])
def test_extreme_aspect_ratios_and_tiny_images(shape):
    im = np.full(shape, 255, np.uint8)
    im[tuple(s // 2 for s in shape)] = 0  # one dark dot on white
    if min(shape) > 2:
        im[:, shape[1] // 2] = 0  # a line across
    p, steps = to_mnist(im)
    assert p.shape == (28, 28) and p.any() and p.max() == 255
    assert steps[0] == "inverted dark-on-light" and steps[-1] == "centred by mass"


def test_a_long_line_keeps_its_aspect_ratio():
    im = np.full((30, 1000), 255, np.uint8)
    im[10:20, 100:900] = 0  # 800x10 ink: scaled to 20x1 (the short side never below 1)
    p, steps = to_mnist(im)
    assert "cropped to ink 800x10" in steps and "scaled to 20x1" in steps
    assert np.count_nonzero(p.any(axis=1)) == 1 and np.count_nonzero(p.any(axis=0)) == 20


def test_border_and_predicates():
    im = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert sorted(border(im).tolist()) == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    assert not needs_preprocessing(np.zeros((28, 28), np.uint8))
    assert needs_preprocessing(np.full((28, 28), 255, np.uint8))  # dark-on-light 28x28
    assert needs_preprocessing(np.zeros((28, 29), np.uint8))
    assert needs_preprocessing(np.zeros((28, 28, 3), np.uint8))


def test_dark_on_light_shortcut_agrees_with_the_border_median():
    """is_dark_on_light skips the median when no border pixel is light: the same answer as
    the median itself, on borders with none, a few and many light pixels."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        h, w = rng.integers(3, 40, 2)
        g = rng.integers(0, 128, (h, w)).astype(np.uint8)  # no light pixel anywhere
        frame = border(np.arange(h * w).reshape(h, w))  # flat indices of the border
        k = int(rng.integers(0, len(frame) + 1)) if trial % 3 else 0
        g.reshape(-1)[rng.choice(frame, size=k, replace=False)] = rng.integers(128, 256, k)  # k light ones
        assert is_dark_on_light(g) == (float(np.median(border(g))) > 127), (h, w, k)


# ----------------------------------------------------------------------------- photos and scans

def photo_accuracy(model, sample, n, **kw):
    """Accuracy on the first n held-out sample digits drawn as pages (tests/model/photos.page)
    and read through imagefolder.decode_image as JPEGs, and the notes of the first."""
    from model.data import imagefolder
    from tests.model.data.photos import encode, page
    rng = np.random.default_rng(7)
    pixels, notes = [], []
    for x in sample["test_x"][:n]:
        p, note = imagefolder.decode_image(encode(page(x, rng, **kw)), "p.jpg")
        pixels.append(p)
        notes.append(note)
    return accuracy(model, pixels, sample["test_y"][:n]), notes


@pytest.mark.parametrize("kw", [dict(light="mild"), dict(light="strong"), dict(light="shadow"),
                                dict(noise=12.0, specks=40), dict(paper=(245, 225, 150), ink=(30, 40, 110)),
                                dict(paper=(175, 205, 240), ink=(20, 20, 60), light="mild")],
                         ids=["gradient-mild", "gradient-strong", "shadow", "noise-and-specks", "yellow-paper",
                              "blue-paper-lit-unevenly"])
def test_uneven_light_noise_and_coloured_paper_predict_as_the_plain_digits(model, sample, kw):
    n = 120
    plain = accuracy(model, sample["test_x"][:n], sample["test_y"][:n])
    got, notes = photo_accuracy(model, sample, n, **kw)
    assert got >= plain - 0.05, (got, plain)
    if kw.get("light") in ("mild", "strong", "shadow"):
        assert all("background flattened" in note for note in notes)
    if kw.get("specks"):
        assert sum("ink parts" in note for note in notes) > n // 2  # the specks were seen and dropped


def test_the_uneven_page_crops_to_the_digit_not_to_the_dark_side(sample):
    """The crop of a digit on a page lit 120 -> 235 is the crop of the same digit lit evenly."""
    from tests.model.data.photos import gray, page
    for i in range(10):
        even = gray(page(sample["test_x"][i], np.random.default_rng(i), noise=0))
        strong = gray(page(sample["test_x"][i], np.random.default_rng(i), light="strong", noise=0))
        crops = [next(s for s in to_mnist(g)[1] if s.startswith("cropped")) for g in (even, strong)]
        w0, h0 = map(int, crops[0].split()[-1].split("x"))
        w1, h1 = map(int, crops[1].split()[-1].split("x"))
        assert abs(w0 - w1) <= 6 and abs(h0 - h1) <= 6, crops


def test_a_speck_far_from_the_digit_does_not_widen_the_crop(sample):
    from tests.model.data.photos import gray, page
    clean = gray(page(sample["test_x"][0], np.random.default_rng(0), noise=0))
    specked = clean.copy()
    specked[2:4, 2:4] = 0  # a dark speck in the corner: averaged away
    specked[-9:-3, 5:11] = 0  # and a larger one: seen, and dropped
    a, s1 = to_mnist(clean)
    b, s2 = to_mnist(specked)
    assert np.array_equal(a, b) and "kept 1 of 2 ink parts" in s2


def test_mnist_sized_inputs_are_read_as_before(sample):
    """28x28 light-on-dark digits never reach to_mnist (needs_preprocessing is False) and are
    read unchanged; inverted ones are still put back as MNIST draws them."""
    from model.data import imagefolder
    X = sample["test_x"][:200]
    assert not any(needs_preprocessing(x.reshape(28, 28)) for x in X)
    for x in X[:50]:
        pixels, note = imagefolder.decode_image(_png(x.reshape(28, 28)), "x.png")
        assert np.array_equal(pixels, x) and note == ""
    inverted = [to_mnist(255 - x.reshape(28, 28)) for x in X[:50]]
    assert all(steps[0] == "inverted dark-on-light" and "background flattened" not in " ".join(steps)
               for _, steps in inverted)


def _png(a):
    import io
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, "PNG")
    return buf.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 70), st.integers(1, 70), st.sampled_from(["noise", "flat", "specks", "nan"]),
       st.integers(0, 2 ** 32 - 1))
def test_any_array_gives_a_digit_or_blank_without_raising(h, w, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        a = rng.integers(0, 256, (h, w)).astype(np.uint8)
    elif kind == "flat":
        a = np.full((h, w), rng.integers(0, 256), np.uint8)
    elif kind == "specks":
        a = np.full((h, w), 230, np.uint8)
        a[rng.integers(0, h, 5), rng.integers(0, w, 5)] = 0
    else:
        a = rng.normal(128, 80, (h, w))
        a[rng.random((h, w)) < 0.2] = np.nan
    p, steps = to_mnist(a)
    assert p.shape == (28, 28) and p.dtype == np.uint8
    assert steps[-1] in ("centred by mass", "no ink: blank image")
