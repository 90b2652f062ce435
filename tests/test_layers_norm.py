"""LocalResponseNorm, BatchNorm2D (with fold_batchnorm and fold_into_conv) and Softmax:
finite-difference gradients, dtypes, oracles (onnxruntime, the ONNX reference evaluator and
PyTorch, each skipped when absent), hyperparameter round trips and argument errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dc_engine.core.layers import Conv2D, hyperparameter_names
from dc_engine.core.layers.activation import Softmax
from dc_engine.core.layers.norm import (
    BatchNorm2D,
    LocalResponseNorm,
    fold_batchnorm,
    fold_into_conv,
)

from _helpers import check_layer_grads, rel_error

LRN_SIZES = [1, 2, 3, 4, 5, 6, 9]  # odd and even; 9 reaches past every edge of 5 channels
LRN_SETTINGS = [(0.8, 0.75, 1.5), (2.0, 0.5, 1.0), (1e-4, 0.75, 2.0)]  # (alpha, beta, k)


def away_from_zero(rng, shape, low=0.5, high=1.5):
    """Random values of either sign with magnitude in [low, high)."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def lrn_by_definition(x, size, alpha, beta, k):
    """The ONNX LRN formula, loop by loop over channels (float64)."""
    x = np.asarray(x, dtype=np.float64)
    c_count = x.shape[1]
    y = np.empty_like(x)
    for c in range(c_count):
        lo = max(0, c - (size - 1) // 2)
        hi = min(c_count - 1, c + -(-(size - 1) // 2))  # ceil((size - 1) / 2)
        square_sum = np.sum(x[:, lo:hi + 1] ** 2, axis=1)
        y[:, c] = x[:, c] / (k + alpha / size * square_sum) ** beta
    return y


def onnx_model(node, shape, opset=13):
    """A one-node float32 ONNX model with input "x" and output "y" of ``shape``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what every onnxruntime since 1.10 reads
    onnx.checker.check_model(model)
    return model


def lrn_node(size, alpha, beta, k):
    pytest.importorskip("onnx")
    from onnx import helper

    return helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=k)


# ------------------------------------------------------------------ LocalResponseNorm


@pytest.mark.parametrize("size", LRN_SIZES)
@pytest.mark.parametrize("alpha,beta,k", LRN_SETTINGS[:2])
def test_lrn_gradient(rng, size, alpha, beta, k):
    layer = LocalResponseNorm(size, alpha, beta, k)
    x = away_from_zero(rng, (2, 5, 3, 4))
    check_layer_grads(layer, x, rng, params=())


@pytest.mark.parametrize("size", [2, 3, 5])
def test_lrn_gradient_has_cross_channel_terms(rng, size):
    """The checked dx differs clearly from the per-element part ``dy * d ** -beta``: a backward
    that dropped the terms through the neighbours' square sums would fail the check above."""
    layer = LocalResponseNorm(size, 0.8, 0.75, 1.5)
    x = away_from_zero(rng, (2, 5, 3, 4))
    y = layer.forward(x, train=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    per_element = dy * y / x
    assert rel_error(per_element, dx) > 0.05


@pytest.mark.parametrize("size", LRN_SIZES)
@pytest.mark.parametrize("alpha,beta,k", LRN_SETTINGS)
def test_lrn_forward_equals_definition(rng, size, alpha, beta, k):
    x = rng.standard_normal((2, 5, 3, 4))
    got = LocalResponseNorm(size, alpha, beta, k).forward(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    np.testing.assert_allclose(got, lrn_by_definition(x, size, alpha, beta, k), rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("size", LRN_SIZES)
@pytest.mark.parametrize("alpha,beta,k", LRN_SETTINGS)
def test_lrn_matches_onnxruntime(rng, size, alpha, beta, k):
    ort = pytest.importorskip("onnxruntime")
    x = (3 * rng.standard_normal((2, 5, 4, 3))).astype(np.float32)
    model = onnx_model(lrn_node(size, alpha, beta, k), x.shape)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the even-size refusal below is expected, not logged
    try:
        sess = ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's CPU kernel enforces an odd size
        if size % 2 == 0 and "size_ % 2 == 1" in str(e):
            pytest.skip("onnxruntime's CPU LRN rejects an even size (the reference evaluator "
                        "test covers it)")
        raise
    want = sess.run(None, {"x": x})[0]
    got = LocalResponseNorm(size, alpha, beta, k).forward(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("size", LRN_SIZES)
def test_lrn_matches_onnx_reference_evaluator(rng, size):
    """ONNX's own reference implementation, for even sizes too. onnx <= 1.23 loops over the
    batch axis where it means channels (onnx/onnx#7805, fixed by #8331): with N == C both the
    buggy and the fixed evaluator compute the spec."""
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    alpha, beta, k = 0.8, 0.75, 1.5
    x = (2 * rng.standard_normal((5, 5, 3, 4))).astype(np.float32)
    want = ReferenceEvaluator(onnx_model(lrn_node(size, alpha, beta, k), x.shape)).run(
        None, {"x": x})[0]
    got = LocalResponseNorm(size, alpha, beta, k).forward(x)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("size", LRN_SIZES)
def test_lrn_against_torch(rng, size):
    """Odd sizes: equal to torch. Even sizes: torch puts the window's extra channel before c,
    ONNX after it, so torch equals this layer on the channel-reversed input, reversed back."""
    torch = pytest.importorskip("torch")
    alpha, beta, k = 0.8, 0.75, 1.5
    x = 2 * rng.standard_normal((2, 6, 3, 4))
    layer = LocalResponseNorm(size, alpha, beta, k)
    want = torch.nn.functional.local_response_norm(torch.from_numpy(x), size, alpha, beta,
                                                   k).numpy()
    got = layer.forward(x)
    mirrored = layer.forward(np.ascontiguousarray(x[:, ::-1]))[:, ::-1]
    if size % 2:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    elif size < 2 * x.shape[1]:  # (a window over every channel makes no difference)
        assert np.max(np.abs(got - want)) > 1e-2  # the documented difference is real
    np.testing.assert_allclose(mirrored, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_backward_matches_torch_autograd(rng, size):
    torch = pytest.importorskip("torch")
    alpha, beta, k = 0.8, 0.75, 1.5
    x = away_from_zero(rng, (2, 6, 3, 4))
    dy = rng.standard_normal(x.shape)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    torch.nn.functional.local_response_norm(xt, size, alpha, beta, k).backward(
        torch.from_numpy(dy))
    layer = LocalResponseNorm(size, alpha, beta, k)
    layer.forward(x, train=True)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-11, atol=1e-13)


def test_lrn_dtypes_and_cache(rng):
    layer = LocalResponseNorm(3, 0.5, 0.75, 1.0)
    x64 = rng.standard_normal((2, 4, 3, 3))
    y64 = layer.forward(x64)
    assert layer._cache is None  # nothing kept at inference
    y32 = layer.forward(x64.astype(np.float32), train=True)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6)
    dx32 = layer.backward(np.ones(y32.shape, dtype=np.float32))
    assert dx32.dtype == np.float32 and dx32.shape == x64.shape
    assert layer.backward(np.ones(y32.shape, dtype=np.float32), need_dx=False) is None
    xi = rng.integers(-3, 4, (1, 4, 2, 2))
    assert layer.forward(xi).dtype == np.float32


def test_lrn_hyperparameters_round_trip(rng):
    layer = LocalResponseNorm(4, alpha=0.3, beta=0.6, k=2.0)
    hp = layer.hyperparameters
    assert hp == {"size": 4, "alpha": 0.3, "beta": 0.6, "k": 2.0}
    assert json.loads(json.dumps(hp)) == hp
    assert hyperparameter_names(LocalResponseNorm) == ("size", "alpha", "beta", "k")
    assert LocalResponseNorm.param_shapes(**hp) == {} and layer.weight_name is None
    x = rng.standard_normal((2, 5, 2, 3))
    np.testing.assert_array_equal(type(layer)(**hp).forward(x), layer.forward(x))
    defaults = LocalResponseNorm(5).hyperparameters
    assert defaults == {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}


@pytest.mark.parametrize("kwargs, exc, what", [
    (dict(size=0), ValueError, "size"),
    (dict(size=-3), ValueError, "size"),
    (dict(size=2.5), TypeError, "size"),
    (dict(size=True), TypeError, "size"),
    (dict(size="5"), TypeError, "size"),
    (dict(size=5, alpha=-1e-4), ValueError, "alpha"),
    (dict(size=5, alpha="0.1"), TypeError, "alpha"),
    (dict(size=5, alpha=float("nan")), ValueError, "alpha"),
    (dict(size=5, beta=-0.75), ValueError, "beta"),
    (dict(size=5, beta=None), TypeError, "beta"),
    (dict(size=5, beta=float("inf")), ValueError, "beta"),
    (dict(size=5, k=-1.0), ValueError, "k"),
    (dict(size=5, k=0.0), ValueError, "k"),
    (dict(size=5, k=[1.0]), TypeError, "k"),
])
def test_lrn_rejects_bad_arguments(kwargs, exc, what):
    with pytest.raises(exc, match=rf"\b{what}\b"):
        LocalResponseNorm(**kwargs)


def test_lrn_shapes_and_input_errors():
    layer = LocalResponseNorm(3, name="norm1")
    assert layer.output_shape((4, 5, 6)) == (4, 5, 6)
    for bad in [(4, 5), (4,), (1, 4, 5, 6)]:
        with pytest.raises(ValueError, match="norm1.*C, H, W"):
            layer.output_shape(bad)
    with pytest.raises(ValueError, match="4-D"):
        layer.forward(np.zeros((4, 5, 6)))
    with pytest.raises(RuntimeError, match="forward"):
        LocalResponseNorm(3).backward(np.zeros((1, 2, 2, 2)))


# ------------------------------------------------------------------------ BatchNorm2D


def random_bn(rng, channels, dtype=np.float64):
    return BatchNorm2D(channels, params={"scale": rng.uniform(0.5, 2.0, channels).astype(dtype),
                                         "shift": rng.standard_normal(channels).astype(dtype)})


def test_batchnorm_gradients(rng):
    layer = random_bn(rng, 3)
    assert layer.dtype == np.float64
    check_layer_grads(layer, rng.standard_normal((2, 3, 4, 5)), rng, params=("scale", "shift"))


def test_batchnorm_backward_adds_into_grads(rng):
    layer = random_bn(rng, 3)
    layer.forward(rng.standard_normal((2, 3, 2, 2)), train=True)
    dy = rng.standard_normal((2, 3, 2, 2))
    layer.zero_grad()
    assert layer.backward(dy, need_dx=False) is None  # the gradients are still added
    once = {k: g.copy() for k, g in layer.grads.items()}
    layer.backward(dy)
    for k, g in layer.grads.items():
        assert np.abs(once[k]).max() > 0
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-14)


def test_batchnorm_init_and_contract(rng):
    layer = BatchNorm2D(4)
    assert layer.weight_name is None and layer.dtype == np.float32
    np.testing.assert_array_equal(layer.params["scale"], np.ones(4, dtype=np.float32))
    np.testing.assert_array_equal(layer.params["shift"], np.zeros(4, dtype=np.float32))
    assert layer.params["scale"].dtype == layer.params["shift"].dtype == np.float32
    assert BatchNorm2D.param_shapes(channels=4) == {"scale": (4,), "shift": (4,)}
    assert BatchNorm2D(4, dtype=np.float64).params["scale"].dtype == np.float64
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer.forward(x), x)  # identity at initialisation
    assert layer._cache is None


def test_batchnorm_float32(rng):
    layer64 = random_bn(rng, 3)
    layer32 = BatchNorm2D(3, params={k: v.astype(np.float32) for k, v in layer64.params.items()})
    x = rng.standard_normal((2, 3, 4, 4))
    y32 = layer32.forward(x, train=True)  # float64 input converted to the layer's float32
    assert y32.dtype == np.float32 and layer32.dtype == np.float32
    np.testing.assert_allclose(y32, layer64.forward(x), rtol=1e-5, atol=1e-6)
    dx = layer32.backward(np.ones(y32.shape))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    for k, g in layer32.grads.items():
        assert g.dtype == np.float32 and g.shape == (3,), k


def test_batchnorm_hyperparameters_round_trip(rng):
    layer = random_bn(rng, 5)
    hp = layer.hyperparameters
    assert hp == {"channels": 5} and json.loads(json.dumps(hp)) == hp
    assert hyperparameter_names(BatchNorm2D) == ("channels",)
    again = type(layer)(**hp, params=layer.params)
    for k in layer.params:  # attached, not copied
        assert np.shares_memory(again.params[k], layer.params[k])
    x = rng.standard_normal((2, 5, 3, 2))
    np.testing.assert_array_equal(again.forward(x), layer.forward(x))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_batchnorm_matches_torch_eval(rng, dtype, rtol):
    torch = pytest.importorskip("torch")
    c, eps = 6, 1e-3
    bn = torch.nn.BatchNorm2d(c, eps=eps).to(torch.float64 if dtype == np.float64
                                            else torch.float32)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, c)))
        bn.bias.copy_(torch.from_numpy(rng.standard_normal(c)))
        bn.running_mean.copy_(torch.from_numpy(rng.standard_normal(c)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.1, 3.0, c)))
    bn.eval()
    x = rng.standard_normal((3, c, 4, 5)).astype(dtype)
    with torch.no_grad():
        want = bn(torch.from_numpy(x)).numpy()
    scale, shift = fold_batchnorm(*(t.detach().numpy() for t in (
        bn.weight, bn.bias, bn.running_mean, bn.running_var)), eps=eps)
    assert scale.dtype == shift.dtype == dtype
    got = BatchNorm2D(c, params={"scale": scale, "shift": shift}).forward(x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    assert np.max(np.abs(got - x)) > 0.1  # not the identity


def test_fold_batchnorm_by_definition(rng):
    gamma, beta, mean = (rng.standard_normal(4) for _ in range(3))
    var = rng.uniform(0.1, 2.0, 4)
    scale, shift = fold_batchnorm(gamma, beta, mean, var, 1e-5)
    x = rng.standard_normal((7, 4))
    np.testing.assert_allclose(x * scale + shift,
                               gamma * (x - mean) / np.sqrt(var + 1e-5) + beta, rtol=1e-12)
    # eps defaults to 1e-5; var 0 is fine while eps > 0; float32 in, float32 out.
    s0, _ = fold_batchnorm(np.ones(2), np.zeros(2), np.zeros(2), np.zeros(2))
    np.testing.assert_allclose(s0, 1 / np.sqrt(1e-5))
    s32, t32 = fold_batchnorm(*(a.astype(np.float32) for a in (gamma, beta, mean, var)))
    assert s32.dtype == t32.dtype == np.float32


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((np.ones(3), np.ones(3), np.ones(3), np.ones(4)), {}, ValueError, "var"),
    ((np.ones((3, 1)), np.ones(3), np.ones(3), np.ones(3)), {}, ValueError, "gamma"),
    ((np.ones(3), np.ones(2), np.ones(3), np.ones(3)), {}, ValueError, "beta"),
    ((np.ones(3), np.ones(3), np.array(["a", "b", "c"]), np.ones(3)), {}, TypeError, "mean"),
    ((np.ones(3),) * 4, {"eps": -1e-5}, ValueError, "eps"),
    ((np.ones(3),) * 4, {"eps": "1e-5"}, TypeError, "eps"),
    ((np.ones(3), np.ones(3), np.ones(3), -np.ones(3)), {}, ValueError, "var"),
    ((np.ones(3), np.ones(3), np.ones(3), np.zeros(3)), {"eps": 0.0}, ValueError, "var"),
])
def test_fold_batchnorm_rejects_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fold_batchnorm(*args, **kwargs)


