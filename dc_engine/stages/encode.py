"""Stage 3 on a model: encode every quantized layer (DC Sec. 4).

:func:`encode_model` turns a quantized model (each weighted layer's weight tied to a codebook
and an index by stage 2) into a model of the same layers whose weights are compressed
(:class:`~dc_engine.runtime.sqmatrix.CompressedMatrix`): it runs from its codes, and
``dc_engine.save`` writes it as a compressed file, each layer encoded as ``layer.encoding``
records (the relative-index gap width and the stream coders, chosen here). The size table is
:mod:`dc_engine.stages.sizes`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .._validate import check_bits
from ..codecs.coders import DEFAULT_CODER, coder_by_name, coder_names
from ..codecs.payload import decode_layer, encode_layer
from ..config import build_settings
from ..core.layers import build_layer
from ..core.model import Model
from ..core.ties import WeightShare
from ..runtime.sqmatrix import CompressedMatrix

AUTO = "auto"
AUTO_RANGE = range(1, 13)
"""Index widths tried by ``index_bits = "auto"``."""

_LAYER_KEYS = {"index_bits", "coder"}


def _check_index_bits(v, where: str):
    if v == AUTO:
        return v
    try:
        return check_bits(v, "index_bits")
    except (TypeError, ValueError):
        raise ValueError(f"{where}: index_bits must be an integer in 1..16 or {AUTO!r}, got "
                         f"{v!r}") from None


def _check_coder(name, options: dict, where: str) -> None:
    if not isinstance(name, str):
        raise ValueError(f"{where}: coder must be a name, one of {coder_names()}; got {name!r}")
    try:
        coder_by_name(name, **options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class EncodeConfig:
    """Settings of Stage 3 (the ``[encode]`` table of a config).

    Parameters
    ----------
    index_bits : int in 1..16, or ``"auto"``. Width of the relative-index gap field of every
        layer (DC: 5 for the LeNets; default 5). ``"auto"`` encodes each layer with every
        width in 1..12 and keeps the smallest payload; it is lossless either way.
    coder : str, default "huffman". The stream coder of both streams
        (:mod:`dc_engine.codecs.coders`: "huffman", or "fixed" for no entropy coding).
    coder_options : dict. Options of the coder (``[encode.coder_options]``; Huffman:
        ``max_code_length``, 1..15, default 15).
    layers : dict layer name -> {"index_bits": int | "auto", "coder": str}: per-layer
        overrides.
    """

    index_bits: object = 5
    coder: str = DEFAULT_CODER
    coder_options: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "index_bits", _check_index_bits(self.index_bits, "[encode]"))
        if not isinstance(self.coder_options, dict):
            raise ValueError("[encode] coder_options must be a table of coder options")
        _check_coder(self.coder, self.coder_options, "[encode]")
        if not isinstance(self.layers, dict):
            raise ValueError("[encode] layers must be a table of layer name -> settings")
        for name, d in self.layers.items():
            where = f"[encode.layers.{name}]"
            if not isinstance(d, dict) or set(d) - _LAYER_KEYS:
                raise ValueError(f"{where} may only set {sorted(_LAYER_KEYS)}, got {d!r}")
            if "index_bits" in d:
                _check_index_bits(d["index_bits"], where)
            if "coder" in d:
                opts = self.coder_options if d["coder"] == self.coder else {}
                _check_coder(d["coder"], opts, where)

    @classmethod
    def from_dict(cls, d: dict) -> EncodeConfig:
        if isinstance(d, dict) and "max_code_length" in d:
            raise ValueError("[encode] max_code_length is an option of the Huffman coder now: "
                             "move it to [encode.coder_options]")
        return build_settings(cls, d, "encode")

    def to_dict(self) -> dict:
        return asdict(self)

    def for_layer(self, name: str) -> tuple[object, str]:
        """``(index_bits, coder)`` of layer ``name``."""
        d = self.layers.get(name, {})
        return d.get("index_bits", self.index_bits), d.get("coder", self.coder)

    def coder_for(self, name: str):
        """The coder instance of layer ``name`` (with :attr:`coder_options` when it is the
        config's coder)."""
        coder = self.for_layer(name)[1]
        return coder_by_name(coder, **(self.coder_options if coder == self.coder else {}))


def _shared_weight(layer) -> tuple[np.ndarray, np.ndarray]:
    """(idx, codebook) of a layer whose weight is tied to a codebook; ValueError otherwise."""
    tie = layer.ties.get(layer.weight_name)
    if not isinstance(tie, WeightShare):
        raise ValueError(f"layer {layer.name!r} is not quantized (no codebook for "
                         f"{layer.weight_name}): stage 3 encodes quantized models; run "
                         f"quantization first (dc_engine.quantize_model, `dc-engine quantize`), "
                         f"with bits for every weighted layer")
    codebook = np.asarray(tie.codebook)
    if codebook.dtype != np.float32:
        raise TypeError(f"layer {layer.name!r}: the codebook is {codebook.dtype}; compressed "
                        f"files store float32 codebooks. Quantize a float32 model.")
    return np.asarray(tie.idx), codebook


def _best_payload(layer, idx, codebook, bias, index_bits, coder) -> tuple[bytes, int]:
    """The payload at ``index_bits``, or for "auto" the smallest over :data:`AUTO_RANGE`
    (ties to the narrowest)."""
    widths = AUTO_RANGE if index_bits == AUTO else [index_bits]
    best = None
    for ib in widths:
        p = encode_layer(idx, codebook, bias, ib, coder=coder, name=layer.name)
        if best is None or len(p) < len(best[0]):
            best = (p, ib)
    return best


def encode_model(model: Model, config: EncodeConfig | None = None, verify: bool = True) -> Model:
    """Stage 3: the compressed form of a quantized model (DC Sec. 4).

    Parameters
    ----------
    model : Model whose weighted layers have their weight shared through a float32 codebook
        (``layer.ties[weight]``, a :class:`~dc_engine.core.ties.WeightShare`), as
        :func:`dc_engine.quantize_model` leaves them. Not changed.
    config : EncodeConfig, default ``EncodeConfig()`` (5-bit gaps, Huffman).
    verify : decode each payload and check it reproduces ``codebook[idx]`` and the bias bit
        for bit (cheap; on by default).

    Returns
    -------
    Model. The same layers (names, hyperparameters) in a new model; each weighted layer holds a
    :class:`~dc_engine.runtime.sqmatrix.CompressedMatrix` and its float32 bias, and records in
    ``layer.encoding`` the gap width and coders its payload uses; ``metadata`` is copied.
    ``dc_engine.save(result, "MODEL.dc.h5")`` writes the compressed file.

    Raises
    ------
    ValueError, TypeError
        A weighted layer is not quantized or has parameters other than its weight and bias, a
        non-float32 codebook or bias, or the config names a layer the model does not have.
    """
    config = config or EncodeConfig()
    names = {l.name for l in model.weighted_layers()}
    unknown = sorted(set(config.layers) - names)
    if unknown:
        raise ValueError(f"[encode.layers] names {unknown}, which {model.name} has not; its "
                         f"weighted layers are {sorted(names)}")
    layers = []
    for layer in model.layers:
        hp = dict(layer.hyperparameters)
        if not layer.params:
            layers.append(build_layer(layer.type_name, hp, layer.name, inputs=layer.inputs))
            continue
        wname = layer.weight_name
        extra = sorted(set(layer.params) - {wname, "b"})
        if wname is None or extra:
            raise ValueError(f"layer {layer.name!r}: parameters {extra or sorted(layer.params)} "
                             f"cannot be stored in a compressed file (only the weight and b)")
        idx, codebook = _shared_weight(layer)
        bias = layer.params.get("b")
        if bias is not None and bias.dtype != np.float32:
            raise TypeError(f"layer {layer.name!r}: the bias is {bias.dtype}; compressed files "
                            f"store float32. Quantize a float32 model.")
        index_bits, _ = config.for_layer(layer.name)
        coder = config.coder_for(layer.name)
        payload, ib = _best_payload(layer, idx, codebook, bias, index_bits, coder)
        decoded = decode_layer(payload, layer.name)
        if verify:
            w = np.asarray(layer.params[wname])
            ok = np.array_equal(decoded["codebook"][decoded["idx"]].view(np.uint32),
                                w.astype(np.float32).view(np.uint32))
            if bias is not None:
                ok &= np.array_equal(decoded["bias"].view(np.uint32), bias.view(np.uint32))
            if not ok:
                raise ValueError(f"layer {layer.name!r}: the encoded payload does not decode to "
                                 f"the layer's weights; W must equal codebook[idx] (re-apply "
                                 f"the tie after editing the codebook)")
        out = decoded["idx"].shape[0]
        matrix = CompressedMatrix.from_codes(decoded["idx"].reshape(out, -1),
                                             decoded["codebook"], index_bits="auto")
        params = {wname: matrix}
        if bias is not None:
            params["b"] = decoded["bias"]
        new = build_layer(layer.type_name, hp, layer.name, params, inputs=layer.inputs)
        new.encoding = {wname: {"index_bits": ib, "coder": coder.name,
                                "gap_coder": coder.name, "coder_options": coder.options()}}
        layers.append(new)
    result = Model(layers, model.input_shape, name=model.name, output=model.output)
    result.metadata = dict(model.metadata)
    return result


__all__ = ["EncodeConfig", "encode_model", "AUTO", "AUTO_RANGE"]
