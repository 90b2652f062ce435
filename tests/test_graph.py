"""Graph models: layers wired by named tensors (residual adds, concatenations), their forward
and backward (a tensor read twice gets the sum of both gradients), files of both kinds, the
compressed runtime, and wiring errors."""

from __future__ import annotations

import numpy as np
import pytest

import dc_engine
from dc_engine.core.layers import (
    Add,
    AvgPool2D,
    BatchNorm2D,
    Concat,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Softmax,
)
from dc_engine.core.model import INPUT, Model
from dc_engine.stages.encode import encode_model
from dc_engine.stages.quantize import share_layer

from _helpers import assert_grad, numerical_grad


def residual_net(rng, dtype=np.float64) -> Model:
    """conv -> relu -> conv -> add(conv, relu) -> relu -> gap -> flatten -> dense: the input of
    the first ReLU's output is read twice (the second conv and the residual add)."""
    return Model([
        Conv2D(2, 4, 3, padding=1, rng=rng, dtype=dtype, name="c1"), ReLU(name="r1"),
        Conv2D(4, 4, 3, padding=(1, 1, 1, 1), rng=rng, dtype=dtype, name="c2"),
        Add(name="add", inputs=["c2", "r1"]), ReLU(name="r2"),
        GlobalAvgPool2D(name="gap"), Flatten(name="flat"),
        Dense(4, 3, rng=rng, dtype=dtype, name="fc"),
    ], input_shape=(2, 5, 5), name="resnet-tiny")


def fire_net(rng, dtype=np.float64) -> Model:
    """A SqueezeNet fire module: squeeze 1x1, then expand 1x1 and 3x3 side by side, concat."""
    return Model([
        Conv2D(3, 2, 1, rng=rng, dtype=dtype, name="squeeze"), ReLU(name="sr"),
        Conv2D(2, 3, 1, rng=rng, dtype=dtype, name="e1", inputs=["sr"]),
        Conv2D(2, 3, 3, padding=1, rng=rng, dtype=dtype, name="e3", inputs=["sr"]),
        Concat(name="cat", inputs=["e1", "e3"]), ReLU(name="cr"),
        MaxPool2D(2, ceil_mode=True, name="pool"), AvgPool2D(2, name="avg"),
        Flatten(name="flat"), Dense(6, 4, rng=rng, dtype=dtype, name="fc"),
        Softmax(name="prob"),
    ], input_shape=(3, 5, 5), name="fire-tiny")


def _model_grads(model, x, rng):
    """Analytic gradients of L = sum(forward(x) * r) w.r.t. x and every parameter, and L."""
    y = model.forward(x, train=True)
    r = rng.standard_normal(y.shape)
    model.zero_grad()
    dx = model.backward(r, input_grad=True)
    grads = {(l.name, k): l.grads[k].copy() for l, k, _ in model.parameters()}

    def loss():
        return float(np.sum(model.forward(x, train=True) * r))

    return dx, grads, loss


@pytest.mark.parametrize("build", [residual_net, fire_net])
def test_graph_gradients_against_finite_differences(build, rng):
    model = build(rng)
    for layer in model.weighted_layers():
        layer.params["b"][:] = rng.standard_normal(layer.params["b"].shape)
    assert not model.sequential
    x = rng.standard_normal((2, *model.input_shape)) + 0.5
    dx, grads, loss = _model_grads(model, x, rng)
    assert_grad(numerical_grad(loss, x), dx, f"{model.name} dx")
    for layer, k, w in model.parameters():
        assert_grad(numerical_grad(loss, w), grads[(layer.name, k)], f"{layer.name}.{k}")


def test_a_tensor_read_twice_gets_both_gradients(rng):
    """y = relu(x) + relu(x) through an Add of one tensor with itself: dy/dx doubles."""
    model = Model([ReLU(name="r"), Add(name="twice", inputs=["r", "r"])], input_shape=(4,))
    x = np.array([[1.0, -2.0, 3.0, 0.5]])
    np.testing.assert_array_equal(model.forward(x), 2 * np.maximum(x, 0))
    model.forward(x, train=True)
    dx = model.backward(np.ones((1, 4)), input_grad=True)
    np.testing.assert_array_equal(dx, [[2.0, 0.0, 2.0, 2.0]])


def test_wiring_and_output(rng):
    model = residual_net(rng)
    w = model.wiring()
    assert [ins for _, ins in w.steps][:4] == [(INPUT,), ("c1",), ("r1",), ("c2", "r1")]
    assert w.output == "fc" and model.output_shape() == (3,)
    side = Model(residual_net(rng).layers, (2, 5, 5), output="r2")  # an inner tensor out
    assert side.output_shape() == (4, 5, 5)
    x = rng.standard_normal((1, 2, 5, 5))
    assert side.forward(x).shape == (1, 4, 5, 5)
    assert "add" in repr(model) and "<- c2, r1" in repr(model)


