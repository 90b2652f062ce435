"""Activations."""

from __future__ import annotations

import numpy as np

from .base import Layer


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


__all__ = ["ReLU"]
