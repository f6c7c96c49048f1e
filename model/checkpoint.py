"""Model files and training-state files: one .npz each, read with allow_pickle=False.

A model file holds the weights W1 b1 W2 b2, the normalization statistics mean/std, and
a JSON string "meta" (architecture, recipe, validation metrics, data fingerprint,
created_at, package version, version id). A training-state file holds what
model.train.Trainer.state() returns (this module imports
inference, never the trainer). Both are written atomically through model.storage.
"""
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from model import network, storage, version
from model.errors import CheckpointError, describe
from model.inference import normalize, predict_proba

FORMAT = "digits-model/1"
STATE_FORMAT = "digits-train-state/1"
MODEL_ARRAYS = network.PARAM_NAMES + ("mean", "std")
PREDICT_BATCH = 1024  # rows per product in Model.predict: its float32 block (3 MB) stays in cache


def weights_version(arrays):
    """A short content hash of the weights and normalization: the model's version id."""
    h = hashlib.sha256()
    for name in MODEL_ARRAYS:
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Model:
    """A trained network ready to predict raw pixels."""

    params: dict  # W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,)
    mean: np.ndarray  # (784,)
    std: np.ndarray  # (784,)
    meta: dict
    _folded: tuple = field(default=None, init=False, repr=False, compare=False)  # see folded()

    @property
    def version(self):
        return self.meta["version"]

    def predict_proba(self, X):
        """Raw pixels X (N, 784) uint8 -> probabilities (N, 10). The plain path: z-score,
        then the network (model.train.predict_proba)."""
        return predict_proba(self.params, normalize(X, self.mean, self.std))

    def folded(self):
        """The first layer with the z-score folded in -> (W1f (784, H), b1f (H,)) float32,
        computed once (in float64) per Model: z = x * scale + shift, so
        z @ W1 + b1 = x @ (scale[:, None] * W1) + (shift @ W1 + b1)."""
        if self._folded is None:
            W1 = self.params["W1"].astype(np.float64)  # (784, H)
            scale = 1.0 / self.std.astype(np.float64)  # (784,)
            shift = -self.mean.astype(np.float64) * scale  # (784,)
            self._folded = ((scale[:, None] * W1).astype(np.float32),  # (784, H)
                            (shift @ W1 + self.params["b1"].astype(np.float64)).astype(np.float32))  # (H,)
        return self._folded

    def predict(self, X, batch=PREDICT_BATCH):
        """Raw pixels X (N, 784) -> (labels (N,) int64, confidence (N,) float32).

        The fast path: float32, z-score folded into W1 and b1 (see folded()), so raw pixels
        go straight into one product per block of `batch` rows, converted to float32 in
        one reused buffer; only the winning class's probability is computed
        (1 / sum(exp(z - z_max))). Equal to predict_proba's argmax and max up to float
        rounding (tests/model/test_checkpoint.py checks it against the plain path)."""
        W1f, b1f = self.folded()
        W2, b2 = self.params["W2"].astype(np.float32), self.params["b2"].astype(np.float32)
        n = len(X)
        labels = np.empty(n, np.int64)  # (N,)
        confidence = np.empty(n, np.float32)  # (N,)
        buf = np.empty((min(batch, n), X.shape[1] if X.ndim == 2 else network.N_IN), np.float32)
        for start in range(0, n, batch):
            xb = buf[:len(X[start:start + batch])]  # (b, 784)
            np.copyto(xb, X[start:start + batch], casting="unsafe")  # uint8 -> float32
            H = xb @ W1f  # (b, H)
            H += b1f
            np.maximum(H, 0, out=H)  # relu
            Z = H @ W2  # (b, 10)
            Z += b2
            lab = Z.argmax(axis=1)  # (b,)
            Z -= Z[np.arange(len(lab)), lab][:, None]  # (b, 10) the winner's logit is 0
            np.exp(Z, out=Z)
            labels[start:start + len(lab)] = lab
            confidence[start:start + len(lab)] = 1.0 / Z.sum(axis=1)  # the winner's probability
        return labels, confidence


def _to_npz(arrays, meta):
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return buf.getvalue()


MAX_MEMBER_BYTES = 64 << 20  # an array larger than this (decompressed) is refused unread
_NPZ_MAGIC = b"PK\x03\x04"


def _member_header(zf, name, source):
    """(shape, dtype) of one .npy member, read from its header without its payload."""
    with zf.open(name) as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def _from_npz(data, source):
    """The bytes of an .npz file -> (arrays, meta). Every member's header is checked before
    its payload is read: no Python objects (never unpickled), no array over MAX_MEMBER_BYTES."""
    if not data.startswith(_NPZ_MAGIC):
        raise CheckpointError(f"{source}: not an .npz file (a digits model or training state "
                              "is a NumPy .npz archive)")
    arrays = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if info.file_size > MAX_MEMBER_BYTES:
                    raise CheckpointError(f"{source}: array {key} is {info.file_size} bytes, over the limit")
                shape, dtype = _member_header(zf, info.filename, source)
                if dtype.hasobject:
                    raise CheckpointError(f"{source}: array {key} holds Python objects, not numbers")
                with zf.open(info.filename) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    except CheckpointError:
        raise
    except Exception as e:  # a damaged archive, whatever the zip or npy reader raises
        raise CheckpointError(f"{source}: not a readable .npz file ({describe(e, 200)})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{source}: no metadata in file")
    meta = arrays.pop("meta")
    if meta.dtype.kind != "U" or meta.ndim != 0:
        raise CheckpointError(f"{source}: metadata is not a JSON string")
    try:
        meta = json.loads(str(meta))
    except ValueError as e:
        raise CheckpointError(f"{source}: metadata is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: metadata is not a JSON object")
    return arrays, meta


