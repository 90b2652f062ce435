"""ONNX import and export (dc_engine.io.onnx) against onnxruntime, without PyTorch: graphs
built node by node for every supported operator and attribute, the ONNX model zoo's "light"
networks (AlexNet, VGG-19, SqueezeNet, ResNet-50, Inception, DenseNet) with random weights,
export round trips of dense and compressed models, refused and malformed files, and the
``import`` / ``export`` commands up to ``compress`` on an imported graph.

onnx and onnxruntime are test oracles and an optional extra; without them these tests skip.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import dc_engine  # noqa: E402
from dc_engine.app.cli import main  # noqa: E402
from dc_engine.core.layers import (  # noqa: E402
    Add,
    AvgPool2D,
    BatchNorm2D,
    Concat,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    Softmax,
)
from dc_engine.core.model import Model  # noqa: E402
from dc_engine.errors import DCFormatError  # noqa: E402
from dc_engine.io.onnx import (  # noqa: E402
    MAX_CONSTANT_ELEMENTS,
    ONNXImportError,
    from_onnx,
    load_onnx,
    save_onnx,
    to_onnx,
)
from dc_engine.stages.encode import encode_model  # noqa: E402
from dc_engine.stages.quantize import share_layer  # noqa: E402

RTOL = 1e-5  # max |ours - onnxruntime| / max |onnxruntime|, float32


def _session(data: bytes):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _ort(proto, x: np.ndarray, per_sample: bool = False) -> np.ndarray:
    """onnxruntime's output for ``x`` (one sample at a time for a file with batch 1)."""
    sess = _session(proto.SerializeToString())
    inits = {i.name for i in proto.graph.initializer}
    name = next(i.name for i in sess.get_inputs() if i.name not in inits)
    if per_sample:
        return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    return sess.run(None, {name: x})[0]


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _graph(nodes, inits: dict, in_shape, opset=13, out="y", symbolic=True, name="g"):
    """A model from nodes and named constant arrays; input ``x`` of (N, *in_shape)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                      ["N" if symbolic else 2, *in_shape])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, name, [x], [y],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    try:
        m = onnx.shape_inference.infer_shapes(m)  # the output's type, which the checker needs
    except Exception:  # noqa: S110 - graphs meant to be refused: a shape of any rank will do
        pass
    if not m.graph.output[0].type.tensor_type.HasField("shape"):
        del m.graph.output[:]
        m.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "M"]))
    return m


def _check(proto, in_shape, rng, n=3):
    """Import ``proto``, compare with onnxruntime, return the model."""
    model = from_onnx(proto)
    x = rng.standard_normal((n, *in_shape)).astype(np.float32)
    want = _ort(proto, x)
    got = model.forward(x)
    assert got.size == want.size
    assert _rel(got, want.reshape(got.shape)) <= RTOL
    return model


def _w(rng, *shape):
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def _types(model):
    return [l.type_name for l in model.layers]


# ----------------------------------------------------------------- operators, one by one


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_attributes(rng, trans_b):
    w = _w(rng, 6, 4) if trans_b else _w(rng, 4, 6)
    proto = _graph([helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=trans_b,
                                      alpha=0.5, beta=2.0)],
                   {"w": w, "c": _w(rng, 1, 6)}, (4,))
    model = _check(proto, (4,), rng)
    assert _types(model) == ["Dense"]


def test_matmul_then_bias_add_folds_into_one_dense(rng):
    proto = _graph([helper.make_node("MatMul", ["x", "w"], ["h"]),
                    helper.make_node("Add", ["b", "h"], ["z"]),
                    helper.make_node("Gemm", ["z", "w2"], ["y"], transB=1)],
                   {"w": _w(rng, 5, 3), "b": _w(rng, 3), "w2": _w(rng, 2, 3)}, (5,))
    assert _types(_check(proto, (5,), rng)) == ["Dense", "Dense"]


@pytest.mark.parametrize("attrs, in_shape", [
    (dict(pads=[0, 1, 2, 1], strides=[2, 2], group=2), (4, 9, 8)),
    (dict(auto_pad="SAME_UPPER", strides=[2, 2]), (4, 7, 7)),
    (dict(auto_pad="SAME_LOWER", strides=[2, 2]), (4, 8, 7)),
    (dict(auto_pad="VALID"), (4, 6, 6)),
    (dict(pads=[1, 1, 1, 1], group=4), (4, 5, 5)),
])
def test_conv_padding_strides_groups(rng, attrs, in_shape):
    groups = attrs.get("group", 1)
    proto = _graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3],
                                     **attrs)],
                   {"w": _w(rng, 8, 4 // groups, 3, 3), "b": _w(rng, 8)}, in_shape)
    model = _check(proto, in_shape, rng)
    assert model.layers[0].groups == groups


def _bn_inits(rng, c, prefix="bn"):
    return {f"{prefix}_s": rng.uniform(0.5, 1.5, c).astype(np.float32),
            f"{prefix}_b": _w(rng, c), f"{prefix}_m": _w(rng, c),
            f"{prefix}_v": rng.uniform(0.5, 1.5, c).astype(np.float32)}


def _bn(x, y, prefix="bn", eps=1e-3):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b",
                                                   f"{prefix}_m", f"{prefix}_v"], [y],
                            epsilon=eps)


def test_batchnorm_and_channel_arithmetic_fold_into_the_conv(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             _bn("c", "b1"),
             helper.make_node("Mul", ["b1", "s"], ["m"]),
             helper.make_node("Sub", ["m", "t"], ["a"]),
             helper.make_node("Div", ["a", "d"], ["y"])]
    inits = {"w": _w(rng, 4, 2, 3, 3), "s": _w(rng, 4, 1, 1), "t": _w(rng, 1, 4, 1, 1),
             "d": np.float32(1.5), **_bn_inits(rng, 4)}
    model = _check(_graph(nodes, inits, (2, 5, 5)), (2, 5, 5), rng)
    assert _types(model) == ["Conv2D"]


def test_batchnorm_after_a_batchnorm_layer_and_a_shared_conv(rng):
    """A conv read twice cannot absorb the BN (a BatchNorm2D layer does, and absorbs the
    next affine too); a BN after a ReLU stays a layer."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             _bn("c", "b1"), helper.make_node("Add", ["b1", "k"], ["b2"]),
             helper.make_node("Relu", ["c"], ["r"]), _bn("r", "b3", "bn2"),
             helper.make_node("Add", ["b2", "b3"], ["y"])]
    inits = {"w": _w(rng, 3, 2, 1, 1), "k": _w(rng, 3, 1, 1), **_bn_inits(rng, 3),
             **_bn_inits(rng, 3, "bn2")}
    model = _check(_graph(nodes, inits, (2, 4, 4)), (2, 4, 4), rng)
    assert _types(model) == ["Conv2D", "BatchNorm2D", "ReLU", "BatchNorm2D", "Add"]


