"""Training: recipes and config validation, determinism, bit-for-bit resume, the validation split."""
import dataclasses
import math

import numpy as np
import pytest

from model import checkpoint, network
from model.errors import ConfigError
from model.data.samples import load_sample
from model.augment import distort
from model.prepare import batch_prefixes, fit_normalization, inked_prefix, pixel_order, split_indices
from model.train import AUGMENT_BLOCK, RECIPES, TrainConfig, Trainer, block_rng, config_from_dict, make_config
from model.inference import normalize


@pytest.fixture(scope="module")
def sample():
    return load_sample()


@pytest.fixture(scope="module")
def small(sample):
    """800 real labeled images: 720 train (12 batches of 64, the last one short), 80 val."""
    return sample["train_x"][:800], sample["train_y"][:800]


def history_without_time(history):
    return [{k: v for k, v in dataclasses.asdict(h).items() if k != "seconds"} for h in history]


def assert_same_weights(a, b):
    for k in network.PARAM_NAMES:
        assert a.params[k].dtype == b.params[k].dtype
        assert np.array_equal(a.params[k], b.params[k]), k


# ----------------------------------------------------------------------------- config

def test_faithful_recipe_is_the_original():
    c = make_config("faithful")
    assert (c.recipe, c.epochs, c.lr, c.batch_size, c.optimizer, c.schedule) == \
        ("faithful", 10, 0.1, 64, "sgd", "constant")
    assert c.normalization == "global"


def test_default_recipe_and_overrides():
    c = make_config()
    assert c.recipe == "default" and c.optimizer == RECIPES["default"]["optimizer"]
    assert (c.elastic_alpha, c.elastic_sigma, c.epochs) == (20.0, 4.0, 30) and c.distortion.active
    plain = make_config("plain")
    assert not plain.distortion.active and plain.epochs == 15
    assert not make_config("faithful").distortion.active
    c = make_config("faithful", epochs=3, lr=None, seed=7)
    assert (c.epochs, c.lr, c.seed) == (3, 0.1, 7)  # None means "keep the recipe's value"


def test_unknown_recipe_is_rejected():
    with pytest.raises(ConfigError, match="unknown recipe 'fast'"):
        make_config("fast")


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="learning_rate"):
        make_config("default", learning_rate=0.1)
    with pytest.raises(ConfigError, match="unknown training option"):
        config_from_dict({"recipe": "faithful", "epochs": 2, "dropout": 0.5})


@pytest.mark.parametrize("key,value", [
    ("epochs", 0), ("lr", 0.0), ("lr", -0.1), ("batch_size", 0), ("normalization", "minmax"),
    ("optimizer", "rmsprop"), ("schedule", "step"), ("val_fraction", 1.0), ("val_fraction", -0.1),
    ("hidden", 0), ("shift", -1.0), ("rotate", -5.0), ("scale", -0.1), ("scale", 1.0), ("shear", -0.1),
    ("elastic_alpha", -1.0), ("elastic_sigma", 0.0), ("clean_epochs", -1), ("label_smoothing", 1.0),
])
def test_bad_values_are_rejected(key, value):
    with pytest.raises(ConfigError, match=key.replace("_", ".")):
        make_config("faithful", **{key: value})
    with pytest.raises(ConfigError):
        TrainConfig(**{key: value})


def test_config_dict_round_trip():
    c = make_config("default", epochs=4, seed=3, optimizer="adam")
    assert config_from_dict(c.to_dict()) == c
    c = make_config("plain", shift=1.5, clean_epochs=2, label_smoothing=0.1)
    assert config_from_dict(c.to_dict()) == c


def test_config_saved_before_augmentation_existed_resumes_without_it():
    """A job or state saved by a version without the augmentation fields meant no augmentation,
    whatever the recipe's values are now."""
    old = make_config("plain").to_dict()
    for k in ("shift", "rotate", "scale", "shear", "elastic_alpha", "elastic_sigma", "clean_epochs",
              "label_smoothing"):
        del old[k]
    old["recipe"] = "default"
    c = config_from_dict(old)
    assert c.recipe == "default" and not c.distortion.active and c.epochs == 15
    with pytest.raises(ConfigError, match="unknown recipe"):
        config_from_dict(dict(old, recipe="nope"))


