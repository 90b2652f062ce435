"""Run compressed models: ``dc_engine.runtime.load("MODEL.dc.h5")``.

The runtime needs numpy, numba and h5py only; importing it imports no training code
(``dc_engine.train``, ``optim``, ``quantize``, ``prune``, ``pipeline``), so an edge app can embed
just this module. A :class:`CompressedModel` runs inference (``forward``, ``predict``); its
weighted layers keep their weights as codebook codes (see :class:`CompressedDense` and
:class:`CompressedConv2D`), and :meth:`CompressedModel.to_dense` gives the decoded dense
:class:`~dc_engine.model.Model`, every weight equal to the quantized model's bit for bit.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numba
import numpy as np

import kernels

from . import container
from .encode import decode_layer
from .errors import DCFormatError
from .layers import LAYER_TYPES, Conv2D, Dense, ReLU
from .matrix import CompressedMatrix, aligned_empty
from .model import Model

__all__ = ["CompressedModel", "CompressedDense", "CompressedConv2D", "CompressedMatrix", "load"]


def _matrix(idx2d: np.ndarray, codebook: np.ndarray) -> CompressedMatrix:
    """The kernel layout of a decoded layer: the Huffman streams are decoded once, at load
    time, into fixed-width packed (gap, code) words (gap width chosen for the smallest words);
    the float weights are never materialised."""
    return CompressedMatrix.from_codes(idx2d, codebook, index_bits="auto")


class _CompressedLayer:
    """Common part of the weighted compressed layers."""

    type_name = ""

    def __init__(self, name: str, hyperparameters: dict, decoded: dict):
        self.name = name
        self.hyperparameters = dict(hyperparameters)
        self.weight_shape = tuple(decoded["idx"].shape)
        self.weight_bits = decoded["weight_bits"]
        self.index_bits = decoded["index_bits"]
        self.nnz = decoded["nnz"]
        self.codebook = decoded["codebook"]
        self.bias = decoded["bias"]
        idx2d = decoded["idx"].reshape(self.weight_shape[0], -1)
        self.matrix = _matrix(idx2d, self.codebook)

    def weight(self) -> np.ndarray:
        """The decoded float32 weight (``codebook[idx]``) in the layer's shape."""
        return self.matrix.to_dense().reshape(self.weight_shape)

    def __repr__(self) -> str:
        return (f"{self.type_name}{self.weight_shape} [{self.name}] {self.weight_bits}-bit "
                f"codes, {self.nnz:,} non-zeros")


class CompressedDense(_CompressedLayer):
    """A fully connected layer run from its compressed weights: ``y = x W^T + b``."""

    type_name = "Dense"

    def output_shape(self, input_shape: tuple) -> tuple:
        if tuple(input_shape) != (self.weight_shape[1],):
            raise ValueError(f"{self.name}: expects ({self.weight_shape[1]},) per sample, got "
                             f"{tuple(input_shape)}")
        return (self.weight_shape[0],)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        y = self.matrix.matmul(x)
        if self.bias.size:
            y += self.bias
        return y

    def dense_layer(self) -> Dense:
        layer = Dense(**self.hyperparameters, name=self.name)
        layer.set_param("W", self.weight())
        layer.set_param("b", self.bias.copy())
        return layer


class CompressedConv2D(_CompressedLayer):
    """A convolution run from its compressed weights: a sparse-quantized GEMM over the
    im2col columns (``W (out, C*k*k) @ cols (C*k*k, N*oh*ow)``)."""

    type_name = "Conv2D"

    def __init__(self, name: str, hyperparameters: dict, decoded: dict):
        super().__init__(name, hyperparameters, decoded)
        self._local = threading.local()

    def output_shape(self, input_shape: tuple) -> tuple:
        return self._shape_check().output_shape(input_shape)

    def _shape_check(self) -> _ConvShape:
        hp = self.hyperparameters
        return _ConvShape(hp["in_channels"], hp["out_channels"], hp["kernel_size"],
                          hp["stride"], hp["padding"], self.name)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        hp = self.hyperparameters
        k, s, p = hp["kernel_size"], hp["stride"], hp["padding"]
        n, c, h, w = x.shape
        if c != hp["in_channels"]:
            raise ValueError(f"{self.name}: expected {hp['in_channels']} input channels, "
                             f"got {c}")
        oh, ow = self._shape_check().output_shape((c, h, w))[1:]
        x = np.ascontiguousarray(x, dtype=np.float32)
        cols = self._scratch((c * k * k, n * oh * ow))
        if s == 1 and p == 0:
            kernels.im2col_valid(x, k, k, oh, ow, cols)
        else:
            kernels.im2col(x, k, k, s, p, oh, ow, cols)
        y = self.matrix.matmul_t(cols)  # (out, N*oh*ow)
        y = y.reshape(-1, n, oh, ow).transpose(1, 0, 2, 3)
        return np.add(y, self.bias.reshape(1, -1, 1, 1), order="C")

    def _scratch(self, shape: tuple) -> np.ndarray:
        """A reused im2col buffer, one per thread (a fresh 10 MB array each call costs more
        in page faults than the product itself)."""
        buf = getattr(self._local, "cols", None)
        if buf is None or buf.size < shape[0] * shape[1]:
            buf = aligned_empty(shape[0] * shape[1])  # see matrix.ALIGN
            self._local.cols = buf
        return buf[:shape[0] * shape[1]].reshape(shape)

    def dense_layer(self) -> Conv2D:
        layer = Conv2D(**self.hyperparameters, name=self.name)
        layer.set_param("W", self.weight())
        layer.set_param("b", self.bias.copy())
        return layer


