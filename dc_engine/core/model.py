"""A sequential model: a list of layers, a forward pass and a backward pass.

One model type serves dense and compressed weights: a layer's weight is a float array or a
compressed back end (:class:`dc_engine.core.layers.WeightBackend`), and the model runs either.
A model with compressed weights runs inference only; :meth:`Model.to_dense` decodes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numba
import numpy as np

from .. import kernels
from .._validate import check_int
from .layers import Dense, Dropout, Layer, ReLU, build_layer, is_backend

_FLOAT32 = np.dtype(np.float32)


class Model:
    """Sequential network.

    Parameters
    ----------
    layers : list of Layer. Names are made unique (``<type><k>`` where a layer has none).
    input_shape : tuple of int. Shape of one sample, e.g. (1, 28, 28); checked at ``forward``.
    name : str, optional. The architecture's name, stored in files (e.g. "lenet-5").

    Attributes
    ----------
    layers, input_shape, name : as given.
    metadata : dict. What a file stored with the model (training recipe, reports); empty for a
        new model.

    Notes
    -----
    Method names mean one thing across the package: :meth:`forward` gives logits,
    :meth:`predict` class indices.
    """

    def __init__(self, layers: list[Layer], input_shape: tuple, name: str = "model"):
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name
        self.metadata: dict = {}
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

    @property
    def compressed(self) -> bool:
        """Whether some layer holds a compressed weight (then the model runs inference only)."""
        return any(layer.compressed for layer in self.layers)

    def astype(self, dtype) -> Model:
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def weighted_layers(self) -> list[Layer]:
        """The layers with a weight (``layer.weight_name`` set), in order."""
        return [layer for layer in self.layers if layer.weight_name is not None]

    def parameters(self) -> Iterator[tuple[Layer, str, np.ndarray]]:
        """Yield ``(layer, name, value)`` for every parameter, in layer order (a compressed
        weight is yielded as its back end)."""
        for layer in self.layers:
            for name, w in layer.params.items():
                yield layer, name, w

    def num_params(self) -> int:
        """Parameters of the model as float arrays (a compressed weight counts every weight,
        pruned ones included)."""
        return int(sum(math.prod(w.shape) for _, _, w in self.parameters()))

    @property
    def nbytes(self) -> int:
        """Bytes the parameters hold in memory: float arrays, and for a compressed weight what
        its products read (packed entries, row pointers, codebook)."""
        return int(sum(w.nbytes for _, _, w in self.parameters()))

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def seed(self, rng: np.random.Generator) -> None:
        """Give every stochastic layer (Dropout) its own stream drawn from ``rng``."""
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(rng.integers(2**63))

    def to_dense(self) -> Model:
        """A new model with every compressed weight decoded to a float32 array (bit for bit
        ``codebook[idx]``); float arrays are copied. Layer names, hyperparameters and
        :attr:`metadata` are kept; masks, ties and the training state are not."""
        layers = []
        for layer in self.layers:
            params = {k: np.array(w) for k, w in layer.dense_params().items()}
            layers.append(build_layer(layer.type_name, layer.hyperparameters, layer.name,
                                      params or None))
        model = Model(layers, self.input_shape, name=self.name)
        model.metadata = dict(self.metadata)
        return model

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected input of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {x.shape}")
        return x

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Run the layers in order. ``train=True`` keeps what ``backward`` needs and turns
        dropout on (a model with compressed weights refuses it).

        Parameters
        ----------
        x : ndarray, shape (N, *input_shape).

        Returns
        -------
        logits : ndarray, shape (N, *output_shape), in the model's dtype.

        Notes
        -----
        A batch of one takes a leaner path for compressed Dense layers (:meth:`_forward_one`)
        with the same results bit for bit.
        """
        x = self._check_input(x)
        if not train and x.shape[0] == 1:
            return self._forward_one(x)
        for layer in self.layers:
            x = layer.forward(x, train=train)
        return x

    __call__ = forward

    def _one_sample_plan(self) -> list:
        """Steps of :meth:`_forward_one`: ``(layer, relu, weight, serial)``. A :class:`Dense`
        layer whose weight was compressed when the plan was made runs fused with the
        :class:`ReLU` after it (``relu``, or None) while ``layer.params["W"] is weight``
        (``serial``: its product runs on the calling thread); every other step (``weight``
        None) runs ``layer.forward`` (and ``relu.forward``). Cached with the layers
        it was made from (held, so compared by identity) and rebuilt when ``self.layers``
        changes; a replaced weight falls back to the unfused step until then."""
        layers = tuple(self.layers)  # (layers define no __eq__: tuple equality is identity)
        cache = getattr(self, "_plan_cache", None)
        if cache is None or cache[0] != layers:
            plan, i = [], 0
            while i < len(self.layers):
                layer = self.layers[i]
                if isinstance(layer, Dense):
                    nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
                    relu = nxt if isinstance(nxt, ReLU) else None
                    w = layer.params["W"]
                    fused = (w, w.serial(1)) if is_backend(w) else (None, True)
                    plan.append((layer, relu, *fused))
                    i += 2 if relu is not None else 1
                else:
                    plan.append((layer, None, None, True))
                    i += 1
            cache = self._plan_cache = (layers, plan)
        return cache[1]

    def _forward_one(self, x: np.ndarray) -> np.ndarray:
        """:meth:`forward` for one sample (``x`` of shape (1, ...)).

        A Dense layer whose weight is compressed, given a C-contiguous float32 vector, is one
        call of the batch-1 kernel into a new vector plus one call adding the bias (and
        applying a following ReLU) in place, without the per-product checks of ``matmul``
        (the shapes were checked when the model was built; the dtype is checked here).
        Everything else runs as :meth:`forward` runs it. The same kernels as the per-layer
        path for a batch of one, so the same results bit for bit; per-call Python overhead is
        most of a small model's time at batch 1 (docs/KERNELS.md, "End to end")."""
        threads = 0  # numba.get_num_threads(), asked once per call when a product needs it
        for layer, relu, m, serial in self._one_sample_plan():
            if m is None or layer.params["W"] is not m or x.dtype is not _FLOAT32:
                x = layer.forward(x)  # (converts to the layer's dtype)
                if relu is not None:
                    x = relu.forward(x)
                continue
            h = x.reshape(m.shape[1])  # (1, in) -> (in,), a view when x is contiguous
            y = np.empty(m.shape[0], dtype=np.float32)
            if serial:
                n_threads = 1
            else:
                threads = threads or numba.get_num_threads()
                n_threads = threads
            m.matvec_into(h if h.flags.c_contiguous else np.ascontiguousarray(h), y, n_threads)
            kernels.add_bias_relu(y, layer.params["b"], relu is not None)
            x = y.reshape(1, m.shape[0])
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

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class indices (int64, shape (N,)): the argmax of the logits, computed
        ``batch_size`` samples at a time in evaluation mode.

        Raises
        ------
        TypeError
            ``batch_size`` is not an integer.
        ValueError
            ``batch_size < 1`` or ``x`` of the wrong shape.
        """
        batch_size = check_int(batch_size, "batch_size", 1)
        x = self._check_input(x)
        out = [np.argmax(self.forward(x[i:i + batch_size]), axis=1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)


__all__ = ["Model"]
