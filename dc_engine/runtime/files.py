"""Model files of either kind: :func:`load` and :func:`save` (``dc_engine.load`` / ``save``).

A dense file (:mod:`dc_engine.io.dense`) holds float arrays; a compressed file
(:mod:`dc_engine.io.compressed`) holds one Stage-3 payload per weighted layer
(:mod:`dc_engine.codecs.payload`). Both load as the one :class:`~dc_engine.core.model.Model`
type: a compressed file's weights become :class:`~dc_engine.runtime.sqmatrix.CompressedMatrix`
back ends (the Huffman streams are decoded once, at load time, into the kernels' fixed-width
words; the float weights are never materialised), so the model runs from its codes.

No training code is imported here (a test checks it): an edge app needs only this.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..codecs.coders import DEFAULT_CODER, coder_by_name
from ..codecs.payload import decode_layer, encode_layer
from ..core.layers import LAYER_TYPES, Layer, build_layer, is_backend, layer_param_shapes
from ..core.model import Model
from ..errors import DCFormatError
from ..io import compressed as compressed_file
from ..io import dense as dense_file
from ..io._h5 import COMPRESSED_KIND, PathLike, existing_file, file_kind, reading
from ..limits import how_to_raise, limit
from .sqmatrix import CompressedMatrix

DEFAULT_INDEX_BITS = 5
"""Gap width of a compressed weight saved without a recorded encoding (DC's FC setting)."""

_FIX = "Pass a compressed model file written by `dc-engine compress`, or re-create it."


def stored_encoding(layer: Layer) -> dict:
    """How ``layer``'s compressed weight is written to a file: ``{"index_bits", "coder",
    "gap_coder", "coder_options", "order", "bias_coding"}`` from ``layer.encoding`` (set by the
    encode stage or by loading a file), with defaults (5-bit gaps, Huffman, its default
    options, row order, float32 bias) for what is not recorded."""
    enc = dict(layer.encoding.get(layer.weight_name, {}))
    enc.setdefault("index_bits", DEFAULT_INDEX_BITS)
    enc.setdefault("coder", DEFAULT_CODER)
    enc.setdefault("gap_coder", enc["coder"])
    enc.setdefault("coder_options", {})
    enc.setdefault("order", "rows")
    enc.setdefault("bias_coding", "float32")
    return enc


def layer_payload(layer: Layer) -> bytes:
    """The payload bytes of a layer with a compressed weight (its codes, codebook and bias,
    encoded as :func:`stored_encoding` says). Deterministic: the same layer gives the same
    bytes, so a loaded file saves back byte for byte.

    Raises
    ------
    ValueError
        The layer's weight is not compressed, or it has parameters a compressed file cannot
        hold (anything but the weight and a bias ``b``).
    """
    wname = layer.weight_name
    if wname is None or not is_backend(layer.params.get(wname)):
        raise ValueError(f"layer {layer.name!r} has no compressed weight; a compressed file "
                         f"holds compressed weights only (quantize and encode every weighted "
                         f"layer, dc_engine.encode_model)")
    other = sorted(set(layer.params) - {wname, "b"})
    if other:
        raise ValueError(f"layer {layer.name!r}: parameters {other} cannot be stored in a "
                         f"compressed file (only the weight and the bias b)")
    m = layer.params[wname]
    shape = layer.param_shapes(**layer.hyperparameters)[wname]
    enc = stored_encoding(layer)
    opts = enc["coder_options"]
    coder = coder_by_name(enc["coder"], **opts)
    gap_coder = coder_by_name(enc["gap_coder"], **(opts if enc["gap_coder"] == enc["coder"]
                                                   else {}))
    bias = layer.params.get("b")
    return encode_layer(m.to_codes().reshape(shape), m.codebook, bias,
                        index_bits=enc["index_bits"], coder=coder, gap_coder=gap_coder,
                        name=layer.name, order=enc["order"], bias_coding=enc["bias_coding"])


def _fail(path: Path, layer: str, problem: str):
    raise DCFormatError(f"{path}, layer {layer!r}: {problem}. {_FIX}")


def _build_layer(rec: compressed_file.LayerRecord, path: Path) -> Layer:
    try:
        shapes = layer_param_shapes(rec.type, rec.hyperparameters)
    except (TypeError, ValueError, OverflowError) as exc:
        _fail(path, rec.name, f"bad hyperparameters {rec.hyperparameters} for {rec.type} ({exc})")
    if not shapes:
        if rec.payload is not None:
            _fail(path, rec.name, f"a {rec.type} layer has no weights but the file holds a "
                                  f"payload for it")
        try:
            return build_layer(rec.type, rec.hyperparameters, rec.name, inputs=rec.inputs)
        except (TypeError, ValueError, OverflowError) as exc:
            _fail(path, rec.name, f"bad hyperparameters {rec.hyperparameters} for {rec.type} "
                                  f"({exc})")
    wname = LAYER_TYPES[rec.type].weight_name
    if rec.payload is None:
        _fail(path, rec.name, f"a {rec.type} layer needs a payload, the file has none")
    if set(shapes) - {wname, "b"}:
        _fail(path, rec.name, f"a {rec.type} layer has parameters {sorted(shapes)}, which a "
                              f"compressed file cannot hold")
    try:
        decoded = decode_layer(rec.payload, rec.name)
    except DCFormatError as exc:  # it names the layer; add the file
        raise DCFormatError(f"{path}, {exc}") from exc
    expected = shapes[wname]
    if tuple(decoded["idx"].shape) != tuple(expected):
        _fail(path, rec.name, f"the payload holds weights of shape {decoded['idx'].shape}, the "
                              f"hyperparameters {rec.hyperparameters} need {tuple(expected)}")
    n_out = expected[0]
    bias = decoded["bias"]
    if "b" in shapes and bias.size not in (0, n_out):
        _fail(path, rec.name, f"the payload holds {bias.size} biases, expected {n_out}")
    if "b" not in shapes and bias.size:
        _fail(path, rec.name, f"the payload holds {bias.size} biases, the layer has none")
    matrix = CompressedMatrix.from_codes(decoded["idx"].reshape(n_out, -1), decoded["codebook"],
                                         index_bits="auto")
    params = {wname: matrix}
    if "b" in shapes:
        params["b"] = bias if bias.size else np.zeros(n_out, np.float32)
    try:
        layer = build_layer(rec.type, rec.hyperparameters, rec.name, params, inputs=rec.inputs)
    except (TypeError, ValueError) as exc:
        _fail(path, rec.name, f"bad inputs {rec.inputs!r} ({exc})")
    layer.encoding = {wname: {"index_bits": decoded["index_bits"],
                              "coder": decoded["code_coder"],
                              "gap_coder": decoded["gap_coder"],
                              "order": decoded["order"],
                              "bias_coding": decoded["bias_coding"]}}
    return layer


def _check_declared_weights(c, path: Path) -> None:
    """The weights the hyperparameters declare, summed over the layers, within the limit
    ``model_weights``, checked before any payload is decoded (a small payload can declare a
    large, nearly empty layer)."""
    total = 0
    for rec in c.layers:
        try:
            shapes = layer_param_shapes(rec.type, rec.hyperparameters)
        except (TypeError, ValueError, OverflowError) as exc:
            _fail(path, rec.name, f"bad hyperparameters {rec.hyperparameters} for {rec.type} "
                                  f"({exc})")
        total += sum(math.prod(s) for s in shapes.values())
    cap = limit("model_weights")
    if total > cap:
        raise DCFormatError(f"{path}: the layers declare {total:,} weights, above the limit of "
                            f"{cap:,}; {how_to_raise('model_weights')}; otherwise the file is "
                            f"corrupt")


def _load_compressed(path: Path) -> Model:
    c = compressed_file.read(path)
    _check_declared_weights(c, path)
    layers = [_build_layer(r, path) for r in c.layers]
    try:
        model = Model(layers, c.input_shape, c.architecture, output=c.output)
    except (TypeError, ValueError) as exc:
        raise DCFormatError(f"{path}: the layers do not form a model: expected layers whose "
                            f"wiring and shapes fit the input shape {c.input_shape}, found: "
                            f"{exc}") from exc
    try:
        model.check_sample_work()
    except ValueError as exc:
        raise DCFormatError(f"{path}: the model implies too much work per sample: "
                            f"{exc}") from None
    if c.compact:
        model.encoding = {"container": "compact"}
    return model


_CONTAINERS = ("classic", "compact")


def _compact_container(model: Model) -> bool:
    """Whether ``model.encoding`` asks for the compact container (absent: classic)."""
    encoding = getattr(model, "encoding", None)  # a model pickled before it existed has none
    if encoding is None:
        return False
    if not isinstance(encoding, dict):
        raise TypeError(f"model.encoding must be a dict, got {type(encoding).__name__}")
    container = encoding.get("container", "classic")
    if container not in _CONTAINERS:
        raise ValueError(f"model.encoding['container'] must be one of {list(_CONTAINERS)}, "
                         f"got {container!r}")
    return container == "compact"


def load(path: PathLike) -> Model:
    """Load a model file of either kind.

    Parameters
    ----------
    path : str or os.PathLike. A dense file (``dc_engine.save`` of a float model,
        ``dc-engine train``, ``prune``, ``quantize``) or a compressed one (``dc-engine
        compress`` or ``encode``, ``dc_engine.save`` of a compressed model).

    Returns
    -------
    Model
        For a dense file, as :func:`dc_engine.io.dense.load` (float arrays, masks, the
        weight-sharing ties, ``metadata``). For a compressed file, every weighted layer holds
        a :class:`~dc_engine.runtime.sqmatrix.CompressedMatrix` (inference only, float32) and
        records how it was encoded in ``layer.encoding``, and ``model.encoding`` records the
        container (``{"container": "compact"}`` for version 3, else ``{}``); every payload is
        checked (CRC32, sizes, coded streams) and decoded once here.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        No file at ``path``.
    DCFormatError
        The file is not a valid dc-engine model file; the message names the file, the layer
        and the problem.
    """
    path = existing_file(path)
    with reading(path) as f:
        kind = file_kind(f, path)
    if kind == COMPRESSED_KIND:
        return _load_compressed(path)
    return dense_file.load(path)


def save(model: Model, path: PathLike, metadata: dict | None = None,
         kind: str | None = None) -> Path:
    """Write ``model`` to a file, atomically: a compressed file when its weights are
    compressed, else a dense file.

    Parameters
    ----------
    model : Model. For a compressed file, every weighted layer holds a compressed weight (the
        encode stage's output, or a loaded compressed file).
    path : str or os.PathLike. An existing file is replaced only once the new one is
        complete on disk.
    metadata : dict, optional. JSON-able data stored with a dense model; default: the model's
        own ``metadata`` (what it was loaded with, e.g. its training recipe). A compressed file
        holds none (it is sized to the byte): its model's metadata is not written, and an
        explicit one is refused.
    kind : "dense", "compressed" or None (default: "compressed" when ``model.compressed``,
        else "dense"; a model without weights is either, so say which).

    Returns
    -------
    pathlib.Path. The resolved path written.

    Raises
    ------
    ValueError, TypeError
        As :func:`dc_engine.io.dense.save`, or a compressed file of a model with float
        weights, or metadata given for a compressed file, or an unknown ``kind``, or a
        ``model.encoding["container"]`` other than "classic" and "compact".

    Notes
    -----
    A compressed weight is encoded again from its codes as ``layer.encoding`` records (gap
    width and coders, set by the encode stage or by loading a file), so saving a loaded file
    gives its bytes back. One exception: a payload does not record the Huffman coder's
    ``max_code_length``; a file written with a lower limit than the default 15 saves back as
    an equivalent file (the same weights), not the same bytes.

    The container follows ``model.encoding["container"]``: "compact" writes compressed format
    version 3 (:func:`dc_engine.io.compressed.write` with ``compact=True``), "classic" or
    nothing versions 1/2; a loaded compressed file records its own, so it keeps its
    container. A dense file ignores the setting.
    """
    if kind is None:
        kind = "compressed" if model.compressed else "dense"
    if kind == "dense":
        return dense_file.save(model, path,
                               metadata=getattr(model, "metadata", {}) if metadata is None
                               else metadata)
    if kind != "compressed":
        raise ValueError(f"kind must be 'dense', 'compressed' or None, got {kind!r}")
    if metadata:
        raise ValueError("a compressed file stores no metadata (it is sized to the byte); "
                         "keep the report beside it")
    compact = _compact_container(model)
    model.wiring()  # a model whose inputs name no tensor is not stored
    records = []
    for layer in model.layers:
        hp = dict(layer.hyperparameters)
        payload = layer_payload(layer) if layer.params else None
        records.append(compressed_file.LayerRecord(layer.name, layer.type_name, hp, payload,
                                                   layer.inputs))
    return compressed_file.write(path, model.name, model.input_shape, records,
                                 output=model.output, compact=compact)


__all__ = ["load", "save", "layer_payload", "stored_encoding", "DEFAULT_INDEX_BITS"]
