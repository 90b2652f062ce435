"""Pooling layers: max and average pooling over square windows (padded, ceil mode) and global
average pooling, with the semantics of ONNX MaxPool, AveragePool and GlobalAveragePool."""

from __future__ import annotations

import numpy as np

from ... import kernels
from .base import FLOAT_DTYPES, Layer, positive_int
from .conv import conv_output_hw, conv_padding


def _flag(value, what: str) -> bool:
    """``value`` as a bool (TypeError naming ``what`` for anything else, 0 and 1 included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def _float_input(layer: Layer, x) -> np.ndarray:
    """``x`` as a C-contiguous 4-D float array: float32 and float64 kept, others float32."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{layer.name or layer.type_name}: expected a 4-D input (N, C, H, W), "
                         f"got shape {x.shape}")
    if x.dtype.type not in FLOAT_DTYPES:
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def _output_grad(layer: Layer, dy, shape: tuple, dtype) -> np.ndarray:
    """``dy`` as a C-contiguous ``dtype`` array of the forward output's ``shape``."""
    dy = np.ascontiguousarray(dy, dtype=dtype)
    if dy.shape != tuple(shape):
        raise ValueError(f"{layer.name or layer.type_name}: dy must have the forward output's "
                         f"shape {tuple(shape)}, got {dy.shape}")
    return dy


class _Window2D(Layer):
    """What max and average pooling share: a ``size`` x ``size`` window at ``stride``, the
    padding, ceil mode, the output size and the input conversion."""

    def __init__(self, size: int, stride: int | None, padding, ceil_mode: bool,
                 name: str | None, inputs: list[str] | None):
        super().__init__(name, inputs)
        self.size = positive_int(size, "size")
        self.stride = self.size if stride is None else positive_int(stride, "stride")
        self.pads = conv_padding(padding)
        if max(self.pads) >= self.size:
            raise ValueError(f"padding must be smaller than size ({self.size}) on every side "
                             f"(a window must overlap the input), got {self.padding}")
        self.ceil_mode = _flag(ceil_mode, "ceil_mode")

    @property
    def padding(self):
        """An int when every side has the same padding, else ``[top, left, bottom, right]``."""
        return self.pads[0] if len(set(self.pads)) == 1 else list(self.pads)

    def _window_hyperparameters(self) -> dict:
        hp = {"size": self.size, "stride": self.stride}
        if self.pads != (0, 0, 0, 0):
            hp["padding"] = self.padding
        if self.ceil_mode:
            hp["ceil_mode"] = True
        return hp

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        oh, ow = conv_output_hw(h, w, self.size, self.size, self.stride, self.pads,
                                self.ceil_mode)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name or self.type_name}: a {self.size}x{self.size} window "
                             f"(padding {self.padding}) does not fit a {h}x{w} input")
        return oh, ow

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name or self.type_name}: expects (C, H, W) per sample, got "
                             f"{tuple(input_shape)}")
        return (input_shape[0], *self._out_hw(input_shape[1], input_shape[2]))

    def work_elements(self, input_shape) -> int:
        c, oh, ow = self.output_shape(input_shape)
        return c * oh * ow * self.size ** 2  # every window's reads