@pytest.mark.parametrize("node, in_shape", [
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      pads=[1, 0, 1, 1], ceil_mode=1), (2, 8, 7)),
    (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      pads=[1, 1, 1, 1], count_include_pad=1), (2, 7, 7)),
    (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                      ceil_mode=1), (2, 5, 5)),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_UPPER",
                      strides=[2, 2]), (2, 5, 5)),
    (helper.make_node("GlobalAveragePool", ["x"], ["y"]), (3, 4, 5)),
    (helper.make_node("LRN", ["x"], ["y"], size=5, alpha=1e-3, beta=0.75, bias=2.0),
     (7, 3, 3)),
    (helper.make_node("Relu", ["x"], ["y"]), (3, 2, 2)),
])
def test_parameter_free_layers(rng, node, in_shape):
    _check(_graph([node], {}, in_shape), in_shape, rng)


def test_concat_sum_and_flatten_variants(rng):
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], kernel_shape=[1, 1]),
             helper.make_node("Concat", ["a", "b", "x"], ["c"], axis=-3),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Sum", ["r", "c", "r"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["g"]),
             helper.make_node("Squeeze", ["g", "axes"], ["q"]),
             helper.make_node("Gemm", ["q", "w3"], ["y"], transB=1)]
    inits = {"w1": _w(rng, 2, 3, 1, 1), "w2": _w(rng, 4, 3, 1, 1), "w3": _w(rng, 5, 9),
             "axes": np.array([2, 3], np.int64)}
    model = _check(_graph(nodes, inits, (3, 4, 4)), (3, 4, 4), rng)
    assert "Concat" in _types(model) and "Add" in _types(model)


@pytest.mark.parametrize("target", [[0, -1], [-1, 48], [0, 48]])
def test_reshape_that_flattens(rng, target):
    proto = _graph([helper.make_node("Reshape", ["x", "s"], ["y"])],
                   {"s": np.array(target, np.int64)}, (3, 4, 4))
    assert _types(_check(proto, (3, 4, 4), rng, n=2)) == ["Flatten"]


