"""Pooling layers (MaxPool2D with padding and ceil mode, AvgPool2D, GlobalAvgPool2D):
finite-difference gradients, PyTorch and onnxruntime as oracles, a NumPy loop for uneven
padding, hyperparameters, dtypes and argument errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dc_engine.core.layers import hyperparameter_names
from dc_engine.core.layers.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D

from _helpers import check_layer_grads, distinct_values

# (size, stride, padding, ceil_mode) on a 7x6 input: unpadded (the fast path), symmetric and
# uneven padding, ceil mode adding a partial window, stride larger than the window, padding
# as large as allowed (size - 1).
WINDOWS = [
    (2, 2, 0, False), (3, 2, 0, False), (2, 2, 0, True), (3, 2, 1, False), (3, 2, 1, True),
    (3, 1, [2, 0, 1, 2], True), (2, 3, 1, False), (3, 3, [0, 1, 2, 0], True),
    (3, 2, 2, True), (4, 2, [1, 3, 0, 2], True),
]
# Symmetric padding of at most size // 2, as torch allows.
TORCH_WINDOWS = [
    (2, 2, 0, False), (2, 2, 0, True), (3, 2, 1, False), (3, 2, 1, True), (3, 3, 1, True),
    (2, 1, 1, True), (4, 2, 2, True), (2, 3, 1, True), (5, 5, 0, True), (1, 2, 0, True),
]


def _pool_layers():
    """One layer of each kind and setting, with an input shape it fits."""
    return [
        (MaxPool2D(2), (2, 3, 6, 6)),
        (MaxPool2D(3, 2, padding=[1, 0, 2, 1], ceil_mode=True), (2, 2, 7, 5)),
        (AvgPool2D(2), (2, 3, 6, 6)),
        (AvgPool2D(3, 2, padding=1, ceil_mode=True, count_include_pad=True), (1, 2, 6, 7)),
        (AvgPool2D(3, 1, padding=[0, 2, 1, 0]), (2, 1, 5, 5)),
        (GlobalAvgPool2D(), (2, 3, 4, 5)),
    ]


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("size,stride,padding,ceil_mode", WINDOWS)
def test_maxpool2d_gradient(rng, size, stride, padding, ceil_mode):
    layer = MaxPool2D(size, stride, padding=padding, ceil_mode=ceil_mode)
    x = distinct_values(rng, (2, 2, 7, 6))  # no ties: eps cannot cross a kink
    check_layer_grads(layer, x, rng, params=())


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("size,stride,padding,ceil_mode", WINDOWS)
def test_avgpool2d_gradient(rng, size, stride, padding, ceil_mode, count_include_pad):
    layer = AvgPool2D(size, stride, padding=padding, ceil_mode=ceil_mode,
                      count_include_pad=count_include_pad)
    check_layer_grads(layer, rng.standard_normal((2, 2, 7, 6)), rng, params=())


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 1, 6)])
def test_global_avgpool2d_gradient(rng, shape):
    check_layer_grads(GlobalAvgPool2D(), rng.standard_normal(shape), rng, params=())


# ------------------------------------------------------------------------ torch as oracle


def _torch_pool(kind, x, size, stride, padding, ceil_mode, count_include_pad=False):
    """torch's pooling of ``x`` (float64) and its input gradient for L = sum(y * r)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    if kind == "max":
        yt = F.max_pool2d(xt, size, stride, padding, ceil_mode=ceil_mode)
    else:
        yt = F.avg_pool2d(xt, size, stride, padding, ceil_mode=ceil_mode,
                          count_include_pad=count_include_pad)
    r = np.random.default_rng(1).standard_normal(tuple(yt.shape))
    (yt * torch.tensor(r)).sum().backward()
    return yt.detach().numpy(), r, xt.grad.numpy()


