"""Mini-batch training: recipes, validation split, callbacks, and resumable state.

Inputs are raw pixels X (N, 784) uint8 and labels y (N,) int. A Trainer holds out a
validation split, fits the normalization on the rest, and runs epochs of mini-batch
updates. Its state() is everything needed to resume bit-for-bit: weights, optimizer
state, the RNG state at the start of the current epoch, and the batch position.

Inside a Trainer the pixels (the columns of X and the rows of W1) are ordered from the most
often inked to the least, so that the pixels blank in a whole batch come last and the first
layer can skip them (network.loss_and_grads, `blank`). A batch of 64 MNIST digits leaves
about a fifth of the 784 pixels blank. Everything a Trainer hands out (params, state())
is in the standard pixel order.

With augmentation (TrainConfig shift, rotate, scale, shear, elastic_alpha) every epoch
trains on freshly distorted copies of the training images (model/augment.py), made
AUGMENT_BLOCK images at a time just before their batches. The distortions come from a key
drawn from the trainer's RNG right after the epoch's permutation, one stream per block
(block_rng), so a run resumed mid-epoch redraws the block it stopped in exactly. Distorted
images ink other pixels: each batch's blank tail is measured on the distorted block.
"""
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from model import network
from model.inference import affine, evaluate, normalize
from model.augment import Augmenter, Distortion
from model.errors import ConfigError
from model.prepare import batch_prefixes, fit_normalization, inked_prefix, pixel_order, split_indices
from model.recipes import RECIPES

AUGMENT_BLOCK = 256  # images distorted per call: large enough to amortize, small enough for the cache