@pytest.mark.parametrize("opset, axis", [(11, 1), (13, 1), (13, -1), (9, None)])
def test_softmax_over_each_sample(rng, opset, axis):
    kw = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"])]
    if opset < 13:  # the old softmax runs over every axis from `axis` on: (N, C, 1, 1) is fine
        nodes.append(helper.make_node("Softmax", ["g"], ["y"], **kw))
    else:
        nodes += [helper.make_node("Flatten", ["g"], ["f"]),
                  helper.make_node("Softmax", ["f"], ["y"], **kw)]
    model = _check(_graph(nodes, {"w": _w(rng, 6, 2, 1, 1)}, (2, 3, 3), opset=opset),
                   (2, 3, 3), rng)
    assert _types(model)[-1] == "Softmax"


def test_no_fold_into_a_layer_that_something_read_before(rng):
    """A Conv read by a ReLU (through an Identity) before a BatchNormalization reads it: the BN
    must not change the ReLU branch (it becomes a BatchNorm2D layer)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Identity", ["c"], ["i"]), helper.make_node("Relu", ["i"], ["r"]),
             _bn("c", "bn"), helper.make_node("Add", ["r", "bn"], ["y"])]
    model = _check(_graph(nodes, {"w": _w(rng, 3, 2, 1, 1), **_bn_inits(rng, 3)}, (2, 4, 4)),
                   (2, 4, 4), rng)
    assert _types(model) == ["Conv2D", "ReLU", "BatchNorm2D", "Add"]


def test_constant_arithmetic_follows_onnx(rng):
    """Integer Div truncates toward zero (-7 / 2 = -3); Flatten of constants."""
    nodes = [helper.make_node("Div", ["seven", "two"], ["q"]),
             helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["v"], ["vf"], axis=1),
             helper.make_node("Flatten", ["vf"], ["vf2"], axis=-1),
             helper.make_node("Squeeze", ["vf2"], ["v1"]),
             helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
             helper.make_node("Mul", ["h", "qf"], ["m"]),
             helper.make_node("Add", ["m", "v1"], ["y"])]
    inits = {"seven": np.array([-7, 7], np.int64), "two": np.array(2, np.int64),
             "v": _w(rng, 2), "w": _w(rng, 2, 4)}
    model = _check(_graph(nodes, inits, (4,)), (4,), rng)
    assert _types(model) == ["Dense"]


@pytest.mark.parametrize("nodes, inits, needle", [
    ([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
      helper.make_node("Shape", ["h"], ["s"]),
      helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
      helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
      helper.make_node("Mul", ["h", "nf"], ["y"])],
     {"w": np.eye(4, dtype=np.float32), "i0": np.array(0, np.int64)}, "batch size"),
    ([helper.make_node("Reshape", ["x", "s"], ["y"])], {"s": np.array([1, -1], np.int64)},
     "Reshape"),
    ([helper.make_node("Concat", ["c", "c"], ["c1"], axis=0)]
     + [helper.make_node("Concat", [f"c{i}", f"c{i}"], [f"c{i + 1}"], axis=0)
        for i in range(1, 40)] + [helper.make_node("Add", ["x", "c40"], ["y"])],
     {"c": np.zeros(1, np.int8)}, "would hold"),
    ([helper.make_node("Sub", ["c", "x"], ["y"])], {"c": np.ones(4, np.float32)},
     "constant by a computed tensor"),
    # Flatten of a (4,) constant with axis 1 is (4, 1): broadcasting, not a bias
    ([helper.make_node("Flatten", ["c"], ["f"], axis=1),
      helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
      helper.make_node("Add", ["h", "f"], ["y"])],
     {"c": np.ones(4, np.float32), "w": np.eye(4, dtype=np.float32)},
     "only a scalar or per-channel"),
])
def test_batch_size_merges_and_blow_ups_are_refused(nodes, inits, needle):
    """The batch size is not a constant; a Reshape that would merge samples (a symbolic
    batch reshaped to (1, -1)) is not a flatten; a tiny file cannot ask for a huge constant."""
    _refused(_graph(nodes, inits, (4,)), needle)


def test_reshape_to_the_files_fixed_batch_flattens(rng):
    proto = _graph([helper.make_node("Reshape", ["x", "s"], ["y"])],
                   {"s": np.array([2, -1], np.int64)}, (3, 2, 2), symbolic=False)
    assert _types(_check(proto, (3, 2, 2), rng, n=2)) == ["Flatten"]


def test_softmax_along_one_axis_of_many_is_refused(rng):
    proto = _graph([helper.make_node("Softmax", ["x"], ["y"], axis=1)], {}, (3, 2, 2))
    with pytest.raises(ONNXImportError, match="softmax along axis 1"):
        from_onnx(proto)


@pytest.mark.parametrize("opset", [11, 13])
def test_dropout_is_kept_for_retraining(rng, opset):
    if opset < 12:
        node = helper.make_node("Dropout", ["h"], ["d"], ratio=0.3)
        inits = {}
    else:
        node = helper.make_node("Dropout", ["h", "ratio"], ["d"])
        inits = {"ratio": np.array(0.3, np.float32)}
    proto = _graph([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), node,
                    helper.make_node("Identity", ["d"], ["y"])],
                   {"w": _w(rng, 3, 4), **inits}, (4,), opset=opset)
    model = _check(proto, (4,), rng)
    assert _types(model) == ["Dense", "Dropout"] and model.layers[1].rate == pytest.approx(0.3)


def test_constants_computed_at_import_and_dead_nodes_dropped(rng):
    """Weights built by Constant / ConstantOfShape / Reshape / Unsqueeze (old exporters), and
    an unsupported operator in a branch the output does not read."""
    w = _w(rng, 12)
    nodes = [helper.make_node("Constant", [], ["wflat"], value=numpy_helper.from_array(w)),
             helper.make_node("Reshape", ["wflat", "wshape"], ["w"]),
             helper.make_node("ConstantOfShape", ["bshape"], ["b"],
                              value=numpy_helper.from_array(np.array([0.25], np.float32))),
             helper.make_node("Unsqueeze", ["b", "ax"], ["b2"]),
             helper.make_node("Gemm", ["x", "w", "b2"], ["y"], transB=1),
             helper.make_node("Sigmoid", ["x"], ["dead"])]
    inits = {"wshape": np.array([3, 4], np.int64), "bshape": np.array([3], np.int64),
             "ax": np.array([0], np.int64)}
    model = _check(_graph(nodes, inits, (4,)), (4,), rng)
    np.testing.assert_array_equal(model.layers[0].params["W"], w.reshape(3, 4))
    np.testing.assert_array_equal(model.layers[0].params["b"], np.full(3, 0.25, np.float32))


def test_symbolic_input_shape_needs_input_shape(rng):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H2", "W2"])
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])],
                          "g", [x], [y], [numpy_helper.from_array(_w(rng, 2, 3, 3, 3), "w")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ONNXImportError, match="input_shape"):
        from_onnx(proto)
    model = from_onnx(proto, input_shape=(3, 8, 8))
    assert model.output_shape() == (2, 6, 6)
    with pytest.raises(TypeError, match="tuple of ints"):
        from_onnx(proto, input_shape="3,8,8")
    with pytest.raises(ValueError, match="input_shape"):
        from_onnx(proto, input_shape=(3, 0, 8))
    with pytest.raises(ONNXImportError, match="does not fit"):
        from_onnx(_graph([helper.make_node("Relu", ["x"], ["y"])], {}, (3, 8, 8)),
                  input_shape=(3, 9, 9))


# --------------------------------------------------------------------------- refusals


def _refused(proto, *needles):
    with pytest.raises(ONNXImportError) as info:
        from_onnx(proto, source="m.onnx")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("m.onnx")
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_unsupported_operator_is_named(rng):
    _refused(_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="act7")], {}, (4,)),
             "Sigmoid", "act7", "not supported")


@pytest.mark.parametrize("nodes, inits, in_shape, needle", [
    ([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], dilations=[2, 2])],
     {"w": np.zeros((2, 1, 3, 3), np.float32)}, (1, 9, 9), "dilations"),
    ([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 1])],
     {"w": np.zeros((2, 1, 3, 1), np.float32)}, (1, 9, 9), "square"),
    ([helper.make_node("MatMul", ["x", "x"], ["y"])], {}, (4,), "MatMul of two computed"),
    ([helper.make_node("Reshape", ["x", "s"], ["y"])], {"s": np.array([0, 3, -1], np.int64)},
     (3, 2, 2), "Reshape"),
    ([helper.make_node("Gemm", ["x", "w"], ["y"])], {"w": np.zeros((5, 2), np.float32)},
     (4,), "does not fit"),
    ([helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2]),
      helper.make_node("Cast", ["idx"], ["i2"], to=1), helper.make_node("Add", ["y0", "i2"],
                                                                        ["y"])],
     {}, (1, 4, 4), "y0"),
    ([helper.make_node("ConstantOfShape", ["s"], ["big"]),
      helper.make_node("Add", ["x", "big"], ["y"])],
     {"s": np.array([MAX_CONSTANT_ELEMENTS + 1], np.int64)}, (4,), "elements"),
    ([helper.make_node("Mul", ["x", "x"], ["y"])], {}, (4,), "two computed tensors"),
    ([helper.make_node("Add", ["x", "c"], ["y"])], {"c": np.ones((4,), np.float32)},
     (4, 2, 2), "per-channel"),
])
def test_unsupported_uses_are_refused_in_one_line(nodes, inits, in_shape, needle):
    _refused(_graph(nodes, inits, in_shape), needle)


def test_non_finite_weights_are_refused(rng):
    w = _w(rng, 3, 4)
    w[1, 2] = np.nan
    _refused(_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], {"w": w}, (4,)),
             "NaN or infinite")
    inits = {"w": _w(rng, 3, 2, 1, 1), **_bn_inits(rng, 3)}
    inits["bn_v"][0] = np.inf  # a fold of corrupt statistics
    inits["bn_s"][0] = np.inf
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]), _bn("c", "y")]
    with np.errstate(all="raise"):  # and no warning on the way
        _refused(_graph(nodes, inits, (2, 3, 3)), "NaN or infinite")


def test_malformed_graphs_are_refused(rng):
    """A node reading a tensor nobody writes (a missing initializer), a cycle, a weight of
    the wrong type, a weight of the wrong shape."""
    relu = helper.make_node("Relu", ["x"], ["y"])
    missing = _graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], {}, (4,))
    _refused(missing, "not a valid ONNX model")
    cycle = _graph([helper.make_node("Add", ["x", "b"], ["a"]),
                    helper.make_node("Relu", ["a"], ["b"]), relu], {}, (4,))
    _refused(cycle, "ONNX")
    strings = _graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
                     {"w": np.array([["a"] * 4] * 3)}, (4,))
    _refused(strings, "Gemm")
    wrong = _graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])],
                   {"w": _w(rng, 2, 5, 3, 3)}, (3, 8, 8))
    _refused(wrong, "input channels")


def test_inputs_outputs_and_types_are_checked(rng):
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    two = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3])
                             for n in "ab"], [y])
    _refused(helper.make_model(two), "one input")
    ints = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 3])],
                             [y])
    _refused(helper.make_model(ints), "INT64")
    _refused(_graph([helper.make_node("Identity", ["x"], ["y"])], {}, (3,)), "no layers")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """A small valid file: conv, BN, relu, pool, flatten, gemm, softmax on 1x28x28."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], kernel_shape=[5, 5],
                              strides=[2, 2], name="conv1"),
             _bn("c", "b"), helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["l"], transB=1),
             helper.make_node("Softmax", ["l"], ["y"], axis=1)]
    inits = {"w": _w(rng, 4, 1, 5, 5), "cb": _w(rng, 4), **_bn_inits(rng, 4),
             "fc.weight": _w(rng, 10, 4 * 6 * 6) * 0.2, "fc.bias": _w(rng, 10)}
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    onnx.save(_graph(nodes, inits, (1, 28, 28), name="small"), str(path))
    return path


