"""The model: layers wired by named tensors, with a forward and a backward pass.

A layer reads the tensors its ``inputs`` name (the model's input is ``"input"``, a layer's
output is named after the layer) or, when ``inputs`` is None, the output of the layer before
it: a plain list of layers is a chain, the simple case of the same machinery. Layers are
listed in an order where every input comes first (a topological order); the model's output is
the last layer's, or the tensor ``output`` names.

One model type serves dense and compressed weights: a layer's weight is a float array or a
compressed back end (:class:`dc_engine.core.layers.WeightBackend`), and the model runs either.
A model with compressed weights runs inference only; :meth:`Model.to_dense` decodes it.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np

from .. import kernels
from .._validate import check_int
from ..limits import how_to_raise, limit
from .layers import Dense, Dropout, Layer, ReLU, build_layer, is_backend

_FLOAT32 = np.dtype(np.float32)


def _numba_threads() -> int:
    """Numba's thread count for this thread, without starting its thread pool when nothing has
    (``numba.get_num_threads`` starts it, and costs microseconds per call)."""
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", True):
        return numba.get_num_threads()
    return numba.config.NUMBA_NUM_THREADS


# One batch-1 path built at a time (FusedChain.build re-points the weights' arrays).
_BUILD_LOCK = threading.Lock()

INPUT = "input"
"""The name of the model's input tensor (no layer may have it)."""


@dataclass(frozen=True)
class Wiring:
    """A model's resolved graph: ``steps`` as ``(layer, input names)`` in order, the name of
    the ``output`` tensor, the step after which each tensor is last read (``last_use``),
    whether it is a plain chain (``sequential``), and the layers whose output depends on a
    parameter (``trainable``: their input gradient is worth computing)."""

    steps: tuple
    output: str
    last_use: dict
    sequential: bool
    trainable: frozenset


