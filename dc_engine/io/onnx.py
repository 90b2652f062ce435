"""ONNX in and out: a user's network as a :class:`~dc_engine.core.model.Model`, and back.

:func:`load_onnx` reads an ONNX model (a file from ``torch.onnx.export``, Keras' ``tf2onnx``,
the ONNX model zoo, ...) into the one model type, dense float32, ready for the three stages and
the runtime; :func:`save_onnx` writes a model (dense or compressed: a compressed one is decoded)
as ONNX, so any ONNX runtime can run what dc-engine pruned and quantized.

What is imported (``SUPPORTED_OPS``; docs/ONNX.md has the table):

- layers: ``Gemm`` and ``MatMul`` with a constant weight (Dense), ``Conv`` (2-D, square kernel,
  equal strides, no dilation, any ``group``, explicit or ``auto_pad`` padding), ``Relu``,
  ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``, ``LRN``, ``Flatten``, ``Softmax``,
  ``Add`` / ``Sum`` of tensors (residual connections), ``Concat`` along the channels,
  ``Dropout`` (kept for retraining; identity at inference);
- folded away: ``BatchNormalization``, and ``Mul`` / ``Add`` / ``Sub`` / ``Div`` by a
  per-channel constant, go into the Conv or Gemm before them when nothing else reads its output
  (else they become a :class:`~dc_engine.core.layers.BatchNorm2D`); a ``Reshape`` or
  ``Squeeze`` that flattens each sample becomes ``Flatten``; ``Identity`` and inference
  ``Dropout`` of rate 0 disappear;
- computed at import: ``Constant``, ``ConstantOfShape`` and arithmetic on constants (old
  exporters build weights that way), and nodes nothing reads.

Anything else is refused with one line naming the operator, the node and the file. Only
inference graphs are read: no training-mode BatchNormalization, no second outputs (MaxPool's
indices, Dropout's mask).

The ``onnx`` package is an optional dependency (``pip install dc-engine[onnx]``); it is
imported when one of these functions is called, never by ``import dc_engine``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from .._files import regular_file, show_path, write_bytes
from .._validate import check_int
from .._version import __version__
from ..core.layers import (
    Add,
    AvgPool2D,
    BatchNorm2D,
    Concat,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    Softmax,
    fold_batchnorm,
    fold_into_conv,
)
from ..core.model import INPUT, Model
from ..errors import DCFormatError

PathLike = str | os.PathLike

SUPPORTED_OPS = ("Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant",
                 "ConstantOfShape", "Conv", "Div", "Dropout", "Flatten", "Gather", "Gemm",
                 "GlobalAveragePool", "Identity", "LRN", "MatMul", "MaxPool", "Mul", "Relu",
                 "Reshape", "Shape", "Softmax", "Sqrt", "Squeeze", "Sub", "Sum", "Transpose",
                 "Unsqueeze")
"""The ONNX operators :func:`load_onnx` reads (``Cast``, ``Gather``, ``Sqrt``, ``Transpose``
and ``Unsqueeze`` on constants only; ``Shape`` of a computed tensor is a constant but for the
batch size)."""

EXPORT_OPSET = 13
"""The opset :func:`save_onnx` writes (onnxruntime 1.8 and later run it)."""

MAX_CONSTANT_ELEMENTS = 1 << 28
"""Largest constant (elements) the importer builds: a ``ConstantOfShape`` asking for more is
refused rather than exhausting memory."""

_FLOAT = 1  # onnx.TensorProto.FLOAT
_BATCH = -(1 << 62)  # the batch size in a Shape computed at import (unknown until run time)
_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
_WEIGHT_SUFFIX_RE = re.compile(r"([._](weight|kernel|w(_0)?|W))$")


def _onnx():
    """The onnx package, or ImportError saying how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("reading and writing ONNX needs the onnx package: "
                          "pip install 'dc-engine[onnx]' (or pip install onnx)") from exc
    return onnx


class ONNXImportError(DCFormatError):
    """An ONNX model dc-engine cannot import: malformed, or using an operator, attribute or
    shape it does not support. The message is one line naming the file, the node and its
    operator."""


# --------------------------------------------------------------------------------- import


def load_onnx(path: PathLike, input_shape: tuple | None = None,
              name: str | None = None) -> Model:
    """Read an ONNX model file as a dense float32 :class:`Model`.

    Parameters
    ----------
    path : the ``.onnx`` file (weights stored beside it as external data are read too).
    input_shape : tuple of int, optional. One sample's shape, e.g. ``(3, 224, 224)``, for a
        model whose input dimensions are symbolic; it must agree with every fixed dimension
        the model declares. The first input dimension is always the batch.
    name : str, optional. The model's name (default: the file's stem; the ONNX graph's name
        is often an exporter's default such as ``main_graph``).

    Returns
    -------
    Model, with ``metadata["source"]`` recording the file, producer and opset. Its output is
    the graph's output; a model that ends in ``Softmax`` keeps it (training removes it, see
    :meth:`Model.logits_model`).

    Raises
    ------
    FileNotFoundError
        No such file.
    ImportError
        The onnx package is not installed.
    ONNXImportError (a DCFormatError)
        Not an ONNX model, a malformed one, or one using what dc-engine does not support; the
        message names the node and operator.
    """
    onnx = _onnx()
    path = regular_file(path, "ONNX file", "Pass the path of a .onnx file.",
                        error=ONNXImportError)
    try:
        proto = onnx.load(str(path), load_external_data=False)
        _check_external_data(onnx, proto, path)
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except ONNXImportError:
        raise
    except Exception as exc:  # protobuf's DecodeError, external data errors, ...
        raise ONNXImportError(f"{show_path(path)}: not a readable ONNX model "
                              f"({type(exc).__name__}: {_one_line(exc)})") from None
    return from_onnx(proto, input_shape=input_shape, name=name or path.stem, source=str(path))


