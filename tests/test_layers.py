"""Layers: finite-difference gradients, accumulation, dtypes, shapes and input errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from dc_engine.core.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dc_engine.core.losses import softmax_cross_entropy
from dc_engine.core.model import Model
from dc_engine.core.zoo import lenet5, lenet_300_100

EPS = 1e-6
TOL = 1e-6
CONV_COMBOS = [(1, 0), (1, 1), (2, 0), (2, 1), (1, 2), (2, 2), (3, 1)]  # (stride, padding)


# ----------------------------------------------------------------------------- helpers


def numerical_grad(loss, a: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences of the scalar ``loss()`` with respect to ``a`` (perturbed in place)."""
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        up = loss()
        a[idx] = old - eps
        down = loss()
        a[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def rel_error(num: np.ndarray, ana: np.ndarray) -> float:
    num, ana = np.asarray(num), np.asarray(ana)
    assert num.shape == ana.shape
    return float(np.max(np.abs(num - ana))
                 / max(1e-8, np.max(np.abs(num)) + np.max(np.abs(ana))))


def assert_grad(num, ana, what):
    err = rel_error(num, ana)
    assert err < TOL, f"{what}: relative error {err:.3g} >= {TOL}"
    # Guard against comparing two zero arrays: the check must be able to fail.
    assert np.max(np.abs(num)) > 1e-3, f"{what}: gradient is (nearly) zero, check is vacuous"


def check_layer_grads(layer, x, rng, params=("W", "b")):
    """Finite-difference check of dx and every named parameter for L = sum(y * R)."""
    y = layer.forward(x, train=True)
    r = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(r)
    grads = {name: layer.grads[name].copy() for name in params}

    def loss():
        return float(np.sum(layer.forward(x, train=True) * r))

    assert_grad(numerical_grad(loss, x), dx, f"{layer.type_name} dx")
    for name in params:
        assert_grad(numerical_grad(loss, layer.params[name]), grads[name],
                    f"{layer.type_name} d{name}")


def distinct_values(rng, shape, gap=1e-2):
    """A random permutation of evenly spaced values: no ties, neighbours ``gap`` apart."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * gap).reshape(shape)


def naive_conv(x, w, b, stride, padding):
    """Direct cross-correlation with loops (float64)."""
    n, c, h, wd = x.shape
    oc, _, k, _ = w.shape
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    oh = (h + 2 * padding - k) // stride + 1
    ow = (wd + 2 * padding - k) // stride + 1
    y = np.zeros((n, oc, oh, ow))
    for s in range(n):
        for o in range(oc):
            for i in range(oh):
                for j in range(ow):
                    acc = b[o]
                    for ch in range(c):
                        for a in range(k):
                            for bb in range(k):
                                acc += w[o, ch, a, bb] * xp[s, ch, i * stride + a, j * stride + bb]
                    y[s, o, i, j] = acc
    return y


# ----------------------------------------------------------------------------- gradients


def test_dense_gradients(rng):
    layer = Dense(5, 4, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(4)
    check_layer_grads(layer, rng.standard_normal((3, 5)), rng)


@pytest.mark.parametrize("stride,padding", CONV_COMBOS)
def test_conv2d_gradients(rng, stride, padding):
    layer = Conv2D(2, 3, 3, stride=stride, padding=padding, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(3)
    check_layer_grads(layer, rng.standard_normal((2, 2, 6, 5)), rng)


@pytest.mark.parametrize("size,stride", [(2, 2), (2, 1), (3, 2), (3, 3)])
def test_maxpool2d_gradient(rng, size, stride):
    layer = MaxPool2D(size, stride)
    x = distinct_values(rng, (2, 2, 7, 6))
    check_layer_grads(layer, x, rng, params=())


def test_relu_gradient(rng):
    shape = (3, 7)
    x = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)
    assert (x > 0).any() and (x < 0).any()
    check_layer_grads(ReLU(), x, rng, params=())


def test_flatten_gradient(rng):
    layer = Flatten()
    x = rng.standard_normal((2, 3, 2, 2))
    y = layer.forward(x, train=True)
    assert y.shape == (2, 12)
    check_layer_grads(layer, x, rng, params=())


def test_dropout_train_gradient_is_mask_scaling(rng):
    rate, seed = 0.4, 7
    layer = Dropout(rate)
    x = rng.standard_normal((6, 9))
    r = rng.standard_normal(x.shape)
    layer.rng = np.random.default_rng(seed)
    y = layer.forward(x, train=True)
    dx = layer.backward(r)
    scale = (np.random.default_rng(seed).random(x.shape) < 1 - rate) / (1 - rate)
    assert (scale == 0).any() and (scale > 0).any()
    np.testing.assert_allclose(y, x * scale, rtol=1e-15)
    np.testing.assert_allclose(dx, r * scale, rtol=1e-15)

    def loss():  # the same mask on every evaluation
        layer.rng = np.random.default_rng(seed)
        return float(np.sum(layer.forward(x, train=True) * r))

    assert_grad(numerical_grad(loss, x), dx, "Dropout dx")


def test_dropout_eval_is_identity(rng):
    layer = Dropout(0.5)
    x = rng.standard_normal((4, 5))
    r = rng.standard_normal((4, 5))
    y = layer.forward(x, train=False)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(layer.backward(r), r)


def test_softmax_cross_entropy_gradient(rng):
    logits = rng.standard_normal((4, 5)) * 2
    labels = np.array([0, 3, 4, 3])
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert dlogits.shape == logits.shape and dlogits.dtype == np.float64

    def f():
        return softmax_cross_entropy(logits, labels)[0]

    assert_grad(numerical_grad(f, logits), dlogits, "softmax_cross_entropy dlogits")
    # The loss itself, by the definition.
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss, -np.mean(np.log(p[np.arange(4), labels])), rtol=1e-12)


def test_softmax_cross_entropy_large_logits_stay_finite():
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32)
    loss, d = softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.isfinite(d).all()
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)


def _tiny_model(rng, dtype=np.float64):
    return Model([
        Conv2D(1, 2, 3, padding=1, rng=rng, dtype=dtype), MaxPool2D(2),
        Flatten(), Dense(18, 5, rng=rng, dtype=dtype), ReLU(), Dense(5, 3, rng=rng, dtype=dtype),
    ], input_shape=(1, 6, 6), name="tiny")


def test_whole_model_gradients(rng):
    model = _tiny_model(rng)
    for _, name, w in model.parameters():
        if name == "b":
            w[:] = 0.1 * rng.standard_normal(w.shape)
    x = rng.standard_normal((2, 1, 6, 6))

    # Preconditions: no pool ties and no ReLU input near zero, so eps cannot cross a kink.
    conv = model.layers[0].forward(x)
    windows = conv.reshape(2, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
    top2 = np.sort(windows, axis=1)[:, -2:]
    assert np.min(top2[:, 1] - top2[:, 0]) > 1e-4
    hidden = model.layers[3].forward(model.layers[2].forward(model.layers[1].forward(conv)))
    assert np.min(np.abs(hidden)) > 1e-4 and (hidden > 0).any() and (hidden < 0).any()

    r = rng.standard_normal((2, 3))
    model.forward(x, train=True)
    model.zero_grad()
    dx = model.backward(r, input_grad=True)
    grads = {(layer.name, name): layer.grads[name].copy() for layer, name, _ in model.parameters()}

    def loss():
        return float(np.sum(model.forward(x, train=True) * r))

    assert_grad(numerical_grad(loss, x), dx, "model dx")
    for layer, name, w in model.parameters():
        assert_grad(numerical_grad(loss, w), grads[(layer.name, name)], f"{layer.name}.{name}")


def test_model_backward_without_input_grad_returns_none(rng):
    model = _tiny_model(rng)
    model.forward(rng.standard_normal((2, 1, 6, 6)), train=True)
    assert model.backward(rng.standard_normal((2, 3))) is None


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("make", [
    lambda rng: (Dense(4, 3, rng=rng, dtype=np.float64), (2, 4)),
    lambda rng: (Conv2D(2, 3, 3, stride=2, padding=1, rng=rng, dtype=np.float64), (2, 2, 5, 5)),
], ids=["Dense", "Conv2D"])
def test_backward_adds_into_grads(rng, make):
    layer, shape = make(rng)
    y = layer.forward(rng.standard_normal(shape), train=True)
    r = rng.standard_normal(y.shape)
    layer.zero_grad()
    layer.backward(r)
    once = {k: g.copy() for k, g in layer.grads.items()}
    layer.backward(r)
    for k, g in layer.grads.items():
        assert np.abs(once[k]).max() > 0
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-14)
    layer.zero_grad()
    for g in layer.grads.values():
        np.testing.assert_array_equal(g, 0)


def _layers_f64(rng):
    return [
        (Dense(6, 4, rng=rng, dtype=np.float64), (3, 6)),
        (Conv2D(2, 3, 3, stride=2, padding=1, rng=rng, dtype=np.float64), (2, 2, 7, 7)),
        (MaxPool2D(2), (2, 2, 6, 6)),
        (ReLU(), (3, 5)),
        (Flatten(), (2, 3, 4)),
        (Dropout(0.3), (3, 5)),
    ]


def test_float32_forward_matches_float64(rng):
    for layer64, shape in _layers_f64(rng):
        for w in layer64.params.values():
            w += 0.1 * rng.standard_normal(w.shape)
        layer32 = copy.deepcopy(layer64).astype(np.float32)
        x = rng.standard_normal(shape)
        y64 = layer64.forward(x)
        y32 = layer32.forward(x.astype(np.float32))
        assert y32.dtype == np.float32, layer64.type_name
        assert y64.dtype == np.float64, layer64.type_name
        np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5 * np.abs(y64).max(),
                                   err_msg=layer64.type_name)


def test_model_float32_forward_matches_float64(rng):
    model64 = _tiny_model(rng)
    model32 = copy.deepcopy(model64).astype(np.float32)
    x = rng.standard_normal((3, 1, 6, 6))
    y64 = model64.forward(x)
    y32 = model32.forward(x.astype(np.float32))
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5 * np.abs(y64).max())


@pytest.mark.parametrize("stride,padding", CONV_COMBOS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_conv2d_forward_equals_naive(rng, stride, padding, k):
    layer = Conv2D(2, 3, k, stride=stride, padding=padding, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 6, 5))
    want = naive_conv(x, layer.params["W"], layer.params["b"], stride, padding)
    got = layer.forward(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_output_shapes_and_dtypes_float32(rng):
    x64 = rng.standard_normal((2, 3, 8, 7))
    conv = Conv2D(3, 4, 3, stride=2, padding=1, rng=rng)
    y = conv.forward(x64, train=True)  # float64 input converted to the layer's float32
    assert y.shape == (2, 4, 4, 4) and y.dtype == np.float32
    assert conv.output_shape((3, 8, 7)) == (4, 4, 4)
    dx = conv.backward(np.ones(y.shape, dtype=np.float32))
    assert dx.shape == x64.shape and dx.dtype == np.float32
    for name, w in conv.params.items():
        assert conv.grads[name].shape == w.shape and conv.grads[name].dtype == np.float32

    pool = MaxPool2D(2)
    yp = pool.forward(y, train=True)
    assert yp.shape == (2, 4, 2, 2) and yp.dtype == np.float32
    assert pool.output_shape((4, 4, 4)) == (4, 2, 2)
    dxp = pool.backward(np.ones(yp.shape, dtype=np.float32))
    assert dxp.shape == y.shape and dxp.dtype == np.float32

    flat = Flatten()
    yf = flat.forward(yp, train=True)
    assert yf.shape == (2, 16) and flat.output_shape((4, 2, 2)) == (16,)

    dense = Dense(16, 5, rng=rng)
    yd = dense.forward(yf, train=True)
    assert yd.shape == (2, 5) and yd.dtype == np.float32
    dxd = dense.backward(np.ones((2, 5), dtype=np.float32))
    assert dxd.shape == (2, 16) and dxd.dtype == np.float32

    relu = ReLU()
    yr = relu.forward(yd, train=True)
    assert yr.dtype == np.float32 and yr.shape == yd.shape
    assert relu.backward(np.ones((2, 5), dtype=np.float32)).dtype == np.float32


def test_conv2d_output_is_c_contiguous(rng):
    # layers.py promises "also makes it NCHW-contiguous" after adding the bias.
    y = Conv2D(3, 4, 3, rng=rng).forward(rng.standard_normal((2, 3, 6, 6)))
    assert y.flags.c_contiguous


def test_model_output_shape_and_predict(rng):
    model = _tiny_model(rng, dtype=np.float32)
    assert model.output_shape() == (3,)
    x = rng.standard_normal((5, 1, 6, 6)).astype(np.float32)
    classes = model.predict(x, batch_size=2)  # predict: class indices; forward: logits
    assert classes.shape == (5,) and classes.dtype == np.int64
    np.testing.assert_array_equal(classes, np.argmax(model.forward(x), axis=1))
    assert model.predict(x[:0]).shape == (0,)
    for bad, exc in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError),
                     ("8", TypeError)):
        with pytest.raises(exc, match="batch_size"):
            model.predict(x, batch_size=bad)


def test_model_forward_empty_batch(rng):
    model = _tiny_model(rng, dtype=np.float32)
    y = model.forward(np.zeros((0, 1, 6, 6), dtype=np.float32))
    assert y.shape == (0, 3) and y.dtype == np.float32


# ----------------------------------------------------------------------------- errors


def test_dense_rejects_bad_inputs(rng):
    layer = Dense(4, 3, rng=rng)
    with pytest.raises(ValueError, match="2-D"):
        layer.forward(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="4 input features"):
        layer.forward(np.zeros((2, 5)))


def test_conv2d_rejects_bad_inputs(rng):
    layer = Conv2D(2, 3, 3, rng=rng)
    with pytest.raises(ValueError, match="4-D"):
        layer.forward(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="2 input channels"):
        layer.forward(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="does not fit"):
        layer.forward(np.zeros((1, 2, 2, 5)))


def test_maxpool2d_rejects_bad_inputs():
    layer = MaxPool2D(3)
    with pytest.raises(ValueError, match="4-D"):
        layer.forward(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="does not fit"):
        layer.forward(np.zeros((1, 1, 2, 5)))


@pytest.mark.parametrize("build, exc", [
    (lambda: Dense(0, 3), ValueError),
    (lambda: Dense(3, 2.5), TypeError),
    (lambda: Conv2D(1, 2, 3, stride=0), ValueError),
    (lambda: Conv2D(1, 2, 3, padding=-1), ValueError),
    (lambda: Conv2D(1, 2, True), TypeError),
    (lambda: MaxPool2D(0), ValueError),
    (lambda: Dropout(1.0), ValueError),
    (lambda: Dropout(-0.1), ValueError),
])
def test_layer_constructors_reject_bad_hyperparameters(build, exc):
    with pytest.raises(exc):
        build()


def test_backward_before_forward_raises(rng):
    with pytest.raises(RuntimeError, match="forward"):
        Dense(3, 2, rng=rng).backward(np.zeros((1, 2)))


def test_softmax_cross_entropy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


def test_model_rejects_wrong_input_shape(rng):
    model = _tiny_model(rng)
    with pytest.raises(ValueError, match="expected input of shape"):
        model.forward(np.zeros((2, 1, 7, 6)))
    with pytest.raises(ValueError, match="expected input of shape"):
        model.forward(np.zeros((1, 6, 6)))


def test_model_rejects_layers_that_do_not_chain(rng):
    convs = [Conv2D(1, 20, 5, rng=rng), MaxPool2D(2), Conv2D(20, 50, 5, rng=rng), MaxPool2D(2),
             Flatten()]  # 50 * 4 * 4 = 800 features
    with pytest.raises(ValueError, match="784"):
        Model(convs + [Dense(784, 10, rng=rng)], input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="input_shape|channels|expects"):
        Model([Conv2D(1, 4, 3, rng=rng), Conv2D(3, 2, 3, rng=rng)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="duplicate"):
        Model([ReLU(name="a"), ReLU(name="a")], input_shape=(3,))
    # The chaining version is accepted.
    assert Model(convs + [Dense(800, 10, rng=rng)], input_shape=(1, 28, 28)).output_shape() == (10,)


# ----------------------------------------------------------------------------- zoo


def test_zoo_parameter_counts():
    assert lenet5().num_params() == 431080
    assert lenet_300_100().num_params() == 266610


def test_zoo_forward_shapes(rng):
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    for make in (lenet5, lenet_300_100):
        y = make().forward(x)
        assert y.shape == (2, 10) and y.dtype == np.float32
