"""The fully connected layer."""

from __future__ import annotations

import numpy as np

from .base import Layer, is_backend, positive_int, xavier_uniform


class Dense(Layer):
    """Fully connected layer, y = x W^T + b.

    Parameters
    ----------
    in_features, out_features : int >= 1.
    rng : numpy.random.Generator, optional. Initialises ``W`` (Caffe's xavier); ``b`` is zero.
    dtype : float32 (default) or float64.
    name : str, optional.
    params : dict, optional. ``{"W": w, "b": b}`` to use instead of initialising: ``w`` a float
        array of shape (out, in) or a compressed back end of that shape, ``b`` a float array of
        shape (out,). Nothing is allocated then (files and the runtime build layers so), and
        the arrays' dtype is the layer's (``dtype`` applies to initialised parameters only).
    """

    type_name = "Dense"
    weight_name = "W"

    def __init__(self, in_features: int, out_features: int, rng=None, dtype=np.float32,
                 name: str | None = None, params: dict | None = None,
                 inputs: list[str] | None = None):
        super().__init__(name, inputs)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self._scratch = None

        def init(shapes):
            r = np.random.default_rng(0) if rng is None else rng
            return {"W": xavier_uniform(r, shapes["W"], self.in_features, dtype),
                    "b": np.zeros(shapes["b"], dtype=dtype)}

        self._set_params(params, dtype, init)

    @classmethod
    def param_shapes(cls, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        n_in = positive_int(in_features, "in_features")
        n_out = positive_int(out_features, "out_features")
        return {"W": (n_out, n_in), "b": (n_out,)}

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
        w = self.params["W"]
        if is_backend(w):
            self._inference_only(train)
            y = w.matmul(x)
        else:
            y = x @ w.T
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


__all__ = ["Dense"]
