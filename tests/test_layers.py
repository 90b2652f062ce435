"""Layers: finite-difference gradients, accumulation, dtypes, shapes and input errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from dc_engine.core.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dc_engine.core.losses import softmax_cross_entropy
from dc_engine.core.model import Model
from dc_engine.core.zoo import lenet5, lenet_300_100

from _helpers import assert_grad, check_layer_grads, distinct_values, naive_conv, numerical_grad

CONV_COMBOS = [(1, 0), (1, 1), (2, 0), (2, 1), (1, 2), (2, 2), (3, 1)]  # (stride, padding)


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


# ------------------------------------------------------- grouped and unevenly padded conv


@pytest.mark.parametrize("groups,padding,stride", [(2, 0, 1), (2, (1, 0, 2, 1), 1),
                                                   (3, (0, 2, 1, 0), 2), (1, (2, 1, 0, 0), 1)])
def test_conv2d_groups_and_uneven_padding(rng, groups, padding, stride):
    layer = Conv2D(6, 3 * groups, 3, stride=stride, padding=padding, groups=groups, rng=rng,
                   dtype=np.float64)
    assert layer.params["W"].shape == (3 * groups, 6 // groups, 3, 3)
    layer.params["b"][:] = rng.standard_normal(3 * groups)
    x = rng.standard_normal((2, 6, 5, 6))
    want = naive_conv(x, layer.params["W"], layer.params["b"], stride, padding, groups)
    got = layer.forward(x)
    assert got.shape == want.shape == (2, *layer.output_shape((6, 5, 6)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    check_layer_grads(layer, x, rng)
    hp = layer.hyperparameters
    assert hp.get("groups", 1) == groups
    assert hp["padding"] == (padding if isinstance(padding, int) else list(padding)) \
        or hp["padding"] == padding[0]
    again = Conv2D(**hp, params=layer.params)
    np.testing.assert_array_equal(again.forward(x), got)


def test_conv2d_old_hyperparameters_are_unchanged():
    """An ungrouped, evenly padded conv lists exactly the keys files always held."""
    hp = Conv2D(2, 4, 3, stride=2, padding=1).hyperparameters
    assert hp == {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 2,
                  "padding": 1}
    assert Conv2D(2, 4, 3, padding=[1, 1, 1, 1]).hyperparameters["padding"] == 1


@pytest.mark.parametrize("bad, exc", [(dict(groups=3), ValueError), (dict(groups=0), ValueError),
                                      (dict(padding=[1, 2]), ValueError),
                                      (dict(padding=[1, 2, 3, -1]), ValueError),
                                      (dict(padding=1.5), TypeError)])
def test_conv2d_rejects_bad_groups_and_padding(bad, exc):
    with pytest.raises(exc):
        Conv2D(4, 4, 3, **bad)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_compressed_grouped_conv_runs_like_its_decode(rng, groups):
    from dc_engine.runtime import CompressedMatrix

    layer = Conv2D(8, 8, 3, padding=(1, 0, 0, 1), groups=groups, rng=rng)
    w = layer.params["W"]
    w[rng.random(w.shape) < 0.6] = 0.0
    m = CompressedMatrix.from_dense(w.reshape(8, -1), weight_bits=5)
    dense = Conv2D(**layer.hyperparameters, params={"W": m.to_dense().reshape(w.shape),
                                                    "b": layer.params["b"]})
    layer.set_param("W", m)
    x = rng.standard_normal((3, 8, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), dense.forward(x), rtol=1e-5, atol=1e-5)
