"""Pooling layers."""

from __future__ import annotations

import numpy as np

from ... import kernels
from .base import FLOAT_DTYPES, Layer, positive_int


class MaxPool2D(Layer):
    """Max pooling over ``size`` x ``size`` windows at ``stride`` (default ``size``), no padding.

    Ties route the gradient to the first maximum in row-major window order.
    """

    type_name = "MaxPool2D"

    def __init__(self, size: int, stride: int | None = None, name: str | None = None,
                 inputs: list[str] | None = None):
        super().__init__(name, inputs)
        self.size = positive_int(size, "size")
        self.stride = self.size if stride is None else positive_int(stride, "stride")

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
        if x.dtype.type not in FLOAT_DTYPES:
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


__all__ = ["MaxPool2D"]