def test_load_onnx_file(small_onnx, rng):
    model = load_onnx(small_onnx)
    assert model.name == "small" and model.input_shape == (1, 28, 28)
    assert _types(model) == ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "Softmax"]
    assert [l.name for l in model.weighted_layers()] == ["conv1", "fc"]
    assert model.metadata["source"]["format"] == "onnx"
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    assert _rel(model.forward(x), _ort(onnx.load(str(small_onnx)), x)) <= RTOL


def test_unreadable_files(tmp_path, small_onnx):
    with pytest.raises(FileNotFoundError):
        load_onnx(tmp_path / "missing.onnx")
    data = small_onnx.read_bytes()
    for i, bad in enumerate([b"", b"not an onnx model at all", data[: len(data) // 2],
                             data[:200]]):
        p = tmp_path / f"bad{i}.onnx"
        p.write_bytes(bad)
        with pytest.raises(DCFormatError) as info:
            load_onnx(p)
        assert str(p) in str(info.value) and "\n" not in str(info.value)


@given(st.data())
def test_corrupt_files_fail_cleanly(tmp_path_factory, small_onnx, data):
    """Flipped, dropped or inserted bytes: a model that imports and runs, or an
    ONNXImportError; never another exception."""
    raw = bytearray(small_onnx.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "drop":
            del raw[i]
        else:
            raw.insert(i, data.draw(st.integers(0, 255)))
    path = tmp_path_factory.mktemp("fuzz") / "m.onnx"
    path.write_bytes(bytes(raw))
    try:
        model = load_onnx(path)
    except ONNXImportError as exc:
        assert "\n" not in str(exc)
        return
    for layer in model.layers:  # flipped bits that give NaN or inf weights are refused
        assert all(np.isfinite(v).all() for v in layer.params.values())
    model.forward(np.zeros((1, *model.input_shape), np.float32))


# ------------------------------------------------------------------- the model zoo's nets

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _light(name: str, rng):
    """A light zoo model with random weights (the file's are one constant) and its logits as
    the output (a softmax over 1000 classes of random weights saturates)."""
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"this onnx package ships no {path}")
    proto = onnx.load(path)
    g = proto.graph
    shapes = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    keep, weights = [], []
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(v) for v in shapes[node.input[0]])
            if len(shape) >= 2:  # He-scaled weights
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(
                    np.sqrt(2.0 / np.prod(shape[1:])))
            else:  # biases and BatchNorm statistics (variances positive)
                a = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            weights.append(numpy_helper.from_array(a, node.output[0]))
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(weights)
    proto.ir_version = max(proto.ir_version, 4)  # initializers need not be inputs
    if g.node[-1].op_type == "Softmax":
        g.node[-1].op_type = "Identity"
        del g.node[-1].attribute[:]
    return proto


