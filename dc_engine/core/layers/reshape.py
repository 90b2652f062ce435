"""Layers that only change the shape of their input."""

from __future__ import annotations

import math

import numpy as np

from .base import Layer


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


__all__ = ["Flatten"]