class Model:
    """A network of layers wired by named tensors (a chain when no layer names its inputs).

    Parameters
    ----------
    layers : list of Layer, in an order where every layer's inputs come before it. Names are
        made unique (``<type><k>`` where a layer has none); no layer may be named ``"input"``.
    input_shape : tuple of int. Shape of one sample, e.g. (1, 28, 28); checked at ``forward``.
    name : str, optional. The architecture's name, stored in files (e.g. "lenet-5").
    output : str, optional. The tensor the model returns (default: the last layer's output).

    Attributes
    ----------
    layers, input_shape, name, output : as given.
    metadata : dict. What a file stored with the model (training recipe, reports); empty for a
        new model.
    encoding : dict. How a compressed file of the model is laid out, a file-level setting
        (not part of forward; copied with the model): ``{"container": "compact"}`` writes the
        compact container (compressed format version 3, about 0.5 KB smaller), ``{}`` or
        ``{"container": "classic"}`` the classic one (versions 1/2). ``dc_engine.load`` of a
        compressed file sets it from the file's version and ``dc_engine.save`` follows it, so
        a loaded file saves back byte for byte. Empty for a new model.

    Raises
    ------
    TypeError, ValueError
        Not layers, duplicate names, inputs that name no earlier tensor, a layer given the
        wrong number of inputs, or shapes that do not fit.

    Notes
    -----
    Method names mean one thing across the package: :meth:`forward` gives the output (logits
    for a classifier; a terminal :class:`~dc_engine.core.layers.Softmax` gives probabilities),
    :meth:`predict` class indices.
    """

    def __init__(self, layers: list[Layer], input_shape: tuple, name: str = "model",
                 output: str | None = None):
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name
        self.output = output
        self.metadata: dict = {}
        self.encoding: dict = {}
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
            if layer.name == INPUT:
                raise ValueError(f"no layer may be named {INPUT!r}: it names the model's input")
            seen.add(layer.name)
        self.output_shape()  # validates the wiring and that the layer shapes fit

    def wiring(self) -> Wiring:
        """The resolved graph (cached; rebuilt when ``layers``, a layer's ``inputs`` or
        ``output`` change).

        Raises
        ------
        ValueError
            An input that names no earlier tensor, an unknown ``output``, or a layer given a
            number of inputs it does not take.
        """
        key = (tuple(self.layers), Layer._wiring_version, self.output)
        cache = getattr(self, "_wiring_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        steps, known, last_use, trainable = [], {INPUT}, {}, set()
        sequential, prev = True, INPUT
        for i, layer in enumerate(self.layers):
            ins = tuple(layer.inputs) if layer.inputs is not None else (prev,)
            unknown = [n for n in ins if n not in known]
            if unknown:
                raise ValueError(f"{self.name}: layer {layer.name!r} reads {unknown}, which no "
                                 f"earlier layer writes (inputs name {INPUT!r} or the layers "
                                 f"listed before it)")
            if layer.arity == 1 and len(ins) != 1:
                raise ValueError(f"{self.name}: layer {layer.name!r} ({layer.type_name}) takes "
                                 f"one input, its inputs name {list(ins)}")
            if layer.arity is None and len(ins) < 2:
                raise ValueError(f"{self.name}: layer {layer.name!r} ({layer.type_name}) takes "
                                 f"two or more inputs, got {list(ins)}")
            sequential &= ins == (prev,)
            if layer.params or any(n in trainable for n in ins):
                trainable.add(layer.name)
            for n in ins:
                last_use[n] = i
            steps.append((layer, ins))
            known.add(layer.name)
            prev = layer.name
        output = self.output if self.output is not None else prev
        if output not in known:
            raise ValueError(f"{self.name}: output {output!r} names no tensor of the model")
        sequential &= output == prev
        wiring = Wiring(tuple(steps), output, last_use, sequential, frozenset(trainable))
        self._wiring_cache = (key, wiring)
        return wiring

    @property
    def sequential(self) -> bool:
        """Whether the layers form a plain chain (each reads the one before it)."""
        return self.wiring().sequential

    def tensor_shapes(self) -> dict[str, tuple]:
        """One sample's shape of every tensor: the input (``"input"``) and each layer's
        output (by layer name); raises ValueError if the wiring or the layer shapes do not
        fit."""
        shapes = {INPUT: self.input_shape}
        for layer, ins in self.wiring().steps:
            arg = shapes[ins[0]] if layer.arity == 1 else [shapes[n] for n in ins]
            shapes[layer.name] = layer.output_shape(arg)
        return shapes

    def output_shape(self) -> tuple:
        """Shape of one sample's output; raises ValueError if the wiring or the layer shapes
        do not fit."""
        return self.tensor_shapes()[self.wiring().output]

    def sample_work(self) -> dict[str, int]:
        """Per layer, the most values one sample needs at once in it: its input, its output or
        its scratch space (:meth:`Layer.work_elements`), whichever is largest. A batch of N
        needs about N times that in the largest layer."""
        shapes = self.tensor_shapes()
        work = {}
        for layer, ins in self.wiring().steps:
            arg = shapes[ins[0]] if layer.arity == 1 else [shapes[n] for n in ins]
            out = shapes[layer.name]
            sizes = [math.prod(a) for a in (arg if layer.arity != 1 else [arg])]
            work[layer.name] = max(*sizes, math.prod(out), layer.work_elements(arg))
        return work

    def check_sample_work(self, cap: int | None = None) -> None:
        """Raise ValueError naming the first layer whose :meth:`sample_work` exceeds ``cap``
        (default: the limit ``sample_elements``, :mod:`dc_engine.limits`), so that a model
        whose hyperparameters imply absurd work (a huge padding or kernel) is refused before
        it runs."""
        cap = limit("sample_elements") if cap is None else cap
        for name, n in self.sample_work().items():
            if n > cap:
                raise ValueError(
                    f"layer {name!r} needs {n:,} values per sample (its input, output or "
                    f"scratch space), above the limit of {cap:,}; "
                    f"{how_to_raise('sample_elements')}")

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers are {[l.name for l in self.layers]}")

    def __repr__(self) -> str:
        def line(layer):
            ins = f" <- {', '.join(layer.inputs)}" if layer.inputs is not None else ""
            return f"  {layer!r}{ins}"

        body = "\n".join(line(layer) for layer in self.layers)
        out = f", output={self.output!r}" if self.output is not None else ""
        return f"Model({self.name!r}, input_shape={self.input_shape}{out},\n{body}\n)"

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
        ``codebook[idx]``); float arrays are copied. Layer names, hyperparameters,
        :attr:`metadata` and :attr:`encoding` are kept; masks, ties and the training state are
        not."""
        layers = []
        for layer in self.layers:
            params = {k: np.array(w) for k, w in layer.dense_params().items()}
            layers.append(build_layer(layer.type_name, layer.hyperparameters, layer.name,
                                      params or None, inputs=layer.inputs))
        model = Model(layers, self.input_shape, name=self.name, output=self.output)
        model.metadata = dict(self.metadata)
        model.encoding = dict(self.encoding)
        return model

    def logits_model(self) -> Model:
        """The model whose output is the logits: this one, or, when the output comes from a
        :class:`~dc_engine.core.layers.Softmax` layer, a view of the same layers (shared, not
        copied) that stops at the Softmax's input. Training and the loss use it: softmax
        cross-entropy wants logits."""
        w = self.wiring()
        out = next(layer for layer, _ in w.steps if layer.name == w.output) \
            if w.output != INPUT else None
        if out is None or out.type_name != "Softmax":
            return self
        src = dict((layer.name, ins) for layer, ins in w.steps)[out.name][0]
        view = Model([l for l in self.layers if l is not out], self.input_shape, self.name,
                     output=src)
        view.metadata = self.metadata
        view.encoding = self.encoding
        return view

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
        ndarray, shape (N, *output_shape), in the model's dtype: the output tensor (logits for
        a classifier).

        Notes
        -----
        A batch of one through a chain of compressed layers runs as one kernel call
        (:mod:`dc_engine.core.fused`): on the calling thread, or, for a big network with more
        than one Numba thread, with its large operations split over the threads, whichever
        was measured faster than the per-layer path (:meth:`_forward_one`, a leaner path for
        compressed Dense layers); with the scalar kernels all give the per-layer serial
        results bit for bit (tests check it). In a graph, a tensor is dropped as soon as its
        last reader has run.
        """
        if (not train and type(x) is np.ndarray and x.dtype is _FLOAT32
                and x.shape == (1, *self.input_shape)):  # the common batch-1 call, checked
            chain = self._batch_one()
            if chain is not None:
                return chain.run(x)
        x = self._check_input(x)
        w = self.wiring()
        if w.sequential:
            if not train and x.shape[0] == 1:
                if x.dtype is _FLOAT32:  # (else: converted per layer, as at any batch size)
                    chain = self._batch_one()
                    if chain is not None:
                        return chain.run(x)
                return self._forward_one(x)
            for layer in self.layers:
                x = layer.forward(x, train=train)
            return x
        env = {INPUT: x}
        for i, (layer, ins) in enumerate(w.steps):
            arg = env[ins[0]] if layer.arity == 1 else [env[n] for n in ins]
            env[layer.name] = layer.forward(arg, train=train)
            for n in ins:
                if w.last_use[n] == i and n != w.output:
                    env.pop(n, None)
        return env[w.output]

    __call__ = forward

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the batch-1 caches (rebuilt on first use)."""
        state = self.__dict__.copy()
        state.pop("_b1_cache", None)
        state.pop("_plan_cache", None)
        return state

    def _batch_one(self):
        """The :class:`~dc_engine.core.fused.FusedChain` that runs a batch of one, or None for
        the per-layer path (:meth:`_forward_one`; always for a graph).

        Chosen at the first batch-1 call (:func:`dc_engine.core.fused.choose`: measured where
        the two paths differ in more than Python overhead, at the Numba thread count of that
        moment) and kept until the layers, their wiring, the input shape, or a layer's weight or
        bias object change. The chain holds the weights and biases themselves (the layers'
        arrays become views of its arrays), so changes made in place reach it too."""
        cache = self.__dict__.get("_b1_cache")
        if cache is not None and all(
                map(operator.is_, cache[3], [lyr.params[k] for lyr, k in cache[2]])):
            if cache[0] == Layer._wiring_version and cache[1] == (
                    tuple(self.layers), self.output, self.input_shape):
                return cache[4]
            if cache[5] == self._b1_key():
                # another layer was made somewhere (the wiring version is global): same model
                self._b1_cache = (Layer._wiring_version, *cache[1:])
                return cache[4]
        key = self._b1_key()
        with _BUILD_LOCK:
            version = Layer._wiring_version
            layers = tuple(self.layers)
            chain = (self._choose_batch_one(layers, _numba_threads())
                     if self.wiring().sequential else None)
            params = tuple((lyr, k) for lyr in layers for k in ("W", "b") if k in lyr.params)
            self._b1_cache = (version, (layers, self.output, self.input_shape), params,
                              tuple(lyr.params[k] for lyr, k in params), chain, key)
        return chain

    def _b1_key(self) -> tuple:
        """What the batch-1 path depends on besides the parameter objects: the layers, each
        one's inputs, the output and the input shape."""
        return (tuple((lyr, None if lyr.inputs is None else tuple(lyr.inputs))
                      for lyr in self.layers), self.output, self.input_shape)

    def _choose_batch_one(self, layers: tuple, threads: int):
        """The chain for :meth:`_batch_one` (its ``parallel`` flag set when the parallel fused
        path won), or None for the per-layer path. The parallel fused path is a candidate only
        at more than one thread for a big network (:data:`dc_engine.core.fused.PARALLEL_WORK`):
        a small one's fused path stays on the calling thread."""
        from .fused import PARALLEL_WORK, FusedChain, NotFusable, choose, forced

        if forced() == "layered" or not any("W" in layer.params for layer in layers):
            return None  # (no weights: nothing to fuse, and dtypes stay as the layers make them)
        try:
            chain = FusedChain.build(layers, self.input_shape)
        except NotFusable:
            return None
        products = chain.products
        parallel = threads > 1 and any(not m.serial(n) for m, n in products)
        big = threads > 1 and chain.work >= PARALLEL_WORK
        simd = any(getattr(m, "simd", False) for m, _ in products)
        x = np.zeros((1, *self.input_shape), np.float32)
        path = choose(layers, self.input_shape, threads, parallel or simd or big,
                      lambda: chain.run(x, parallel=False), lambda: self._forward_one(x),
                      (lambda: chain.run(x, parallel=True)) if big else None)
        if path == "layered":
            return None
        chain.parallel = path == "fused-parallel"
        chain.adopt()  # the layers' weights and biases become views of the chain's arrays
        return chain

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
        """Back-propagate ``dlogits`` (the gradient of the loss with respect to the output),
        adding into every layer's ``grads``. A tensor read by several layers gets the sum of
        their gradients.

        Returns the gradient w.r.t. the input when ``input_grad`` is true, else ``None``: a
        layer computes its input gradient only when something before it learns (LeNet-300-100's
        ip1 skips a 64x300x784 matmul).
        """
        w = self.wiring()
        if w.sequential:
            first = next((i for i, l in enumerate(self.layers) if l.params), len(self.layers))
            dy = dlogits
            for i in range(len(self.layers) - 1, -1, -1):
                dy = self.layers[i].backward(dy, need_dx=input_grad or i > first)
                if dy is None:
                    break
            return dy if input_grad else None

        # A tensor needs its gradient when it depends on a parameter, or on the input when
        # the input's gradient is asked for.
        if input_grad:
            req = {INPUT}
            for layer, ins in w.steps:
                if layer.name in w.trainable or any(n in req for n in ins):
                    req.add(layer.name)
        else:
            req = w.trainable

        def needs(name: str) -> bool:
            return name in req

        grads = {w.output: dlogits}
        for layer, ins in reversed(w.steps):
            dy = grads.pop(layer.name, None)
            if dy is None:
                continue  # the output does not depend on this layer
            need_dx = any(needs(n) for n in ins)
            dx = layer.backward(dy, need_dx=need_dx)
            if not need_dx:
                continue
            for n, d in zip(ins, [dx] if layer.arity == 1 else dx):
                if needs(n):
                    grads[n] = d if n not in grads else grads[n] + d  # (never in place)
        return grads.get(INPUT) if input_grad else None

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