@pytest.mark.parametrize("name, export", [
    ("bvlc_alexnet", True), ("squeezenet", True), ("resnet50", True), ("inception_v1", True),
    ("inception_v2", True), ("densenet121", True), ("vgg19", False),
    pytest.param("vgg19", True, marks=pytest.mark.slow),
    pytest.param("zfnet512", True, marks=pytest.mark.slow)])
def test_light_zoo_models_match_onnxruntime(name, export, rng):
    """Forward within float32 rounding of onnxruntime, and the export's too; every
    BatchNormalization that follows a convolution is folded into it (DenseNet's, after a
    concatenation, stay BatchNorm2D)."""
    proto = _light(name, rng)
    model = from_onnx(proto, source=name)
    x = rng.standard_normal((2, *model.input_shape)).astype(np.float32)
    want = _ort(proto, x, per_sample=True)  # the files fix the batch at 1
    got = model.forward(x)
    assert _rel(got, want.reshape(got.shape)) <= RTOL
    if export:  # and back out: onnxruntime on our export reproduces us (VGG-19's 575 MB
        exported = to_onnx(model)  # export runs with -m slow; AlexNet covers its layers)
        assert _rel(_ort(exported, x), got) <= RTOL
    kept_bn = sum(l.type_name == "BatchNorm2D" for l in model.layers)
    if name == "densenet121":
        bn_nodes = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
        assert 0 < kept_bn < bn_nodes
    else:
        assert kept_bn == 0


