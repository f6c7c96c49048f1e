"""Random distortions: exact geometry with pinned draws, determinism, column order, the
elastic field's statistics, and bilinear sampling's bounds."""
import numpy as np
import pytest

from model.augment import SIDE, Augmenter, Distortion, _elastic_basis, blur_matrix, distort


class Pinned:
    """A stand-in Generator whose uniform draws all return `high` (or `low`): fixed distortions."""

    def __init__(self, at="high"):
        self.at = at

    def uniform(self, low, high, size):
        return np.full(size, high if self.at == "high" else low, np.float64)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        raise AssertionError("no elastic field was asked for")


@pytest.fixture(scope="module")
def digits(sample):
    return sample["train_x"][:64]  # (64, 784) uint8 real digits


def test_no_distortion_is_the_identity(digits):
    d = Distortion()
    assert not d.active
    out = distort(digits, np.random.default_rng(0), d)
    assert out.dtype == np.float32 and np.array_equal(out, digits.astype(np.float32))


def test_integer_shift_moves_the_image(digits):
    out = distort(digits, Pinned("high"), Distortion(shift=2.0)).reshape(-1, SIDE, SIDE)
    img = digits.reshape(-1, SIDE, SIDE).astype(np.float32)
    expected = np.zeros_like(img)
    expected[:, :-2, :-2] = img[:, 2:, 2:]  # output pixel p samples the source at p + 2: moves up-left
    assert np.array_equal(out, expected)


def test_rotation_by_90_degrees_is_a_transpose_and_flip(digits):
    out = distort(digits, Pinned("high"), Distortion(rotate=90.0)).reshape(-1, SIDE, SIDE)
    img = digits.reshape(-1, SIDE, SIDE).astype(np.float32)
    np.testing.assert_allclose(out, np.rot90(img, k=1, axes=(1, 2)), atol=1e-3)


def test_scaling_enlarges_and_shrinks_around_the_centre(digits):
    big = distort(digits, Pinned("high"), Distortion(scale=0.2))  # factor 1.2
    small = distort(digits, Pinned("low"), Distortion(scale=0.2))  # factor 0.8
    ink = digits.astype(np.float64).sum(axis=1)
    assert np.all(big.sum(axis=1) > 1.3 * ink) and np.all(small.sum(axis=1) < 0.75 * ink)  # ~1.44x, ~0.64x


def test_same_seed_same_images_other_seed_other_images(digits):
    d = Distortion(shift=2, rotate=10, scale=0.1, shear=0.2, elastic_alpha=34)
    a = distort(digits, np.random.default_rng(5), d)
    b = distort(digits, np.random.default_rng(5), d)
    c = distort(digits, np.random.default_rng(6), d)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 255
    # the ink is moved, not created or lost (a distortion this size keeps the mass within 20%)
    ratio = a.sum(axis=1) / digits.sum(axis=1)
    assert 0.8 < np.median(ratio) < 1.2


def test_columns_order_permutes_the_output(digits):
    perm = np.random.default_rng(1).permutation(SIDE * SIDE)
    d = Distortion(shift=2, rotate=10, elastic_alpha=30)
    plain = distort(digits, np.random.default_rng(3), d)
    permuted = distort(digits, np.random.default_rng(3), d, columns=perm)
    np.testing.assert_allclose(permuted, plain[:, perm], atol=1e-3)


def test_blank_stays_exactly_blank_and_far_pixels_are_zero():
    X = np.zeros((10, SIDE * SIDE), np.uint8)
    out = distort(X, np.random.default_rng(0), Distortion(shift=3, rotate=30, elastic_alpha=40))
    assert not out.any()
    one = np.zeros((1, SIDE * SIDE), np.uint8)
    one[0, 14 * SIDE + 14] = 255  # a single dot: after a small distortion only its neighbourhood is inked
    out = distort(one, np.random.default_rng(0), Distortion(shift=1.0)).reshape(SIDE, SIDE)
    rows, cols = np.nonzero(out)
    assert out.sum() > 0 and rows.min() >= 12 and rows.max() <= 15 and cols.min() >= 12 and cols.max() <= 15


def test_a_reused_augmenter_equals_fresh_calls_and_takes_short_blocks(digits):
    d = Distortion(rotate=15, elastic_alpha=34)
    aug = Augmenter(d, 32)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    out = np.empty((32, SIDE * SIDE), np.float32)
    for lo, hi in [(0, 32), (32, 50)]:  # a full block, then a short one
        got = aug(digits[lo:hi], rng_a, out=out[:hi - lo])
        assert np.array_equal(got, distort(digits[lo:hi], rng_b, d))
    with pytest.raises(ValueError):
        aug(digits[:33], rng_a)


def test_elastic_field_has_simards_statistics():
    """B B^T = G G^T / sqrt(3) (G the Gaussian blur, var(U) = 1/3) on its top directions, and an
    empirical field's spread in the middle matches alpha * sqrt((G G^T)_ii^2 / 3)."""
    sigma = 4.0
    G = blur_matrix(sigma)
    C = G @ G.T / np.sqrt(3.0)
    B = _elastic_basis(sigma).astype(np.float64)
    assert np.trace(B @ B.T) >= 0.99 * np.trace(C)
    np.testing.assert_allclose(B @ B.T, C, atol=0.01 * C.max())
    aug = Augmenter(Distortion(elastic_alpha=20.0, elastic_sigma=sigma), 2000)
    field = aug._field(np.random.default_rng(0), 2000).reshape(-1, SIDE, SIDE)  # (2000, 28, 28)
    expected = 20.0 * np.sqrt((G @ G.T)[14, 14] ** 2 / 3)  # ~0.8 pixels
    assert field[:, 14, 14].std() == pytest.approx(expected, rel=0.1)
    assert expected == pytest.approx(20.0 / (np.sqrt(12 * np.pi) * sigma), rel=0.05)
    assert abs(field[:, 14, 14].mean()) < 0.1