@pytest.mark.parametrize("size,stride,padding,ceil_mode", TORCH_WINDOWS)
def test_maxpool2d_equals_torch(rng, size, stride, padding, ceil_mode):
    x = distinct_values(rng, (2, 3, 7, 8))
    want, r, dx_want = _torch_pool("max", x, size, stride, padding, ceil_mode)
    layer = MaxPool2D(size, stride, padding=padding, ceil_mode=ceil_mode)
    y = layer.forward(x, train=True)
    assert y.shape == want.shape == (2, *layer.output_shape((3, 7, 8)))
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(layer.backward(r), dx_want)
    y32 = layer.forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_array_equal(y32, want.astype(np.float32))


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("size,stride,padding,ceil_mode", TORCH_WINDOWS)
def test_avgpool2d_equals_torch(rng, size, stride, padding, ceil_mode, count_include_pad):
    x = rng.standard_normal((2, 3, 7, 8))
    want, r, dx_want = _torch_pool("avg", x, size, stride, padding, ceil_mode,
                                   count_include_pad)
    layer = AvgPool2D(size, stride, padding=padding, ceil_mode=ceil_mode,
                      count_include_pad=count_include_pad)
    y = layer.forward(x, train=True)
    assert y.shape == want.shape == (2, *layer.output_shape((3, 7, 8)))
    np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.backward(r), dx_want, rtol=1e-13, atol=1e-14)
    y32 = layer.forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, want, rtol=1e-6, atol=1e-6)


def test_global_avgpool2d_equals_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 5, 6))
    want = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), 1).numpy()
    y = GlobalAvgPool2D().forward(x)
    assert y.shape == want.shape == (3, 4, 1, 1)
    np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-15)


# ------------------------------------------- uneven padding: a NumPy loop and onnxruntime