class _ConvShape:
    """Output-shape arithmetic of a conv layer without allocating its parameters."""

    def __init__(self, cin, cout, k, s, p, name):
        self.cin, self.cout, self.k, self.s, self.p, self.name = cin, cout, k, s, p, name

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3 or input_shape[0] != self.cin:
            raise ValueError(f"{self.name}: expects ({self.cin}, H, W) per sample, got "
                             f"{tuple(input_shape)}")
        oh = kernels.conv_output_size(input_shape[1], self.k, self.s, self.p)
        ow = kernels.conv_output_size(input_shape[2], self.k, self.s, self.p)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: a {self.k}x{self.k} kernel does not fit "
                             f"{tuple(input_shape)}")
        return (self.cout, oh, ow)


_COMPRESSED_TYPES = {"Dense": CompressedDense, "Conv2D": CompressedConv2D}


#: Hyperparameters of the weighted layers and their smallest values (all integers).
_WEIGHTED_HP = {
    "Dense": {"in_features": 1, "out_features": 1},
    "Conv2D": {"in_channels": 1, "out_channels": 1, "kernel_size": 1, "stride": 1, "padding": 0},
}


def _weight_shape(ltype: str, hp: dict) -> tuple | None:
    """W's shape from a weighted layer's hyperparameters; None unless they are exactly the
    layer's keys with integer values in range (so the decoded layer rebuilds as a dense one)."""
    lows = _WEIGHTED_HP[ltype]
    if set(hp) != set(lows) or not all(type(hp[k]) is int and hp[k] >= lo
                                       for k, lo in lows.items()):
        return None
    if ltype == "Dense":
        return (hp["out_features"], hp["in_features"])
    k = hp["kernel_size"]
    return (hp["out_channels"], hp["in_channels"], k, k)


