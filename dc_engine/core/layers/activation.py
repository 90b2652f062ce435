"""Activations."""

from __future__ import annotations

import numpy as np

from .base import FLOAT_DTYPES, Layer


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


class Softmax(Layer):
    """Softmax over the classes (axis 1) of an (N, K) input: class probabilities.

    ``y[n, i] = exp(x[n, i] - m[n]) / sum_j exp(x[n, j] - m[n])`` with ``m[n]`` the row's
    maximum, so large inputs cannot overflow. Parameter-free: a float32 or float64 input keeps
    its dtype (other dtypes become float32). The backward pass is the softmax's Jacobian,
    ``dx = y * (dy - sum(dy * y, axis=1))``.

    Notes
    -----
    An output layer, for models imported with one (ONNX) or meant to give probabilities. A
    model trained with ``softmax_cross_entropy`` must output *logits*: that loss applies the
    softmax itself, so a softmax in front of it would be applied twice. The training code, not
    this layer, deals with a terminal Softmax; ``Model.predict`` (an argmax) is the same with
    or without one.
    """

    type_name = "Softmax"

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 1 or input_shape[0] < 1:
            raise ValueError(f"{self.name or self.type_name}: expects (K,) per sample with "
                             f"K >= 1 classes, got {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x, train=False):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"{self.name or self.type_name}: expected a 2-D input (N, K) "
                             f"with K >= 1, got shape {x.shape}")
        if x.dtype.type not in FLOAT_DTYPES:
            x = x.astype(np.float32)
        y = x - x.max(axis=1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
        self._cache = y if train else None
        return y

    def backward(self, dy, need_dx=True):
        y = self._cached()
        if not need_dx:
            return None
        dy = np.asarray(dy, dtype=y.dtype)
        return y * (dy - np.sum(dy * y, axis=1, keepdims=True))


__all__ = ["ReLU", "Softmax"]
