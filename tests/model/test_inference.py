"""model.inference: prediction apart from the trainer (loading a model imports no trainer)."""
import subprocess
import sys

import numpy as np

from model import inference, network


def test_loading_a_model_imports_no_trainer():
    code = ("import sys, model.checkpoint, model.registry.versions; "
            "print(sorted(m for m in sys.modules if m in ('model.train', 'model.augment')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_evaluate_and_confusion_against_a_plain_loop():
    rng = np.random.default_rng(0)
    params = network.init_params(rng)
    Xn = rng.standard_normal((50, 784)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    got = inference.evaluate(params, Xn, y)
    P = np.stack([network.forward(params, Xn[i:i + 1])[0] for i in range(50)])  # one row at a time
    np.testing.assert_allclose(inference.predict_proba(params, Xn, batch=7), P, rtol=1e-5, atol=1e-7)
    assert got["accuracy"] == float((P.argmax(1) == y).mean())
    cm = inference.confusion_matrix(y, got["pred"])
    assert cm.sum() == 50 and all(cm[t, p] >= 1 for t, p in zip(y, got["pred"]))
    assert np.trace(cm) == int((got["pred"] == y).sum())


def test_trainer_uses_the_same_functions():
    from model import train
    assert train.normalize is inference.normalize and train.evaluate is inference.evaluate