@pytest.mark.parametrize("layers, match", [
    ([ReLU(name="a", inputs=["nope"])], r"reads \['nope'\]"),
    ([ReLU(name="a", inputs=["b"]), ReLU(name="b")], r"reads \['b'\]"),  # a forward reference
    ([ReLU(name="a"), ReLU(name="b", inputs=["a", "a"])], "takes one input"),
    ([ReLU(name="a"), Add(name="s", inputs=["a"])], "two or more inputs"),
    ([ReLU(name="input")], "no layer may be named 'input'"),
])
def test_bad_wiring_is_refused(layers, match):
    with pytest.raises(ValueError, match=match):
        Model(layers, input_shape=(3,))


def test_bad_output_and_inputs_types():
    with pytest.raises(ValueError, match="output 'zz' names no tensor"):
        Model([ReLU(name="a")], (3,), output="zz")
    with pytest.raises(TypeError, match="list of tensor names"):
        ReLU(inputs="a")
    with pytest.raises(ValueError, match="at least one"):
        ReLU(inputs=[])
    with pytest.raises(ValueError, match="differ only in their channel"):
        Model([Conv2D(1, 2, 1, name="a"), Conv2D(1, 2, 3, name="b", inputs=[INPUT]),
               Concat(name="c", inputs=["a", "b"])], (1, 4, 4))


def test_changing_inputs_after_a_forward_rewires(rng):
    model = residual_net(rng)
    x = rng.standard_normal((2, 2, 5, 5))
    before = model.forward(x)
    model["add"].inputs = ["c2", "c2"]  # the residual now adds c2 to itself
    after = model.forward(x)
    assert not np.allclose(before, after)
    model["add"].inputs = ["c2", "r1"]
    np.testing.assert_array_equal(model.forward(x), before)


def test_softmax_output_trains_on_logits(rng):
    """fit and evaluate use the logits (the input of a terminal Softmax): the loss falls."""
    from dc_engine.core.train import TrainConfig, evaluate, fit

    model = fire_net(rng, np.float32)
    view = model.logits_model()
    assert view is not model and view.output == "fc" and "prob" not in [l.name for l in view.layers]
    assert model.logits_model().layers[0] is model.layers[0]  # the same layers, not copies
    x = rng.random((64, 3, 5, 5), dtype=np.float32)
    y = (x[:, 0, 2, 2] > 0.5).astype(np.int64)
    before = evaluate(model, x, y)["loss"]
    fit(model, x, y, TrainConfig(epochs=30, batch_size=16, lr=0.1, lr_policy="fixed"),
        progress=False)
    assert evaluate(model, x, y)["loss"] < 0.7 * before
    p = model.forward(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("build", [residual_net, fire_net])
def test_graph_models_in_dense_files(build, rng, tmp_path):
    model = build(rng, np.float32)
    model.layers.insert(1, BatchNorm2D(model.layers[0].out_channels, name="bn"))
    model = Model(model.layers, model.input_shape, model.name, output=model.output)
    model["bn"].params["scale"][:] = rng.random(model["bn"].params["scale"].shape) + 0.5
    path = dc_engine.save(model, tmp_path / "g.h5")
    import h5py
    with h5py.File(path) as f:
        assert f.attrs["version"] == 3
    back = dc_engine.load(path)
    assert [(l.name, l.inputs) for l in back.layers] == [(l.name, l.inputs) for l in model.layers]
    x = rng.random((3, *model.input_shape), dtype=np.float32)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


@pytest.mark.parametrize("build", [residual_net, fire_net])
def test_graph_models_compressed(build, rng, tmp_path):
    """Quantize and encode a graph model: the compressed file (container version 2) loads as
    the same wiring, runs like the quantized model, and saves back byte for byte."""
    model = build(rng, np.float32)
    for layer in model.weighted_layers():
        w = layer.params["W"]
        w[rng.random(w.shape) < 0.5] = 0.0
        share_layer(layer, 4)
    compressed = encode_model(model)
    path = dc_engine.save(compressed, tmp_path / "g.dc.h5")
    from dc_engine.io.compressed import read
    assert read(path).version == 2
    back = dc_engine.load(path)
    assert back.compressed and not back.sequential
    assert [l.inputs for l in back.layers] == [l.inputs for l in model.layers]
    x = rng.random((4, *model.input_shape), dtype=np.float32)
    want = model.forward(x)
    np.testing.assert_allclose(back.forward(x), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(back.forward(x[:1]), want[:1], rtol=1e-4, atol=1e-5)
    assert dc_engine.save(back, tmp_path / "again.dc.h5").read_bytes() == path.read_bytes()
    np.testing.assert_array_equal(back.to_dense().forward(x), back.to_dense().forward(x))
