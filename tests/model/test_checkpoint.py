"""Model and training-state files: round trips, no pickle ever, clear errors naming the file."""
import io
import json
import os
import struct
import uuid
import zipfile

import numpy as np
import pytest

from model import checkpoint, network, storage
from model.errors import CheckpointError
from model.train import Trainer, make_config

UNPICKLED = []


def _record(tag):
    UNPICKLED.append(tag)
    return tag


class Trap:
    """Unpickling this object appends to UNPICKLED: proof that pickle ran."""

    def __reduce__(self):
        return (_record, ("trap was unpickled",))


def make(seed=0, **meta):
    rng = np.random.default_rng(seed)
    params = network.init_params(rng)
    mean = rng.random(784).astype(np.float32) * 50
    std = rng.random(784).astype(np.float32) + 1
    return checkpoint.make_model(params, mean, std, **meta)


def test_model_round_trip(tmp_path):
    m = make(1, recipe="faithful", metrics={"val_accuracy": 0.95}, data_fingerprint="abc")
    ref = str(tmp_path / "models" / "m.npz")  # parent folders are created
    checkpoint.save_model(m, ref)
    back = checkpoint.load_model(ref)
    for k in network.PARAM_NAMES:
        assert back.params[k].dtype == m.params[k].dtype
        assert np.array_equal(back.params[k], m.params[k]), k
    assert np.array_equal(back.mean, m.mean) and np.array_equal(back.std, m.std)
    assert back.meta == m.meta
    assert back.meta["recipe"] == "faithful" and back.meta["metrics"] == {"val_accuracy": 0.95}
    assert back.meta["architecture"] == {"n_in": 784, "n_hidden": 128, "n_out": 10,
                                         "activation": "relu", "output": "softmax"}
    assert back.version == m.version == checkpoint.weights_version(dict(back.params, mean=back.mean,
                                                                        std=back.std))
    X = np.random.default_rng(0).integers(0, 256, (20, 784)).astype(np.uint8)
    assert np.array_equal(back.predict_proba(X), m.predict_proba(X))


def test_version_is_stable_and_content_addressed(tmp_path):
    a, b = make(3), make(3)
    assert a.version == b.version and len(a.version) == 16
    assert make(4).version != a.version
    ref = str(tmp_path / "m.npz")
    checkpoint.save_model(a, ref)
    checkpoint.save_model(checkpoint.load_model(ref), ref)  # save what was loaded: same version
    assert checkpoint.load_model(ref).version == a.version


def test_predict_returns_labels_and_confidence():
    m = make(5)
    X = np.random.default_rng(1).integers(0, 256, (7, 784)).astype(np.uint8)
    labels, conf = m.predict(X)
    P = m.predict_proba(X)
    assert labels.tolist() == P.argmax(axis=1).tolist()
    # predict folds the z-score into W1 and b1, so it rounds differently from the plain
    # path; random pixels give logits in the hundreds, hence float32 rounding near 1e-4
    assert np.allclose(conf, P.max(axis=1), rtol=0, atol=2e-4) and ((0 < conf) & (conf <= 1)).all()


def test_folded_predict_equals_the_plain_path_on_real_digits():
    """The fast path (z-score folded into W1/b1, float32, blocks of PREDICT_BATCH rows)
    against the plain one (normalize, then the network) on the bundled MNIST sample:
    the same labels, probabilities equal up to float rounding, also across block edges."""
    from model.data.samples import load_sample
    s = load_sample()
    t = Trainer(make_config("faithful", epochs=1), s["train_x"], s["train_y"])
    t.run()
    m = checkpoint.make_model(t.params, t.mean, t.std)
    X = np.concatenate([s["test_x"], s["train_x"]])[:checkpoint.PREDICT_BATCH * 2 + 37]  # a partial last block
    P = m.predict_proba(X)
    labels, conf = m.predict(X)
    assert labels.tolist() == P.argmax(axis=1).tolist()
    assert np.allclose(conf, P.max(axis=1), rtol=1e-5, atol=1e-6)
    for bs in (1, 100):  # the block size changes nothing but speed
        lab_b, conf_b = m.predict(X[:300], batch=bs)
        assert lab_b.tolist() == labels[:300].tolist() and np.allclose(conf_b, conf[:300], rtol=1e-6)
    W1f, b1f = m.folded()
    z = (X[:50] - m.mean.astype(np.float64)) / m.std.astype(np.float64)  # (50, 784) z-scored
    Z = z @ t.params["W1"] + t.params["b1"]  # (50, H) the unfolded first layer
    assert np.allclose(X[:50].astype(np.float64) @ W1f + b1f, Z, rtol=1e-4, atol=1e-3)
    assert m.predict(X[:0])[0].shape == (0,)


def test_memory_url_round_trip():
    m = make(2)
    ref = f"memory://ckpt-{uuid.uuid4().hex}/m.npz"
    checkpoint.save_model(m, ref)
    assert checkpoint.load_model(ref).version == m.version


def _npz_with_object_array(meta, **extra):
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **extra)  # savez pickles object arrays
    return buf.getvalue()