def _read(ref):
    try:
        return storage.read_bytes(ref)
    except FileNotFoundError:
        raise CheckpointError(f"{ref}: no such model or checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{ref}: cannot read ({e})") from None


def now():
    """The current UTC time as an ISO 8601 string to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_model(params, mean, std, **meta):
    """A Model from arrays plus metadata; fills architecture, version, created_at, package."""
    arrays = dict(params, mean=mean, std=std)
    full = {
        "format": FORMAT,
        "architecture": {"n_in": params["W1"].shape[0], "n_hidden": params["W1"].shape[1],
                         "n_out": params["W2"].shape[1], "activation": "relu", "output": "softmax"},
        "created_at": now(),
        "package_version": version(),
        "version": weights_version(arrays),
    }
    full.update(meta)
    return Model(dict(params), mean, std, full)


def trained_model(trainer, data_fingerprint, data_source):
    """A Model of a finished train.Trainer, with its recipe, config, data, last epoch's
    metrics and per-epoch history in the metadata."""
    last = trainer.history[-1]
    metrics = {"val_accuracy": last.val_accuracy, "val_loss": last.val_loss,
               "train_loss": last.train_loss, "train_accuracy": last.train_accuracy}
    return make_model(trainer.params, trainer.mean, trainer.std, recipe=trainer.config.recipe,
                      config=trainer.config.to_dict(), data_fingerprint=data_fingerprint,
                      data_source=data_source, metrics=metrics,
                      history=[h.__dict__ for h in trainer.history])


def save_model(model, ref):
    """Write a Model to a path or URL atomically."""
    arrays = dict(model.params, mean=model.mean, std=model.std)
    storage.write_bytes(ref, _to_npz(arrays, model.meta))


def load_model(ref):
    """Read a Model from a path or URL -> Model; CheckpointError "not a digits model file:
    <reason>" unless it holds finite floating-point arrays of the architecture's shapes."""
    try:
        return _load_model(ref)
    except CheckpointError as e:
        raise CheckpointError(f"not a digits model file: {e}") from None


def _load_model(ref):
    arrays, meta = _from_npz(_read(ref), ref)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{ref}: not a model file (format {meta.get('format')!r})")
    missing = [k for k in MODEL_ARRAYS if k not in arrays]
    if missing:
        raise CheckpointError(f"{ref}: missing arrays {missing}")
    try:
        arch = meta["architecture"]
        expected = {"W1": (arch["n_in"], arch["n_hidden"]), "b1": (arch["n_hidden"],),
                    "W2": (arch["n_hidden"], arch["n_out"]), "b2": (arch["n_out"],),
                    "mean": (arch["n_in"],), "std": (arch["n_in"],)}
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{ref}: incomplete architecture in metadata ({e})") from None
    for k, shape in expected.items():
        if arrays[k].shape != shape:
            raise CheckpointError(f"{ref}: {k} has shape {arrays[k].shape}, architecture says {shape}")
        if arrays[k].dtype.kind != "f":
            raise CheckpointError(f"{ref}: {k} holds {arrays[k].dtype} values, not floating point")
        if not np.isfinite(arrays[k]).all():
            raise CheckpointError(f"{ref}: {k} holds NaN or infinite values")
    if arch["n_in"] != network.N_IN or arch["n_out"] != network.N_OUT:
        raise CheckpointError(f"{ref}: architecture {arch['n_in']}-{arch['n_out']} is not 784-10")
    if not (arrays["std"] > 0).all():
        raise CheckpointError(f"{ref}: std holds values <= 0")
    if not isinstance(meta.get("version"), str):
        raise CheckpointError(f"{ref}: metadata has no version string")
    params = {k: arrays[k] for k in network.PARAM_NAMES}
    return Model(params, arrays["mean"], arrays["std"], meta)


def save_state(state, ref):
    """Write a Trainer.state() dict atomically."""
    meta = {"format": STATE_FORMAT, "position": state["position"], "history": state["history"],
            "config": state["config"], "extra": state.get("extra", {})}
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    storage.write_bytes(ref, _to_npz(arrays, meta))


def load_state(ref):
    """Read a training-state file back into the dict Trainer(state=...) takes."""
    arrays, meta = _from_npz(_read(ref), ref)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{ref}: not a training-state file (format {meta.get('format')!r})")
    state = dict(arrays)
    missing = [k for k in ("position", "history", "config", "extra") if k not in meta]
    if missing:
        raise CheckpointError(f"{ref}: training state lacks {', '.join(missing)}")
    for k in ("position", "history", "config", "extra"):
        state[k] = meta[k]
    return state