def test_light_squeezenet_compressed_exports_to_onnxruntime(rng, tmp_path):
    model = from_onnx(_light("squeezenet", rng), source="squeezenet")
    for layer in model.weighted_layers():
        w = layer.params["W"]
        w[np.abs(w) < np.quantile(np.abs(w), 0.6)] = 0.0
        share_layer(layer, 5)
    compressed = dc_engine.load(dc_engine.save(encode_model(model), tmp_path / "sq.dc.h5"))
    x = rng.standard_normal((1, *model.input_shape)).astype(np.float32)
    want = compressed.forward(x)
    assert _rel(_ort(to_onnx(compressed), x), want) <= 1e-4  # the compressed kernels' sums
    assert _rel(_ort(to_onnx(compressed), x), compressed.to_dense().forward(x)) <= RTOL


def test_light_shufflenet_is_refused_at_its_channel_shuffle(rng):
    proto = _light("shufflenet", rng)
    with pytest.raises(ONNXImportError, match=r"\(Reshape\): a Reshape of per-sample shape"):
        from_onnx(proto, source="shufflenet")


# ---------------------------------------------------------------------------- export


def _zoo_of_layers(rng) -> Model:
    """Every layer type the exporter writes, in a graph."""
    f32 = np.float32
    layers = [
        Conv2D(3, 6, 3, padding=[0, 1, 2, 1], rng=rng, dtype=f32, name="c1"),
        BatchNorm2D(6, name="bn"), ReLU(name="r1"),
        LocalResponseNorm(3, alpha=1e-2, k=2.0, name="lrn"),
        Conv2D(6, 6, 3, padding=1, groups=3, rng=rng, dtype=f32, name="g"),
        Add(name="add", inputs=["g", "lrn"]),
        MaxPool2D(3, 2, padding=1, ceil_mode=True, name="mp"),
        AvgPool2D(2, 1, padding=1, count_include_pad=True, name="ap", inputs=["mp"]),
        Conv2D(6, 2, 1, rng=rng, dtype=f32, name="side", inputs=["mp"]),
        AvgPool2D(3, 1, padding=[2, 1, 1, 2], name="ap2", inputs=["side"]),
        Concat(name="cat", inputs=["ap", "ap2"]),
        GlobalAvgPool2D(name="gap"), Flatten(name="flat"), Dropout(0.4, name="drop"),
        Dense(8, 5, rng=rng, dtype=f32, name="fc"), Softmax(name="prob")]
    model = Model(layers, (3, 9, 8), name="all-layers")
    bn = model["bn"].params
    bn["scale"][:] = rng.uniform(0.5, 1.5, 6)
    bn["shift"][:] = rng.standard_normal(6)
    return model