def _check_external_data(onnx, proto, path: Path) -> None:
    """Weights stored beside the model (external data) must be regular files in its folder,
    checked before they are read (a FIFO would block the read)."""
    helper = onnx.external_data_helper
    for tensor in helper._get_all_tensors(proto):
        if helper.uses_external_data(tensor):
            info = helper.ExternalDataInfo(tensor)
            regular_file(path.parent / info.location, f"external data file of tensor "
                         f"{tensor.name!r}", "Keep the weights file beside the .onnx file.",
                         error=ONNXImportError, missing=ONNXImportError,
                         directory=ONNXImportError)


def from_onnx(proto, input_shape: tuple | None = None, name: str | None = None,
              source: str = "<onnx model>") -> Model:
    """:func:`load_onnx` on an ``onnx.ModelProto`` already in memory (``source`` names it in
    messages)."""
    onnx = _onnx()
    if not isinstance(proto, onnx.ModelProto):
        raise TypeError(f"from_onnx takes an onnx.ModelProto, got {type(proto).__name__}")
    if input_shape is not None:
        if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__"):
            raise TypeError(f"input_shape must be a tuple of ints such as (3, 224, 224), got "
                            f"{input_shape!r}")
        input_shape = tuple(check_int(d, "input_shape", 1) for d in input_shape)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ONNXImportError(f"{source}: not a valid ONNX model: {_one_line(exc)}") from None
    try:
        model = _Importer(proto, source, input_shape, name).run()
        model.check_sample_work()  # refused here, not at the first forward
        return model
    except ONNXImportError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as exc:
        # A malformed graph the checker let through (what a layer or Model rejects)
        raise ONNXImportError(f"{source}: cannot import it: {type(exc).__name__}: "
                              f"{_one_line(exc)}") from None


