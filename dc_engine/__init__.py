"""dc-engine: Deep Compression (Han, Mao, Dally, ICLR 2016) on a NumPy + Numba engine.

The public names, each with one home:

- models: :class:`Model` and its layers (:mod:`dc_engine.core`); :func:`load` and :func:`save`
  read and write model files of either kind, dense or compressed, as that one model type;
- the stages, in memory: :func:`compress` (all three) and :func:`prune_model`,
  :func:`quantize_model`, :func:`encode_model`, with their config classes
  (:mod:`dc_engine.stages`);
- data: :func:`load_dataset` (an IDX folder or an ``.npz``), :func:`load_mnist`,
  :func:`load_npz` and :class:`Dataset`;
- the compressed weight back end: :class:`CompressedMatrix`;
- errors: :class:`DCFormatError`, :class:`ConfigError`, :class:`DatasetError`;
- ONNX (the ``onnx`` extra): :func:`load_onnx`, :func:`save_onnx`, and the module as
  ``dc_engine.onnx`` (:mod:`dc_engine.io.onnx`), imported on first use.

Importing ``dc_engine`` imports no training code: an app that only runs models loads just the
runtime. The stage names are imported on first use.
"""

from ._version import __version__
from .core.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .core.model import Model
from .errors import ConfigError, DatasetError, DCFormatError
from .io.data import Dataset, load_dataset, load_mnist, load_npz
from .runtime import CompressedMatrix, load, save

_LAZY = {
    "compress": "stages.pipeline", "CompressConfig": "stages.pipeline",
    "prune_model": "stages.prune", "PruneConfig": "stages.prune",
    "quantize_model": "stages.quantize", "QuantizeConfig": "stages.quantize",
    "encode_model": "stages.encode", "EncodeConfig": "stages.encode",
    "load_onnx": "io.onnx", "save_onnx": "io.onnx",
}


def __getattr__(name: str):
    """The stage API (it pulls in the training code) and the ONNX functions (they need the
    onnx package), imported on first use."""
    import importlib

    if name == "onnx":  # dc_engine.onnx.load_onnx(...): the module dc_engine.io.onnx
        value = importlib.import_module(".io.onnx", __name__)
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dc_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"onnx"})


__all__ = ["Model", "Dense", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dropout", "load", "save",
           "compress", "CompressConfig", "prune_model", "PruneConfig", "quantize_model",
           "QuantizeConfig", "encode_model", "EncodeConfig", "Dataset", "load_dataset",
           "load_mnist", "load_npz", "CompressedMatrix", "DCFormatError", "ConfigError",
           "DatasetError", "load_onnx", "save_onnx", "__version__"]