def test_export_round_trip_every_layer_type(rng, tmp_path):
    model = _zoo_of_layers(rng)
    path = save_onnx(model, tmp_path / "all.onnx")
    proto = onnx.load(str(path))
    x = rng.standard_normal((4, 3, 9, 8)).astype(np.float32)
    want = model.forward(x)
    assert _rel(_ort(proto, x), want) <= RTOL
    back = load_onnx(path)
    assert _rel(back.forward(x), want) <= RTOL
    # Back in: the BatchNorm folds into c1, the Dropout (identity at inference) is gone.
    assert _types(back) == [t for t in _types(model) if t not in ("BatchNorm2D", "Dropout")]
    assert [l.name for l in back.layers] == [l.name for l in model.layers
                                             if l.type_name not in ("BatchNorm2D", "Dropout")]


def test_export_of_a_compressed_file_runs_in_onnxruntime(rng, tmp_path, small_onnx):
    model = load_onnx(small_onnx)
    for layer in model.weighted_layers():
        w = layer.params["W"]
        w[rng.random(w.shape) < 0.6] = 0.0
        share_layer(layer, 4)
    path = dc_engine.save(encode_model(model), tmp_path / "small.dc.h5")
    compressed = dc_engine.load(path)
    out = save_onnx(compressed, tmp_path / "small.onnx")
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    want = compressed.to_dense().forward(x)
    assert _rel(_ort(onnx.load(str(out)), x), want) <= RTOL
    assert _rel(compressed.forward(x), want) <= 1e-4  # the compressed kernels' sums


def test_export_refuses_what_onnx_cannot_say(rng):
    with pytest.raises(ValueError, match="opset"):
        to_onnx(_zoo_of_layers(rng), opset=11)


def test_export_is_atomic(rng, tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"precious")
    import dc_engine.io.onnx as mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod, "to_onnx", boom)
    with pytest.raises(RuntimeError):
        save_onnx(_zoo_of_layers(rng), target)
    assert target.read_bytes() == b"precious"


# ------------------------------------------------------------------------ the commands