def test_object_array_is_refused_not_unpickled(tmp_path):
    good = make(0)
    arrays = dict(good.params, mean=good.mean, std=good.std)
    arrays["W1"] = np.array([Trap(), Trap()], dtype=object)
    ref = tmp_path / "evil.npz"
    ref.write_bytes(_npz_with_object_array(good.meta, **arrays))
    UNPICKLED.clear()
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_model(str(ref))
    assert str(ref) in str(e.value)
    assert UNPICKLED == []
    # the file really carries a pickled object array (read its header, never its payload)
    with zipfile.ZipFile(ref) as zf, zf.open("W1.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(f)
    assert dtype.hasobject


def test_object_array_in_state_file_is_refused(tmp_path):
    meta = {"format": checkpoint.STATE_FORMAT, "position": {}, "history": [], "config": {}, "extra": {}}
    ref = tmp_path / "evil-state.npz"
    ref.write_bytes(_npz_with_object_array(meta, W1=np.array([Trap()], dtype=object)))
    UNPICKLED.clear()
    with pytest.raises(CheckpointError, match="evil-state.npz"):
        checkpoint.load_state(str(ref))
    assert UNPICKLED == []


def test_object_meta_is_refused(tmp_path):
    ref = tmp_path / "evil-meta.npz"
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([Trap()], dtype=object))
    ref.write_bytes(buf.getvalue())
    UNPICKLED.clear()
    with pytest.raises(CheckpointError, match="evil-meta.npz"):
        checkpoint.load_model(str(ref))
    assert UNPICKLED == []


def test_missing_file(tmp_path):
    ref = str(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="nope.npz") as e:
        checkpoint.load_model(ref)
    assert ref in str(e.value) and "no such" in str(e.value)
    with pytest.raises(CheckpointError, match="nope.npz"):
        checkpoint.load_state(ref)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04garbage" * 10])
def test_corrupt_file(tmp_path, content):
    ref = tmp_path / "bad.npz"
    ref.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_model(str(ref))
    assert str(ref) in str(e.value)


def test_truncated_file(tmp_path):
    ref = tmp_path / "m.npz"
    checkpoint.save_model(make(0), str(ref))
    raw = ref.read_bytes()
    ref.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_model(str(ref))
    assert str(ref) in str(e.value)


def test_wrong_format(tmp_path):
    model_ref = str(tmp_path / "m.npz")
    checkpoint.save_model(make(0), model_ref)
    with pytest.raises(CheckpointError, match="not a training-state file") as e:
        checkpoint.load_state(model_ref)
    assert model_ref in str(e.value)

    t = Trainer(make_config("faithful", epochs=1), np.zeros((10, 784), np.uint8), np.arange(10) % 10)
    state_ref = str(tmp_path / "s.npz")
    checkpoint.save_state(t.state(), state_ref)
    with pytest.raises(CheckpointError, match="not a model file") as e:
        checkpoint.load_model(state_ref)
    assert state_ref in str(e.value)

    plain = tmp_path / "plain.npz"
    np.savez(plain, W1=np.zeros(3))  # a valid npz without metadata
    with pytest.raises(CheckpointError, match="no metadata") as e:
        checkpoint.load_model(str(plain))
    assert str(plain) in str(e.value)

    notjson = tmp_path / "notjson.npz"
    np.savez(notjson, meta=np.array("{not json"))
    with pytest.raises(CheckpointError, match="notjson.npz"):
        checkpoint.load_model(str(notjson))


def test_inconsistent_shapes_are_refused(tmp_path):
    m = make(0)
    m.params["W2"] = np.zeros((128, 9), np.float32)  # architecture still says 10 outputs
    ref = str(tmp_path / "m.npz")
    checkpoint.save_model(m, ref)
    with pytest.raises(CheckpointError, match="W2") as e:
        checkpoint.load_model(ref)
    assert ref in str(e.value)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_state_round_trip(tmp_path, optimizer):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (300, 784)).astype(np.uint8)
    y = rng.integers(0, 10, 300)
    t = Trainer(make_config("default", epochs=2, optimizer=optimizer, seed=2**70 + 3), X, y)
    done = []
    t.run(on_batch=done.append, should_stop=lambda: len(done) >= t.batches_per_epoch + 2)
    state = t.state()
    rng_state = state["position"]["rng_state"]
    assert rng_state["state"]["state"] > 2**64  # a 128-bit integer: must survive JSON exactly
    ref = str(tmp_path / "state.npz")
    checkpoint.save_state(state, ref)
    back = checkpoint.load_state(ref)
    assert back["position"] == state["position"]
    assert back["position"]["rng_state"] == rng_state
    assert back["history"] == state["history"] and len(back["history"]) == 1
    assert back["config"] == state["config"]
    arrays = [k for k, v in state.items() if isinstance(v, np.ndarray)]
    opt_keys = [k for k in arrays if k.startswith("opt_")]
    assert len(opt_keys) == {"sgd": 0, "momentum": 4, "adam": 9}[optimizer]
    for k in arrays:
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]), k
    if optimizer == "adam":
        assert int(back["opt_t"]) == t.batches_per_epoch + 2
    # the restored RNG continues with the same numbers
    g1 = np.random.Generator(np.random.PCG64())
    g1.bit_generator.state = rng_state
    g2 = np.random.Generator(np.random.PCG64())
    g2.bit_generator.state = back["position"]["rng_state"]
    assert np.array_equal(g1.integers(0, 2**62, 10), g2.integers(0, 2**62, 10))


