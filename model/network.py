"""The 784-128-10 network: He initialization, ReLU, softmax, cross-entropy, manual backprop.

Pure NumPy, no I/O. Arrays are samples-by-features (row-major, float32 by default) so that
a mini-batch is a contiguous slice and every product is one BLAS call:

    X  (B, 784)  ->  Z1 = X W1 + b1  (B, 128)  ->  H = relu(Z1)
                 ->  Z2 = H W2 + b2  (B, 10)   ->  P = softmax(Z2)

Parameters live in a dict {"W1", "b1", "W2", "b2"}; optimizers update it in place.
"""
import numpy as np

SIDE = 28  # an image is SIDE x SIDE pixels, one input each
N_IN, N_HIDDEN, N_OUT = SIDE * SIDE, 128, 10
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def init_params(rng, n_in=N_IN, n_hidden=N_HIDDEN, n_out=N_OUT, dtype=np.float32):
    """He initialization: rng (np.random.Generator) -> {"W1","b1","W2","b2"} of dtype."""
    W1 = rng.standard_normal((n_in, n_hidden)) * np.sqrt(2.0 / n_in)  # (784, 128)
    W2 = rng.standard_normal((n_hidden, n_out)) * np.sqrt(2.0 / n_hidden)  # (128, 10)
    return {
        "W1": W1.astype(dtype),
        "b1": np.zeros(n_hidden, dtype),  # (128,)
        "W2": W2.astype(dtype),
        "b2": np.zeros(n_out, dtype),  # (10,)
    }


def one_hot(labels, n_out=N_OUT, dtype=np.float32):
    """Integer labels (N,) -> one-hot matrix (N, n_out)."""
    labels = np.asarray(labels)
    Y = np.zeros((labels.shape[0], n_out), dtype)  # (N, 10)
    Y[np.arange(labels.shape[0]), labels] = 1
    return Y


def softmax_(Z):
    """Row-wise softmax of Z (B, K), computed in place; returns Z."""
    Z -= Z.max(axis=1, keepdims=True)  # (B, K) stable: largest logit is 0
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)  # (B, K) rows sum to 1
    return Z


def forward(params, X):
    """Class probabilities for X (N, 784) normalized -> P (N, 10)."""
    H = X @ params["W1"]  # (N, 128)
    H += params["b1"]
    np.maximum(H, 0, out=H)  # relu
    Z2 = H @ params["W2"]  # (N, 10)
    Z2 += params["b2"]
    return softmax_(Z2)


def cross_entropy(P, Y, eps=1e-12):
    """Mean cross-entropy of probabilities P (B, K) against one-hot Y (B, K) -> float."""
    return float(-np.einsum("bk,bk->", Y, np.log(P + eps)) / P.shape[0])


class Workspace:
    """Preallocated buffers for one batch size, so a training step allocates almost nothing."""

    def __init__(self, batch_size, params):
        dtype = params["W1"].dtype
        n_in, n_hidden = params["W1"].shape
        n_out = params["W2"].shape[1]
        B = batch_size
        self.batch_size = B
        self.X = np.empty((B, n_in), dtype)  # (B, 784) gathered mini-batch
        self.Y = np.empty((B, n_out), dtype)  # (B, 10) its one-hot labels
        self.labels = np.empty(B, np.int64)  # (B,) the same labels as integers
        self.rows = np.arange(B)  # (B,) row numbers, for gathering P[row, label]
        self.Z1 = np.empty((B, n_hidden), dtype)  # (B, 128) pre-activation, then H
        self.mask = np.empty((B, n_hidden), dtype)  # (B, 128) relu derivative
        self.P = np.empty((B, n_out), dtype)  # (B, 10) probabilities, then dZ2
        self.dH = np.empty((B, n_hidden), dtype)  # (B, 128)
        self.grads = {name: np.empty_like(p) for name, p in params.items()}

    def view(self, n):
        """The first n rows of every batch buffer (for a short last batch)."""
        if n == self.batch_size:
            return self.X, self.Y, self.Z1, self.mask, self.P, self.dH
        return (self.X[:n], self.Y[:n], self.Z1[:n], self.mask[:n], self.P[:n], self.dH[:n])


