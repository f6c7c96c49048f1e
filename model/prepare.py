"""What a Trainer computes from its data before the first batch: the validation split, the
normalization statistics, and the pixel order with each row's inked prefix (model.train)."""
import numpy as np


def split_indices(n, val_fraction, val_seed):
    """Row indices (train_idx, val_idx) of a fixed, seeded hold-out split of n rows."""
    order = np.random.default_rng(val_seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_normalization(X, mode, chunk=8192):
    """Z-score statistics of raw pixels X (N, 784) -> (mean (784,), std (784,)) float32.

    "global" uses one mean and std over all pixels; "pixel" one per pixel, with constant
    pixels given std 1 so that they normalize to zero instead of dividing by zero.
    Sums run in float64 over row chunks, so no float64 copy of the whole X is made.
    """
    X = np.asarray(X)
    n_features = X.shape[1]
    s1 = np.zeros(n_features)  # (784,) float64 sums
    for lo in range(0, len(X), chunk):
        s1 += X[lo:lo + chunk].sum(axis=0, dtype=np.float64)
    mean = s1 / len(X)
    s2 = np.zeros(n_features)  # (784,) centered sums of squares
    for lo in range(0, len(X), chunk):
        d = X[lo:lo + chunk] - mean  # (chunk, 784) float64
        s2 += np.einsum("ij,ij->j", d, d)
    var = s2 / len(X)  # (784,)
    if mode == "global":  # the total variance around the global mean
        m = mean.mean()
        mean, var = np.full(n_features, m), np.full(n_features, (var + (mean - m) ** 2).mean())
    std = np.sqrt(var)
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def pixel_order(X):
    """Raw pixels X (N, 784) -> permutation (784,) of the pixels, most often inked first."""
    return np.argsort(-np.count_nonzero(X, axis=0), kind="stable")


def inked_prefix(X):
    """Raw pixels X (N, 784) -> (N,) int: 1 + the last inked column of each row (0 if none).

    Columns from that position on are blank in the row.
    """
    inked = X != 0  # (N, 784)
    last = X.shape[1] - np.argmax(inked[:, ::-1], axis=1)  # (N,) argmax of a blank row is 0
    return np.where(inked.any(axis=1), last, 0)


def batch_prefixes(inked, batch_size):
    """Per-row inked prefixes (n,) in visiting order -> per-batch prefix (batches,) int."""
    return np.maximum.reduceat(inked, np.arange(0, len(inked), batch_size))
