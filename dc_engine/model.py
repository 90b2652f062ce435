"""A sequential model: a list of layers, a forward pass and a backward pass."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .layers import Dropout, Layer


class Model:
    """Sequential network.

    Parameters
    ----------
    layers : list of Layer. Names are made unique (``<type><k>`` where a layer has none).
    input_shape : tuple of int. Shape of one sample, e.g. (1, 28, 28); checked at ``forward``.
    name : str, optional. The architecture's name, stored in files (e.g. "lenet-5").
    """

    def __init__(self, layers: list[Layer], input_shape: tuple, name: str = "model"):
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name
        seen: set[str] = set()
        counts: dict[str, int] = {}
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Model takes Layer objects, got {type(layer).__name__}")
            if layer.name is None:
                base = layer.type_name.lower()
                counts[base] = counts.get(base, 0) + 1
                layer.name = f"{base}{counts[base]}"
            if layer.name in seen:
                raise ValueError(f"duplicate layer name {layer.name!r}")
            seen.add(layer.name)
        self.output_shape()  # validates that the layer shapes chain

    def output_shape(self) -> tuple:
        """Shape of one sample's output; raises ValueError if the layers do not chain."""
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers are {[l.name for l in self.layers]}")

    def __repr__(self) -> str:
        body = "\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Model({self.name!r}, input_shape={self.input_shape},\n{body}\n)"

    @property
    def dtype(self) -> np.dtype:
        for layer in self.layers:
            if layer.params:
                return layer.dtype
        return np.dtype(np.float32)

    def astype(self, dtype) -> Model:
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def parameters(self) -> Iterator[tuple[Layer, str, np.ndarray]]:
        """Yield ``(layer, name, array)`` for every parameter, in layer order."""
        for layer in self.layers:
            for name, w in layer.params.items():
                yield layer, name, w

    def num_params(self) -> int:
        return int(sum(w.size for _, _, w in self.parameters()))

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def seed(self, rng: np.random.Generator) -> None:
        """Give every stochastic layer (Dropout) its own stream drawn from ``rng``."""
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(rng.integers(2**63))

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected input of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {x.shape}")
        return x

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Run the layers in order. ``train=True`` keeps what ``backward`` needs and turns
        dropout on.

        Parameters
        ----------
        x : ndarray, shape (N, *input_shape).

        Returns
        -------
        logits : ndarray, shape (N, *output_shape), in the model's dtype.
        """
        x = self._check_input(x)
        for layer in self.layers:
            x = layer.forward(x, train=train)
        return x

    def backward(self, dlogits: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Back-propagate ``dlogits``, adding into every layer's ``grads``.

        Returns the gradient w.r.t. the input when ``input_grad`` is true, else ``None`` (the
        first layer then skips computing it).
        """
        # Layers up to and including the first one with parameters need no input gradient
        # (nothing before them learns): LeNet-300-100's ip1 skips a 64x300x784 matmul.
        first = next((i for i, l in enumerate(self.layers) if l.params), len(self.layers))
        dy = dlogits
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(dy, need_dx=input_grad or i > first)
            if dy is None:
                break
        return dy if input_grad else None

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Logits for ``x`` computed in batches (evaluation mode)."""
        x = self._check_input(x)
        out = [self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        if not out:
            return np.zeros((0, *self.output_shape()), dtype=self.dtype)
        return np.concatenate(out)


__all__ = ["Model"]
