"""Random distortions of 28x28 digits for training: pure NumPy, vectorized over a block.

One call distorts a block of images (N, 784) with, per image, a random affine map (shift,
rotation, scaling, shear) and an optional elastic distortion (Simard et al. 2003: a random
displacement field smoothed by a Gaussian and scaled by alpha), and resamples them with
bilinear interpolation (zero outside the image):

    output pixel p  <-  source image at  c + M (p - c) + t + alpha * d(p)

where c is the image centre, M a random 2x2 matrix near the identity, t a random shift and
d a smooth random field. Everything is drawn from the Generator the caller passes in, so a
block is a pure function of (images, generator state, settings).

Costs per block: the affine coordinates are one (N, 3) @ (3, 784) product per axis; the
elastic field is a low-rank Gaussian field (the top `ELASTIC_RANK` eigenvectors of the 1-D
blur covariance, two small products per axis, instead of a 2-D convolution per image);
the resampling is four gathers from the zero-padded images.

The elastic field has the statistics of Simard's (uniform(-1, 1) noise per pixel and axis,
blurred by a normalized Gaussian of sigma pixels, times alpha): in the middle of the image
a displacement's standard deviation per axis is about alpha / (sqrt(12 pi) sigma), 0.8
pixels for alpha 20 and sigma 4 (Simard used alpha 34, sigma 4).
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from model.network import SIDE

PAD = 2  # zero border around each source image, so that every gather stays in bounds
ELASTIC_RANK = 8  # eigen-directions kept of the 1-D blur covariance (sigma >= 3 keeps > 99% of it)


@dataclass(frozen=True)
class Distortion:
    """Ranges of the random distortions (each drawn uniformly per image, independently)."""

    shift: float = 0.0  # max |translation| in pixels, per axis
    rotate: float = 0.0  # max |rotation| in degrees
    scale: float = 0.0  # max relative change of size: factor in [1 - scale, 1 + scale], per axis
    shear: float = 0.0  # max |shear| (tangent of the shear angle)
    elastic_alpha: float = 0.0  # strength of the elastic field, as Simard's alpha (0 = none)
    elastic_sigma: float = 4.0  # smoothness of the elastic field (Gaussian sigma, pixels)

    @property
    def active(self):
        return any((self.shift, self.rotate, self.scale, self.shear, self.elastic_alpha))


@lru_cache(maxsize=8)
def _grid(columns_key):
    """Output pixel coordinates in the requested column order -> basis (3, 784) float32.

    Rows: x - c, y - c, 1, with c = 13.5 the centre of the 28x28 grid.
    """
    columns = np.frombuffer(columns_key, np.int64)
    rows, cols = np.divmod(columns, SIDE)
    c = (SIDE - 1) / 2
    return np.stack([cols - c, rows - c, np.ones(len(columns))]).astype(np.float32)  # (3, 784)


def blur_matrix(sigma):
    """The 1-D Gaussian blur of a 28-pixel line as a matrix (28, 28) float64: a normalized
    kernel of standard deviation sigma, truncated at the image edge (zero outside)."""
    i = np.arange(SIDE)
    G = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)  # (28, 28)
    return G / (np.sqrt(2 * np.pi) * sigma)


@lru_cache(maxsize=8)
def _elastic_basis(sigma, rank=ELASTIC_RANK):
    """(28, rank) float32 B such that B Z B^T (Z (rank, rank) iid standard normal) has the
    covariance of Simard's displacement field G U G^T on its top directions: G the 2-D Gaussian
    blur (blur_matrix along each axis), U iid uniform(-1, 1) noise (variance 1/3).

    cov(G U G^T) = (G G^T) (x) (G G^T) / 3, and cov(B Z B^T) = (B B^T) (x) (B B^T): so
    B B^T = G G^T / sqrt(3), whose eigen-decomposition gives B."""
    G = blur_matrix(sigma)
    lam, V = np.linalg.eigh(G @ G.T / np.sqrt(3.0))  # (28,), (28, 28)
    top = np.argsort(lam)[::-1][:rank]
    return (V[:, top] * np.sqrt(np.maximum(lam[top], 0))).astype(np.float32)  # (28, rank)


class Augmenter:
    """Distorts blocks of up to `block` images with preallocated buffers.

    Every intermediate (coordinates, indices, neighbours, fields) lives in a buffer made
    once, so a call allocates nothing large: fresh block-sized temporaries cost more in page
    faults than the arithmetic itself.
    """

    def __init__(self, d, block, columns=None):
        self.d = d
        self.block = n = block
        columns = np.arange(SIDE * SIDE) if columns is None else np.asarray(columns, np.int64)
        self.columns = columns
        self.grid = _grid(columns.astype(np.int64).tobytes())  # (3, 784)
        W = SIDE + 2 * PAD
        self.padded = np.zeros((n, W, W), np.float32)  # (n, 32, 32) zero border stays zero
        self.A = np.empty((2, n, 3), np.float32)  # per image: the affine rows for x and y
        self.src = np.empty((2, n, SIDE * SIDE), np.float32)  # (2, n, 784) source x, y; then fractions
        self.floor = np.empty((2, n, SIDE * SIDE), np.float32)  # their integer parts
        self.idx = np.empty((n, SIDE * SIDE), np.int32)  # flat index of the top-left neighbour
        self.idx2 = np.empty((n, SIDE * SIDE), np.int32)
        self.nb = np.empty((4, n, SIDE * SIDE), np.float32)  # the four neighbours
        self.offsets = (np.arange(n, dtype=np.int32) * (W * W) + PAD * W + PAD)[:, None]  # (n, 1)
        if d.elastic_alpha:
            self.B = _elastic_basis(float(d.elastic_sigma))  # (28, r)
            r = self.B.shape[1]
            self.Z = np.empty((n * r, r), np.float32)
            self.T = np.empty((n * r, SIDE), np.float32)  # (n*r, 28)
            self.Tt = np.empty((n, SIDE, r), np.float32)  # (n, 28, r)
            self.F = np.empty((n * SIDE, SIDE), np.float32)  # (n*28, 28)
            self.Fc = np.empty((n, SIDE * SIDE), np.float32)  # (n, 784) in the column order

    def __call__(self, images, rng, out=None):
        """Distorted copies of raw images (m, 784), m <= block -> float32 (m, 784) (see distort)."""
        X = np.asarray(images)
        m, d = X.shape[0], self.d
        if m > self.block:
            raise ValueError(f"block of {m} images for an Augmenter of {self.block}")
        # the inverse map per image: source = c + M (p - c) + t
        theta = np.deg2rad(rng.uniform(-d.rotate, d.rotate, m))  # (m,)
        sx = 1.0 / rng.uniform(1 - d.scale, 1 + d.scale, m)  # sampling the source at p/s enlarges by s
        sy = 1.0 / rng.uniform(1 - d.scale, 1 + d.scale, m)
        sh = rng.uniform(-d.shear, d.shear, m)
        t = rng.uniform(-d.shift, d.shift, (2, m))  # (2, m)
        cos, sin = np.cos(theta), np.sin(theta)
        c = (SIDE - 1) / 2
        # M = R(theta) @ [[1, sh], [0, 1]] @ diag(sx, sy)
        A = self.A[:, :m]  # (2, m, 3)
        A[0] = np.stack([cos * sx, (cos * sh - sin) * sy, c + t[0]], axis=1)
        A[1] = np.stack([sin * sx, (sin * sh + cos) * sy, c + t[1]], axis=1)
        src = self.src[:, :m]  # (2, m, 784)
        np.matmul(A, self.grid, out=src)  # (2, m, 784) = (2, m, 3) @ (3, 784)
        if d.elastic_alpha:
            for axis in range(2):
                src[axis] += self._field(rng, m)
        return self._bilinear(X, m, out)

    def _field(self, rng, m):
        """m smooth random fields (m, 784) in the column order, times alpha (a buffer view)."""
        B = self.B
        r = B.shape[1]
        Z = self.Z[:m * r]
        rng.standard_normal(out=Z, dtype=np.float32)  # (m*r, r)
        T = self.T[:m * r]
        np.matmul(Z, B.T, out=T)  # (m*r, 28): B applied along one axis
        Tt = self.Tt[:m]
        np.copyto(Tt, T.reshape(m, r, SIDE).transpose(0, 2, 1))  # (m, 28, r)
        F = self.F[:m * SIDE]
        np.matmul(Tt.reshape(m * SIDE, r), B.T, out=F)  # (m*28, 28): and along the other
        # F[i] = (B Z B^T)^T, which has the same (isotropic) distribution
        Fc = self.Fc[:m]
        np.take(F.reshape(m, SIDE * SIDE), self.columns, axis=1, out=Fc)  # (m, 784)
        Fc *= self.d.elastic_alpha
        return Fc

    def _bilinear(self, X, m, out):
        """Sample images X (m, 784) at self.src bilinearly, 0 outside -> float32 (m, 784)."""
        W = SIDE + 2 * PAD
        padded = self.padded[:m]
        padded[:, PAD:PAD + SIDE, PAD:PAD + SIDE] = X.reshape(m, SIDE, SIDE)
        src, fl = self.src[:, :m], self.floor[:, :m]
        # beyond one pixel outside the image every neighbour is 0: clip there, so indices stay in bounds
        np.clip(src, -PAD, SIDE + PAD - 1.001, out=src)
        np.floor(src, out=fl)
        src -= fl  # (2, m, 784) fractional parts fx, fy
        fx, fy = src
        idx, idx2 = self.idx[:m], self.idx2[:m]
        np.multiply(fl[1], W, out=fl[1])
        fl[1] += fl[0]
        np.copyto(idx, fl[1], casting="unsafe")  # (m, 784) y0 * W + x0, exact in float32
        idx += self.offsets[:m]
        flat = self.padded.reshape(-1)
        a, b, cc, dd = self.nb[:, :m]
        np.take(flat, idx, out=a)  # top-left
        np.add(idx, 1, out=idx2)
        np.take(flat, idx2, out=b)  # top-right
        idx += W
        np.take(flat, idx, out=cc)  # bottom-left
        idx += 1
        np.take(flat, idx, out=dd)  # bottom-right
        # top = a + fx (b - a); bottom = c + fx (d - c); out = top + fy (bottom - top)
        b -= a
        b *= fx
        a += b
        dd -= cc
        dd *= fx
        cc += dd
        cc -= a
        cc *= fy
        if out is None:
            out = np.empty((m, SIDE * SIDE), np.float32)
        np.add(a, cc, out=out)
        return out


def distort(images, rng, d, columns=None):
    """Randomly distorted copies of raw images (N, 784) (any numeric dtype, standard pixel
    order, row-major 28x28) -> float32 (N, 784), values in the input's range.

    rng: np.random.Generator, advanced by this call. d: a Distortion. columns (784,) int:
    output column j is the pixel columns[j] of the standard order (default: the standard
    order), so a caller that keeps its pixels permuted gets them permuted at no cost.
    Output pixels that map outside the source image are 0, and pixels whose four sampled
    neighbours are all 0 are exactly 0. For many blocks, make one Augmenter and call it.
    """
    X = np.asarray(images)
    return Augmenter(d, max(1, X.shape[0]), columns)(X, rng)