def test_trainer_rejects_bad_data():
    with pytest.raises(ConfigError):
        Trainer(make_config("faithful"), np.zeros((5, 784), np.uint8), np.zeros(4, int))
    with pytest.raises(ConfigError):
        Trainer(make_config("faithful"), np.zeros(784, np.uint8), np.zeros(1, int))
    with pytest.raises(ConfigError, match="at least 2"):
        Trainer(make_config("faithful"), np.zeros((1, 784), np.uint8), np.zeros(1, int))


def test_learning_rate_schedules(small):
    X, y = small
    t = Trainer(make_config("faithful", epochs=2), X, y)
    assert {t.lr_at(s) for s in range(2 * t.batches_per_epoch)} == {0.1}
    t = Trainer(make_config("default", epochs=4, lr=0.2, warmup_epochs=1.0), X, y)
    bpe = t.batches_per_epoch
    warm = [t.lr_at(s) for s in range(bpe)]
    assert warm == pytest.approx([0.2 * (s + 1) / bpe for s in range(bpe)])
    decay = [t.lr_at(s) for s in range(bpe, 4 * bpe)]
    assert decay[0] == pytest.approx(0.2)
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert decay[-1] < 0.01 * 0.2


def test_fit_normalization_modes():
    X = np.zeros((4, 784), np.uint8)
    X[:, 0] = [0, 10, 20, 30]
    mean, std = fit_normalization(X, "pixel")
    assert mean.dtype == std.dtype == np.float32
    assert mean[0] == pytest.approx(15) and std[0] == pytest.approx(np.std([0, 10, 20, 30]))
    assert std[1] == 1.0  # constant pixel: no division by zero
    Z = normalize(X, mean, std)
    assert np.isfinite(Z).all() and not Z[:, 1:].any()
    gmean, gstd = fit_normalization(X, "global")
    assert np.all(gmean == gmean[0]) and gmean[0] == pytest.approx(X.mean())
    assert gstd[0] == pytest.approx(X.std())


# ----------------------------------------------------------------------------- blank pixels

def test_pixel_order_puts_the_most_often_inked_pixels_first():
    X = np.zeros((5, 6), np.uint8)
    X[:, 4] = 9  # inked in all 5 rows
    X[:3, 1] = 1  # in 3 rows
    X[0, 5] = 255  # in 1 row
    assert pixel_order(X).tolist() == [4, 1, 5, 0, 2, 3]  # ties keep the standard order


def test_inked_prefix_and_batch_prefixes():
    X = np.zeros((5, 6), np.uint8)
    X[0, 2] = 1
    X[1, [0, 5]] = 7
    X[3, 0] = 3  # row 2 and row 4 are blank
    assert inked_prefix(X).tolist() == [3, 6, 0, 1, 0]
    assert batch_prefixes(inked_prefix(X), 2).tolist() == [6, 1, 0]


ORACLE_CASES = [("faithful", {}), ("plain", {}), ("default", {}),
                ("plain", dict(shift=2.0, rotate=10.0, scale=0.1, shear=0.1, elastic_alpha=20.0,
                               clean_epochs=1, label_smoothing=0.1, epochs=3)),
                ("faithful", dict(elastic_alpha=34.0, batch_size=48))]


@pytest.mark.parametrize("recipe,over", ORACLE_CASES,
                         ids=["faithful", "plain", "default-elastic", "affine-clean-smoothing", "fixed-order-elastic"])
