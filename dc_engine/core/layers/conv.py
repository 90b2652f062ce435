"""The 2-D convolution."""

from __future__ import annotations

import numpy as np

from ... import kernels
from ..._validate import check_int
from ...buffers import Scratch
from .base import Layer, is_backend, positive_int, xavier_uniform


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
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        self.stride = positive_int(stride, "stride")
        self.padding = check_int(padding, "padding", 0)
        self._cols = None  # im2col buffers of the compressed path, made on first use

        def init(shapes):
            r = np.random.default_rng(0) if rng is None else rng
            fan_in = self.in_channels * self.kernel_size ** 2
            return {"W": xavier_uniform(r, shapes["W"], fan_in, dtype),
                    "b": np.zeros(shapes["b"], dtype=dtype)}

        self._set_params(params, dtype, init)

    @classmethod
    def param_shapes(cls, in_channels: int, out_channels: int, kernel_size: int,
                     stride: int = 1, padding: int = 0) -> dict[str, tuple[int, ...]]:
        cin = positive_int(in_channels, "in_channels")
        cout = positive_int(out_channels, "out_channels")
        k = positive_int(kernel_size, "kernel_size")
        positive_int(stride, "stride")
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


__all__ = ["Conv2D"]
