"""Layers with forward and backward: Dense, Conv2D, MaxPool2D, ReLU, Flatten, Dropout.

Every layer follows one contract (docs/ARCHITECTURE.md, "The layer contract"):

- ``params[name]`` holds the layer's arrays; ``grads[name]`` has the same shape and dtype, and
  ``backward`` *adds* into it (``Model.zero_grad`` clears it once per step).
- ``param_shapes(**hyperparameters)`` (a class method) gives every parameter's shape without
  building the layer: the files, the runtime and the stages read the shapes from there.
- ``weight_name`` names the parameter that pruning, weight sharing and encoding act on
  (``"W"``), or is None for a layer without one.
- The weight has one of two back ends: a float array, or a compressed matrix
  (:class:`WeightBackend`, implemented by :class:`dc_engine.runtime.CompressedMatrix`) that
  multiplies straight from its codes. A layer with a compressed weight runs inference only,
  in float32; ``Model.to_dense`` gives the float form back.
- ``masks[name]`` (optional, bool, shaped like the parameter) and ``ties[name]`` (optional,
  see :class:`dc_engine.core.ties.Tie`) are visible per-parameter constraints used when
  retraining a pruned or weight-shared layer; the optimizer honours them. ``encoding[name]``
  (optional) records how a compressed weight is written to a file (gap width, coders).
- ``forward(x, train)`` keeps only what ``backward`` needs, and only when ``train`` is true.
- ``backward(dy, need_dx=True)`` returns ``dx`` (or ``None`` when ``need_dx`` is false, which the
  model uses for its first layer, saving the input gradient that nobody reads).
- The arithmetic runs in the dtype of the layer's parameters: float32 for training, float64 for
  gradient checks. Inputs are converted to it at the boundary.

Layouts follow Caffe and PyTorch: Dense ``W`` is (out, in) and y = x W^T + b; Conv2D ``W`` is
(out_c, in_c, kh, kw) on NCHW input. A compressed Conv2D weight is the (out_c, in_c*kh*kw)
matrix of that array.
"""

from __future__ import annotations

import inspect

from .activation import ReLU, Softmax
from .base import (
    FLOAT_DTYPES,
    RESERVED_HYPERPARAMETERS,
    Layer,
    WeightBackend,
    is_backend,
    positive_int,
    xavier_uniform,
)
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .merge import Add, Concat
from .norm import BatchNorm2D, LocalResponseNorm, Normalize, fold_batchnorm, fold_into_conv
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .reshape import Flatten

LAYER_TYPES: dict[str, type[Layer]] = {
    cls.type_name: cls for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, ReLU,
                                   Softmax, Flatten, Dropout, LocalResponseNorm, BatchNorm2D,
                                   Normalize, Add, Concat)
}
"""Every layer type by the name stored in files: ``LAYER_TYPES[type_name]``."""


def hyperparameter_names(cls: type[Layer]) -> tuple[str, ...]:
    """The constructor arguments a layer type takes as hyperparameters (all but ``name``,
    ``rng``, ``dtype``, ``params`` and ``inputs``)."""
    sig = inspect.signature(cls.__init__)
    return tuple(k for k in list(sig.parameters)[1:] if k not in RESERVED_HYPERPARAMETERS)


def layer_param_shapes(type_name: str, hyperparameters: dict) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of a layer type for stored hyperparameters, without building it.

    Raises
    ------
    KeyError
        Unknown layer type.
    TypeError, ValueError
        A key the layer does not take (the reserved ``name``, ``rng``, ``dtype``, ``params``
        and ``inputs`` never come from a file), a required one missing (those without a
        default: hyperparameters added later have defaults, so older files still load), or
        values the layer rejects.
    """
    cls = LAYER_TYPES[type_name]
    sig = inspect.signature(cls.__init__)
    names = hyperparameter_names(cls)
    unknown = sorted(set(hyperparameters) - set(names))
    required = {k for k in names if sig.parameters[k].default is inspect.Parameter.empty}
    missing = sorted(required - set(hyperparameters))
    if unknown or missing:
        raise ValueError(f"a {type_name} layer's hyperparameters are {sorted(names)} "
                         f"(required: {sorted(required)}), got {sorted(hyperparameters)}")
    return cls.param_shapes(**hyperparameters)


def build_layer(type_name: str, hyperparameters: dict, name: str,
                params: dict | None = None, inputs: list[str] | None = None) -> Layer:
    """A layer from what a file stores: its type name, hyperparameters, name, parameters
    (float arrays or, for the weight, a compressed back end) and the tensors it reads
    (``inputs``; None: the previous layer's output); nothing is initialised.

    Raises
    ------
    KeyError
        Unknown layer type.
    TypeError, ValueError
        Bad hyperparameters or inputs, or parameters that do not match them.
    """
    shapes = layer_param_shapes(type_name, hyperparameters)
    cls = LAYER_TYPES[type_name]
    if shapes:
        return cls(**hyperparameters, name=name, inputs=inputs,
                   params=params if params is not None else {})
    if params:
        raise ValueError(f"a {type_name} layer holds no parameters, got {sorted(params)}")
    return cls(**hyperparameters, name=name, inputs=inputs)


__all__ = ["Layer", "WeightBackend", "is_backend", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D",
           "GlobalAvgPool2D", "ReLU", "Softmax", "Flatten", "Dropout", "LocalResponseNorm",
           "Normalize", "BatchNorm2D", "Add", "Concat", "fold_batchnorm", "fold_into_conv",
           "LAYER_TYPES", "RESERVED_HYPERPARAMETERS", "FLOAT_DTYPES", "hyperparameter_names",
           "layer_param_shapes", "build_layer", "positive_int", "xavier_uniform"]