def test_cli_import_export_and_refusals(small_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["import", str(small_onnx)]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "saved small.h5" in out and "small.toml" in out
    assert (tmp_path / "small.h5").is_file() and (tmp_path / "small.toml").is_file()
    config = (tmp_path / "small.toml").read_text()
    assert "[prune.layers.conv1]" in config and "[train]" in config
    before = (tmp_path / "small.h5").read_bytes()

    assert main(["import", str(small_onnx)]) == 2  # no --force: nothing overwritten
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "small.h5").read_bytes() == before

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert main(["import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.onnx" in err
    assert not (tmp_path / "bad.h5").exists() and not (tmp_path / "bad.toml").exists()

    assert main(["import", str(small_onnx), "--input-shape", "3,x"]) == 2
    assert "--input-shape" in capsys.readouterr().err

    assert main(["export", "small.h5", "--out", "back.onnx"]) == 0
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(_ort(onnx.load("back.onnx"), x),
                               _ort(onnx.load(str(small_onnx)), x), rtol=1e-5, atol=1e-6)


def test_cli_without_the_onnx_package(small_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["import", str(small_onnx)]) == 2
    assert "pip install" in capsys.readouterr().err
    assert not (tmp_path / "small.h5").exists()


def test_imported_graph_through_compress_and_eval(tmp_path, tiny_mnist, monkeypatch):
    """An imported residual graph on MNIST-shaped input: import (starter config), compress
    with that config made short, evaluate the compressed file; the compressed file exports
    back to ONNX."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1] * 4, strides=[2, 2], name="/stem/Conv"),
             helper.make_node("Relu", ["c1"], ["r1"], name="/stem/Relu"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3],
                              pads=[1] * 4, name="/block/Conv"),
             helper.make_node("Add", ["c2", "r1"], ["a"], name="/block/Add"),
             helper.make_node("Relu", ["a"], ["r2"], name="/block/Relu"),
             helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1)]
    inits = {"w1": _w(rng, 4, 1, 3, 3), "b1": _w(rng, 4), "w2": _w(rng, 4, 4, 3, 3) * 0.3,
             "b2": _w(rng, 4), "fc.weight": _w(rng, 10, 4 * 7 * 7) * 0.1,
             "fc.bias": np.zeros(10, np.float32)}
    monkeypatch.chdir(tmp_path)
    onnx.save(_graph(nodes, inits, (1, 28, 28)), "res.onnx")
    assert main(["import", "res.onnx"]) == 0
    config = (tmp_path / "res.toml").read_text()
    for old, new in (("rounds = 3", "rounds = 1"), ("val_size = 5000", "val_size = 16"),
                     ("epochs = 2", "epochs = 1")):
        config = config.replace(old, new)
    (tmp_path / "res.toml").write_text(config)
    code = main(["compress", "res.h5", "--config", "res.toml", "--data", str(tiny_mnist),
                 "--no-progress", "--threads", "1"])
    assert code == 0
    compressed = dc_engine.load(tmp_path / "res.dc.h5")
    assert compressed.compressed and not compressed.sequential
    assert main(["eval", "res.dc.h5", "--data", str(tiny_mnist)]) == 0
    assert main(["export", "res.dc.h5", "--out", "res.small.onnx"]) == 0
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    assert _rel(_ort(onnx.load("res.small.onnx"), x), compressed.to_dense().forward(x)) <= RTOL


def test_mlp_input_takes_mnist_images_flattened(tmp_path, tiny_mnist, capsys):
    rng = np.random.default_rng(4)
    proto = _graph([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
                    helper.make_node("Relu", ["h"], ["y"])], {"w": _w(rng, 10, 784)}, (784,))
    onnx.save(proto, str(tmp_path / "mlp.onnx"))
    assert main(["import", str(tmp_path / "mlp.onnx"), "--out", str(tmp_path / "mlp.h5"),
                 "--no-config"]) == 0
    assert main(["eval", str(tmp_path / "mlp.h5"), "--data", str(tiny_mnist), "--json"]) == 0
    assert '"n": 40' in capsys.readouterr().out


def test_import_runs_without_the_training_code(small_onnx):
    """The runtime promise holds for imports: loading ONNX pulls in no training module."""
    code = ("import sys; from dc_engine.io.onnx import load_onnx; "
            f"load_onnx({str(small_onnx)!r}); "
            "bad = [m for m in sys.modules if m.startswith(('dc_engine.core.train', "
            "'dc_engine.core.optim', 'dc_engine.core.losses', 'dc_engine.stages'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_glob_finds_the_light_models():
    """The zoo tests above are not vacuous: this onnx ships the light models."""
    assert len(glob.glob(os.path.join(LIGHT, "light_*.onnx"))) >= 6


def test_top_level_names(small_onnx):
    """dc_engine.onnx is the module, dc_engine.load_onnx its function; neither is imported
    (nor the onnx package) by ``import dc_engine``."""
    code = ("import sys, dc_engine; assert 'onnx' not in sys.modules; "
            "assert 'dc_engine.io.onnx' not in sys.modules; "
            f"m = dc_engine.onnx.load_onnx({str(small_onnx)!r}); "
            "assert dc_engine.load_onnx is dc_engine.onnx.load_onnx; "
            "assert dc_engine.save_onnx is dc_engine.onnx.save_onnx; print(m.name)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "small"