def test_state_extra_is_kept(tmp_path):
    t = Trainer(make_config("faithful", epochs=1), np.zeros((10, 784), np.uint8), np.arange(10) % 10)
    state = t.state()
    state["extra"] = {"job_id": "abc", "data_fingerprint": "f" * 64}
    ref = str(tmp_path / "s.npz")
    checkpoint.save_state(state, ref)
    assert checkpoint.load_state(ref)["extra"] == state["extra"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_saving_is_atomic_on_failure(tmp_path, monkeypatch):
    ref = str(tmp_path / "m.npz")
    first = make(0)
    checkpoint.save_model(first, ref)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        checkpoint.save_model(make(1), ref)
    monkeypatch.undo()
    assert checkpoint.load_model(ref).version == first.version
    assert os.listdir(tmp_path) == ["m.npz"]


def test_storage_helpers_used_for_reads(tmp_path):
    ref = str(tmp_path / "m.npz")
    checkpoint.save_model(make(0), ref)
    assert storage.read_bytes(ref)[:2] == b"PK"  # a plain zip archive (npz), no pickle header


def _overwrite_compressed_member(path, member, garbage):
    """Overwrite the start of one member's deflate stream inside a valid .npz (zip) file."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    off = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[off + 26:off + 30])
    start = off + 30 + name_len + extra_len
    raw[start:start + len(garbage)] = garbage
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("loader", ["load_model", "load_state"])
def test_damaged_compressed_data_is_a_checkpoint_error(tmp_path, loader):
    ref = tmp_path / "m.npz"
    checkpoint.save_model(make(0), str(ref))
    _overwrite_compressed_member(ref, "W1.npy", b"\xff" * 64)  # deflate block type 3: invalid
    with pytest.raises(CheckpointError) as e:
        getattr(checkpoint, loader)(str(ref))
    assert str(ref) in str(e.value)


@pytest.mark.parametrize("meta,loader", [
    ([1, 2], "load_model"),
    ({"format": checkpoint.FORMAT}, "load_model"),
    ({"format": checkpoint.FORMAT, "architecture": {"n_in": 784}}, "load_model"),
    ({"format": checkpoint.STATE_FORMAT}, "load_state"),
], ids=["meta-list", "no-architecture", "partial-architecture", "state-no-position"])
def test_malformed_metadata_is_a_checkpoint_error(tmp_path, meta, loader):
    m = make(0)
    ref = tmp_path / "m.npz"
    np.savez(ref, meta=np.array(json.dumps(meta)), **m.params, mean=m.mean, std=m.std)
    with pytest.raises(CheckpointError) as e:
        getattr(checkpoint, loader)(str(ref))
    assert str(ref) in str(e.value)


# ----------------------------------------------------------------------------- validated on load

def _save_arrays(ref, model, **replace):
    arrays = dict(model.params, mean=model.mean, std=model.std)
    arrays.update(replace)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(model.meta)), **arrays)
    ref.write_bytes(buf.getvalue())


@pytest.mark.parametrize("name,bad,reason", [
    ("W1", lambda a: a.astype("U8"), "W1 holds <U8 values, not floating point"),
    ("b1", lambda a: a.astype(np.int64), "b1 holds int64 values, not floating point"),
    ("W2", lambda a: a.astype(bool), "W2 holds bool values, not floating point"),
    ("b2", lambda a: np.full_like(a, np.nan), "b2 holds NaN or infinite values"),
    ("mean", lambda a: np.full_like(a, np.inf), "mean holds NaN or infinite values"),
    ("std", lambda a: np.zeros_like(a), "std holds values <= 0"),
])
def test_right_shapes_wrong_values_are_not_a_model(tmp_path, name, bad, reason):
    good = make(1)
    arrays = dict(good.params, mean=good.mean, std=good.std)
    ref = tmp_path / "m.npz"
    _save_arrays(ref, good, **{name: bad(arrays[name])})
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_model(str(ref))
    assert str(e.value) == f"not a digits model file: {ref}: {reason}"


@pytest.mark.parametrize("content", [b"label,pixel0\n1,2\n", b"\x93NUMPY\x01\x00garbage", b"",
                                     b"PK\x03\x04 not really a zip"])
def test_other_files_as_model_never_mention_pickle(tmp_path, content):
    ref = tmp_path / "test.csv"
    ref.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_model(str(ref))
    text = str(e.value)
    assert text.startswith(f"not a digits model file: {ref}: ") and "pickle" not in text.lower()


def test_an_oversized_array_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_MEMBER_BYTES", 10_000)  # the metadata fits, W1 does not
    ref = tmp_path / "m.npz"
    checkpoint.save_model(make(2), ref)
    with pytest.raises(CheckpointError, match="W1 is .* bytes, over the limit"):
        checkpoint.load_model(str(ref))
