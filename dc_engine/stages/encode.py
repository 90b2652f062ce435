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
from ..codecs.payload import BIAS_CODINGS, ORDERS, decode_layer, encode_layer
from ..config import build_settings
from ..core.layers import build_layer
from ..core.model import Model
from ..core.ties import WeightShare
from ..runtime.sqmatrix import CompressedMatrix

AUTO = "auto"
AUTO_RANGE = range(1, 13)
"""Index widths tried by ``index_bits = "auto"``."""

_LAYER_KEYS = {"index_bits", "coder", "order", "bias"}
CONTAINERS = ("classic", "compact")
"""File containers (:mod:`dc_engine.io.compressed`): ``"classic"`` (versions 1-2) or
``"compact"`` (version 3: the architecture deflated, the payloads in one attribute)."""


def _check_choice(value, choices: tuple, key: str, where: str, auto: bool = True) -> None:
    allowed = choices + ((AUTO,) if auto else ())
    if value not in allowed:
        raise ValueError(f"{where}: {key} must be one of {list(allowed)}, got {value!r}")


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
    order : "rows" (default), "cols" or "auto". The scan order of the relative index
        (:data:`dc_engine.codecs.payload.ORDERS`; "cols" runs over the inputs first, so an
        input no unit uses costs one run); "auto" keeps the smaller payload. Lossless.
    bias : "float32" (default), "shared" or "auto". How biases are stored
        (:data:`dc_engine.codecs.payload.BIAS_CODINGS`: "shared" stores the distinct values
        once and a coded index per unit, which pays off after stage 2's ``bias_bits``);
        "auto" keeps the smaller payload. Lossless.
    container : "classic" (default) or "compact" (:data:`CONTAINERS`). The file container.
    layers : dict layer name -> {"index_bits": int | "auto", "coder": str, "order": str,
        "bias": str}: per-layer overrides.

    The defaults write Deep Compression's layout (payload version 2, container version 1 or
    2), so the paper preset's files do not change; the other options need payload or
    container version 3 (docs/FORMAT.md).
    """

    index_bits: object = 5
    coder: str = DEFAULT_CODER
    coder_options: dict = field(default_factory=dict)
    order: str = "rows"
    bias: str = "float32"
    container: str = "classic"
    layers: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "index_bits", _check_index_bits(self.index_bits, "[encode]"))
        if not isinstance(self.coder_options, dict):
            raise ValueError("[encode] coder_options must be a table of coder options")
        _check_coder(self.coder, self.coder_options, "[encode]")
        _check_choice(self.order, ORDERS, "order", "[encode]")
        _check_choice(self.bias, BIAS_CODINGS, "bias", "[encode]")
        _check_choice(self.container, CONTAINERS, "container", "[encode]", auto=False)
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
            if "order" in d:
                _check_choice(d["order"], ORDERS, "order", where)
            if "bias" in d:
                _check_choice(d["bias"], BIAS_CODINGS, "bias", where)

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

    def layout_for(self, name: str) -> tuple[str, str]:
        """``(order, bias)`` of layer ``name`` (each may be "auto")."""
        d = self.layers.get(name, {})
        return d.get("order", self.order), d.get("bias", self.bias)

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


def _best_payload(layer, idx, codebook, bias, index_bits, coder, order="rows",
                  bias_coding="float32") -> tuple[bytes, int, str, str]:
    """``(payload, index_bits, order, bias_coding)``: the payload with the given settings,
    each "auto" one the smallest over its choices (ties to the narrowest width, then to the
    first of :data:`~dc_engine.codecs.payload.ORDERS` / ``BIAS_CODINGS``: the paper's
    layout)."""
    widths = AUTO_RANGE if index_bits == AUTO else [index_bits]
    orders = ORDERS if order == AUTO else (order,)
    # the bias part does not depend on the rest: choose it once, at the first setting
    codings = BIAS_CODINGS if bias_coding == AUTO and bias is not None else (
        "float32" if bias_coding == AUTO else bias_coding,)
    if len(codings) > 1:
        sizes = []
        for c in codings:
            try:
                sizes.append(len(encode_layer(idx, codebook, bias, widths[0], coder=coder,
                                              order=orders[0], bias_coding=c, name=layer.name)))
            except ValueError:  # a bias of more than 2**16 distinct values cannot be shared
                sizes.append(float("inf"))
        codings = (codings[int(np.argmin(sizes))],)
    best = None
    for o in orders:
        for ib in widths:
            p = encode_layer(idx, codebook, bias, ib, coder=coder, name=layer.name, order=o,
                             bias_coding=codings[0])
            if best is None or len(p) < len(best[0]):
                best = (p, ib, o, codings[0])
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
    ``layer.encoding`` the gap width, coders, scan order and bias coding its payload uses,
    and in ``encoding["container"]`` the file container; ``metadata`` is copied.
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
        payload, ib, order, bias_coding = _best_payload(layer, idx, codebook, bias, index_bits,
                                                        coder, *config.layout_for(layer.name))
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
                                "gap_coder": coder.name, "coder_options": coder.options(),
                                "order": order, "bias_coding": bias_coding}}
        layers.append(new)
    result = Model(layers, model.input_shape, name=model.name, output=model.output)
    result.metadata = dict(model.metadata)
    result.encoding = dict(model.encoding, container=config.container)
    return result


__all__ = ["EncodeConfig", "encode_model", "AUTO", "AUTO_RANGE", "CONTAINERS"]