def _onnx_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: integer division truncates toward zero (onnxruntime's C semantics)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if np.any(b == 0):
            raise ZeroDivisionError("integer division by zero")
        q = np.abs(a) // np.abs(b)
        return (np.sign(a) * np.sign(b) * q).astype(np.result_type(a, b))
    return np.divide(a, b)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _layer_name(text: str) -> str:
    return _NAME_RE.sub("_", text).strip("_")


def _scope_name(node_name: str, op_type: str) -> tuple[str, str]:
    """A scoped node name split into scope and operator: PyTorch's ``/layer1/c1/Conv`` gives
    (``layer1/c1``, ``Conv``), ``/stem/stem.0/Conv`` gives (``stem.0``, ``Conv``) (a scope
    repeated in the next is dropped); other names give ("", "")."""
    parts = [p for p in node_name.split("/") if p]
    if not parts or not re.fullmatch(rf"{re.escape(op_type)}(_\d+)?", parts[-1]):
        return "", ""
    scopes = parts[:-1]
    kept = [p for p, nxt in zip(scopes, scopes[1:] + [""]) if not nxt.startswith(p)]
    return "/".join(kept), parts[-1]


class _Importer:
    """One pass over the nodes, in their (topological) order: constants are computed,
    layers built, and per-channel affine nodes folded into the layer before them."""

    def __init__(self, proto, source: str, input_shape, name):
        self.onnx = _onnx()
        self.proto, self.graph, self.source = proto, proto.graph, source
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                          None)
        self.name = name or self.graph.name or Path(source).stem or "model"
        self.user_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.consts: dict[str, np.ndarray] = {}
        self.tensor: dict[str, str] = {}  # ONNX tensor -> our tensor (INPUT or a layer name)
        self.shape: dict[str, tuple] = {}  # our tensor -> one sample's shape
        self.producer: dict[str, Layer] = {}  # our tensor -> the layer writing it
        self.uses: dict[str, int] = {}  # our tensor -> reads still to come
        self.read: set[str] = set()  # our tensors a layer has read: never folded into after
        self.batch_derived: set[str] = set()  # constants holding the batch marker (from Shape)
        self.fixed_batch: int | None = None  # the input's batch size when the file fixes it
        self.layers: list[Layer] = []
        self.used_names: set[str] = {INPUT}
        self.node = None

    # ----------------------------------------------------------------- errors and helpers
    def fail(self, problem: str):
        node, where = self.node, ""
        if node is not None:
            label = node.name or (node.output[0] if node.output else "?")
            where = f", node {label!r} ({node.op_type})"
        raise ONNXImportError(f"{self.source}{where}: {problem}")

    def attrs(self, node) -> dict:
        get = self.onnx.helper.get_attribute_value
        out = {}
        for a in node.attribute:
            v = get(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            out[a.name] = v
        return out

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            self.fail(f"{what} ({name!r}) must be a constant (an initializer or computed from "
                      f"constants), it is computed from the input")
        if name in self.batch_derived:
            self.fail(f"{what} ({name!r}) depends on the batch size (a Shape of a tensor); "
                      f"only a flattening Reshape may use it")
        return self.consts[name]

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def inp(self, name: str) -> str:
        """Our tensor for an ONNX tensor read by a layer; counts the read."""
        if name in self.consts:
            self.fail(f"input {name!r} is a constant where a tensor computed from the model's "
                      f"input is expected")
        if name not in self.tensor:
            self.fail(f"reads {name!r}, which no earlier node writes")
        return self.tensor[name]

    def unique(self, *candidates: str) -> str:
        """A new layer name from the first usable candidate (sanitised; a leading digit gets
        the operator as prefix: torch's ``0.weight`` gives ``conv_0``), else numbered."""
        prefix = self.node.op_type.lower() if self.node is not None else "layer"
        bases = []
        for c in candidates:
            base = _layer_name(c or "")
            if base:
                bases.append(f"{prefix}_{base}" if base[0].isdigit() else base)
        for base in bases:
            if base != INPUT and base not in self.used_names:
                self.used_names.add(base)
                return base
        base = bases[0] if bases else prefix
        k = 1
        while f"{base}_{k}" in self.used_names:
            k += 1
        self.used_names.add(f"{base}_{k}")
        return f"{base}_{k}"

    # ------------------------------------------------------------------------ the pass
    def run(self) -> Model:
        g = self.graph
        for init in g.initializer:
            self.consts[init.name] = self._array(init)
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            self.fail(f"expected one input tensor (besides the initializers), found "
                      f"{[i.name for i in inputs]}")
        if len(g.output) != 1:
            self.fail(f"expected one output tensor, found {[o.name for o in g.output]}")
        self._input(inputs[0])
        live = self._live_nodes()
        reads: dict[str, int] = {}
        for node in live:
            for n in node.input:
                if n:
                    reads[n] = reads.get(n, 0) + 1
        reads[g.output[0].name] = reads.get(g.output[0].name, 0) + 1
        self.reads = reads
        self.uses[INPUT] = reads.get(inputs[0].name, 0)
        handlers = self._handlers()
        for node in live:
            self.node = node
            if node.domain not in ("", "ai.onnx"):
                self.fail(f"operator domain {node.domain!r} is not supported (only the "
                          f"standard ONNX operators are)")
            if all(self.is_const(n) for n in node.input if n) and node.op_type in _CONST_OPS:
                self._fold_constant(node)
                continue
            handler = handlers.get(node.op_type)
            if handler is None:
                self.fail(f"operator {node.op_type} is not supported; dc-engine reads "
                          f"{', '.join(SUPPORTED_OPS)}")
            try:
                handler(node, self.attrs(node))
            except ONNXImportError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as exc:
                self.fail(f"{type(exc).__name__}: {_one_line(exc)}")
        self.node = None
        out_name = g.output[0].name
        if out_name in self.consts or out_name not in self.tensor:
            self.fail(f"the output {out_name!r} does not depend on the input")
        out = self.tensor[out_name]
        if out == INPUT:
            self.fail("the model has no layers: its output is its input")
        return self._model(out)

    def _array(self, tensor) -> np.ndarray:
        try:
            a = self.onnx.numpy_helper.to_array(tensor)
        except Exception as exc:
            self.fail(f"tensor {tensor.name!r} cannot be read: {_one_line(exc)}")
        return np.asarray(a)  # may be read-only: layers take copies

    def _input(self, value_info) -> None:
        t = value_info.type.tensor_type
        if value_info.type.WhichOneof("value") != "tensor_type":
            self.fail(f"input {value_info.name!r} is not a tensor")
        if t.elem_type not in (0, _FLOAT):
            self.fail(f"input {value_info.name!r} has element type "
                      f"{self.onnx.TensorProto.DataType.Name(t.elem_type)}; dc-engine models "
                      f"take float32 input")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] \
            if t.HasField("shape") else None
        user = self.user_shape
        if dims:
            self.fixed_batch = dims[0] if dims[0] and dims[0] > 0 else None
        if dims is None:
            if user is None:
                self.fail(f"input {value_info.name!r} has no declared shape; pass input_shape "
                          f"(--input-shape C,H,W)")
            shape = user
        else:
            if len(dims) not in (2, 4):
                self.fail(f"input {value_info.name!r} has rank {len(dims)}; dc-engine takes "
                          f"(N, features) or (N, C, H, W) input")
            sample = dims[1:]
            if user is not None:
                if len(user) != len(sample) or any(
                        d is not None and d != u for d, u in zip(sample, user)):
                    self.fail(f"input_shape {tuple(user)} does not fit the input "
                              f"{value_info.name!r}, declared (N, "
                              f"{', '.join('?' if d is None else str(d) for d in sample)})")
                shape = user
            elif any(d is None or d < 1 for d in sample):
                self.fail(f"input {value_info.name!r} has symbolic dimensions (N, "
                          f"{', '.join('?' if d is None else str(d) for d in sample)}); "
                          f"pass input_shape (--input-shape) with one sample's shape")
            else:
                shape = tuple(sample)
        if len(shape) not in (1, 3) or any(d < 1 for d in shape):
            self.fail(f"one sample's shape must be (features,) or (C, H, W) of positive "
                      f"sizes, got {tuple(shape)}")
        self.input_shape = tuple(shape)
        self.tensor[value_info.name] = INPUT
        self.shape[INPUT] = self.input_shape

    def _live_nodes(self) -> list:
        """The nodes the output depends on, in file order (dead branches are dropped)."""
        nodes = list(self.graph.node)
        writer = {}
        for i, node in enumerate(nodes):
            for o in node.output:
                if o:
                    writer[o] = i
        need, stack = set(), [self.graph.output[0].name]
        while stack:
            t = stack.pop()
            i = writer.get(t)
            if i is None or i in need:
                continue
            need.add(i)
            stack.extend(n for n in nodes[i].input if n)
        return [nodes[i] for i in sorted(need)]

    # ------------------------------------------------------------------- constants
    def _fold_constant(self, node) -> None:
        a = self.attrs(node)
        ins = [self.consts[n] if n else None for n in node.input]
        op = node.op_type
        if any(n in self.batch_derived for n in node.input):
            # The batch size is unknown until run time: it may only travel (Gather,
            # Unsqueeze, Concat, ...) to the first entry of a flattening Reshape's target.
            if op not in ("Identity", "Cast", "Unsqueeze", "Squeeze", "Concat", "Gather"):
                self.fail("it computes with the batch size (a Shape of a tensor), which "
                          "dc-engine knows only at run time; only a flattening Reshape may "
                          "use it")
            self.batch_derived.add(node.output[0])
        self._check_fold_size(op, a, ins)
        try:
            if op == "Constant":
                out = self._constant_value(a)
            elif op == "ConstantOfShape":
                shape = [int(d) for d in np.asarray(ins[0]).ravel()]
                if any(d < 0 for d in shape) or math.prod(shape) > MAX_CONSTANT_ELEMENTS:
                    self.fail(f"constant of shape {shape}: negative or above "
                              f"{MAX_CONSTANT_ELEMENTS:,} elements")
                value = a.get("value")
                fill = self.onnx.numpy_helper.to_array(value) if value is not None \
                    else np.zeros(1, np.float32)
                out = np.full(shape, fill.ravel()[0], dtype=fill.dtype)
            elif op in ("Identity", "Dropout"):
                out = ins[0]
            elif op == "Cast":
                to = self.onnx.helper.tensor_dtype_to_np_dtype(a["to"])
                out = ins[0].astype(to)
            elif op in ("Unsqueeze", "Squeeze"):
                axes = a.get("axes")
                if axes is None and len(ins) > 1 and ins[1] is not None:
                    axes = [int(v) for v in ins[1].ravel()]
                x = ins[0]
                if op == "Squeeze":
                    out = np.squeeze(x, axis=tuple(axes)) if axes else np.squeeze(x)
                else:
                    out = x
                    rank = x.ndim + len(axes)
                    for ax in sorted(ax % rank for ax in axes):
                        out = np.expand_dims(out, ax)
            elif op == "Reshape":
                shape = [int(d) for d in ins[1].ravel()]
                shape = [ins[0].shape[i] if d == 0 and not a.get("allowzero") else d
                         for i, d in enumerate(shape)]
                out = ins[0].reshape(shape)
            elif op == "Flatten":
                axis = int(a.get("axis", 1))
                axis += ins[0].ndim if axis < 0 else 0
                out = ins[0].reshape(math.prod(ins[0].shape[:axis]), -1)
            elif op == "Transpose":
                out = np.transpose(ins[0], a.get("perm"))
            elif op in ("Add", "Sub", "Mul", "Div", "Sum"):
                f = {"Add": np.add, "Sum": np.add, "Sub": np.subtract, "Mul": np.multiply,
                     "Div": _onnx_div}[op]
                out = ins[0]
                for x in ins[1:]:
                    out = f(out, x)
            elif op == "Sqrt":
                out = np.sqrt(ins[0])
            elif op == "Concat":
                out = np.concatenate(ins, axis=a["axis"])
            elif op == "Gather":
                out = np.take(ins[0], ins[1].astype(np.int64), axis=a.get("axis", 0))
            else:  # pragma: no cover - _CONST_OPS and this list agree
                self.fail(f"operator {op} on constants is not supported")
        except ONNXImportError:
            raise
        except Exception as exc:
            self.fail(f"cannot compute it on its constant inputs: {_one_line(exc)}")
        self.consts[node.output[0]] = np.asarray(out)

    def _check_fold_size(self, op: str, a: dict, ins: list) -> None:
        """Refuse a fold whose result would exceed MAX_CONSTANT_ELEMENTS, before computing it
        (a small file can ask for a huge constant by broadcasting or concatenating)."""
        arrays = [x for x in ins if x is not None]
        if not arrays:
            return
        try:
            if op in ("Add", "Sub", "Mul", "Div", "Sum"):
                size = math.prod(np.broadcast_shapes(*(x.shape for x in arrays)))
            elif op == "Concat":
                size = sum(x.size for x in arrays)
            elif op == "Gather":
                size = ins[1].size * (arrays[0].size // max(arrays[0].shape[a.get("axis", 0)],
                                                             1))
            else:
                return
        except (ValueError, IndexError, TypeError) as exc:
            self.fail(f"cannot compute it on its constant inputs: {_one_line(exc)}")
        if size > MAX_CONSTANT_ELEMENTS:
            self.fail(f"its result would hold {size:,} values, above the "
                      f"{MAX_CONSTANT_ELEMENTS:,} a constant may have")

    def _constant_value(self, a: dict) -> np.ndarray:
        if "value" in a:
            return self.onnx.numpy_helper.to_array(a["value"])
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in a:
                return np.asarray(a[key], dtype=dtype)
        self.fail(f"a Constant with {sorted(a)} is not supported (value, value_float(s), "
                  f"value_int(s) are)")

    # ---------------------------------------------------------------------- layers
    def add(self, layer: Layer, ins: list[str], out: str) -> None:
        """Append ``layer`` reading our tensors ``ins``; ONNX tensor ``out`` becomes its
        output."""
        layer.inputs = ins
        arg = self.shape[ins[0]] if layer.arity == 1 else [self.shape[n] for n in ins]
        self.shape[layer.name] = layer.output_shape(arg)
        for n in ins:
            self.uses[n] -= 1
        self.read.update(ins)
        self.layers.append(layer)
        self.producer[layer.name] = layer
        self.tensor[out] = layer.name
        self.uses[layer.name] = self.reads.get(out, 0)

    def alias(self, onnx_in: str, onnx_out: str) -> None:
        """``onnx_out`` is ``onnx_in`` (Identity, inference Dropout, a no-op Reshape)."""
        ours = self.inp(onnx_in)
        self.tensor[onnx_out] = ours
        self.uses[ours] += self.reads.get(onnx_out, 0) - 1

    def second_outputs_unused(self, node) -> None:
        extra = [o for o in node.output[1:] if o and self.reads.get(o)]
        if extra:
            self.fail(f"its extra outputs {extra} are read; dc-engine imports inference graphs "
                      f"only")

    def weight_name(self, node, index: int) -> str:
        """Candidate layer name from a weight initializer named like a layer's parameter
        (``fc1.weight`` -> fc1, Caffe2's ``conv1_w_0`` -> conv1); "" for other names."""
        if len(node.input) > index and node.input[index]:
            w = node.input[index]
            stripped = _WEIGHT_SUFFIX_RE.sub("", w)
            if stripped != w and not w.startswith("onnx::"):
                return stripped
        return ""

    def node_names(self, node, index: int | None = None) -> list[str]:
        """Candidate names: a weighted layer's weight (``fc1.weight`` -> fc1) or scope
        (``/layer1/c1/Conv`` -> layer1_c1); a parameter-free one's scope and operator
        (``/layer1/Relu_1`` -> layer1_relu_1); then the node's name and output."""
        scope, op = _scope_name(node.name, node.op_type)
        if index is not None:
            names = [self.weight_name(node, index), scope]
        elif op and scope[:1].isdigit():  # nn.Sequential's index: /2/Relu -> relu_2
            base, _, k = op.partition("_")
            names = [f"{base.lower()}_{scope}" + (f"_{k}" if k else "")]
        else:
            names = ["/".join(p for p in (scope, op.lower()) if p)] if op else []
        return [*names, node.name, node.output[0], node.op_type.lower()]

    def _handlers(self) -> dict:
        return {
            "Gemm": self._gemm, "MatMul": self._matmul, "Conv": self._conv,
            "Relu": self._simple(ReLU), "MaxPool": self._pool, "AveragePool": self._pool,
            "GlobalAveragePool": self._simple(GlobalAvgPool2D), "LRN": self._lrn,
            "Flatten": self._flatten, "Reshape": self._reshape, "Squeeze": self._squeeze,
            "Softmax": self._softmax, "Dropout": self._dropout, "Identity": self._identity,
            "Add": self._add, "Sum": self._add, "Sub": self._affine_op, "Mul": self._affine_op,
            "Div": self._affine_op, "Concat": self._concat,
            "BatchNormalization": self._batchnorm, "Shape": self._shape,
        }

    def _simple(self, cls):
        def handler(node, a):
            if a:
                self.fail(f"attributes {sorted(a)} are not supported")
            self.add(cls(name=self.unique(*self.node_names(node))), [self.inp(node.input[0])],
                     node.output[0])
        return handler

    def _shape(self, node, a):
        """The shape of a computed tensor, as a constant whose batch entry is a marker (a
        ``x.view(x.size(0), -1)`` in PyTorch gives Shape -> Gather -> Concat -> Reshape)."""
        src = self.inp(node.input[0])
        self.uses[src] -= 1  # reads no values: folding into the writer stays possible
        dims = np.array([_BATCH, *self.shape[src]], dtype=np.int64)
        start, end = a.get("start", 0), a.get("end")
        self.consts[node.output[0]] = dims[start:end]
        self.batch_derived.add(node.output[0])

    def _identity(self, node, a):
        self.alias(node.input[0], node.output[0])

    def _dropout(self, node, a):
        self.second_outputs_unused(node)
        rate = a.get("ratio", 0.5)
        if len(node.input) > 1 and node.input[1]:
            rate = float(self.const(node.input[1], "the dropout ratio").ravel()[0])
        if len(node.input) > 2 and node.input[2] and bool(self.consts.get(node.input[2], 0)):
            self.fail("training_mode=1 is not supported (inference graphs only)")
        if rate <= 0:
            self.alias(node.input[0], node.output[0])
            return
        self.add(Dropout(float(rate), name=self.unique(*self.node_names(node))),
                 [self.inp(node.input[0])], node.output[0])

    def _dense(self, node, x: str, w: np.ndarray, b: np.ndarray | None, weight_index: int):
        """A Dense layer from an (out, in) weight, reading ONNX tensor ``x``."""
        src = self.inp(x)
        shape = self.shape[src]
        if len(shape) != 1:
            self.fail(f"its input has per-sample shape {shape}; dc-engine's fully connected "
                      f"layer takes (N, features) (flatten first)")
        if w.ndim != 2 or w.shape[1] != shape[0]:
            self.fail(f"weight of shape {w.shape} does not fit {shape[0]} input features")
        out_f = w.shape[0]
        if b is None:
            b = np.zeros(out_f)
        elif b.size not in (1, out_f):
            self.fail(f"bias of shape {b.shape} does not fit {out_f} outputs")
        b = np.broadcast_to(b.reshape(-1), (out_f,))
        layer = Dense(int(w.shape[1]), int(out_f), name=self.unique(
            *self.node_names(node, weight_index)),
            params={"W": np.array(w, np.float32, order="C"),  # copies: writable, our own
                    "b": np.array(b, np.float32).reshape(out_f)})
        self.add(layer, [src], node.output[0])

    def _gemm(self, node, a):
        if a.get("transA", 0):
            self.fail("transA=1 is not supported (the input must be (N, features))")
        w = self.const(node.input[1], "the weight B")
        if w.ndim != 2:
            self.fail(f"weight B of shape {w.shape} is not a matrix")
        w = w if a.get("transB", 0) else w.T
        if a.get("alpha", 1.0) != 1.0:
            w = w.astype(np.float64) * a["alpha"]
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = self.const(node.input[2], "the bias C").astype(np.float64) * a.get("beta", 1.0)
            if b.ndim == 2 and b.shape[0] == 1:
                b = b[0]
            if b.ndim > 1:
                self.fail(f"bias C of shape {b.shape} is not per output")
        self._dense(node, node.input[0], w, b, 1)

    def _matmul(self, node, a):
        if not self.is_const(node.input[1]):
            self.fail("a MatMul of two computed tensors is not supported (its second input "
                      "must be a constant weight)")
        w = self.const(node.input[1], "the weight")
        if w.ndim != 2:
            self.fail(f"weight of shape {w.shape} is not a matrix")
        self._dense(node, node.input[0], w.T, None, 1)

    def _square(self, values, what: str) -> int:
        values = [int(v) for v in values]
        if len(values) != 2:
            self.fail(f"{what} {values}: only 2-D (NCHW) windows are supported")
        if values[0] != values[1]:
            self.fail(f"{what} {values}: only square windows and equal strides are supported")
        return values[0]

    def _pads(self, a: dict, shape: tuple, k: int, stride: int) -> list[int]:
        """[top, left, bottom, right] from ONNX ``pads`` / ``auto_pad``."""
        auto = a.get("auto_pad", "NOTSET") or "NOTSET"
        if auto == "NOTSET":
            pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
            if len(pads) != 4:
                self.fail(f"pads {pads}: expected 4 values for a 2-D window")
            return [pads[0], pads[1], pads[2], pads[3]]
        if auto == "VALID":
            return [0, 0, 0, 0]
        if auto not in ("SAME_UPPER", "SAME_LOWER"):
            self.fail(f"auto_pad={auto!r} is not supported")
        out = []
        for size in shape[1:3]:
            total = max((-(-size // stride) - 1) * stride + k - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return [out[0][0], out[1][0], out[0][1], out[1][1]]

    def _conv(self, node, a):
        src = self.inp(node.input[0])
        shape = self.shape[src]
        if len(shape) != 3:
            self.fail(f"its input has per-sample shape {shape}; only 2-D convolutions of "
                      f"(N, C, H, W) tensors are supported")
        w = self.const(node.input[1], "the weight").astype(np.float32, copy=False)
        if w.ndim != 4:
            self.fail(f"weight of shape {w.shape}: only 2-D convolutions are supported")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)")
        k = self._square(a.get("kernel_shape", w.shape[2:]), "kernel_shape")
        if tuple(w.shape[2:]) != (k, k):
            self.fail(f"kernel_shape {k}x{k} does not match the weight {w.shape}")
        stride = self._square(a.get("strides", [1, 1]), "strides")
        groups = int(a.get("group", 1))
        b = np.zeros(w.shape[0], np.float32)
        if len(node.input) > 2 and node.input[2]:
            b = self.const(node.input[2], "the bias").astype(np.float32).reshape(-1)
        if shape[0] != w.shape[1] * groups:
            self.fail(f"weight {w.shape} with group={groups} takes {w.shape[1] * groups} "
                      f"input channels, the input has {shape[0]}")
        pads = self._pads(a, shape, k, stride)
        layer = Conv2D(int(shape[0]), int(w.shape[0]), k, stride=stride,
                       padding=pads[0] if len(set(pads)) == 1 else pads, groups=groups,
                       name=self.unique(*self.node_names(node, 1)),
                       params={"W": np.array(w, order="C"), "b": np.array(b)})
        self.add(layer, [src], node.output[0])

    def _pool(self, node, a):
        self.second_outputs_unused(node)
        src = self.inp(node.input[0])
        shape = self.shape[src]
        if len(shape) != 3:
            self.fail(f"its input has per-sample shape {shape}; only 2-D pooling is supported")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)")
        if a.get("storage_order", 0):
            self.fail("storage_order=1 is not supported")
        k = self._square(a["kernel_shape"], "kernel_shape")
        stride = self._square(a.get("strides", [1, 1]), "strides")
        pads = self._pads(a, shape, k, stride)
        padding = pads[0] if len(set(pads)) == 1 else pads
        ceil = bool(a.get("ceil_mode", 0))
        name = self.unique(*self.node_names(node))
        if node.op_type == "MaxPool":
            layer = MaxPool2D(k, stride, padding=padding, ceil_mode=ceil, name=name)
        else:
            layer = AvgPool2D(k, stride, padding=padding, ceil_mode=ceil, name=name,
                              count_include_pad=bool(a.get("count_include_pad", 0)))
        self.add(layer, [src], node.output[0])

    def _lrn(self, node, a):
        layer = LocalResponseNorm(int(a["size"]), alpha=float(a.get("alpha", 1e-4)),
                                  beta=float(a.get("beta", 0.75)), k=float(a.get("bias", 1.0)),
                                  name=self.unique(*self.node_names(node)))
        self.add(layer, [self.inp(node.input[0])], node.output[0])

    def _flatten_to(self, node, src: str) -> None:
        """``node`` flattens each sample of ``src``: a Flatten layer (none for 1-D samples)."""
        if len(self.shape[src]) == 1:
            self.alias(node.input[0], node.output[0])
            return
        self.add(Flatten(name=self.unique(*self.node_names(node))), [self.inp(node.input[0])],
                 node.output[0])

    def _flatten(self, node, a):
        src = self.inp(node.input[0])
        axis = int(a.get("axis", 1))
        if axis not in (1, -len(self.shape[src])):
            self.fail(f"axis={axis} is not supported (only 1: flatten each sample)")
        self._flatten_to(node, src)

    def _reshape(self, node, a):
        src = self.inp(node.input[0])
        shape = self.shape[src]
        if not self.is_const(node.input[1]):
            self.fail("a Reshape to a shape computed from the input's values is not supported "
                      "(the target must be a constant, or built from a Shape)")
        target = [int(d) for d in self.consts[node.input[1]].ravel()]
        n = math.prod(shape)
        if any(d < -1 and d != _BATCH for d in target) or _BATCH in target[1:]:
            self.fail(f"shape {target} computed at import is not a plain shape")
        # The first entry must mean "the batch": 0 (copy), the marker of a Shape, the batch
        # the file fixes, or -1 with every other value given.
        batch = target[0] in (0, _BATCH) or (
            target[0] == self.fixed_batch and self.fixed_batch is not None)
        if len(target) == 2 and ((batch and target[1] in (-1, n)) or target == [-1, n]):
            self._flatten_to(node, src)
            return
        if (batch or target[0] == -1) and target[1:] == list(shape):  # a no-op
            self.alias(node.input[0], node.output[0])
            return
        self.fail(f"a Reshape of per-sample shape {shape} to {target} is not supported (only "
                  f"flattening each sample, (N, -1))")

    def _squeeze(self, node, a):
        src = self.inp(node.input[0])
        shape = self.shape[src]
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = [int(v) for v in self.const(node.input[1], "axes").ravel()]
        rank = len(shape) + 1
        axes = sorted(int(ax) % rank for ax in axes) if axes else [
            i + 1 for i, d in enumerate(shape) if d == 1]
        if 0 in axes:
            self.fail("squeezing the batch axis is not supported")
        kept = [d for i, d in enumerate(shape) if i + 1 not in axes]
        if any(shape[ax - 1] != 1 for ax in axes) or len(kept) != 1:
            self.fail(f"a Squeeze of per-sample shape {shape} along {axes} is not supported "
                      f"(only to (N, features))")
        self._flatten_to(node, src)

    def _softmax(self, node, a):
        src = self.inp(node.input[0])
        shape = self.shape[src]
        rank = len(shape) + 1
        default = 1 if (self.opset or 13) < 13 else -1
        axis = int(a.get("axis", default)) % rank
        if axis == 0:
            self.fail("a softmax over the batch axis is not supported")
        # Before opset 13 the softmax runs over all axes from ``axis`` on; from 13 along one.
        over = shape[axis - 1:] if (self.opset or 13) < 13 else shape[axis - 1:axis]
        if math.prod(over) != math.prod(shape):
            self.fail(f"a softmax along axis {axis} of per-sample shape {shape} is not "
                      f"supported (only over all of a sample's values)")
        if len(shape) != 1:
            self.add(Flatten(name=self.unique(f"{self.node_names(node)[1]}_flatten")), [src],
                     f"{node.output[0]}\x00flat")
            src = self.tensor[f"{node.output[0]}\x00flat"]
            self.uses[src] = 1
        self.add(Softmax(name=self.unique(*self.node_names(node))), [src], node.output[0])

    def _concat(self, node, a):
        srcs = [self.inp(n) for n in node.input if n]
        rank = len(self.shape[srcs[0]]) + 1
        if int(a["axis"]) % rank != 1:
            self.fail(f"axis={a['axis']} is not supported (only the channel axis 1)")
        if len(srcs) == 1:
            self.alias(node.input[0], node.output[0])
            return
        self.add(Concat(1, name=self.unique(*self.node_names(node))), srcs, node.output[0])

    def _add(self, node, a):
        names = [n for n in node.input if n]
        consts = [n for n in names if self.is_const(n)]
        if not consts:
            srcs = [self.inp(n) for n in names]
            if len(srcs) == 1:
                self.alias(names[0], node.output[0])
                return
            shapes = {self.shape[s] for s in srcs}
            if len(shapes) != 1:
                self.fail(f"adding tensors of different shapes {sorted(shapes)} (broadcasting) "
                          f"is not supported")
            self.add(Add(name=self.unique(*self.node_names(node))), srcs, node.output[0])
            return
        if len(names) != 2:
            self.fail("a Sum of more than two inputs with constants is not supported")
        self._affine_op(node, a)

    def _affine_op(self, node, a):
        """``x op c`` (Add, Sub, Mul, Div) with a per-channel (or scalar) constant ``c``."""
        x, c = node.input[0], node.input[1]
        op = node.op_type
        if self.is_const(x) and op in ("Add", "Mul", "Sum"):
            x, c = c, x
        if not self.is_const(x) and not self.is_const(c):
            self.fail(f"a {op} of two computed tensors is not supported")
        if self.is_const(x):
            self.fail(f"a {op} of a constant by a computed tensor (constant {op.lower()} "
                      f"tensor) is not supported")
        src = self.inp(x)
        channels = self.shape[src][0]
        value = self._per_channel(self.const(c, "the constant"), self.shape[src])
        scale, shift = np.ones(channels), np.zeros(channels)
        if op in ("Add", "Sum"):
            shift = value
        elif op == "Sub":
            shift = -value
        elif op == "Mul":
            scale = value
        else:
            if np.any(value == 0):
                self.fail("division by a constant holding 0")
            scale = 1.0 / value
        self._channel_affine(node, x, scale, shift)

    def _per_channel(self, c: np.ndarray, shape: tuple) -> np.ndarray:
        """A constant broadcast against (N, *shape) as one value per channel (axis 1)
        (its shape is checked before its values are converted)."""
        channels = shape[0]
        full = (1, *shape)
        if c.ndim > len(full):
            self.fail(f"constant of shape {c.shape} broadcasts beyond the tensor")
        c_full = c.reshape((1,) * (len(full) - c.ndim) + c.shape)
        ok = all(d == 1 for i, d in enumerate(c_full.shape) if i != 1) and \
            c_full.shape[1] in (1, channels)
        if not ok:
            self.fail(f"only a scalar or per-channel constant is supported, got shape "
                      f"{c.shape} against a tensor of per-sample shape {shape}")
        return np.broadcast_to(c_full.reshape(-1).astype(np.float64), (channels,)).copy()

    def _batchnorm(self, node, a):
        self.second_outputs_unused(node)
        if a.get("training_mode", 0):
            self.fail("training_mode=1 is not supported (inference graphs only)")
        gamma, beta, mean, var = (self.const(node.input[i], what).astype(np.float64)
                                  for i, what in ((1, "scale"), (2, "B"), (3, "mean"),
                                                  (4, "var")))
        with np.errstate(all="ignore"):  # non-finite statistics are refused in _model
            scale, shift = fold_batchnorm(gamma.ravel(), beta.ravel(), mean.ravel(),
                                          var.ravel(), float(a.get("epsilon", 1e-5)))
        self._channel_affine(node, node.input[0], np.asarray(scale, np.float64),
                             np.asarray(shift, np.float64))

    def _channel_affine(self, node, x: str, scale: np.ndarray, shift: np.ndarray) -> None:
        """``y[:, c] = x[:, c] * scale[c] + shift[c]``: folded into the Conv, Dense or
        BatchNorm2D that writes ``x`` when this node is its only reader, else a BatchNorm2D."""
        src = self.inp(x)
        shape = self.shape[src]
        if scale.shape != (shape[0],) or shift.shape != (shape[0],):
            self.fail(f"{scale.shape[0]} channels of statistics for a tensor of per-sample "
                      f"shape {shape}")
        layer = self.producer.get(src)
        # Fold only if this node is the one reader of the layer's output, before and after.
        if layer is not None and self.uses[src] == 1 and src not in self.read and isinstance(
                layer, (Conv2D, Dense, BatchNorm2D)):
            with np.errstate(all="ignore"):  # non-finite results are refused in _model
                if isinstance(layer, BatchNorm2D):
                    s, t = layer.params["scale"].astype(np.float64), layer.params["shift"]
                    new = {"scale": s * scale, "shift": t.astype(np.float64) * scale + shift}
                else:
                    w, b = fold_into_conv(layer.params["W"].astype(np.float64),
                                          layer.params["b"].astype(np.float64), scale, shift)
                    new = {"W": w, "b": b}
                for k, v in new.items():
                    layer.params[k] = np.ascontiguousarray(v, dtype=np.float32)
            self.alias(x, node.output[0])
            return
        if len(shape) != 3:
            self.fail(f"a per-channel scale or shift of per-sample shape {shape} that follows "
                      f"no Conv or Gemm is not supported")
        layer = BatchNorm2D(int(shape[0]), name=self.unique(*self.node_names(node, 1)),
                            params={"scale": scale.astype(np.float32),
                                    "shift": shift.astype(np.float32)})
        self.add(layer, [src], node.output[0])

    # ------------------------------------------------------------------------- model
    def _model(self, out: str) -> Model:
        for layer in self.layers:  # a corrupt file (or a fold of corrupt statistics)
            for key, value in layer.params.items():
                if not np.isfinite(value).all():
                    self.fail(f"layer {layer.name!r}: its {key} holds NaN or infinite values")
        prev = INPUT
        for layer in self.layers:  # a chain keeps the plain form (no wiring in its file)
            if layer.inputs == [prev]:
                layer.inputs = None
            prev = layer.name
        model = Model(self.layers, self.input_shape, name=_layer_name(self.name) or "model",
                      output=None if out == prev else out)
        producer = " ".join(p for p in (self.proto.producer_name,
                                        self.proto.producer_version) if p)
        model.metadata = {"source": {"format": "onnx", "file": Path(self.source).name,
                                     "producer": producer, "opset": self.opset}}
        return model


_CONST_OPS = {"Constant", "ConstantOfShape", "Identity", "Cast", "Unsqueeze", "Squeeze",
              "Reshape", "Flatten", "Transpose", "Add", "Sub", "Mul", "Div", "Sum", "Sqrt",
              "Concat", "Gather", "Dropout"}


# --------------------------------------------------------------------------------- export


def to_onnx(model: Model, opset: int = EXPORT_OPSET):
    """The model as an ``onnx.ModelProto`` (compressed weights decoded to float32), checked
    with ``onnx.checker``. The input is ``"input"`` of shape (N, *model.input_shape) with a
    symbolic batch ``N``; the output is named after the model's output tensor.

    Raises
    ------
    ImportError
        The onnx package is not installed.
    ValueError
        ``opset`` below 13, or a layer type with no ONNX form.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if opset < EXPORT_OPSET:
        raise ValueError(f"opset must be >= {EXPORT_OPSET}, got {opset}")
    dense = model.to_dense() if model.compressed else model
    dense = dense.astype(np.float32) if dense.dtype != np.float32 else dense
    wiring = dense.wiring()
    nodes, inits = [], []

    def init(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    alias: dict[str, str] = {INPUT: INPUT}
    shapes = dense.tensor_shapes()  # every tensor's per-sample shape
    for layer, ins in wiring.steps:
        xs = [alias[n] for n in ins]
        y, t = layer.name, layer.type_name
        p = layer.params
        if t == "Dense":
            nodes.append(helper.make_node("Gemm", [xs[0], init(f"{y}.W", p["W"]),
                                                   init(f"{y}.b", p["b"])], [y], name=y,
                                          transB=1))
        elif t == "Conv2D":
            k = layer.kernel_size
            nodes.append(helper.make_node(
                "Conv", [xs[0], init(f"{y}.W", p["W"]), init(f"{y}.b", p["b"])], [y], name=y,
                kernel_shape=[k, k], strides=[layer.stride] * 2, pads=list(layer.pads),
                group=layer.groups))
        elif t in ("MaxPool2D", "AvgPool2D"):
            kw = dict(kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2,
                      pads=list(layer.pads), ceil_mode=int(layer.ceil_mode))
            if t == "AvgPool2D":
                kw["count_include_pad"] = int(layer.count_include_pad)
            nodes.append(helper.make_node("MaxPool" if t == "MaxPool2D" else "AveragePool",
                                          xs, [y], name=y, **kw))
        elif t == "GlobalAvgPool2D":
            nodes.append(helper.make_node("GlobalAveragePool", xs, [y], name=y))
        elif t == "ReLU":
            nodes.append(helper.make_node("Relu", xs, [y], name=y))
        elif t == "Softmax":
            nodes.append(helper.make_node("Softmax", xs, [y], name=y, axis=1))
        elif t == "Flatten":
            nodes.append(helper.make_node("Flatten", xs, [y], name=y, axis=1))
        elif t == "Dropout":
            alias[y] = xs[0]  # identity at inference
            continue
        elif t == "LocalResponseNorm":
            nodes.append(helper.make_node("LRN", xs, [y], name=y, size=layer.size,
                                          alpha=layer.alpha, beta=layer.beta, bias=layer.k))
        elif t == "Normalize":  # (x - mean) / std, the constants shaped to broadcast
            shape = (len(layer.mean),) + (1,) * (len(shapes[ins[0]]) - 1)
            m = init(f"{y}.mean", np.asarray(layer.mean, np.float32).reshape(shape))
            sd = init(f"{y}.std", np.asarray(layer.std, np.float32).reshape(shape))
            nodes.append(helper.make_node("Sub", [xs[0], m], [f"{y}.centred"], name=f"{y}.sub"))
            nodes.append(helper.make_node("Div", [f"{y}.centred", sd], [y], name=y))
        elif t == "BatchNorm2D":
            c = layer.channels
            nodes.append(helper.make_node(
                "BatchNormalization",
                [xs[0], init(f"{y}.scale", p["scale"]), init(f"{y}.shift", p["shift"]),
                 init(f"{y}.mean", np.zeros(c, np.float32)),
                 init(f"{y}.var", np.ones(c, np.float32))], [y], name=y, epsilon=0.0))
        elif t == "Add":
            nodes.append(helper.make_node("Add" if len(xs) == 2 else "Sum", xs, [y], name=y))
        elif t == "Concat":
            nodes.append(helper.make_node("Concat", xs, [y], name=y, axis=1))
        else:
            raise ValueError(f"layer {y!r} ({t}) has no ONNX form in dc-engine's exporter")
        alias[y] = y
    out = alias[wiring.output]
    if out == INPUT:
        raise ValueError(f"{model.name}: the model's output is its input; nothing to export")
    out_shape = ["N", *dense.output_shape()]
    graph = helper.make_graph(
        nodes, _layer_name(model.name) or "model",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *dense.input_shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], inits)
    proto = helper.make_model(graph, producer_name="dc-engine", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, 8)  # readable by onnxruntime 1.14 and later
    onnx.checker.check_model(proto)
    return proto


def save_onnx(model: Model, path: PathLike, opset: int = EXPORT_OPSET) -> Path:
    """Write ``model`` (dense or compressed) as an ONNX file; see :func:`to_onnx`. The file is
    written atomically: an existing file at ``path`` is replaced only by a complete one.
    Returns the path."""
    proto = to_onnx(model, opset)
    data = proto.SerializeToString()

    return write_bytes(path, data, "ONNX file")


__all__ = ["load_onnx", "from_onnx", "to_onnx", "save_onnx", "ONNXImportError",
           "SUPPORTED_OPS", "EXPORT_OPSET", "MAX_CONSTANT_ELEMENTS"]