class CompressedModel:
    """A sequential model whose weighted layers run from compressed weights (inference only).

    Build it with :func:`load`. ``forward(x)`` and ``predict(x)`` take a batch of samples of
    ``input_shape``; :meth:`to_dense` returns the decoded dense Model.
    """

    def __init__(self, layers: list, input_shape: tuple, name: str = "model",
                 file_bytes: int | None = None, path: str | None = None):
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name
        self.file_bytes = file_bytes
        self.path = path
        self.metadata: dict = {}
        self.output_shape()

    def output_shape(self) -> tuple:
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits for a batch ``x`` of shape (N, *input_shape); float32. A batch of one
        (N = 1) takes a leaner path with the same results (:meth:`_forward_one`)."""
        if train:
            raise ValueError("a compressed model runs inference only; train the dense model "
                             "(CompressedModel.to_dense()) instead")
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected a batch of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[0] == 1:
            return self._forward_one(x)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def _one_sample_plan(self) -> tuple[list, bool]:
        """``(steps, parallel)`` for :meth:`_forward_one`. A step ``(layer, None)`` runs
        ``layer.forward``; ``(dense, relu)`` runs a :class:`CompressedDense` (and the
        :class:`ReLU` after it when ``relu``) as one product and one epilogue; ``parallel``:
        some product is large enough for threads. Cached with the layers it was made from
        (held, so compared by identity) and rebuilt when ``self.layers`` changes."""
        cache = getattr(self, "_plan_cache", None)
        if (cache is None or len(cache[0]) != len(self.layers)
                or any(a is not b for a, b in zip(cache[0], self.layers))):
            plan, i = [], 0
            while i < len(self.layers):
                layer = self.layers[i]
                if isinstance(layer, CompressedDense):
                    relu = i + 1 < len(self.layers) and isinstance(self.layers[i + 1], ReLU)
                    plan.append((layer, relu))
                    i += 2 if relu else 1
                else:
                    plan.append((layer, None))
                    i += 1
            parallel = any(relu is not None and not layer.matrix._serial() for layer, relu in plan)
            cache = self._plan_cache = (tuple(self.layers), (plan, parallel))  # one store
        return cache[1]

    def _forward_one(self, x: np.ndarray) -> np.ndarray:
        """:meth:`forward` for one sample (``x`` of shape (1, ...), C-contiguous float32):
        each Dense layer is one call of the batch-1 kernel into a new vector plus one call
        adding the bias (and applying a following ReLU) in place, without the per-product
        checks of :meth:`CompressedMatrix.matmul` (the shapes were checked when the model was
        built; a float32 input is checked here). The same kernels as the per-layer path for
        a batch of one, so the same results bit for bit; per-call Python overhead was most
        of a small model's time at batch 1 (LeNet-300-100: 29 -> ~21 us per image, of which
        ~10 are kernels)."""
        plan, parallel = self._one_sample_plan()
        threads = numba.get_num_threads() if parallel else 1  # once, not once per product
        for layer, relu in plan:
            if relu is None or x.dtype != np.float32:  # (the latter: forward's TypeError)
                x = layer.forward(x)
                continue
            m = layer.matrix
            h = x.reshape(m.shape[1])  # (1, in) -> (in,), a view when x is contiguous
            y = np.empty(m.shape[0], dtype=np.float32)
            m._matvec(h if h.flags.c_contiguous else np.ascontiguousarray(h), y, threads)
            kernels.add_bias_relu(y, layer.bias, relu)
            x = y.reshape(1, m.shape[0])
        return x

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class indices (int64) for a batch ``x``, ``batch_size`` samples at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = np.asarray(x)
        out = [np.argmax(self.forward(x[i:i + batch_size]), axis=1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def num_params(self) -> int:
        """Parameters of the dense model (weights incl. pruned ones, plus biases)."""
        return sum(math.prod(l.weight_shape) + l.bias.size for l in self.layers
                   if isinstance(l, _CompressedLayer))

    @property
    def nbytes(self) -> int:
        """Bytes the weighted layers hold in memory: packed entries, row pointers and codebooks
        (:attr:`CompressedMatrix.nbytes`) plus float32 biases."""
        return sum(l.matrix.nbytes + l.bias.nbytes for l in self.layers
                   if isinstance(l, _CompressedLayer))

    def to_dense(self) -> Model:
        """The decoded dense Model: ``W = codebook[idx]`` per layer, float32, bit-exact."""
        layers = []
        for l in self.layers:
            if isinstance(l, _CompressedLayer):
                layers.append(l.dense_layer())
            else:
                layers.append(LAYER_TYPES[l.type_name](**l.hyperparameters, name=l.name))
        return Model(layers, self.input_shape, name=self.name)

    def __repr__(self) -> str:
        body = "\n".join(f"  {l!r}" for l in self.layers)
        return f"CompressedModel({self.name!r}, input_shape={self.input_shape},\n{body}\n)"


def _build_layer(rec: container.LayerRecord, path: Path):
    def fail(problem: str) -> None:
        raise DCFormatError(f"{path}, layer {rec.name!r}: {problem}. Pass a compressed model "
                            f"file written by `dc-engine compress`, or re-create it.")

    cls = _COMPRESSED_TYPES.get(rec.type)
    if cls is None:
        if rec.payload is not None:
            fail(f"a {rec.type} layer has no weights but the file holds a payload for it")
        try:
            return LAYER_TYPES[rec.type](**rec.hyperparameters, name=rec.name)
        except (TypeError, ValueError, OverflowError) as exc:
            fail(f"bad hyperparameters {rec.hyperparameters} ({exc})")
    if rec.payload is None:
        fail(f"a {rec.type} layer needs a payload, the file has none")
    expected = _weight_shape(rec.type, rec.hyperparameters)
    if expected is None:
        fail(f"bad hyperparameters {rec.hyperparameters} for {rec.type}")
    try:
        decoded = decode_layer(rec.payload, rec.name)
    except DCFormatError as exc:  # it names the layer; add the file
        raise DCFormatError(f"{path}, {exc}") from exc
    if tuple(decoded["idx"].shape) != tuple(expected):
        fail(f"the payload holds weights of shape {decoded['idx'].shape}, the hyperparameters "
             f"{rec.hyperparameters} need {tuple(expected)}")
    if decoded["bias"].size not in (0, expected[0]):
        fail(f"the payload holds {decoded['bias'].size} biases, expected {expected[0]}")
    if not decoded["bias"].size:
        decoded["bias"] = np.zeros(expected[0], np.float32)
    return cls(rec.name, rec.hyperparameters, decoded)


def load(path) -> CompressedModel:
    """Load a compressed model file (``kind = "compressed"``) as a :class:`CompressedModel`.

    Every payload is checked (CRC32, sizes, Huffman streams) and decoded once here.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        No file at ``path``.
    DCFormatError
        The file is not a valid compressed model (see :func:`dc_engine.container.read`), or a
        payload is corrupt or does not match its layer; the message names the layer.
    """
    c = container.read(path)
    path = Path(path)
    layers = [_build_layer(r, path) for r in c.layers]
    try:
        model = CompressedModel(layers, c.input_shape, c.architecture,
                                file_bytes=os.path.getsize(path), path=str(path))
    except (TypeError, ValueError) as exc:
        raise DCFormatError(f"{path}: the layers do not form a model: expected layers that "
                            f"chain from the input shape {c.input_shape}, found: {exc}") from exc
    return model