@dataclass
class TrainConfig:
    """Hyperparameters of one training run."""

    recipe: str = "default"  # name of the recipe these values came from
    epochs: int = 10  # full passes over the training split
    lr: float = 0.1  # peak learning rate
    batch_size: int = 64  # samples per gradient step
    seed: int = 0  # weights init and shuffling
    shuffle: bool = True  # reshuffle the training split every epoch
    normalization: str = "global"  # z-score with one mean/std ("global") or per pixel ("pixel")
    optimizer: str = "sgd"  # "sgd", "momentum" or "adam"
    momentum: float = 0.9  # momentum coefficient (optimizer="momentum")
    schedule: str = "constant"  # learning-rate schedule: "constant" or "cosine" (per step)
    warmup_epochs: float = 0.0  # linear warm-up at the start of a cosine schedule
    hidden: int = network.N_HIDDEN  # hidden units
    val_fraction: float = 0.1  # share of the data held out for validation
    val_seed: int = 20240601  # fixes which rows are held out, independent of `seed`
    blas_threads: int = 1  # BLAS threads: batch-64 matmuls gain little from more, and lose badly when cores are busy
    # data augmentation: each epoch sees every training image freshly distorted (model/augment.py)
    shift: float = 0.0  # max random translation in pixels, per axis (0 = none)
    rotate: float = 0.0  # max random rotation in degrees
    scale: float = 0.0  # max random relative change of size, per axis: factor in [1 - scale, 1 + scale]
    shear: float = 0.0  # max random shear (tangent of the angle)
    elastic_alpha: float = 0.0  # strength of the random elastic distortion, Simard's alpha (0 = none)
    elastic_sigma: float = 4.0  # smoothness of the elastic distortion (Gaussian sigma, pixels)
    clean_epochs: int = 0  # the last N epochs train on the undistorted images
    label_smoothing: float = 0.0  # target = (1 - e) * one-hot + e / 10

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.normalization in ("global", "pixel"), "normalization must be global or pixel"),
            (self.optimizer in network.OPTIMIZERS, f"optimizer must be one of {sorted(network.OPTIMIZERS)}"),
            (self.schedule in ("constant", "cosine"), "schedule must be constant or cosine"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.hidden >= 1, "hidden must be >= 1"),
            (min(self.shift, self.rotate, self.scale, self.shear, self.elastic_alpha) >= 0,
             "shift, rotate, scale, shear and elastic_alpha must be >= 0"),
            (self.scale < 1, "scale must be < 1"),
            (self.elastic_sigma > 0, "elastic_sigma must be > 0"),
            (self.clean_epochs >= 0, "clean_epochs must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"bad training config: {message}")

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def distortion(self):
        """The augmentation settings as an augment.Distortion."""
        return Distortion(self.shift, self.rotate, self.scale, self.shear, self.elastic_alpha, self.elastic_sigma)

    def augments(self, epoch):
        """Whether 0-based `epoch` trains on distorted images."""
        return self.distortion.active and epoch < self.epochs - self.clean_epochs


def make_config(recipe="default", **overrides):
    """A TrainConfig from a recipe name plus overrides; None values are ignored.

    Unknown recipe names and unknown override keys raise ConfigError.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    values = dict(RECIPES[recipe], recipe=recipe)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def config_from_dict(d):
    """Inverse of TrainConfig.to_dict (rejects unknown keys).

    A key missing from d takes TrainConfig's default, not its recipe's value: to_dict writes
    every field, so a missing one comes from a version without that field, and the field's
    default is what that version did (e.g. no augmentation for a job saved before it existed).
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    recipe = d.get("recipe", "default")
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return TrainConfig(**{k: v for k, v in d.items() if v is not None})



def _permute_w1(arrays, rows):
    """Copies of a dict of arrays, with the rows of every W1-shaped entry ("W1", "v_W1", ...)
    reordered by `rows`."""
    return {k: v[rows] if k == "W1" or k.endswith("_W1") else v.copy() for k, v in arrays.items()}


def block_rng(key, block):
    """The Generator that distorts block `block` of an epoch whose augmentation key is `key`.

    Each block has its own stream, so a run resumed mid-epoch redraws exactly its block.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(key), int(block)])))


@dataclass
class EpochMetrics:
    """What one finished epoch reports."""

    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass
class BatchInfo:
    """What one finished batch reports."""

    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based within the epoch
    batches: int
    loss: float  # running mean over the epoch so far
    lr: float


@dataclass
class _Position:
    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # next batch to run within that epoch
    rng_state: dict = field(default_factory=dict)  # RNG state at the start of `epoch`
    loss_sum: float = 0.0  # running sums of the epoch in progress
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


class Trainer:
    """Trains the network on raw pixels X (N, 784) uint8 and labels y (N,) int.

    Pass `state` (from a previous Trainer.state()) to resume exactly where it stopped.
    """

    def __init__(self, config, X, y, state=None):
        self.config = config
        X = np.asarray(X)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ConfigError(f"training data must be (N, {network.N_IN}) pixels with N labels")
        if X.shape[0] < 2:
            raise ConfigError("training needs at least 2 labeled images")
        train_idx, val_idx = split_indices(len(y), config.val_fraction, config.val_seed)
        self.y_train, self.y_val = y[train_idx], y[val_idx]
        X_train = X[train_idx]  # (n_train, 784) raw
        if state is None:
            self.mean, self.std = fit_normalization(X_train, config.normalization)
        else:
            self.mean, self.std = state["mean"], state["std"]
        # the training pixel order (see the module docstring) and its inverse
        self.order = pixel_order(X_train)  # (784,)
        self.inverse = np.argsort(self.order)  # (784,)
        self._stats = self.mean[self.order], self.std[self.order]  # (784,) each, in that order
        self.X_train = np.take(X_train, self.order, axis=1)  # (n_train, 784) raw, normalized per batch
        self.inked = inked_prefix(self.X_train)  # (n_train,)
        self.X_val = normalize(np.take(X[val_idx], self.order, axis=1), *self._stats)  # (n_val, 784)
        self.Y_train = network.one_hot(self.y_train)  # (n_train, 10) targets
        if config.label_smoothing:
            self.Y_train *= 1 - config.label_smoothing
            self.Y_train += np.float32(config.label_smoothing / network.N_OUT)
        # augmentation distorts the images in the standard pixel order (and writes them permuted)
        self._X_std = X_train if config.distortion.active else None  # (n_train, 784) raw
        self.rng = np.random.Generator(np.random.PCG64(config.seed))
        if state is None:
            params = network.init_params(self.rng, n_hidden=config.hidden)
            self._params = _permute_w1(params, self.order)
            self.optimizer = _make_optimizer(config, self._params)
            self.pos = _Position(rng_state=self.rng.bit_generator.state)
            self.history = []
        else:
            self._params = _permute_w1({k: state[k] for k in network.PARAM_NAMES}, self.order)
            self.optimizer = _make_optimizer(config, self._params)
            saved = _permute_w1({k: state["opt_" + k] for k in self.optimizer.state}, self.order)
            for k in self.optimizer.state:
                self.optimizer.state[k][...] = saved[k]
            self.pos = _Position(**state["position"])
            self.history = [EpochMetrics(**h) for h in state["history"]]
        self.batches_per_epoch = math.ceil(len(self.y_train) / config.batch_size)
        self._X_norm = None  # the normalized training split, when visited in a fixed order
        self.fingerprint = None

    @property
    def params(self):
        """The current weights {"W1", "b1", "W2", "b2"} in the standard pixel order (copies)."""
        return _permute_w1(self._params, self.inverse)

    @property
    def done(self):
        return self.pos.epoch >= self.config.epochs

    def lr_at(self, step):
        """Learning rate for global step `step` (0-based)."""
        c = self.config
        if c.schedule == "constant":
            return c.lr
        total = c.epochs * self.batches_per_epoch
        warm = int(c.warmup_epochs * self.batches_per_epoch)
        if step < warm:
            return c.lr * (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return c.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def run(self, on_batch=None, on_epoch=None, should_stop=None):
        """Train until the configured epochs are done or should_stop() returns True.

        on_batch(BatchInfo) runs after every batch; on_epoch(EpochMetrics) after every
        epoch, when state() is at the epoch boundary. should_stop() is checked before
        each batch. Returns the list of EpochMetrics of all finished epochs.
        """
        c = self.config
        n, bs = len(self.y_train), c.batch_size
        params = self._params
        ws = network.Workspace(bs, params)
        scale, shift = affine(*self._stats)  # (784,) each
        if c.distortion.active:  # distorted a block of whole batches at a time, written in our pixel order
            per_block = max(1, AUGMENT_BLOCK // bs)  # batches per block
            augmenter = Augmenter(c.distortion, per_block * bs, columns=self.order)
            X_src = np.empty((per_block * bs, network.N_IN), self._X_std.dtype)  # (block, 784) raw, standard order
            X_aug = np.empty((per_block * bs, network.N_IN), np.float32)  # (block, 784) distorted, normalized
        if c.shuffle:  # each epoch's data in visiting order, so a batch is a contiguous slice
            X_epoch = None  # (n_train, 784) uint8, made for the first undistorted epoch
            Y_epoch = np.empty_like(self.Y_train)  # (n_train, 10)
            y_epoch = np.empty_like(self.y_train)  # (n_train,)
        else:  # the same order every epoch: batches are views
            order, Y_epoch, y_epoch = np.arange(n), self.Y_train, self.y_train
            fixed_prefixes = batch_prefixes(self.inked, bs)  # (batches,)
        with threadpool_limits(c.blas_threads):
            while not self.done:
                pos = self.pos
                self.rng.bit_generator.state = pos.rng_state
                augment = c.augments(pos.epoch)
                if c.shuffle:
                    order = self.rng.permutation(n)
                    if not augment:
                        if X_epoch is None:
                            X_epoch = np.empty_like(self.X_train)
                        np.take(self.X_train, order, axis=0, out=X_epoch)
                        prefixes = batch_prefixes(self.inked[order], bs)
                    np.take(self.Y_train, order, axis=0, out=Y_epoch)
                    np.take(self.y_train, order, out=y_epoch)
                elif not augment:  # normalize once (kept for later calls)
                    if self._X_norm is None:
                        self._X_norm = normalize(self.X_train, *self._stats)
                    X_norm, prefixes = self._X_norm, fixed_prefixes
                if augment:  # this epoch's distortions: one stream per block, from a key drawn here
                    key = self.rng.integers(2**63)
                t0 = time.perf_counter() - pos.seconds
                first = pos.batch
                for b in range(first, self.batches_per_epoch):
                    if should_stop is not None and should_stop():
                        pos.seconds = time.perf_counter() - t0
                        return self.history
                    lo = b * bs
                    hi = min(lo + bs, n)
                    m = hi - lo
                    if augment:
                        j, r = divmod(b, per_block)
                        if r == 0 or b == first:  # a new block (or the one a resumed run stopped in)
                            block_lo = j * per_block * bs
                            mb = min(block_lo + per_block * bs, n) - block_lo
                            np.take(self._X_std, order[block_lo:block_lo + mb], axis=0, out=X_src[:mb])
                            augmenter(X_src[:mb], block_rng(key, j), out=X_aug[:mb])
                            block_prefixes = batch_prefixes(inked_prefix(X_aug[:mb]), bs)  # (per_block,)
                            X_aug[:mb] *= scale  # z-score in place, as normalize() does
                            X_aug[:mb] += shift
                        k = int(block_prefixes[r])  # pixels from k on are blank in the whole batch
                        batch = (X_aug[lo - block_lo:hi - block_lo], Y_epoch[lo:hi], y_epoch[lo:hi])
                    elif c.shuffle:  # z-score only the columns that loss_and_grads reads
                        k = int(prefixes[b])
                        np.multiply(X_epoch[lo:hi, :k], scale[:k], out=ws.X[:m, :k])  # (m, k)
                        ws.X[:m, :k] += shift[:k]
                        batch = (ws.X[:m], Y_epoch[lo:hi], y_epoch[lo:hi])
                    else:
                        k = int(prefixes[b])
                        batch = (X_norm[lo:hi], Y_epoch[lo:hi], y_epoch[lo:hi])
                    lr = self.lr_at(pos.epoch * self.batches_per_epoch + b)
                    loss, correct = network.loss_and_grads(params, ws, m, self.optimizer.grad_scale(lr), batch,
                                                           blank=(k, shift))
                    self.optimizer.step(params, ws.grads, lr)
                    pos.batch = b + 1
                    pos.loss_sum += loss
                    pos.correct += correct
                    pos.seen += m
                    if on_batch is not None:
                        on_batch(BatchInfo(pos.epoch + 1, c.epochs, b + 1, self.batches_per_epoch,
                                           pos.loss_sum / pos.seen, lr))
                val = evaluate(params, self.X_val, self.y_val)
                metrics = EpochMetrics(pos.epoch + 1, pos.loss_sum / pos.seen, pos.correct / pos.seen,
                                       val["loss"], val["accuracy"], lr, time.perf_counter() - t0)
                self.history.append(metrics)
                # the RNG now stands just after this epoch's permutation: the next epoch starts here
                self.pos = _Position(epoch=pos.epoch + 1, rng_state=self.rng.bit_generator.state)
                if on_epoch is not None:
                    on_epoch(metrics)
        return self.history

    def state(self):
        """Everything needed to resume: arrays plus JSON-able "position", "history", "config"."""
        s = self.params
        s.update({"opt_" + k: v for k, v in _permute_w1(self.optimizer.state, self.inverse).items()})
        s["mean"], s["std"] = self.mean, self.std
        s["position"] = dataclasses.asdict(self.pos)
        s["history"] = [dataclasses.asdict(h) for h in self.history]
        s["config"] = self.config.to_dict()
        return s

    def validation(self):
        """Validation labels (n_val,) and predictions (n_val,) with the current weights."""
        return self.y_val, evaluate(self._params, self.X_val, self.y_val)["pred"]


def _make_optimizer(config, params):
    return network.OPTIMIZERS[config.optimizer](params, momentum=config.momentum)
