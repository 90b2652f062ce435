"""Inverted dropout."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the
    survivors by 1 / (1 - rate); identity at evaluation.

    ``rate`` may be changed after construction (pruning lowers it, LWC Eq. 2). The random
    stream is ``self.rng`` (a ``numpy.random.Generator``), which :meth:`Model.seed` sets.
    """

    type_name = "Dropout"

    def __init__(self, rate: float, name: str | None = None,
                 inputs: list[str] | None = None):
        super().__init__(name, inputs)
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


__all__ = ["Dropout"]
