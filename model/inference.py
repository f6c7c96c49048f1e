"""Inference: z-score normalization, probabilities, evaluation and the confusion matrix.

Everything a trained network needs to predict, apart from the trainer (model/train.py), so
that loading a model (model/checkpoint.py) imports no training code. Inputs are raw pixels
X (N, 784) uint8 or their normalized float form Xn (N, 784); params are network.PARAM_NAMES.
"""
import numpy as np

from model import network


def affine(mean, std, dtype=np.float32):
    """Z-score statistics -> (scale, shift) such that z = x * scale + shift, both (784,)."""
    scale = (1.0 / std.astype(np.float64)).astype(dtype)
    shift = (-mean.astype(np.float64) / std.astype(np.float64)).astype(dtype)
    return scale, shift


def normalize(X, mean, std, out=None, dtype=np.float32):
    """Raw pixels X (N, 784) -> z-scored float array (N, 784), optionally into `out`.

    Training batches and prediction go through this one formula, so a pixel normalizes
    to the same float wherever it is seen.
    """
    scale, shift = affine(mean, std, dtype)
    if out is None:
        out = np.empty(X.shape, dtype)
    np.multiply(X, scale, out=out)  # (N, 784)
    out += shift
    return out


def predict_proba(params, Xn, batch=4096):
    """Probabilities (N, 10) for normalized Xn (N, 784), computed in batches."""
    out = np.empty((Xn.shape[0], params["W2"].shape[1]), params["W2"].dtype)  # (N, 10)
    for start in range(0, Xn.shape[0], batch):
        out[start:start + batch] = network.forward(params, Xn[start:start + batch])
    return out


def evaluate(params, Xn, y):
    """Loss, accuracy and predicted labels of normalized Xn (N, 784) against labels y (N,)."""
    if len(y) == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "pred": np.empty(0, np.int64)}
    P = predict_proba(params, Xn)  # (N, 10)
    pred = P.argmax(axis=1)
    loss = float(-np.log(P[np.arange(len(y)), y] + 1e-12).mean())
    return {"loss": loss, "accuracy": float((pred == y).mean()), "pred": pred}


def confusion_matrix(y_true, y_pred, n=network.N_OUT):
    """Counts (n, n): rows are true labels, columns predicted labels."""
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm
