"""The layer contract: the :class:`Layer` base class and the compressed weight back end
(:class:`WeightBackend`); see the package docstring."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from ..._validate import check_int

FLOAT_DTYPES = (np.float32, np.float64)
"""The dtypes a layer computes in."""
RESERVED_HYPERPARAMETERS = ("name", "rng", "dtype", "params", "inputs")
"""Constructor arguments that are never stored as hyperparameters (files may not set them)."""


@runtime_checkable
class WeightBackend(Protocol):
    """A weight kept in another form than a float array (the compressed back end).

    :class:`dc_engine.runtime.CompressedMatrix` implements it; a layer holds one in
    ``params[layer.weight_name]``. ``shape`` is ``(out, fan_in)``: the layer's weight reshaped
    to 2-D. Products take and return float32.
    """

    shape: tuple
    nbytes: int
    codebook: np.ndarray

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """``x @ W.T`` for ``x`` of shape (N, fan_in) or (fan_in,)."""

    def matmul_t(self, xt: np.ndarray) -> np.ndarray:
        """``W @ xt`` for ``xt`` of shape (fan_in, N)."""

    def matvec_into(self, x: np.ndarray, y: np.ndarray, threads: int | None = None) -> None:
        """``y = W @ x``, unchecked (x: (fan_in,) C-contiguous float32; y: (out,) float32)."""

    def serial(self, n: int = 1) -> bool:
        """Whether a product with ``n`` input columns runs on the calling thread."""

    def to_dense(self) -> np.ndarray:
        """The weight as a float32 (out, fan_in) array."""

    def to_codes(self) -> np.ndarray:
        """The per-weight codebook codes, shape (out, fan_in), uint8 or uint16 (0 = pruned);
        with ``codebook`` (float32, ``2**weight_bits`` entries) what a file stores."""


def is_backend(w) -> bool:
    """Whether a parameter value is a compressed weight back end (has the products of
    :class:`WeightBackend`), not an array or an array-like."""
    return not isinstance(w, np.ndarray) and hasattr(w, "matvec_into") and hasattr(w, "matmul_t")


class Layer:
    """Base class: parameter dicts, constraints, parameter shapes, and the (de)serialisation
    hooks.

    Subclasses set ``type_name`` (the name stored in files) and implement ``forward``,
    ``backward``, ``hyperparameters`` and, when they hold parameters, ``param_shapes`` and
    ``weight_name``.
    """

    type_name = "Layer"
    weight_name: str | None = None
    """The parameter that pruning, weight sharing and encoding act on (None: no weight)."""

    arity: int | None = 1
    """How many input tensors ``forward`` takes: 1 (an array), or None for any number >= 2
    (a list of arrays; ``backward`` then returns a list)."""

    _wiring_version = 0  # bumped whenever any layer's inputs change: models re-plan

    def __init__(self, name: str | None = None, inputs: list[str] | None = None):
        self.name = name
        self.inputs = inputs
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.ties: dict[str, object] = {}
        self.encoding: dict[str, dict] = {}
        self._dtype = np.dtype(np.float32)
        self._cache = None
        self._grads_zero = False  # True from zero_grad() until the next backward()

    @classmethod
    def param_shapes(cls, **hyperparameters) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter of a layer with these hyperparameters (nothing is built).

        Raises TypeError or ValueError for hyperparameters the constructor would reject.
        """
        return {}

    @property
    def hyperparameters(self) -> dict:
        """Constructor arguments (JSON-able scalars) that rebuild this layer."""
        return {}

    @property
    def inputs(self) -> list[str] | None:
        """The names of the tensors this layer reads, in order: the model's input
        (``"input"``) or other layers' names (a layer's output tensor is named after it).
        None: the output of the layer before it in the model (or the model's input), which
        makes a list of layers a chain."""
        return self._inputs

    @inputs.setter
    def inputs(self, value) -> None:
        if value is not None:
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{self.name or self.type_name}: inputs must be a list of "
                                f"tensor names (str) or None, got {value!r}")
            value = list(value)
            if not value:
                raise ValueError(f"{self.name or self.type_name}: inputs must name at least "
                                 f"one tensor")
        self._inputs = value
        Layer._wiring_version += 1

    @property
    def dtype(self) -> np.dtype:
        """The float dtype the layer computes in (its float parameters' dtype; float32 for a
        compressed weight or when there is none)."""
        return self._dtype

    @property
    def compressed(self) -> bool:
        """Whether a parameter is held by a compressed back end (inference only)."""
        return any(is_backend(w) for w in self.params.values())

    def astype(self, dtype) -> Layer:
        """Convert parameters (and gradients) to ``dtype`` in place; returns ``self``."""
        dtype = np.dtype(dtype)
        if dtype.type not in FLOAT_DTYPES:
            raise TypeError(f"layer dtype must be float32 or float64, got {dtype}")
        if self.compressed and dtype != np.float32:
            raise TypeError(f"{self.name}: a compressed weight computes in float32; decode the "
                            f"model first (model.to_dense()) to use {dtype}")
        self._dtype = dtype
        for k in self.params:
            if not is_backend(self.params[k]):
                self.params[k] = np.ascontiguousarray(self.params[k], dtype=dtype)
                self.grads[k] = np.zeros_like(self.params[k])
        return self

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0.0)
        self._grads_zero = True

    def _set_params(self, params: dict | None, dtype, init) -> None:
        """Attach ``params`` (name -> float array or, for the weight, a back end), each
        checked against :meth:`param_shapes`; or, when None, ``init(shapes)``'s fresh arrays
        converted to ``dtype``."""
        shapes = self.param_shapes(**self.hyperparameters)
        if params is None:
            self.params.update(init(shapes))
            self.astype(dtype)
            return
        who = self.name or self.type_name
        if not isinstance(params, dict) or set(params) != set(shapes):
            found = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{who}: params must hold exactly {sorted(shapes)}, got {found}")
        dtypes = {np.asarray(w).dtype for w in params.values() if not is_backend(w)}
        if len(dtypes) > 1:
            raise TypeError(f"{who}: parameters mix dtypes {sorted(map(str, dtypes))}; give "
                            f"them one float dtype")
        self._dtype = np.dtype(dtypes.pop()) if dtypes else np.dtype(np.float32)
        if self._dtype.type not in FLOAT_DTYPES:
            raise TypeError(f"{who}: parameters must be float32 or float64, got {self._dtype}")
        for k in shapes:
            self.set_param(k, params[k])

    def set_param(self, name: str, value) -> None:
        """Replace parameter ``name`` by ``value``: a float array of the parameter's shape
        (converted to the layer dtype), or, for the weight, a compressed back end of shape
        ``(out, fan_in)``, which drops the weight's gradient, mask and tie.

        Raises
        ------
        KeyError
            No parameter ``name``.
        ValueError
            Wrong shape.
        TypeError
            A back end for a parameter other than the weight, or a float64 layer.
        """
        shapes = self.param_shapes(**self.hyperparameters)
        if name not in shapes:
            raise KeyError(f"{self.name}: no parameter {name!r}; it has {sorted(shapes)}")
        shape = shapes[name]
        who = self.name or self.type_name
        if is_backend(value):
            if name != self.weight_name:
                raise TypeError(f"{who}: only the weight {self.weight_name!r} can be held "
                                f"compressed, not {name!r}")
            want = (shape[0], math.prod(shape[1:]))
            if tuple(value.shape) != want:
                raise ValueError(f"{who}: a compressed {name!r} must have shape {want}, got "
                                 f"{tuple(value.shape)}")
            if self._dtype != np.float32:
                raise TypeError(f"{who}: a compressed weight computes in float32; convert the "
                                f"layer first (layer.astype(np.float32))")
            self.params[name] = value
            for d in (self.grads, self.masks, self.ties):
                d.pop(name, None)
            return
        value = np.asarray(value)
        if value.shape != tuple(shape):
            raise ValueError(f"{who}: parameter {name!r} must have shape {tuple(shape)}, got "
                             f"{value.shape}")
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{who}: parameter {name!r} must be a float array, got "
                            f"{value.dtype}")
        self.params[name] = np.ascontiguousarray(value, dtype=self._dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def dense_params(self) -> dict[str, np.ndarray]:
        """Every parameter as a float array (a compressed weight decoded to float32, reshaped
        to the parameter's shape; float arrays as they are, not copied)."""
        shapes = self.param_shapes(**self.hyperparameters)
        return {k: (w.to_dense().reshape(shapes[k]) if is_backend(w) else w)
                for k, w in self.params.items()}

    def _input(self, x: np.ndarray, ndim: int, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != ndim:
            raise ValueError(f"{self.name or self.type_name}: expected a {ndim}-D input {what}, "
                             f"got shape {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _inference_only(self, train: bool) -> None:
        if train:
            raise ValueError(f"{self.name}: a compressed weight runs inference only; train the "
                             f"decoded model (model.to_dense()) instead")

    def _cached(self):
        """What ``forward(x, train=True)`` kept for ``backward``; an error if nothing was."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward() needs a forward(x, train=True) first")
        return self._cache

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one sample's output for one sample's ``input_shape`` (no batch axis)."""
        return input_shape

    def work_elements(self, input_shape) -> int:
        """Values one sample needs beyond its input and output in a forward or backward pass:
        scratch arrays, or the window reads of a pooling layer (0 for most layers). The model
        bounds it, with the inputs and outputs, when a file is loaded
        (:meth:`dc_engine.core.model.Model.check_sample_work`)."""
        return 0

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        extra = " compressed" if self.compressed else ""
        return f"{self.type_name}({hp})" + (f" [{self.name}]" if self.name else "") + extra


def xavier_uniform(rng: np.random.Generator, shape: tuple, fan_in: int, dtype) -> np.ndarray:
    """Caffe's "xavier" filler: U(-a, a) with a = sqrt(3 / fan_in), as ``dtype``."""
    a = np.sqrt(3.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


def positive_int(value, what: str) -> int:
    """``value`` as an int >= 1 (TypeError / ValueError naming ``what`` otherwise)."""
    return check_int(value, what, 1)


__all__ = ["Layer", "WeightBackend", "is_backend", "RESERVED_HYPERPARAMETERS", "FLOAT_DTYPES",
           "xavier_uniform", "positive_int"]
