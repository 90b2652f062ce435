"""Layers that merge several tensors: a residual sum and a channel concatenation.

They take a list of arrays (``arity = None``: two or more inputs, named in ``inputs``) and
their ``backward`` returns one gradient per input.
"""

from __future__ import annotations

import numpy as np

from ..._validate import check_int
from .base import FLOAT_DTYPES, Layer


def _floats(xs, who: str) -> list[np.ndarray]:
    if not isinstance(xs, (list, tuple)) or len(xs) < 2:
        raise ValueError(f"{who}: expected a list of two or more inputs, got "
                         f"{type(xs).__name__}")
    out = []
    for x in xs:
        x = np.asarray(x)
        out.append(x if x.dtype.type in FLOAT_DTYPES else x.astype(np.float32))
    return out


class Add(Layer):
    """Elementwise sum of two or more tensors of the same shape (a residual connection; ONNX
    ``Add`` / ``Sum`` without broadcasting)."""

    type_name = "Add"
    arity = None

    def output_shape(self, input_shape) -> tuple:
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2 or any(s != shapes[0] for s in shapes):
            raise ValueError(f"{self.name}: Add takes two or more inputs of one shape, got "
                             f"{shapes}")
        return shapes[0]

    def forward(self, xs, train=False):
        xs = _floats(xs, self.name or self.type_name)
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"{self.name}: inputs of different shapes {sorted(shapes)}")
        y = xs[0] + xs[1]  # a new array, in the common dtype
        for x in xs[2:]:
            y += x
        self._cache = len(xs) if train else None
        return y

    def backward(self, dy, need_dx=True):
        n = self._cached()
        return [dy] * n if need_dx else None


class Concat(Layer):
    """Concatenation of two or more NCHW (or (N, K)) tensors along the channel axis 1 (ONNX
    ``Concat`` with ``axis=1``; SqueezeNet's fire modules, Inception's branches)."""

    type_name = "Concat"
    arity = None

    def __init__(self, axis: int = 1, name: str | None = None, inputs: list[str] | None = None):
        super().__init__(name, inputs)
        if check_int(axis, "axis") != 1:
            raise ValueError(f"Concat joins along the channel axis 1 only, got axis={axis}")
        self.axis = 1

    @property
    def hyperparameters(self) -> dict:
        return {"axis": self.axis}

    def output_shape(self, input_shape) -> tuple:
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2 or any(len(s) < 1 or s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"{self.name}: Concat takes two or more inputs that differ only "
                             f"in their channel count, got {shapes}")
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def forward(self, xs, train=False):
        xs = _floats(xs, self.name or self.type_name)
        y = np.concatenate(xs, axis=1)
        self._cache = [x.shape[1] for x in xs] if train else None
        return y

    def backward(self, dy, need_dx=True):
        sizes = self._cached()
        if not need_dx:
            return None
        bounds = np.cumsum(sizes)[:-1]
        return [np.ascontiguousarray(part) for part in np.split(dy, bounds, axis=1)]


__all__ = ["Add", "Concat"]
