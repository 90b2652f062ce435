"""Layers with forward and backward: Dense, Conv2D, MaxPool2D, ReLU, Flatten, Dropout.

Every layer follows one contract (STYLE rules 8-11):

- ``params[name]`` holds the arrays that training changes; ``grads[name]`` has the same shape and
  dtype, and ``backward`` *adds* into it (``Model.zero_grad`` clears it once per step).
- ``masks[name]`` (optional, bool, shaped like the parameter) and ``ties[name]`` (optional, see
  :class:`dc_engine.optim.Tie`) are visible per-parameter constraints used when retraining a
  pruned or weight-shared layer; the optimizer honours them.
- ``forward(x, train)`` keeps only what ``backward`` needs, and only when ``train`` is true.
- ``backward(dy, need_dx=True)`` returns ``dx`` (or ``None`` when ``need_dx`` is false, which the
  model uses for its first layer, saving the input gradient that nobody reads).
- The arithmetic runs in the dtype of the layer's parameters: float32 for training, float64 for
  gradient checks. Inputs are converted to it at the boundary.

Layouts follow Caffe and PyTorch: Dense ``W`` is (out, in) and y = x W^T + b; Conv2D ``W`` is
(out_c, in_c, kh, kw) on NCHW input.
"""

from __future__ import annotations

import math

import numpy as np

import kernels

_FLOAT_DTYPES = (np.float32, np.float64)


class Layer:
    """Base class: parameter dicts, constraints, and the (de)serialisation hooks.

    Subclasses set ``type_name`` (the name stored in files) and implement ``forward``,
    ``backward`` and ``hyperparameters``.
    """

    type_name = "Layer"

    def __init__(self, name: str | None = None):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.ties: dict[str, object] = {}
        self._cache = None
        self._grads_zero = False  # True from zero_grad() until the next backward()

    @property
    def hyperparameters(self) -> dict:
        """Constructor arguments (JSON-able scalars) that rebuild this layer."""
        return {}

    @property
    def dtype(self) -> np.dtype:
        """The float dtype the layer computes in (its parameters' dtype; float32 if none)."""
        for w in self.params.values():
            return w.dtype
        return np.dtype(getattr(self, "_dtype", np.float32))

    def astype(self, dtype) -> Layer:
        """Convert parameters (and gradients) to ``dtype`` in place; returns ``self``."""
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"layer dtype must be float32 or float64, got {dtype}")
        self._dtype = dtype
        for k in self.params:
            self.params[k] = np.ascontiguousarray(self.params[k], dtype=dtype)
            self.grads[k] = np.zeros_like(self.params[k])
        return self

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0.0)
        self._grads_zero = True

    def set_param(self, name: str, value: np.ndarray) -> None:
        """Replace parameter ``name`` by ``value`` (shape and dtype checked)."""
        old = self.params[name]
        value = np.asarray(value)
        if value.shape != old.shape:
            raise ValueError(
                f"{self.name}: parameter {name!r} must have shape {old.shape}, got {value.shape}")
        self.params[name] = np.ascontiguousarray(value, dtype=old.dtype)

    def _input(self, x: np.ndarray, ndim: int, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != ndim:
            raise ValueError(f"{self.name or self.type_name}: expected a {ndim}-D input {what}, "
                             f"got shape {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype)

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
        return f"{self.type_name}({hp})" + (f" [{self.name}]" if self.name else "")


def _xavier(rng: np.random.Generator, shape: tuple, fan_in: int, dtype) -> np.ndarray:
    # Caffe's "xavier" filler: U(-a, a) with a = sqrt(3 / fan_in).
    a = np.sqrt(3.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class Dense(Layer):
    """Fully connected layer, y = x W^T + b.

    Parameters
    ----------
    in_features, out_features : int
    rng : numpy.random.Generator, optional. Initialises ``W`` (Caffe's xavier); ``b`` is zero.
    dtype : float32 (default) or float64.
    """

    type_name = "Dense"

    def __init__(self, in_features: int, out_features: int, rng=None, dtype=np.float32,
                 name: str | None = None):
        super().__init__(name)
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        rng = np.random.default_rng(0) if rng is None else rng
        self._scratch = None
        self.params["W"] = _xavier(rng, (self.out_features, self.in_features),
                                   self.in_features, dtype)
        self.params["b"] = np.zeros(self.out_features, dtype=dtype)
        self.astype(dtype)

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
        y = x @ self.params["W"].T
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
    in_channels, out_channels, kernel_size : int
    stride : int, default 1.
    padding : int, default 0. Zero padding on every side.
    rng : numpy.random.Generator, optional. Initialises ``W`` (xavier); ``b`` is zero.
    dtype : float32 (default) or float64.
    """

    type_name = "Conv2D"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, rng=None, dtype=np.float32, name: str | None = None):
        super().__init__(name)
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = _positive_int(kernel_size, "kernel_size")
        self.stride = _positive_int(stride, "stride")
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
        self.padding = int(padding)
        rng = np.random.default_rng(0) if rng is None else rng
        k = self.kernel_size
        fan_in = self.in_channels * k * k
        self.params["W"] = _xavier(rng, (self.out_channels, self.in_channels, k, k), fan_in, dtype)
        self.params["b"] = np.zeros(self.out_channels, dtype=dtype)
        self.astype(dtype)

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
        cols = np.empty((c * k * k, n * oh * ow), dtype=x.dtype)
        if s == 1 and p == 0:
            kernels.im2col_valid(x, k, k, oh, ow, cols)
        else:
            kernels.im2col(x, k, k, s, p, oh, ow, cols)
        y = self.params["W"].reshape(oc, -1) @ cols  # (OC, N * OH * OW)
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
        return (int(np.prod(input_shape)),)

    def forward(self, x, train=False):
        x = np.asarray(x)
        self._cache = x.shape if train else None
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (np.prod: ~3 us a call)

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
"""Registry used by the store to rebuild layers: ``LAYER_TYPES[type_name](**hyperparameters)``."""


__all__ = ["Layer", "Dense", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dropout", "LAYER_TYPES"]
