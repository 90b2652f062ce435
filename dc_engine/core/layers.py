"""Layers with forward and backward: Dense, Conv2D, MaxPool2D, ReLU, Flatten, Dropout.

Every layer follows one contract (docs/ARCHITECTURE.md, "The layer contract"):

- ``params[name]`` holds the layer's arrays; ``grads[name]`` has the same shape and dtype, and
  ``backward`` *adds* into it (``Model.zero_grad`` clears it once per step).
- ``param_shapes(**hyperparameters)`` (a class method) gives every parameter's shape without
  building the layer: the files, the runtime and the stages read the shapes from there.
- ``weight_name`` names the parameter that pruning, weight sharing and encoding act on
  (``"W"``), or is None for a layer without one.
- The weight has one of two back ends: a float array, or a compressed matrix
  (:class:`WeightBackend`, implemented by :class:`dc_engine.runtime.CompressedMatrix`) that
  multiplies straight from its codes. A layer with a compressed weight runs inference only,
  in float32; ``Model.to_dense`` gives the float form back.
- ``masks[name]`` (optional, bool, shaped like the parameter) and ``ties[name]`` (optional,
  see :class:`dc_engine.core.ties.Tie`) are visible per-parameter constraints used when
  retraining a pruned or weight-shared layer; the optimizer honours them. ``encoding[name]``
  (optional) records how a compressed weight is written to a file (gap width, coders).
- ``forward(x, train)`` keeps only what ``backward`` needs, and only when ``train`` is true.
- ``backward(dy, need_dx=True)`` returns ``dx`` (or ``None`` when ``need_dx`` is false, which the
  model uses for its first layer, saving the input gradient that nobody reads).
- The arithmetic runs in the dtype of the layer's parameters: float32 for training, float64 for
  gradient checks. Inputs are converted to it at the boundary.

Layouts follow Caffe and PyTorch: Dense ``W`` is (out, in) and y = x W^T + b; Conv2D ``W`` is
(out_c, in_c, kh, kw) on NCHW input. A compressed Conv2D weight is the (out_c, in_c*kh*kw)
matrix of that array.
"""

from __future__ import annotations

import inspect
import math
from typing import Protocol, runtime_checkable

import numpy as np

from .. import kernels
from .._validate import check_int
from ..buffers import Scratch

_FLOAT_DTYPES = (np.float32, np.float64)
RESERVED_HYPERPARAMETERS = ("name", "rng", "dtype", "params")
"""Constructor arguments that are never stored as hyperparameters (files may not set them)."""


@runtime_checkable
class WeightBackend(Protocol):
    """A weight kept in another form than a float array (the compressed back end).

    :class:`dc_engine.runtime.CompressedMatrix` implements it; a layer holds one in
    ``params[layer.weight_name]``. ``shape`` is ``(out, fan_in)``: the layer's weight reshaped
    to 2-D. Products take and return float32.
    """

    shape: tuple
    nbytes: int
    codebook: np.ndarray

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """``x @ W.T`` for ``x`` of shape (N, fan_in) or (fan_in,)."""

    def matmul_t(self, xt: np.ndarray) -> np.ndarray:
        """``W @ xt`` for ``xt`` of shape (fan_in, N)."""

    def matvec_into(self, x: np.ndarray, y: np.ndarray, threads: int | None = None) -> None:
        """``y = W @ x``, unchecked (x: (fan_in,) C-contiguous float32; y: (out,) float32)."""

    def serial(self, n: int = 1) -> bool:
        """Whether a product with ``n`` input columns runs on the calling thread."""

    def to_dense(self) -> np.ndarray:
        """The weight as a float32 (out, fan_in) array."""

    def to_codes(self) -> np.ndarray:
        """The per-weight codebook codes, shape (out, fan_in), uint8 or uint16 (0 = pruned);
        with ``codebook`` (float32, ``2**weight_bits`` entries) what a file stores."""