@pytest.mark.parametrize("groups, bias", [(1, True), (2, True), (1, False)])
def test_conv_then_batchnorm_equals_folded_conv(rng, groups, bias):
    cin, cout, k = 4, 6, 3
    w = rng.standard_normal((cout, cin // groups, k, k))
    b = rng.standard_normal(cout) if bias else None
    conv = Conv2D(cin, cout, k, padding=1, groups=groups,
                  params={"W": w, "b": np.zeros(cout) if b is None else b})
    scale, shift = fold_batchnorm(rng.uniform(0.5, 2.0, cout), rng.standard_normal(cout),
                                  rng.standard_normal(cout), rng.uniform(0.1, 3.0, cout))
    bn = BatchNorm2D(cout, params={"scale": scale, "shift": shift})
    w0, b0 = w.copy(), None if b is None else b.copy()
    w2, b2 = fold_into_conv(w, b, scale, shift)
    np.testing.assert_array_equal(w, w0)  # inputs untouched
    if b is not None:
        np.testing.assert_array_equal(b, b0)
    assert w2.shape == w.shape and b2.shape == (cout,) and w2.dtype == np.float64
    folded = Conv2D(cin, cout, k, padding=1, groups=groups, params={"W": w2, "b": b2})
    x = rng.standard_normal((2, cin, 5, 6))
    want = bn.forward(conv.forward(x))
    np.testing.assert_allclose(folded.forward(x), want, rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(want - conv.forward(x))) > 0.1


def test_fold_into_conv_float32_and_errors(rng):
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b, s, t = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    w2, b2 = fold_into_conv(w, b, s, t)
    assert w2.dtype == b2.dtype == np.float32
    np.testing.assert_allclose(w2, w * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(b2, b * s + t, rtol=1e-6, atol=1e-6)
    for args, exc, match in [((w, b, s[:2], t), ValueError, "scale"),
                             ((w, b[:2], s, t), ValueError, "b"),
                             ((w, b, s, t[None]), ValueError, "shift"),
                             ((w[0, 0, 0], b, s, t), ValueError, "w"),
                             ((w.astype(str), b, s, t), TypeError, "w")]:
        with pytest.raises(exc, match=match):
            fold_into_conv(*args)


@pytest.mark.parametrize("build, exc, match", [
    (lambda: BatchNorm2D(0), ValueError, "channels"),
    (lambda: BatchNorm2D(-2), ValueError, "channels"),
    (lambda: BatchNorm2D(2.0), TypeError, "channels"),
    (lambda: BatchNorm2D("3"), TypeError, "channels"),
    (lambda: BatchNorm2D(3, dtype=np.int32), TypeError, "float32 or float64"),
    (lambda: BatchNorm2D(3, params={"scale": np.ones(3)}), ValueError, "shift"),
    (lambda: BatchNorm2D(3, params={"scale": np.ones(2), "shift": np.zeros(2)}), ValueError,
     "shape"),
    (lambda: BatchNorm2D.param_shapes(channels=0), ValueError, "channels"),
])
def test_batchnorm_rejects_bad_arguments(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_batchnorm_shapes_and_input_errors():
    layer = BatchNorm2D(3, name="bn1")
    assert layer.output_shape((3, 4, 5)) == (3, 4, 5)
    for bad in [(4, 4, 5), (3, 4), (1, 3, 4, 5)]:
        with pytest.raises(ValueError, match=r"bn1.*\(3, H, W\)"):
            layer.output_shape(bad)
    with pytest.raises(ValueError, match="4-D"):
        layer.forward(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="3 input channels"):
        layer.forward(np.zeros((1, 4, 4, 5)))
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((1, 3, 4, 5)))


# ---------------------------------------------------------------------------- Softmax


def test_softmax_gradient(rng):
    check_layer_grads(Softmax(), 2 * rng.standard_normal((3, 5)), rng, params=())


def test_softmax_forward(rng):
    x = 3 * rng.standard_normal((4, 6))
    y = Softmax().forward(x)
    want = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, want, rtol=1e-14)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-15)
    big = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    yb = Softmax().forward(big)
    assert yb.dtype == np.float32 and np.isfinite(yb).all()
    np.testing.assert_allclose(yb, [[1, 0, 0], [1 / 3] * 3], rtol=1e-6, atol=1e-30)
    assert Softmax().forward(np.zeros((0, 3))).shape == (0, 3)


def test_softmax_dtypes_and_cache(rng):
    layer = Softmax()
    x = rng.standard_normal((3, 4))
    y64 = layer.forward(x)
    assert layer._cache is None
    y32 = layer.forward(x.astype(np.float32), train=True)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-6)
    dx = layer.backward(rng.standard_normal((3, 4)))
    assert dx.dtype == np.float32 and dx.shape == (3, 4)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-6)  # y sums to 1: dx sums to 0
    assert layer.backward(np.ones((3, 4)), need_dx=False) is None
    assert layer.forward(np.arange(6).reshape(2, 3)).dtype == np.float32
    assert Softmax(**layer.hyperparameters).hyperparameters == {}
    assert hyperparameter_names(Softmax) == ()


def test_softmax_matches_torch_and_onnxruntime(rng):
    x = (4 * rng.standard_normal((5, 7))).astype(np.float32)
    got = Softmax().forward(x)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(got, torch.softmax(torch.from_numpy(x), dim=1).numpy(),
                               rtol=1e-6, atol=1e-7)
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    model = onnx_model(helper.make_node("Softmax", ["x"], ["y"], axis=1), x.shape)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-6, atol=1e-7)


def test_softmax_shapes_and_input_errors():
    layer = Softmax(name="prob")
    assert layer.output_shape((10,)) == (10,)
    for bad in [(0,), (2, 3), ()]:
        with pytest.raises(ValueError, match="prob.*K"):
            layer.output_shape(bad)
    for shape in [(4,), (2, 3, 4), (2, 0)]:
        with pytest.raises(ValueError, match="2-D"):
            layer.forward(np.zeros(shape))
    with pytest.raises(RuntimeError, match="forward"):
        Softmax().backward(np.zeros((1, 2)))
