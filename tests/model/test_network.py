"""The network math against independent oracles: central differences, hand-computed updates."""
import numpy as np
import pytest

from model import network


def make_batch(rng, params, n, batch_size=None):
    """A Workspace of batch_size rows with n random inputs and labels loaded."""
    ws = network.Workspace(batch_size or n, params)
    n_in = params["W1"].shape[0]
    n_out = params["W2"].shape[1]
    X = rng.standard_normal((n, n_in))  # (n, n_in) like z-scored pixels
    labels = rng.integers(0, n_out, n)
    ws.X[:n] = X
    ws.labels[:n] = labels
    ws.Y[:n] = network.one_hot(labels, n_out, dtype=ws.Y.dtype)
    return ws, X, labels


def summed_loss(params, ws, n):
    """The summed loss at the current params (grads are overwritten and ignored)."""
    loss, _ = network.loss_and_grads(params, ws, n)
    return loss


def test_gradient_check_against_central_differences():
    rng = np.random.default_rng(1234)
    params = network.init_params(rng, dtype=np.float64)
    # non-zero biases so that their gradients are exercised away from the init point
    params["b1"] += rng.standard_normal(params["b1"].shape) * 0.1
    params["b2"] += rng.standard_normal(params["b2"].shape) * 0.1
    n = 8
    ws, _, _ = make_batch(rng, params, n)
    loss, _ = network.loss_and_grads(params, ws, n, scale=1.0)
    analytic = {k: g.copy() for k, g in ws.grads.items()}
    h = 1e-6
    checked = {}
    for name, p in params.items():
        flat_g = analytic[name].reshape(-1)
        # sample coordinates with a gradient clearly above round-off (dead ReLU units
        # have exactly zero gradient; those are checked separately below)
        live = np.flatnonzero(np.abs(flat_g) > 1e-6)
        assert live.size > 0, name
        coords = rng.choice(live, size=min(40, live.size), replace=False)
        flat_p = p.reshape(-1)
        worst = 0.0
        for c in coords:
            old = flat_p[c]
            flat_p[c] = old + h
            up = summed_loss(params, ws, n)
            flat_p[c] = old - h
            down = summed_loss(params, ws, n)
            flat_p[c] = old
            numeric = (up - down) / (2 * h) / n  # d(mean loss)/dparam
            rel = abs(numeric - flat_g[c]) / max(abs(numeric) + abs(flat_g[c]), 1e-12)
            worst = max(worst, rel)
        checked[name] = worst
        assert worst < 1e-5, f"{name}: worst relative error {worst:.3g}"
    assert set(checked) == set(network.PARAM_NAMES)
    # the restored params reproduce the original loss exactly
    assert summed_loss(params, ws, n) == loss


def test_zero_gradients_of_dead_units_are_really_zero():
    rng = np.random.default_rng(7)
    params = network.init_params(rng, n_in=12, n_hidden=16, n_out=4, dtype=np.float64)
    params["b1"][:4] = -100.0  # units 0..3 never fire
    ws, _, _ = make_batch(rng, params, 6)
    network.loss_and_grads(params, ws, 6)
    assert np.all(ws.grads["W1"][:, :4] == 0) and np.all(ws.grads["b1"][:4] == 0)
    assert np.all(ws.grads["W2"][:4] == 0)
    h = 1e-6
    for j in range(4):
        old = params["W1"][0, j]
        params["W1"][0, j] = old + h
        up = summed_loss(params, ws, 6)
        params["W1"][0, j] = old - h
        down = summed_loss(params, ws, 6)
        params["W1"][0, j] = old
        assert up == down


def test_loss_is_summed_and_gradients_scale_linearly():
    rng = np.random.default_rng(3)
    params = network.init_params(rng, dtype=np.float64)
    n = 10
    ws, X, labels = make_batch(rng, params, n)
    loss, correct = network.loss_and_grads(params, ws, n, scale=1.0)
    g1 = {k: v.copy() for k, v in ws.grads.items()}
    P = network.forward(params, X)  # independent forward pass
    assert loss == pytest.approx(n * network.cross_entropy(P, network.one_hot(labels, dtype=np.float64)),
                                 rel=1e-12)
    assert correct == int((P.argmax(axis=1) == labels).sum())
    network.loss_and_grads(params, ws, n, scale=0.25)
    for k in network.PARAM_NAMES:
        np.testing.assert_allclose(ws.grads[k], 0.25 * g1[k], rtol=1e-12, atol=1e-15)