def is_backend(w) -> bool:
    """Whether a parameter value is a compressed weight back end (has the products of
    :class:`WeightBackend`), not an array or an array-like."""
    return not isinstance(w, np.ndarray) and hasattr(w, "matvec_into") and hasattr(w, "matmul_t")


class Layer:
    """Base class: parameter dicts, constraints, parameter shapes, and the (de)serialisation
    hooks.

    Subclasses set ``type_name`` (the name stored in files) and implement ``forward``,
    ``backward``, ``hyperparameters`` and, when they hold parameters, ``param_shapes`` and
    ``weight_name``.
    """

    type_name = "Layer"
    weight_name: str | None = None
    """The parameter that pruning, weight sharing and encoding act on (None: no weight)."""

    def __init__(self, name: str | None = None):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.ties: dict[str, object] = {}
        self.encoding: dict[str, dict] = {}
        self._dtype = np.dtype(np.float32)
        self._cache = None
        self._grads_zero = False  # True from zero_grad() until the next backward()

    @classmethod
    def param_shapes(cls, **hyperparameters) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter of a layer with these hyperparameters (nothing is built).

        Raises TypeError or ValueError for hyperparameters the constructor would reject.
        """
        return {}

    @property
    def hyperparameters(self) -> dict:
        """Constructor arguments (JSON-able scalars) that rebuild this layer."""
        return {}

    @property
    def dtype(self) -> np.dtype:
        """The float dtype the layer computes in (its float parameters' dtype; float32 for a
        compressed weight or when there is none)."""
        return self._dtype

    @property
    def compressed(self) -> bool:
        """Whether a parameter is held by a compressed back end (inference only)."""
        return any(is_backend(w) for w in self.params.values())

    def astype(self, dtype) -> Layer:
        """Convert parameters (and gradients) to ``dtype`` in place; returns ``self``."""
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"layer dtype must be float32 or float64, got {dtype}")
        if self.compressed and dtype != np.float32:
            raise TypeError(f"{self.name}: a compressed weight computes in float32; decode the "
                            f"model first (model.to_dense()) to use {dtype}")
        self._dtype = dtype
        for k in self.params:
            if not is_backend(self.params[k]):
                self.params[k] = np.ascontiguousarray(self.params[k], dtype=dtype)
                self.grads[k] = np.zeros_like(self.params[k])
        return self

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0.0)
        self._grads_zero = True

    def _set_params(self, params: dict | None, dtype, init) -> None:
        """Attach ``params`` (name -> float array or, for the weight, a back end), each
        checked against :meth:`param_shapes`; or, when None, ``init(shapes)``'s fresh arrays
        converted to ``dtype``."""
        shapes = self.param_shapes(**self.hyperparameters)
        if params is None:
            self.params.update(init(shapes))
            self.astype(dtype)
            return
        who = self.name or self.type_name
        if not isinstance(params, dict) or set(params) != set(shapes):
            found = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{who}: params must hold exactly {sorted(shapes)}, got {found}")
        dtypes = {np.asarray(w).dtype for w in params.values() if not is_backend(w)}
        if len(dtypes) > 1:
            raise TypeError(f"{who}: parameters mix dtypes {sorted(map(str, dtypes))}; give "
                            f"them one float dtype")
        self._dtype = np.dtype(dtypes.pop()) if dtypes else np.dtype(np.float32)
        if self._dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"{who}: parameters must be float32 or float64, got {self._dtype}")
        for k in shapes:
            self.set_param(k, params[k])

    def set_param(self, name: str, value) -> None:
        """Replace parameter ``name`` by ``value``: a float array of the parameter's shape
        (converted to the layer dtype), or, for the weight, a compressed back end of shape
        ``(out, fan_in)``, which drops the weight's gradient, mask and tie.

        Raises
        ------
        KeyError
            No parameter ``name``.
        ValueError
            Wrong shape.
        TypeError
            A back end for a parameter other than the weight, or a float64 layer.
        """
        shapes = self.param_shapes(**self.hyperparameters)
        if name not in shapes:
            raise KeyError(f"{self.name}: no parameter {name!r}; it has {sorted(shapes)}")
        shape = shapes[name]
        who = self.name or self.type_name
        if is_backend(value):
            if name != self.weight_name:
                raise TypeError(f"{who}: only the weight {self.weight_name!r} can be held "
                                f"compressed, not {name!r}")
            want = (shape[0], math.prod(shape[1:]))
            if tuple(value.shape) != want:
                raise ValueError(f"{who}: a compressed {name!r} must have shape {want}, got "
                                 f"{tuple(value.shape)}")
            if self._dtype != np.float32:
                raise TypeError(f"{who}: a compressed weight computes in float32; convert the "
                                f"layer first (layer.astype(np.float32))")
            self.params[name] = value
            for d in (self.grads, self.masks, self.ties):
                d.pop(name, None)
            return
        value = np.asarray(value)
        if value.shape != tuple(shape):
            raise ValueError(f"{who}: parameter {name!r} must have shape {tuple(shape)}, got "
                             f"{value.shape}")
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{who}: parameter {name!r} must be a float array, got "
                            f"{value.dtype}")
        self.params[name] = np.ascontiguousarray(value, dtype=self._dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def dense_params(self) -> dict[str, np.ndarray]:
        """Every parameter as a float array (a compressed weight decoded to float32, reshaped
        to the parameter's shape; float arrays as they are, not copied)."""
        shapes = self.param_shapes(**self.hyperparameters)
        return {k: (w.to_dense().reshape(shapes[k]) if is_backend(w) else w)
                for k, w in self.params.items()}

    def _input(self, x: np.ndarray, ndim: int, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != ndim:
            raise ValueError(f"{self.name or self.type_name}: expected a {ndim}-D input {what}, "
                             f"got shape {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _inference_only(self, train: bool) -> None:
        if train:
            raise ValueError(f"{self.name}: a compressed weight runs inference only; train the "
                             f"decoded model (model.to_dense()) instead")

    def _cached(self):
        """What ``forward(x, train=True)`` kept for ``backward``; an error if nothing was."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward() needs a forward(x, train=True) first")
        return self._cache

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one sample's output for one sample's ``input_shape`` (no batch axis)."""
        return input_shape

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        extra = " compressed" if self.compressed else ""
        return f"{self.type_name}({hp})" + (f" [{self.name}]" if self.name else "") + extra


def _xavier(rng: np.random.Generator, shape: tuple, fan_in: int, dtype) -> np.ndarray:
    # Caffe's "xavier" filler: U(-a, a) with a = sqrt(3 / fan_in).
    a = np.sqrt(3.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


def _positive_int(value, what: str) -> int:
    return check_int(value, what, 1)


class Dense(Layer):
    """Fully connected layer, y = x W^T + b.

    Parameters
    ----------
    in_features, out_features : int >= 1.
    rng : numpy.random.Generator, optional. Initialises ``W`` (Caffe's xavier); ``b`` is zero.
    dtype : float32 (default) or float64.
    name : str, optional.
    params : dict, optional. ``{"W": w, "b": b}`` to use instead of initialising: ``w`` a float
        array of shape (out, in) or a compressed back end of that shape, ``b`` a float array of
        shape (out,). Nothing is allocated then (files and the runtime build layers so), and
        the arrays' dtype is the layer's (``dtype`` applies to initialised parameters only).
    """

    type_name = "Dense"
    weight_name = "W"

    def __init__(self, in_features: int, out_features: int, rng=None, dtype=np.float32,
                 name: str | None = None, params: dict | None = None):
        super().__init__(name)
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self._scratch = None

        def init(shapes):
            r = np.random.default_rng(0) if rng is None else rng
            return {"W": _xavier(r, shapes["W"], self.in_features, dtype),
                    "b": np.zeros(shapes["b"], dtype=dtype)}

        self._set_params(params, dtype, init)

    @classmethod
    def param_shapes(cls, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        n_in = _positive_int(in_features, "in_features")
        n_out = _positive_int(out_features, "out_features")
        return {"W": (n_out, n_in), "b": (n_out,)}

    @property
    def hyperparameters(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def output_shape(self, input_shape: tuple) -> tuple:
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"{self.name}: expects ({self.in_features},) per sample, "
                             f"got {tuple(input_shape)}")
        return (self.out_features,)

    def forward(self, x, train=False):
        x = self._input(x, 2, "(batch, in_features)")
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self.name}: expected {self.in_features} input features, "
                             f"got {x.shape[1]}")
        w = self.params["W"]
        if is_backend(w):
            self._inference_only(train)
            y = w.matmul(x)
        else:
            y = x @ w.T
        y += self.params["b"]
        self._cache = x if train else None
        return y

    def backward(self, dy, need_dx=True):
        x = self._cached()
        dy = np.ascontiguousarray(dy, dtype=self.dtype)
        gw = self.grads["W"]
        if self._grads_zero:  # 0 + dy^T x: write the product straight into the gradient
            np.matmul(dy.T, x, out=gw)
            self._grads_zero = False
        else:  # accumulate through a kept buffer (a fresh array each step costs page faults)
            if self._scratch is None or self._scratch.dtype != gw.dtype:
                self._scratch = np.empty_like(gw)
            np.matmul(dy.T, x, out=self._scratch)
            gw += self._scratch
        self.grads["b"] += dy.sum(axis=0)
        return dy @ self.params["W"] if need_dx else None


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in Caffe) on NCHW input via im2col + one matmul.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int >= 1.
    stride : int >= 1, default 1.
    padding : int >= 0, default 0. Zero padding on every side.
    rng : numpy.random.Generator, optional. Initialises ``W`` (xavier); ``b`` is zero.
    dtype : float32 (default) or float64.
    name : str, optional.
    params : dict, optional. ``{"W": w, "b": b}`` to use instead of initialising: ``w`` a float
        array of shape (out_c, in_c, k, k) or a compressed back end of shape
        (out_c, in_c * k * k), ``b`` a float array of shape (out_c,).
    """

    type_name = "Conv2D"
    weight_name = "W"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, rng=None, dtype=np.float32, name: str | None = None,
                 params: dict | None = None):
        super().__init__(name)
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = _positive_int(kernel_size, "kernel_size")
        self.stride = _positive_int(stride, "stride")
        self.padding = check_int(padding, "padding", 0)
        self._cols = None  # im2col buffers of the compressed path, made on first use

        def init(shapes):
            r = np.random.default_rng(0) if rng is None else rng
            fan_in = self.in_channels * self.kernel_size ** 2
            return {"W": _xavier(r, shapes["W"], fan_in, dtype),
                    "b": np.zeros(shapes["b"], dtype=dtype)}

        self._set_params(params, dtype, init)

    @classmethod
    def param_shapes(cls, in_channels: int, out_channels: int, kernel_size: int,
                     stride: int = 1, padding: int = 0) -> dict[str, tuple[int, ...]]:
        cin = _positive_int(in_channels, "in_channels")
        cout = _positive_int(out_channels, "out_channels")
        k = _positive_int(kernel_size, "kernel_size")
        _positive_int(stride, "stride")
        check_int(padding, "padding", 0)
        return {"W": (cout, cin, k, k), "b": (cout,)}

    @property
    def hyperparameters(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        oh = kernels.conv_output_size(h, k, s, p)
        ow = kernels.conv_output_size(w, k, s, p)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: a {k}x{k} kernel (padding {p}) does not fit a "
                             f"{h}x{w} input")
        return oh, ow

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"{self.name}: expects ({self.in_channels}, H, W) per sample, "
                             f"got {tuple(input_shape)}")
        return (self.out_channels, *self._out_hw(input_shape[1], input_shape[2]))

    def forward(self, x, train=False):
        x = self._input(x, 4, "(N, C, H, W)")
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} input channels, got {c}")
        k, s, p = self.kernel_size, self.stride, self.padding
        oh, ow = self._out_hw(h, w)
        oc = self.out_channels
        weight = self.params["W"]
        if is_backend(weight):
            self._inference_only(train)
            if self._cols is None:
                self._cols = Scratch()
            cols = self._cols.get((c * k * k, n * oh * ow))  # reused, aligned
        else:
            cols = np.empty((c * k * k, n * oh * ow), dtype=x.dtype)
        if s == 1 and p == 0:
            kernels.im2col_valid(x, k, k, oh, ow, cols)
        else:
            kernels.im2col(x, k, k, s, p, oh, ow, cols)
        if is_backend(weight):
            y = weight.matmul_t(cols)  # (OC, N * OH * OW)
        else:
            y = weight.reshape(oc, -1) @ cols
        y = y.reshape(oc, n, oh, ow).transpose(1, 0, 2, 3)
        y = np.add(y, self.params["b"].reshape(1, oc, 1, 1), order="C")  # NCHW-contiguous
        self._cache = (cols, x.shape) if train else None
        return y

    def backward(self, dy, need_dx=True):
        cols, (n, c, h, w) = self._cached()
        dy = np.asarray(dy, dtype=self.dtype)
        _, oc, oh, ow = dy.shape
        dy2 = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(oc, n * oh * ow)
        self.grads["W"] += (dy2 @ cols.T).reshape(self.params["W"].shape)
        self.grads["b"] += dy2.sum(axis=1)
        if not need_dx:
            return None
        dcols = self.params["W"].reshape(oc, -1).T @ dy2
        dx = np.empty((n, c, h, w), dtype=dy.dtype)
        k, s, p = self.kernel_size, self.stride, self.padding
        if s == 1 and p == 0:
            kernels.col2im_valid(dcols, k, k, oh, ow, dx)
        else:
            kernels.col2im(dcols, k, k, s, p, oh, ow, dx)
        return dx


class MaxPool2D(Layer):
    """Max pooling over ``size`` x ``size`` windows at ``stride`` (default ``size``), no padding.

    Ties route the gradient to the first maximum in row-major window order.
    """

    type_name = "MaxPool2D"

    def __init__(self, size: int, stride: int | None = None, name: str | None = None):
        super().__init__(name)
        self.size = _positive_int(size, "size")
        self.stride = self.size if stride is None else _positive_int(stride, "stride")

    @property
    def hyperparameters(self) -> dict:
        return {"size": self.size, "stride": self.stride}

    def _out_hw(self, h, w):
        oh = kernels.conv_output_size(h, self.size, self.stride, 0)
        ow = kernels.conv_output_size(w, self.size, self.stride, 0)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: a {self.size}x{self.size} window does not fit a "
                             f"{h}x{w} input")
        return oh, ow

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects (C, H, W) per sample, got {input_shape}")
        return (input_shape[0], *self._out_hw(input_shape[1], input_shape[2]))

    def forward(self, x, train=False):
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"{self.name}: expected a 4-D input (N, C, H, W), got {x.shape}")
        if x.dtype.type not in _FLOAT_DTYPES:
            x = x.astype(np.float32)
        x = np.ascontiguousarray(x)
        n, c, h, w = x.shape
        oh, ow = self._out_hw(h, w)
        y = np.empty((n, c, oh, ow), dtype=x.dtype)
        arg = np.empty((n, c, oh, ow), dtype=np.int32)
        kernels.maxpool2d_forward(x, self.size, self.stride, oh, ow, y, arg)
        self._cache = (arg, x.shape) if train else None
        return y

    def backward(self, dy, need_dx=True):
        arg, shape = self._cached()
        if not need_dx:
            return None
        dy = np.ascontiguousarray(dy)
        dx = np.empty(shape, dtype=dy.dtype)
        kernels.maxpool2d_backward(dy, arg, dx)
        return dx


class ReLU(Layer):
    """max(x, 0), elementwise; the gradient at exactly 0 is taken as 0."""

    type_name = "ReLU"

    def forward(self, x, train=False):
        y = np.maximum(x, 0)
        self._cache = y if train else None
        return y

    def backward(self, dy, need_dx=True):
        y = self._cached()
        if not need_dx:
            return None
        return np.where(y > 0, dy, 0).astype(dy.dtype, copy=False)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    type_name = "Flatten"

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, train=False):
        x = np.asarray(x)
        self._cache = x.shape if train else None
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # math.prod: np.prod is slower

    def backward(self, dy, need_dx=True):
        shape = self._cached()
        return dy.reshape(shape) if need_dx else None


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the
    survivors by 1 / (1 - rate); identity at evaluation.

    ``rate`` may be changed after construction (pruning lowers it, LWC Eq. 2). The random
    stream is ``self.rng`` (a ``numpy.random.Generator``), which :meth:`Model.seed` sets.
    """

    type_name = "Dropout"

    def __init__(self, rate: float, name: str | None = None):
        super().__init__(name)
        self.rate = rate
        self.rng = np.random.default_rng(0)

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {value}")
        self._rate = value

    @property
    def hyperparameters(self) -> dict:
        return {"rate": self.rate}

    def forward(self, x, train=False):
        x = np.asarray(x)
        if not train or self.rate == 0.0:
            self._cache = None
            return x
        keep = 1.0 - self.rate
        scale = (self.rng.random(x.shape) < keep).astype(x.dtype) / x.dtype.type(keep)
        self._cache = scale
        return x * scale

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return dy if self._cache is None else dy * self._cache


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.type_name: cls for cls in (Dense, Conv2D, MaxPool2D, ReLU, Flatten, Dropout)
}
"""Every layer type by the name stored in files: ``LAYER_TYPES[type_name]``."""


def hyperparameter_names(cls: type[Layer]) -> tuple[str, ...]:
    """The constructor arguments a layer type stores as hyperparameters (all but ``name``,
    ``rng``, ``dtype`` and ``params``)."""
    sig = inspect.signature(cls.__init__)
    return tuple(k for k in list(sig.parameters)[1:] if k not in RESERVED_HYPERPARAMETERS)


def layer_param_shapes(type_name: str, hyperparameters: dict) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of a layer type for stored hyperparameters, without building it.

    Raises
    ------
    KeyError
        Unknown layer type.
    TypeError, ValueError
        Hyperparameters that are not exactly the layer's (a file written by dc-engine stores
        every one; the reserved keys ``name``, ``rng``, ``dtype`` and ``params`` never come
        from a file), or values the layer rejects.
    """
    cls = LAYER_TYPES[type_name]
    names = hyperparameter_names(cls)
    if set(hyperparameters) != set(names):
        raise ValueError(f"a {type_name} layer's hyperparameters are {sorted(names)}, got "
                         f"{sorted(hyperparameters)}")
    return cls.param_shapes(**hyperparameters)


def build_layer(type_name: str, hyperparameters: dict, name: str,
                params: dict | None = None) -> Layer:
    """A layer from what a file stores: its type name, hyperparameters, name and parameters
    (float arrays or, for the weight, a compressed back end); nothing is initialised.

    Raises
    ------
    KeyError
        Unknown layer type.
    TypeError, ValueError
        Bad hyperparameters, or parameters that do not match them.
    """
    shapes = layer_param_shapes(type_name, hyperparameters)
    cls = LAYER_TYPES[type_name]
    if shapes:
        return cls(**hyperparameters, name=name, params=params if params is not None else {})
    if params:
        raise ValueError(f"a {type_name} layer holds no parameters, got {sorted(params)}")
    return cls(**hyperparameters, name=name)


__all__ = ["Layer", "WeightBackend", "is_backend", "Dense", "Conv2D", "MaxPool2D", "ReLU",
           "Flatten", "Dropout", "LAYER_TYPES", "RESERVED_HYPERPARAMETERS", "hyperparameter_names",
           "layer_param_shapes", "build_layer"]