def loss_and_grads(params, ws, n, scale=1.0, batch=None, blank=None):
    """Forward and backward pass over the first n rows of ws.X / ws.Y / ws.labels, or over
    batch = (X (n, 784), Y (n, 10), labels (n,)) when given (e.g. slices of a whole epoch).

    blank = (k, t) says that every column of X from k on holds the constant t[k:] (t (784,)):
    pixels that are blank in every image of the batch, which the caller has ordered last.
    The first layer then multiplies only X[:, :k] and adds the blank columns' constant
    contribution t[k:] @ W1[k:]; their gradient rows are t[k:] outer db1. The results equal
    the full product's, up to float rounding, for a fraction k/784 of its work.

    Fills ws.grads with scale * dLoss/dparam (mean cross-entropy over the batch; plain SGD
    passes scale=lr so that its update is a single subtraction) and returns
    (summed loss over the n rows, number of correct predictions).
    """
    X, Y, H, mask, P, dH = ws.view(n)
    labels = ws.labels[:n]
    if batch is not None:
        X, Y, labels = batch
    g = ws.grads
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    k, t = blank if blank is not None else (X.shape[1], None)
    # forward
    np.matmul(X[:, :k], W1[:k], out=H)  # (B, 128) = (B, k) @ (k, 128)
    if k < X.shape[1]:
        H += t[k:] @ W1[k:] + b1  # (128,) = (784-k,) @ (784-k, 128): the blank columns
    else:
        H += b1
    np.maximum(H, 0, out=H)  # (B, 128) relu
    np.matmul(H, W2, out=P)  # (B, 10) = (B, 128) @ (128, 10)
    P += b2
    softmax_(P)  # (B, 10)
    correct = int(np.count_nonzero(P.argmax(axis=1) == labels))
    loss = float(-np.log(P[ws.rows[:n], labels] + 1e-12).sum())
    # backward: softmax + cross-entropy gives dZ2 = (P - Y) / B
    P -= Y
    P *= scale / n  # (B, 10) dZ2, scaled
    np.matmul(H.T, P, out=g["W2"])  # (128, 10) = (128, B) @ (B, 10)
    np.einsum("bk->k", P, out=g["b2"])  # (10,)
    np.matmul(P, W2.T, out=dH)  # (B, 128) = (B, 10) @ (10, 128)
    np.greater(H, 0, out=mask)  # (B, 128) relu'(Z1) as 0/1
    dH *= mask  # (B, 128) dZ1
    np.einsum("bj->j", dH, out=g["b1"])  # (128,)
    np.matmul(X[:, :k].T, dH, out=g["W1"][:k])  # (k, 128) = (k, B) @ (B, 128)
    if k < X.shape[1]:
        np.multiply.outer(t[k:], g["b1"], out=g["W1"][k:])  # (784-k, 128): blank columns
    return loss, correct


class SGD:
    """Plain mini-batch gradient descent: p -= lr * g (g arrives already scaled by lr)."""

    name = "sgd"

    def __init__(self, params, **_):
        self.state = {}

    @staticmethod
    def grad_scale(lr):
        return lr

    def step(self, params, grads, lr):
        for name, p in params.items():
            p -= grads[name]


class Momentum:
    """Heavy-ball momentum: v = mu * v + g; p -= lr * v."""

    name = "momentum"

    def __init__(self, params, momentum=0.9, **_):
        self.mu = momentum
        self.state = {f"v_{k}": np.zeros_like(p) for k, p in params.items()}

    @staticmethod
    def grad_scale(lr):
        return 1.0

    def step(self, params, grads, lr):
        for name, p in params.items():
            v = self.state[f"v_{name}"]
            v *= self.mu
            v += grads[name]
            g = grads[name]
            np.multiply(v, lr, out=g)
            p -= g


class Adam:
    """Adam (Kingma and Ba) with bias correction; the step count lives in state["t"]."""

    name = "adam"

    def __init__(self, params, beta1=0.9, beta2=0.999, eps=1e-8, **_):
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.state = {"t": np.zeros((), np.int64)}
        for k, p in params.items():
            self.state[f"m_{k}"] = np.zeros_like(p)
            self.state[f"s_{k}"] = np.zeros_like(p)

    @staticmethod
    def grad_scale(lr):
        return 1.0

    def step(self, params, grads, lr):
        self.state["t"] += 1
        t = int(self.state["t"])
        a = lr * np.sqrt(1 - self.b2**t) / (1 - self.b1**t)
        for name, p in params.items():
            g, m, s = grads[name], self.state[f"m_{name}"], self.state[f"s_{name}"]
            m *= self.b1
            m += (1 - self.b1) * g
            s *= self.b2
            s += (1 - self.b2) * g * g
            p -= a * m / (np.sqrt(s) + self.eps)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Adam)}