def test_trainer_equals_a_plain_full_width_loop(small, recipe, over):
    """The pixel reordering and blank-pixel skipping change nothing but float rounding, also
    on distorted images (which ink other pixels than the originals)."""
    X, y = small
    t = Trainer(make_config(recipe, **dict(dict(epochs=2, batch_size=64), **over)), X, y)
    t.run()
    c = t.config
    rng = np.random.Generator(np.random.PCG64(c.seed))
    params = network.init_params(rng)
    opt = network.OPTIMIZERS[c.optimizer](params, momentum=c.momentum)
    train_idx, _ = split_indices(len(y), c.val_fraction, c.val_seed)
    X_raw, yt = X[train_idx], y[train_idx]
    Xn = normalize(X_raw, t.mean, t.std)
    Y = network.one_hot(yt) * (1 - c.label_smoothing) + c.label_smoothing / 10
    ws = network.Workspace(c.batch_size, params)
    block = max(1, AUGMENT_BLOCK // c.batch_size) * c.batch_size  # images distorted per block
    step = 0
    for epoch in range(c.epochs):
        order = rng.permutation(len(yt)) if c.shuffle else np.arange(len(yt))
        if c.augments(epoch):
            key = rng.integers(2**63)
            X_epoch = np.concatenate([normalize(distort(X_raw[order[lo:lo + block]], block_rng(key, j), c.distortion),
                                                t.mean, t.std)
                                      for j, lo in enumerate(range(0, len(yt), block))])
        else:
            X_epoch = Xn[order]
        for lo in range(0, len(yt), c.batch_size):
            rows = order[lo:lo + c.batch_size]
            lr = t.lr_at(step)
            batch = (X_epoch[lo:lo + c.batch_size], Y[rows].astype(np.float32), yt[rows])
            network.loss_and_grads(params, ws, len(rows), opt.grad_scale(lr), batch)
            opt.step(params, ws.grads, lr)
            step += 1
    got = t.params
    for k in network.PARAM_NAMES:
        np.testing.assert_allclose(got[k], params[k], rtol=1e-4, atol=1e-5, err_msg=k)
    saved = t.state()
    for k in opt.state:
        np.testing.assert_allclose(saved["opt_" + k], opt.state[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_augmentation_is_fresh_every_epoch_and_only_when_asked(small):
    """Distorted epochs differ from each other; clean epochs and unaugmented recipes draw nothing extra."""
    X, y = small
    losses = {}
    for name, over in [("plain", {}), ("elastic", dict(elastic_alpha=34.0)),
                       ("clean", dict(elastic_alpha=34.0, clean_epochs=2))]:
        t = Trainer(make_config("plain", epochs=2, lr=1e-9, **over), X, y)  # lr ~0: the loss shows the data
        losses[name] = [m.train_loss for m in t.run()]
    assert losses["clean"] == pytest.approx(losses["plain"], rel=1e-6)
    assert losses["elastic"][0] != pytest.approx(losses["plain"][0], rel=1e-3)
    assert losses["elastic"][0] != pytest.approx(losses["elastic"][1], rel=1e-4)


# ----------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_weights_and_different_seed_differs(small):
    X, y = small
    cfg = make_config("default", epochs=2, seed=11)
    a, b = Trainer(cfg, X, y), Trainer(cfg, X, y)
    ha, hb = a.run(), b.run()
    assert_same_weights(a, b)
    assert history_without_time(ha) == history_without_time(hb)
    c = Trainer(make_config("default", epochs=2, seed=12), X, y)
    c.run()
    assert not any(np.array_equal(a.params[k], c.params[k]) for k in ("W1", "W2"))


# ----------------------------------------------------------------------------- resume

RESUME_CASES = [("faithful", {}), ("plain", {}), ("plain", {"optimizer": "adam", "lr": 0.002}), ("default", {}),
                ("default", dict(shift=2.0, rotate=10.0, scale=0.1, shear=0.1, clean_epochs=1, label_smoothing=0.1,
                                 batch_size=48)),
                ("faithful", {"elastic_alpha": 34.0})]


def resume_config(recipe, over):
    return make_config(recipe, epochs=3, seed=5, **over)


def stop_after(n_batches):
    """(on_batch, should_stop) that stop a run once n_batches batches have finished."""
    count = [0]

    def on_batch(info):
        count[0] += 1

    return on_batch, (lambda: count[0] >= n_batches)


@pytest.mark.parametrize("recipe,over", RESUME_CASES,
                         ids=["sgd", "momentum-cosine", "adam", "elastic", "affine-clean-batch48", "fixed-order-elastic"])
def test_resume_mid_epoch_is_bit_for_bit(small, tmp_path, recipe, over):
    X, y = small
    cfg = resume_config(recipe, over)
    a = Trainer(cfg, X, y)
    a.run()
    assert len(a.history) == 3

    b = Trainer(cfg, X, y)
    stop_at = b.batches_per_epoch + 5  # the 6th batch of epoch 2 has not run yet
    on_batch, should_stop = stop_after(stop_at)
    b.run(on_batch=on_batch, should_stop=should_stop)
    assert not b.done and len(b.history) == 1
    assert (b.pos.epoch, b.pos.batch) == (1, 5)
    ref = str(tmp_path / "state.npz")
    checkpoint.save_state(b.state(), ref)
    del b

    loaded = checkpoint.load_state(ref)
    assert loaded["position"]["epoch"] == 1 and loaded["position"]["batch"] == 5
    seen = []
    c = Trainer(config_from_dict(loaded["config"]), X, y, state=loaded)
    c.run(on_batch=lambda info: seen.append((info.epoch, info.batch)))
    assert seen[0] == (2, 6)  # it carries on where it stopped, not at the epoch start
    assert len(seen) == 3 * c.batches_per_epoch - stop_at
    assert c.done
    assert_same_weights(a, c)
    for k in c.optimizer.state:
        assert np.array_equal(a.optimizer.state[k], c.optimizer.state[k]), k
    assert history_without_time(a.history) == history_without_time(c.history)


def test_resume_from_epoch_boundary_saved_in_on_epoch(small, tmp_path):
    X, y = small
    cfg = resume_config("default", {})
    a = Trainer(cfg, X, y)
    a.run()

    ref = str(tmp_path / "epoch1.npz")
    b = Trainer(cfg, X, y)
    epochs_done = []

    def on_epoch(m):
        epochs_done.append(m.epoch)
        checkpoint.save_state(b.state(), ref)  # the state at the boundary, as train_job does

    b.run(on_epoch=on_epoch, should_stop=lambda: len(epochs_done) >= 1)
    assert epochs_done == [1] and len(b.history) == 1
    loaded = checkpoint.load_state(ref)
    assert (loaded["position"]["epoch"], loaded["position"]["batch"]) == (1, 0)
    c = Trainer(cfg, X, y, state=loaded)
    c.run()
    assert_same_weights(a, c)
    assert history_without_time(a.history) == history_without_time(c.history)


def test_many_interruptions_still_match_uninterrupted(small, tmp_path):
    X, y = small
    cfg = resume_config("default", {})
    a = Trainer(cfg, X, y)
    a.run()
    ref = str(tmp_path / "state.npz")
    t = Trainer(cfg, X, y)
    rounds = 0
    while not t.done:
        on_batch, should_stop = stop_after(7)  # 7 does not divide 12 batches per epoch
        t.run(on_batch=on_batch, should_stop=should_stop)
        checkpoint.save_state(t.state(), ref)
        t = Trainer(cfg, X, y, state=checkpoint.load_state(ref))
        rounds += 1
    assert rounds == math.ceil(3 * t.batches_per_epoch / 7)
    assert_same_weights(a, t)
    assert history_without_time(a.history) == history_without_time(t.history)


# ----------------------------------------------------------------------------- validation split

def identifiable(n):
    """Raw pixels whose first two pixels encode the row number, labels row % 10."""
    X = np.zeros((n, 784), np.uint8)
    X[:, 0] = np.arange(n) % 256
    X[:, 1] = np.arange(n) // 256
    X[:, 2:] = (np.arange(n)[:, None] * 7 + np.arange(782)) % 256
    return X, np.arange(n) % 10


def rows_of(X_rows):
    return (X_rows[:, 0].astype(int) + 256 * X_rows[:, 1].astype(int)).tolist()


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_validation_split_is_fixed_and_sized(fraction):
    n = 1000
    X, y = identifiable(n)
    a = Trainer(make_config("faithful", epochs=1, seed=0, val_fraction=fraction), X, y)
    b = Trainer(make_config("faithful", epochs=1, seed=99, val_fraction=fraction), X, y)
    assert len(a.y_val) == round(n * fraction) and len(a.y_train) == n - round(n * fraction)
    assert np.array_equal(a.X_val, b.X_val) and np.array_equal(a.y_val, b.y_val)
    train_rows = rows_of(a.X_train[:, a.inverse])  # back to the standard pixel order
    assert train_rows == rows_of(b.X_train[:, b.inverse])
    train_idx, val_idx = split_indices(n, fraction, a.config.val_seed)
    assert train_rows == train_idx.tolist()
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(n))  # disjoint, complete
    assert np.array_equal(a.y_val, y[val_idx])
    # another val_seed holds out other rows
    _, other = split_indices(n, fraction, a.config.val_seed + 1)
    assert not np.array_equal(other, val_idx)


def test_no_validation_split():
    X, y = identifiable(300)
    t = Trainer(make_config("faithful", epochs=1, val_fraction=0.0), X, y)
    assert len(t.y_val) == 0 and len(t.y_train) == 300
    history = t.run()
    assert math.isnan(history[0].val_accuracy) and math.isfinite(history[0].train_loss)


# ----------------------------------------------------------------------------- recipes on real data

def test_default_recipe_is_not_worse_than_faithful(sample):
    X, y = sample["train_x"], sample["train_y"]
    assert len(y) == 2500
    faithful = Trainer(make_config("faithful"), X, y)
    default = Trainer(make_config("default"), X, y)
    hf, hd = faithful.run(), default.run()
    assert len(hf) == 10 and len(hd) == RECIPES["default"]["epochs"]
    assert hf[-1].val_accuracy > 0.9
    assert hd[-1].val_accuracy >= hf[-1].val_accuracy, (hd[-1].val_accuracy, hf[-1].val_accuracy)
    y_val, pred = default.validation()
    assert len(y_val) == 250 and (y_val == pred).mean() == pytest.approx(hd[-1].val_accuracy)


# ----------------------------------------------------------------------------- callbacks

def test_callbacks_fire_per_batch_and_per_epoch(small):
    X, y = small
    t = Trainer(make_config("default", epochs=2), X, y)
    bpe = t.batches_per_epoch
    assert bpe == math.ceil(720 / 64) == 12
    batches, epochs = [], []
    history = t.run(on_batch=batches.append, on_epoch=epochs.append)
    assert len(batches) == 2 * bpe
    assert [(b.epoch, b.batch) for b in batches] == [(e, i) for e in (1, 2) for i in range(1, bpe + 1)]
    assert all(b.epochs == 2 and b.batches == bpe for b in batches)
    assert [b.lr for b in batches] == [t.lr_at(s) for s in range(2 * bpe)]
    assert all(math.isfinite(b.loss) and b.loss > 0 for b in batches)
    assert [m.epoch for m in epochs] == [1, 2] and epochs == history
    # the last batch's running loss is the epoch's train loss
    assert batches[bpe - 1].loss == pytest.approx(epochs[0].train_loss)
    assert batches[-1].loss == pytest.approx(epochs[1].train_loss)
    assert all(0 <= m.val_accuracy <= 1 and 0 <= m.train_accuracy <= 1 for m in epochs)


def test_should_stop_before_first_batch_runs_nothing(small):
    X, y = small
    t = Trainer(make_config("faithful", epochs=1), X, y)
    before = {k: v.copy() for k, v in t.params.items()}
    calls = []
    assert t.run(on_batch=calls.append, should_stop=lambda: True) == []
    assert calls == [] and all(np.array_equal(before[k], t.params[k]) for k in before)