def _out_size(n, k, s, lo, hi, ceil_mode):
    """Windows along one axis (PyTorch's pooling_output_shape, with uneven padding)."""
    out = (n + lo + hi - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + lo:
        out -= 1
    return out


def naive_pool(x, kind, size, stride, pads, ceil_mode, count_include_pad=False):
    """Pooling by loops over every window and position (float64), ONNX semantics: padding
    never wins a max; an average divides by the input positions in the window or, counting
    padding, by the window positions inside the padded input."""
    n, c, h, w = x.shape
    top, left, bottom, right = pads
    oh = _out_size(h, size, stride, top, bottom, ceil_mode)
    ow = _out_size(w, size, stride, left, right, ceil_mode)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            cells, padded = [], 0
            for a in range(size):
                for b in range(size):
                    r, q = i * stride - top + a, j * stride - left + b
                    if 0 <= r < h and 0 <= q < w:
                        cells.append(x[:, :, r, q])
                    elif -top <= r < h + bottom and -left <= q < w + right:
                        padded += 1
            vals = np.stack(cells, axis=-1)
            if kind == "max":
                y[:, :, i, j] = vals.max(axis=-1)
            else:
                div = len(cells) + (padded if count_include_pad else 0)
                y[:, :, i, j] = vals.sum(axis=-1) / div
    return y


UNEVEN = [
    (3, 2, (1, 0, 2, 1), True), (3, 1, (0, 2, 1, 0), False), (2, 2, (1, 1, 0, 0), True),
    (4, 3, (3, 0, 1, 2), True), (3, 2, (2, 2, 2, 2), True), (2, 3, (0, 1, 1, 0), True),
]


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("size,stride,pads,ceil_mode", UNEVEN)
def test_uneven_padding_equals_naive_loop(rng, size, stride, pads, ceil_mode,
                                          count_include_pad):
    x = rng.standard_normal((2, 2, 7, 6))
    mp = MaxPool2D(size, stride, padding=list(pads), ceil_mode=ceil_mode)
    np.testing.assert_array_equal(mp.forward(x), naive_pool(x, "max", size, stride, pads,
                                                            ceil_mode))
    ap = AvgPool2D(size, stride, padding=list(pads), ceil_mode=ceil_mode,
                   count_include_pad=count_include_pad)
    np.testing.assert_allclose(ap.forward(x), naive_pool(x, "avg", size, stride, pads,
                                                         ceil_mode, count_include_pad),
                               rtol=1e-13, atol=1e-14)


def _onnx_run(op, x, **attrs):
    """Run a one-node ONNX model (input "x", output "y") on onnxruntime's CPU provider."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ONNX shape inference disagrees on some ceil-mode sizes
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("size,stride,pads,ceil_mode", UNEVEN + [(3, 2, (1, 1, 1, 1), False)])
def test_equals_onnxruntime(rng, size, stride, pads, ceil_mode, count_include_pad):
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    attrs = {"kernel_shape": [size, size], "strides": [stride, stride], "pads": list(pads),
             "ceil_mode": int(ceil_mode)}
    want = _onnx_run("MaxPool", x, **attrs)
    got = MaxPool2D(size, stride, padding=list(pads), ceil_mode=ceil_mode).forward(x)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    want = _onnx_run("AveragePool", x, count_include_pad=int(count_include_pad), **attrs)
    got = AvgPool2D(size, stride, padding=list(pads), ceil_mode=ceil_mode,
                    count_include_pad=count_include_pad).forward(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_global_avgpool2d_equals_onnxruntime(rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    want = _onnx_run("GlobalAveragePool", x)
    got = GlobalAvgPool2D().forward(x)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_maxpool2d_padding_never_wins():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: a zero pad would win
    y = MaxPool2D(2, 2, padding=1).forward(x)
    np.testing.assert_array_equal(y.ravel(), [-1.0, -2.0, -4.0, -5.0])


def test_maxpool2d_ceil_mode_adds_a_partial_window(rng):
    x = distinct_values(rng, (2, 2, 7, 7))
    floor = MaxPool2D(2).forward(x)
    ceil = MaxPool2D(2, ceil_mode=True).forward(x)
    assert floor.shape == (2, 2, 3, 3) and ceil.shape == (2, 2, 4, 4)
    np.testing.assert_array_equal(ceil[:, :, :3, :3], floor)
    np.testing.assert_array_equal(ceil[:, :, 3, 3], x[:, :, 6, 6])  # a 1x1 window


# ------------------------------------------------------------- hyperparameters and dtypes


def test_maxpool2d_old_hyperparameters_are_unchanged():
    """Unpadded, floor-mode max pooling lists exactly the keys files always held."""
    assert MaxPool2D(2).hyperparameters == {"size": 2, "stride": 2}
    assert MaxPool2D(3, 2).hyperparameters == {"size": 3, "stride": 2}
    assert MaxPool2D(2, padding=0, ceil_mode=False).hyperparameters == {"size": 2, "stride": 2}
    assert MaxPool2D(3, padding=[1, 1, 1, 1], ceil_mode=True).hyperparameters == {
        "size": 3, "stride": 3, "padding": 1, "ceil_mode": True}
    assert MaxPool2D(3, 1, padding=[0, 1, 2, 0]).hyperparameters == {
        "size": 3, "stride": 1, "padding": [0, 1, 2, 0]}


def test_avgpool2d_hyperparameters_list_only_what_is_not_default():
    assert AvgPool2D(2).hyperparameters == {"size": 2, "stride": 2}
    assert AvgPool2D(3, 1, count_include_pad=True).hyperparameters == {
        "size": 3, "stride": 1, "count_include_pad": True}
    assert AvgPool2D(3, 2, [1, 0, 2, 1], True, True).hyperparameters == {
        "size": 3, "stride": 2, "padding": [1, 0, 2, 1], "ceil_mode": True,
        "count_include_pad": True}
    assert GlobalAvgPool2D().hyperparameters == {}


@pytest.mark.parametrize("index", range(len(_pool_layers())))
def test_hyperparameters_round_trip(rng, index):
    layer, shape = _pool_layers()[index]
    hp = json.loads(json.dumps(layer.hyperparameters))  # what a file stores
    assert set(hp) <= set(hyperparameter_names(type(layer)))
    assert type(layer).param_shapes(**hp) == {}
    again = type(layer)(**hp)
    assert again.hyperparameters == layer.hyperparameters
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))
    assert repr(again) == repr(layer)


@pytest.mark.parametrize("index", range(len(_pool_layers())))
def test_dtypes_shapes_and_empty_batch(rng, index):
    layer, shape = _pool_layers()[index]
    assert not layer.params and layer.weight_name is None
    for dtype, out in ((np.float32, np.float32), (np.float64, np.float64),
                       (np.int64, np.float32), (np.uint8, np.float32)):
        x = (rng.standard_normal(shape) * 10).astype(dtype)
        y = layer.forward(x, train=True)
        assert y.dtype == out and y.shape == (shape[0], *layer.output_shape(shape[1:]))
        assert y.flags.c_contiguous
        dx = layer.backward(np.ones(y.shape, dtype=np.float64))
        assert dx.dtype == out and dx.shape == shape
        assert layer.backward(np.ones(y.shape), need_dx=False) is None
    y = layer.forward(np.zeros((0, *shape[1:])), train=True)
    assert y.shape == (0, *layer.output_shape(shape[1:]))
    assert layer.backward(y).shape == (0, *shape[1:])


@pytest.mark.parametrize("index", range(len(_pool_layers())))
def test_backward_needs_a_training_forward_and_the_output_shape(rng, index):
    layer, shape = _pool_layers()[index]
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((1, 1, 1, 1)))
    y = layer.forward(rng.standard_normal(shape))  # train=False keeps nothing
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(y)
    y = layer.forward(rng.standard_normal(shape), train=True)
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.zeros((y.shape[0] + 1, *y.shape[1:])))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"size": 0}, ValueError, "size"),
    ({"size": 2.5}, TypeError, "size"),
    ({"size": True}, TypeError, "size"),
    ({"size": "2"}, TypeError, "size"),
    ({"size": 2, "stride": 0}, ValueError, "stride"),
    ({"size": 2, "stride": 1.0}, TypeError, "stride"),
    ({"size": 3, "padding": -1}, ValueError, "padding"),
    ({"size": 3, "padding": 1.5}, TypeError, "padding"),
    ({"size": 3, "padding": [1, 1]}, ValueError, "padding"),
    ({"size": 3, "padding": [0, 0, 0, -1]}, ValueError, "padding"),
    ({"size": 2, "padding": 2}, ValueError, "smaller than size"),
    ({"size": 3, "padding": [0, 0, 3, 0]}, ValueError, "smaller than size"),
    ({"size": 2, "ceil_mode": 1}, TypeError, "ceil_mode"),
    ({"size": 2, "ceil_mode": "yes"}, TypeError, "ceil_mode"),
])
def test_constructors_reject_bad_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("bad, exc", [(1, TypeError), (None, TypeError), ("true", TypeError)])
def test_avgpool2d_rejects_bad_count_include_pad(bad, exc):
    with pytest.raises(exc, match="count_include_pad"):
        AvgPool2D(2, count_include_pad=bad)
    assert AvgPool2D(2, count_include_pad=np.True_).count_include_pad is True


@pytest.mark.parametrize("layer", [MaxPool2D(3), AvgPool2D(3, padding=1, ceil_mode=True),
                                   GlobalAvgPool2D()], ids=lambda layer: layer.type_name)
def test_layers_reject_inputs_that_do_not_fit(layer):
    with pytest.raises(ValueError, match="4-D"):
        layer.forward(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        layer.output_shape((5, 5))
    with pytest.raises(ValueError, match="does not fit|non-empty"):
        layer.forward(np.zeros((1, 1, 0, 5)))
    with pytest.raises(ValueError, match="does not fit|non-empty"):
        layer.output_shape((1, 5, 0))


def test_window_larger_than_padded_input_is_rejected():
    layer = MaxPool2D(4, padding=[1, 0, 0, 0])
    assert layer.output_shape((2, 3, 4)) == (2, 1, 1)
    with pytest.raises(ValueError, match="does not fit a 2x4 input"):
        layer.output_shape((2, 2, 4))
    with pytest.raises(ValueError, match="does not fit"):
        AvgPool2D(4).forward(np.zeros((1, 1, 3, 5)))