def with_normalization(model: Model, mean, std, name: str = "normalize") -> Model:
    """``model`` with a :class:`~dc_engine.core.layers.Normalize` layer in front: every
    command, the runtime and the files then apply ``(x - mean[c]) / std[c]`` to the model's
    input (the preprocessing it was trained with). The layers are reused, and those that read
    the input are rewired to the new layer (so ``model`` itself should not be used after).

    Raises
    ------
    ValueError
        Bad ``mean`` / ``std`` (not finite, a std <= 0, lengths that differ or do not match
        the input's channels), a model that already starts with a Normalize layer, or
        ``name`` taken.
    """
    from .layers import Normalize

    w = model.wiring()
    readers = [layer for layer, ins in w.steps if INPUT in ins]
    if any(isinstance(layer, Normalize) for layer in readers):
        raise ValueError(f"{model.name} already normalises its input (a Normalize layer "
                         f"reads it); edit that layer's mean and std instead")
    if any(layer.name == name for layer in model.layers):
        raise ValueError(f"{model.name} has a layer named {name!r} already; pass another "
                         f"name")
    norm = Normalize(mean, std, name=name)
    norm.output_shape(model.input_shape)  # channels checked before anything is rewired
    for layer in model.layers:  # the first layer, when it takes None, reads the new one
        if layer.inputs is not None and INPUT in layer.inputs:
            layer.inputs = [name if n == INPUT else n for n in layer.inputs]
    out = Model([norm, *model.layers], model.input_shape, model.name,
                output=model.output)
    out.metadata = dict(model.metadata)
    out.encoding = dict(model.encoding)
    return out


__all__ = ["Model", "Wiring", "INPUT", "with_normalization"]
