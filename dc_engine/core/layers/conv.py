"""The 2-D convolution: strided, zero-padded (also asymmetrically) and grouped."""

from __future__ import annotations

import numpy as np

from ... import kernels
from ..._validate import check_int
from ...buffers import Scratch
from .base import Layer, is_backend, positive_int, xavier_uniform


def conv_padding(padding) -> tuple[int, int, int, int]:
    """``padding`` (an int for every side, or ``[top, left, bottom, right]``) as a 4-tuple of
    ints >= 0; TypeError / ValueError otherwise."""
    if isinstance(padding, (list, tuple)):
        if len(padding) != 4:
            raise ValueError(f"padding must be an int or [top, left, bottom, right], got "
                             f"{list(padding)}")
        return tuple(check_int(p, "padding", 0) for p in padding)
    p = check_int(padding, "padding", 0)
    return (p, p, p, p)


def conv_output_hw(h: int, w: int, kh: int, kw: int, stride: int,
                   pads: tuple[int, int, int, int], ceil_mode: bool = False) -> tuple[int, int]:
    """Output height and width of a sliding window (ceil mode: a last, partial window counts
    when it starts inside the image or its top/left padding, as ONNX and PyTorch say)."""
    top, left, bottom, right = pads
    out = []
    for size, k, lo, hi in ((h, kh, top, bottom), (w, kw, left, right)):
        span = size + lo + hi - k
        if span < 0:
            out.append(0)
            continue
        n = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
        if ceil_mode and (n - 1) * stride >= size + lo:
            n -= 1  # the last window would start in the bottom/right padding only
        out.append(n)
    return out[0], out[1]


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in Caffe) on NCHW input via im2col + one matmul
    per group.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int >= 1. Both channel counts divisible by
        ``groups``.
    stride : int >= 1, default 1.
    padding : int >= 0 (every side), or ``[top, left, bottom, right]``; default 0.
    groups : int >= 1, default 1. Channel groups (AlexNet's conv2, conv4, conv5 use 2): group
        ``g`` of the outputs sees only group ``g`` of the inputs, and ``W`` has shape
        (out_c, in_c / groups, k, k).
    rng : numpy.random.Generator, optional. Initialises ``W`` (xavier); ``b`` is zero.
    dtype : float32 (default) or float64.
    name : str, optional. inputs : list of str, optional (the model's wiring).
    params : dict, optional. ``{"W": w, "b": b}`` to use instead of initialising: ``w`` a float
        array of shape (out_c, in_c / groups, k, k) or a compressed back end of shape
        (out_c, in_c / groups * k * k), ``b`` a float array of shape (out_c,). Nothing is
        allocated then, and the arrays' dtype is the layer's.

    Notes
    -----
    ``hyperparameters`` lists ``groups`` only when it is not 1, and ``padding`` as an int when
    every side is the same: files of ungrouped, evenly padded convolutions stay as they were.
    """

    type_name = "Conv2D"
    weight_name = "W"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding=0, groups: int = 1, rng=None, dtype=np.float32,
                 name: str | None = None, params: dict | None = None,
                 inputs: list[str] | None = None):
        super().__init__(name, inputs)
        self.param_shapes(in_channels, out_channels, kernel_size, stride, padding, groups)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.pads = conv_padding(padding)
        self.groups = int(groups)
        self._cols = None  # im2col buffers of the compressed path, made on first use

        def init(shapes):
            r = np.random.default_rng(0) if rng is None else rng
            fan_in = self.in_channels // self.groups * self.kernel_size ** 2
            return {"W": xavier_uniform(r, shapes["W"], fan_in, dtype),
                    "b": np.zeros(shapes["b"], dtype=dtype)}

        self._set_params(params, dtype, init)

    @classmethod
    def param_shapes(cls, in_channels: int, out_channels: int, kernel_size: int,
                     stride: int = 1, padding=0, groups: int = 1) -> dict[str, tuple[int, ...]]:
        cin = positive_int(in_channels, "in_channels")
        cout = positive_int(out_channels, "out_channels")
        k = positive_int(kernel_size, "kernel_size")
        positive_int(stride, "stride")
        conv_padding(padding)
        g = positive_int(groups, "groups")
        if cin % g or cout % g:
            raise ValueError(f"in_channels ({cin}) and out_channels ({cout}) must be divisible "
                             f"by groups ({g})")
        return {"W": (cout, cin // g, k, k), "b": (cout,)}

    @property
    def padding(self):
        """An int when every side has the same padding, else ``[top, left, bottom, right]``."""
        return self.pads[0] if len(set(self.pads)) == 1 else list(self.pads)

    @property
    def hyperparameters(self) -> dict:
        hp = {"in_channels": self.in_channels, "out_channels": self.out_channels,
              "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}
        if self.groups != 1:
            hp["groups"] = self.groups
        return hp

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        k = self.kernel_size
        oh, ow = conv_output_hw(h, w, k, k, self.stride, self.pads)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: a {k}x{k} kernel (padding {self.padding}) does not "
                             f"fit a {h}x{w} input")
        return oh, ow

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"{self.name}: expects ({self.in_channels}, H, W) per sample, "
                             f"got {tuple(input_shape)}")
        return (self.out_channels, *self._out_hw(input_shape[1], input_shape[2]))

    def work_elements(self, input_shape) -> int:
        oh, ow = self._out_hw(input_shape[1], input_shape[2])
        return self.in_channels * self.kernel_size ** 2 * oh * ow  # the patch matrix

    def _im2col(self, x: np.ndarray, oh: int, ow: int, cols: np.ndarray) -> None:
        k, s = self.kernel_size, self.stride
        top, left = self.pads[:2]
        if s == 1 and self.pads == (0, 0, 0, 0):
            kernels.im2col_valid(x, k, k, oh, ow, cols)
        else:
            kernels.im2col(x, k, k, s, top, left, oh, ow, cols)

    def forward(self, x, train=False):
        x = self._input(x, 4, "(N, C, H, W)")
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} input channels, got {c}")
        k = self.kernel_size
        oh, ow = self._out_hw(h, w)
        oc, g = self.out_channels, self.groups
        weight = self.params["W"]
        if is_backend(weight):
            self._inference_only(train)
            if self._cols is None:
                self._cols = Scratch()
            cols = self._cols.get((c * k * k, n * oh * ow))  # reused, aligned
        else:
            cols = np.empty((c * k * k, n * oh * ow), dtype=x.dtype)
        self._im2col(x, oh, ow, cols)
        rows, ocg = cols.shape[0] // g, oc // g  # group j: these input rows, output rows
        if is_backend(weight):
            if g == 1:
                y = weight.matmul_t(cols)  # (OC, N * OH * OW)
            else:
                y = np.empty((oc, cols.shape[1]), dtype=np.float32)
                for j in range(g):
                    weight.matmul_t(cols[j * rows:(j + 1) * rows], rows=(j * ocg, (j + 1) * ocg),
                                    out=y)
        elif g == 1:
            y = weight.reshape(oc, -1) @ cols
        else:
            w2 = weight.reshape(oc, -1)
            y = np.empty((oc, cols.shape[1]), dtype=x.dtype)
            for j in range(g):
                np.matmul(w2[j * ocg:(j + 1) * ocg], cols[j * rows:(j + 1) * rows],
                          out=y[j * ocg:(j + 1) * ocg])
        y = y.reshape(oc, n, oh, ow).transpose(1, 0, 2, 3)
        y = np.add(y, self.params["b"].reshape(1, oc, 1, 1), order="C")  # NCHW-contiguous
        self._cache = (cols, x.shape) if train else None
        return y

    def backward(self, dy, need_dx=True):
        cols, (n, c, h, w) = self._cached()
        dy = np.asarray(dy, dtype=self.dtype)
        _, oc, oh, ow = dy.shape
        g = self.groups
        dy2 = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(oc, n * oh * ow)
        w2 = self.params["W"].reshape(oc, -1)
        rows, ocg = cols.shape[0] // g, oc // g
        gw = self.grads["W"].reshape(oc, -1)
        for j in range(g):
            o, i = slice(j * ocg, (j + 1) * ocg), slice(j * rows, (j + 1) * rows)
            gw[o] += dy2[o] @ cols[i].T
        self.grads["b"] += dy2.sum(axis=1)
        if not need_dx:
            return None
        if g == 1:
            dcols = w2.T @ dy2
        else:
            dcols = np.empty_like(cols)
            for j in range(g):
                np.matmul(w2[j * ocg:(j + 1) * ocg].T, dy2[j * ocg:(j + 1) * ocg],
                          out=dcols[j * rows:(j + 1) * rows])
        dx = np.empty((n, c, h, w), dtype=dy.dtype)
        k, s = self.kernel_size, self.stride
        top, left = self.pads[:2]
        if s == 1 and self.pads == (0, 0, 0, 0):
            kernels.col2im_valid(dcols, k, k, oh, ow, dx)
        else:
            kernels.col2im(dcols, k, k, s, top, left, oh, ow, dx)
        return dx


__all__ = ["Conv2D", "conv_padding", "conv_output_hw"]