class MaxPool2D(_Window2D):
    """Max pooling over ``size`` x ``size`` windows (ONNX MaxPool, PyTorch ``max_pool2d``).

    Parameters
    ----------
    size : int >= 1. Window side.
    stride : int >= 1, default ``size``.
    padding : int >= 0 (every side), or ``[top, left, bottom, right]``; each side smaller
        than ``size``. Padded positions never win the max (they act as -inf).
    ceil_mode : bool, default False. Round the output size up: a last, partial window counts
        when it starts inside the input or its top/left padding (``conv_output_hw``).
    name : str, optional. inputs : list of str, optional (the model's wiring).

    Notes
    -----
    Input float32 or float64 gives the same dtype out; other dtypes are converted to float32.
    Ties route the gradient to the first maximum in row-major window order. ``hyperparameters``
    lists ``padding`` only when it is not 0 and ``ceil_mode`` only when true, so unpadded
    layers store ``{"size", "stride"}`` as they always did.
    """

    type_name = "MaxPool2D"

    def __init__(self, size: int, stride: int | None = None, padding=0,
                 ceil_mode: bool = False, name: str | None = None,
                 inputs: list[str] | None = None):
        super().__init__(size, stride, padding, ceil_mode, name, inputs)

    @property
    def hyperparameters(self) -> dict:
        return self._window_hyperparameters()

    def forward(self, x, train=False):
        x = _float_input(self, x)
        n, c, h, w = x.shape
        oh, ow = self._out_hw(h, w)
        y = np.empty((n, c, oh, ow), dtype=x.dtype)
        arg = np.empty((n, c, oh, ow), dtype=np.int32)
        k, s = self.size, self.stride
        if self.pads == (0, 0, 0, 0) and (oh, ow) == ((h - k) // s + 1, (w - k) // s + 1):
            kernels.maxpool2d_forward(x, k, s, oh, ow, y, arg)  # no padding, no partial window
        else:
            kernels.maxpool2d_padded_forward(x, k, k, s, self.pads[0], self.pads[1], oh, ow,
                                             y, arg)
        self._cache = (arg, x.shape, x.dtype) if train else None
        return y

    def backward(self, dy, need_dx=True):
        arg, shape, dtype = self._cached()
        if not need_dx:
            return None
        dy = _output_grad(self, dy, arg.shape, dtype)
        dx = np.empty(shape, dtype=dtype)
        kernels.maxpool2d_backward(dy, arg, dx)
        return dx


class AvgPool2D(_Window2D):
    """Average pooling over ``size`` x ``size`` windows with zero padding (ONNX AveragePool,
    PyTorch ``avg_pool2d``).

    Parameters
    ----------
    size : int >= 1. Window side.
    stride : int >= 1, default ``size``.
    padding : int >= 0 (every side), or ``[top, left, bottom, right]``; each side smaller
        than ``size``.
    ceil_mode : bool, default False. Round the output size up: a last, partial window counts
        when it starts inside the input or its top/left padding (``conv_output_hw``).
    count_include_pad : bool, default False. What a window's sum is divided by (below).
    name : str, optional. inputs : list of str, optional (the model's wiring).

    Notes
    -----
    Window ``(i, j)`` covers rows ``i * stride - top`` + [0, size) and columns
    ``j * stride - left`` + [0, size); the sum runs over the input positions it covers (padding
    adds 0) and is divided by

    - ``count_include_pad=False``: the number of input (non-padded) positions in the window;
    - ``count_include_pad=True``: the number of window positions inside the padded input,
      rows [-top, H + bottom) and columns [-left, W + right): padded positions count, but the
      part of a ceil-mode window that reaches past the padded input does not.

    Both are what PyTorch's ``avg_pool2d`` and onnxruntime's AveragePool compute. Input float32
    or float64 gives the same dtype out; other dtypes are converted to float32.
    ``hyperparameters`` always lists ``size`` and ``stride``, and ``padding``, ``ceil_mode``
    and ``count_include_pad`` only when they are not their defaults.
    """

    type_name = "AvgPool2D"

    def __init__(self, size: int, stride: int | None = None, padding=0,
                 ceil_mode: bool = False, count_include_pad: bool = False,
                 name: str | None = None, inputs: list[str] | None = None):
        super().__init__(size, stride, padding, ceil_mode, name, inputs)
        self.count_include_pad = _flag(count_include_pad, "count_include_pad")

    @property
    def hyperparameters(self) -> dict:
        hp = self._window_hyperparameters()
        if self.count_include_pad:
            hp["count_include_pad"] = True
        return hp

    def _window_args(self) -> tuple:
        k = self.size
        return (k, k, self.stride, *self.pads, self.count_include_pad)

    def forward(self, x, train=False):
        x = _float_input(self, x)
        n, c, h, w = x.shape
        oh, ow = self._out_hw(h, w)
        y = np.empty((n, c, oh, ow), dtype=x.dtype)
        kernels.avgpool2d_forward(x, *self._window_args(), oh, ow, y)
        self._cache = (x.shape, y.shape, x.dtype) if train else None
        return y

    def backward(self, dy, need_dx=True):
        shape, yshape, dtype = self._cached()
        if not need_dx:
            return None
        dy = _output_grad(self, dy, yshape, dtype)
        dx = np.empty(shape, dtype=dtype)
        kernels.avgpool2d_backward(dy, *self._window_args(), dx)
        return dx


class GlobalAvgPool2D(Layer):
    """The mean of every channel's (H, W) plane: (N, C, H, W) -> (N, C, 1, 1) (ONNX
    GlobalAveragePool).

    Parameters
    ----------
    name : str, optional. inputs : list of str, optional (the model's wiring).

    Notes
    -----
    The mean is summed in float64. Input float32 or float64 gives the same dtype out; other
    dtypes are converted to float32.
    """

    type_name = "GlobalAvgPool2D"

    def __init__(self, name: str | None = None, inputs: list[str] | None = None):
        super().__init__(name, inputs)

    def _check_plane(self, h: int, w: int) -> None:
        if h < 1 or w < 1:
            raise ValueError(f"{self.name or self.type_name}: needs a non-empty (H, W) plane, "
                             f"got {h}x{w}")

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name or self.type_name}: expects (C, H, W) per sample, got "
                             f"{tuple(input_shape)}")
        self._check_plane(input_shape[1], input_shape[2])
        return (input_shape[0], 1, 1)

    def forward(self, x, train=False):
        x = _float_input(self, x)
        self._check_plane(x.shape[2], x.shape[3])
        y = x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(x.dtype)
        self._cache = (x.shape, x.dtype) if train else None
        return y

    def backward(self, dy, need_dx=True):
        shape, dtype = self._cached()
        if not need_dx:
            return None
        dy = _output_grad(self, dy, (*shape[:2], 1, 1), dtype)
        dx = np.empty(shape, dtype=dtype)
        dx[...] = dy / (shape[2] * shape[3])
        return dx


__all__ = ["MaxPool2D", "AvgPool2D", "GlobalAvgPool2D"]