def test_short_last_batch_uses_only_its_rows():
    rng = np.random.default_rng(5)
    params = network.init_params(rng, dtype=np.float64)
    full, _, _ = make_batch(rng, params, 16)
    exact = network.Workspace(5, params)
    exact.X[:] = full.X[:5]
    exact.Y[:] = full.Y[:5]
    exact.labels[:] = full.labels[:5]
    full.X[5:] = 1e6  # garbage after the first 5 rows must not matter
    got = network.loss_and_grads(params, full, 5)
    want = network.loss_and_grads(params, exact, 5)
    assert got == want
    for k in network.PARAM_NAMES:
        np.testing.assert_array_equal(full.grads[k], exact.grads[k])


@pytest.mark.parametrize("k", [0, 5, 12])
def test_skipping_blank_columns_gives_the_full_products_result(k):
    rng = np.random.default_rng(7)
    params = network.init_params(rng, n_in=12, n_hidden=16, n_out=4, dtype=np.float64)
    params["b1"][:] = rng.standard_normal(16) * 0.1
    n = 9
    ws, X, _ = make_batch(rng, params, n)
    t = rng.standard_normal(12)  # (12,) the value each blank column holds
    ws.X[:n, k:] = t[k:]
    full_loss, full_correct = network.loss_and_grads(params, ws, n, scale=0.5)
    full = {name: g.copy() for name, g in ws.grads.items()}
    for g in ws.grads.values():
        g[...] = np.nan  # every gradient entry must be written again
    loss, correct = network.loss_and_grads(params, ws, n, scale=0.5, blank=(k, t))
    assert loss == pytest.approx(full_loss, rel=1e-12) and correct == full_correct
    for name in network.PARAM_NAMES:
        np.testing.assert_allclose(ws.grads[name], full[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_init_params_shapes_dtypes_and_he_scale():
    rng = np.random.default_rng(0)
    p = network.init_params(rng)
    assert {k: v.shape for k, v in p.items()} == {"W1": (784, 128), "b1": (128,), "W2": (128, 10), "b2": (10,)}
    assert all(v.dtype == np.float32 for v in p.values())
    assert not p["b1"].any() and not p["b2"].any()
    assert p["W1"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.05)
    assert p["W2"].std() == pytest.approx(np.sqrt(2 / 128), rel=0.1)
    again = network.init_params(np.random.default_rng(0))
    assert all(np.array_equal(p[k], again[k]) for k in p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows_sum_to_one(dtype):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((50, 10)).astype(dtype) * 5
    ref = np.exp(Z.astype(np.float64))
    ref /= ref.sum(axis=1, keepdims=True)
    P = network.softmax_(Z.copy())
    assert P.dtype == dtype
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(P, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7)
    assert (P >= 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_huge_logits(dtype):
    Z = np.array([[1e4, 1e4, -1e4, 0.0],
                  [3e38 if dtype == np.float32 else 1e300, 0.0, 0.0, 0.0],
                  [-1e4, -1e4, -1e4, -1e4],
                  [1000.0, 999.0, 0.0, -1000.0]], dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        P = network.softmax_(Z.copy())
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(P[0], [0.5, 0.5, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(P[1], [1.0, 0.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(P[2], [0.25] * 4, rtol=1e-6)
    e = np.exp(-1.0)
    np.testing.assert_allclose(P[3, :2], [1 / (1 + e), e / (1 + e)], rtol=1e-5)


def test_softmax_in_place_and_shift_invariant():
    Z = np.array([[1.0, 2.0, 3.0]])
    out = network.softmax_(Z)
    assert out is Z
    np.testing.assert_allclose(network.softmax_(np.array([[101.0, 102.0, 103.0]])), out, rtol=1e-12)


def test_one_hot():
    Y = network.one_hot(np.array([3, 0, 9, 3]))
    assert Y.shape == (4, 10) and Y.dtype == np.float32
    assert Y.sum() == 4 and (Y.sum(axis=1) == 1).all()
    assert Y.argmax(axis=1).tolist() == [3, 0, 9, 3]
    Y3 = network.one_hot([2, 1], n_out=3, dtype=np.float64)
    assert Y3.dtype == np.float64
    np.testing.assert_array_equal(Y3, [[0, 0, 1], [0, 1, 0]])
    assert network.one_hot(np.array([], np.int64)).shape == (0, 10)


def test_cross_entropy_matches_definition():
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    Y = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert network.cross_entropy(P, Y) == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2)


def tiny_problem(seed=0, n=96, n_in=20, n_out=3):
    """Linearly separable blobs, float64 params with a small hidden layer."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_out, n_in)) * 2
    labels = rng.integers(0, n_out, n)
    X = centers[labels] + rng.standard_normal((n, n_in)) * 0.5
    params = network.init_params(rng, n_in=n_in, n_hidden=16, n_out=n_out, dtype=np.float64)
    ws = network.Workspace(n, params)
    ws.X[:] = X
    ws.labels[:] = labels
    ws.Y[:] = network.one_hot(labels, n_out, np.float64)
    return params, ws


@pytest.mark.parametrize("name,lr", [("sgd", 0.1), ("momentum", 0.05), ("adam", 0.01)])
def test_each_optimizer_decreases_the_loss(name, lr):
    params, ws = tiny_problem()
    opt = network.OPTIMIZERS[name](params)
    n = ws.batch_size
    losses = []
    for _ in range(60):
        loss, correct = network.loss_and_grads(params, ws, n, opt.grad_scale(lr))
        opt.step(params, ws.grads, lr)
        losses.append(loss / n)
    final, acc = network.loss_and_grads(params, ws, n)
    assert final / n < 0.5 * losses[0], (name, losses[0], final / n)
    assert acc >= 0.95 * n
    assert np.isfinite([p for v in params.values() for p in v.ravel()]).all()


def test_sgd_step_is_lr_times_mean_gradient():
    params, ws = tiny_problem(1)
    n = ws.batch_size
    network.loss_and_grads(params, ws, n, 1.0)
    g = {k: v.copy() for k, v in ws.grads.items()}
    before = {k: v.copy() for k, v in params.items()}
    opt = network.SGD(params)
    network.loss_and_grads(params, ws, n, opt.grad_scale(0.3))
    opt.step(params, ws.grads, 0.3)
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.3 * g[k], rtol=1e-12, atol=1e-15)


def test_momentum_steps_match_hand_computation():
    params, ws = tiny_problem(2)
    n, lr, mu = ws.batch_size, 0.05, 0.9
    opt = network.Momentum(params, momentum=mu)
    p_ref = {k: v.copy() for k, v in params.items()}
    v_ref = {k: np.zeros_like(v) for k, v in params.items()}
    for _ in range(3):
        # the gradient at the reference point, computed on a copy of the workspace
        ref_ws = network.Workspace(n, p_ref)
        ref_ws.X[:], ref_ws.Y[:], ref_ws.labels[:] = ws.X, ws.Y, ws.labels
        network.loss_and_grads(p_ref, ref_ws, n, 1.0)
        for k in p_ref:
            v_ref[k] = mu * v_ref[k] + ref_ws.grads[k]
            p_ref[k] = p_ref[k] - lr * v_ref[k]
        network.loss_and_grads(params, ws, n, opt.grad_scale(lr))
        opt.step(params, ws.grads, lr)
    for k in params:
        np.testing.assert_allclose(params[k], p_ref[k], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(opt.state[f"v_{k}"], v_ref[k], rtol=1e-10, atol=1e-13)


def test_adam_first_step_moves_each_weight_by_lr_against_its_gradient():
    params, ws = tiny_problem(3)
    n, lr = ws.batch_size, 0.01
    opt = network.Adam(params)
    before = {k: v.copy() for k, v in params.items()}
    network.loss_and_grads(params, ws, n, opt.grad_scale(lr))
    g = {k: v.copy() for k, v in ws.grads.items()}
    opt.step(params, ws.grads, lr)
    assert int(opt.state["t"]) == 1
    for k in params:
        big = np.abs(g[k]) > 1e-3  # where eps is negligible, the bias-corrected step is lr*sign(g)
        step = before[k] - params[k]
        np.testing.assert_allclose(step[big], lr * np.sign(g[k][big]), rtol=1e-3)
