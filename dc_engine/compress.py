"""Stage 3 on a model: encode every quantized layer (DC Sec. 4) and account for the bytes.

:func:`encode_model` turns a quantized model (each weighted layer's ``W`` tied to a codebook and
an index by stage 2) into :class:`~dc_engine.container.LayerRecord` s ready for
:func:`dc_engine.container.write`. :func:`size_report` computes the paper-style table (Deep
Compression Tables 2-3) from the payloads alone, so ``dc-engine inspect`` gives the same
numbers from a file as ``dc-engine compress`` prints. No training code is imported here.

Size accounting (bytes; ``e`` = relative-index entries incl. fillers, ``wb``/``ib`` = weight
and index bits, ``n`` = the layer's weights, ``nb`` = its biases)

- original: ``4 * (n + nb)`` summed over layers (float32 weights and biases);
- pruned (P): ``e * (32 + ib) / 8 + 4 * nb``: float32 non-zeros with relative indices;
- pruned + quantized (P+Q): ``e * (wb + ib) / 8 + 4 * 2**wb + 4 * nb``: fixed-width codes and
  gaps plus a full float32 codebook;
- P+Q+H: the payload bytes (Huffman-coded streams, length tables, the used codebook entries,
  biases, header, CRC);
- file: the size of the ``.dc.h5`` file on disk (payloads + HDF5 container).

Per layer, the compress rates ``cr_pq`` and ``cr_pqh`` leave the biases out, as the paper's
per-layer rates do: ``(e * (wb + ib) / 8 + 4 * 2**wb) / (4 n)`` and ``(payload - 4 nb) / (4 n)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import build_settings
from .container import LayerRecord
from .encode import MAX_BITS, decode_layer, encode_layer, payload_stats

__all__ = ["EncodeConfig", "encode_model", "size_report", "size_table", "AUTO",
           "AUTO_RANGE"]

AUTO = "auto"
#: Index widths tried by ``index_bits = "auto"``.
AUTO_RANGE = range(1, 13)


def _check_index_bits(v, where: str):
    if v == AUTO:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_BITS:
        raise ValueError(f"{where}: index_bits must be an integer in 1..{MAX_BITS} or "
                         f"{AUTO!r}, got {v!r}")
    return int(v)


@dataclass
class EncodeConfig:
    """Settings of Stage 3 (the ``[encode]`` table of a config).

    Parameters
    ----------
    index_bits : int in 1..16, or ``"auto"``. Width of the relative-index gap field of every
        layer (DC: 5 for the LeNets; default 5). ``"auto"`` encodes each layer with every
        width in 1..12 and keeps the smallest payload; it is lossless either way.
    layers : dict layer name -> {"index_bits": int | "auto"}: per-layer overrides.
    max_code_length : int in 1..15. Longest Huffman code (the table decoder's limit).
    """

    index_bits: object = 5
    layers: dict = field(default_factory=dict)
    max_code_length: int = 15

    def __post_init__(self):
        self.index_bits = _check_index_bits(self.index_bits, "[encode]")
        if not isinstance(self.layers, dict):
            raise ValueError("[encode] layers must be a table of layer name -> settings")
        for name, d in self.layers.items():
            if not isinstance(d, dict) or set(d) - {"index_bits"}:
                raise ValueError(f"[encode.layers.{name}] may only set index_bits, got {d!r}")
            if "index_bits" in d:
                _check_index_bits(d["index_bits"], f"[encode.layers.{name}]")
        m = self.max_code_length
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= 15:
            raise ValueError(f"[encode] max_code_length must be an integer in 1..15, got {m!r}")

    @classmethod
    def from_dict(cls, d: dict) -> EncodeConfig:
        return build_settings(cls, d, "encode")

    def to_dict(self) -> dict:
        return asdict(self)

    def index_bits_for(self, name: str):
        return self.layers.get(name, {}).get("index_bits", self.index_bits)


def _shared_weight(layer) -> tuple[np.ndarray, np.ndarray]:
    """(idx, codebook) of a layer whose ``W`` is tied to a codebook; ValueError otherwise."""
    tie = layer.ties.get("W")
    if tie is None or not hasattr(tie, "codebook") or not hasattr(tie, "idx"):
        raise ValueError(f"layer {layer.name!r} is not quantized (no codebook for W): stage 3 "
                         f"encodes quantized models; run `dc-engine quantize` first, with "
                         f"bits for every weighted layer")
    codebook = np.asarray(tie.codebook)
    if codebook.dtype != np.float32:
        raise TypeError(f"layer {layer.name!r}: the codebook is {codebook.dtype}; compressed "
                        f"files store float32 codebooks. Quantize a float32 model.")
    return np.asarray(tie.idx), codebook


def _encode(layer, idx, codebook, bias, ib, max_len) -> tuple[bytes, int]:
    if ib != AUTO:
        return encode_layer(idx, codebook, bias, ib, max_len, layer.name), ib
    best = None
    for b in AUTO_RANGE:
        p = encode_layer(idx, codebook, bias, b, max_len, layer.name)
        if best is None or len(p) < len(best[0]):
            best = (p, b)
    return best


def encode_model(model, config: EncodeConfig | None = None, verify: bool = True
                 ) -> list[LayerRecord]:
    """Encode every layer of a quantized model (payloads for weighted layers).

    Parameters
    ----------
    model : Model whose weighted layers (``W`` and optionally ``b``) have ``W`` shared
        through a codebook (``layer.ties["W"]`` with ``codebook`` float32 and ``idx``), as
        ``dc-engine quantize`` writes them.
    config : EncodeConfig, default ``EncodeConfig()`` (5-bit indices).
    verify : decode each payload again and check it reproduces ``codebook[idx]`` and the bias
        bit for bit (cheap; on by default).

    Returns
    -------
    list of LayerRecord, one per layer, in order.

    Raises
    ------
    ValueError, TypeError
        A weighted layer is not quantized, has parameters other than W and b, a non-float32
        codebook or bias, or the config names a layer the model does not have.
    """
    config = config or EncodeConfig()
    names = {l.name for l in model.layers if l.params}
    unknown = sorted(set(config.layers) - names)
    if unknown:
        raise ValueError(f"[encode.layers] names {unknown}, which {model.name} has not; its "
                         f"weighted layers are {sorted(names)}")
    records = []
    for layer in model.layers:
        hp = dict(layer.hyperparameters)
        if not layer.params:
            records.append(LayerRecord(layer.name, layer.type_name, hp))
            continue
        extra = sorted(set(layer.params) - {"W", "b"})
        if extra:
            raise ValueError(f"layer {layer.name!r}: parameters {extra} cannot be stored in a "
                             f"compressed file (only W and b)")
        idx, codebook = _shared_weight(layer)
        bias = layer.params.get("b")
        if bias is not None and bias.dtype != np.float32:
            raise TypeError(f"layer {layer.name!r}: the bias is {bias.dtype}; compressed files "
                            f"store float32. Quantize a float32 model.")
        payload, _ = _encode(layer, idx, codebook, bias, config.index_bits_for(layer.name),
                             config.max_code_length)
        if verify:
            out = decode_layer(payload, layer.name)
            w = np.asarray(layer.params["W"])
            ok = np.array_equal(out["codebook"][out["idx"]].view(np.uint32),
                                w.astype(np.float32).view(np.uint32))
            if bias is not None:
                ok &= np.array_equal(out["bias"].view(np.uint32), bias.view(np.uint32))
            if not ok:
                raise ValueError(f"layer {layer.name!r}: the encoded payload does not decode to "
                                 f"the layer's weights; W must equal codebook[idx] (re-apply "
                                 f"the tie after editing the codebook)")
        records.append(LayerRecord(layer.name, layer.type_name, hp, payload))
    return records


def _layer_sizes(name: str, s: dict) -> dict:
    n = math.prod(s["shape"])
    e, wb, ib, nb = s["n_entries"], s["weight_bits"], s["index_bits"], s["n_bias"]
    pq_w = e * (wb + ib) / 8 + 4 * 2**wb
    pqh_w = s["total_bytes"] - s["bias_bytes"]
    return {
        "name": name, "shape": list(s["shape"]), "weights": n, "nnz": s["nnz"],
        "kept": s["nnz"] / n if n else 0.0, "entries": e, "biases": nb,
        "weight_bits": wb, "index_bits": ib,
        "coded_weight_bits": s["code_bits_per_entry"],
        "coded_index_bits": s["gap_bits_per_entry"],
        "bytes": s["total_bytes"],
        "original_bytes": 4 * (n + nb),
        "pruned_bytes": e * (32 + ib) / 8 + 4 * nb,
        "pq_bytes": pq_w + 4 * nb,
        "cr_pq": pq_w / (4 * n) if n else 0.0,
        "cr_pqh": pqh_w / (4 * n) if n else 0.0,
        "parts": {k.removesuffix("_bytes"): v for k, v in s.items()
                  if k.endswith("_bytes") and k != "total_bytes"},
    }


def size_report(records: list[LayerRecord], file_bytes: int | None = None,
                architecture: str = "") -> dict:
    """The paper-style size table of encoded layers (JSON-able).

    Returns ``{"architecture", "layers": [per layer: name, shape, weights, nnz, kept,
    weight_bits, index_bits, coded_weight_bits, coded_index_bits, bytes, original_bytes,
    pruned_bytes, pq_bytes, cr_pq, cr_pqh, entries, biases, parts], "totals": {weights, nnz,
    kept, original_bytes, pruned_bytes, pq_bytes, compressed_bytes, file_bytes, ratio_pruned,
    ratio_pq, ratio_payload, ratio_file, coded_weight_bits, coded_index_bits}}``; the coded
    bits are averages over all entries. ``file_bytes`` and ``ratio_file`` are None when no
    file size is given. See the module doc for the definitions.
    """
    layers = [_layer_sizes(r.name, payload_stats(r.payload, r.name))
              for r in records if r.payload is not None]
    tot = {k: sum(l[k] for l in layers) for k in ("weights", "nnz", "entries",
                                                  "original_bytes", "pruned_bytes", "pq_bytes",
                                                  "bytes")}
    entries = tot.pop("entries")
    orig = tot["original_bytes"]
    compressed = tot.pop("bytes")
    totals = dict(tot, kept=tot["nnz"] / tot["weights"] if tot["weights"] else 0.0,
                  compressed_bytes=compressed, file_bytes=file_bytes,
                  ratio_pruned=orig / tot["pruned_bytes"] if tot["pruned_bytes"] else None,
                  ratio_pq=orig / tot["pq_bytes"] if tot["pq_bytes"] else None,
                  ratio_payload=orig / compressed if compressed else None,
                  ratio_file=orig / file_bytes if file_bytes else None,
                  coded_weight_bits=(sum(l["coded_weight_bits"] * l["entries"] for l in layers)
                                     / entries if entries else 0.0),
                  coded_index_bits=(sum(l["coded_index_bits"] * l["entries"] for l in layers)
                                    / entries if entries else 0.0))
    return {"architecture": architecture, "layers": layers, "totals": totals}


def size_table(report: dict) -> str:
    """The report as text: DC Table 2's columns per layer, then the size after each stage."""
    head = (f"{'layer':<8} {'#weights':>9} {'kept':>6} {'weight bits':>13} {'index bits':>13} "
            f"{'compress rate':>17}\n"
            f"{'':<8} {'':>9} {'':>6} {'P+Q':>5} {'P+Q+H':>7} {'P+Q':>5} {'P+Q+H':>7} "
            f"{'P+Q':>8} {'P+Q+H':>8}")
    lines = [head]
    for l in report["layers"]:
        lines.append(f"{l['name']:<8} {l['weights']:>9,} {100 * l['kept']:>5.1f}% "
                     f"{l['weight_bits']:>5} {l['coded_weight_bits']:>7.2f} "
                     f"{l['index_bits']:>5} {l['coded_index_bits']:>7.2f} "
                     f"{100 * l['cr_pq']:>7.2f}% {100 * l['cr_pqh']:>7.2f}%")
    t = report["totals"]

    def rate(ratio) -> str:  # None: a model without weights
        return f"{'n/a':>8}" if not ratio else f"{100 / ratio:>7.2f}%"

    lines.append(f"{'total':<8} {t['weights']:>9,} {100 * t['kept']:>5.1f}% {'':>5} "
                 f"{t['coded_weight_bits']:>7.2f} {'':>5} {t['coded_index_bits']:>7.2f} "
                 f"{rate(t['ratio_pq'])} {rate(t['ratio_payload'])}")
    lines.append("(per-layer rates: weights, codebook and index over 4 bytes per weight; the "
                 "total row and the sizes below include biases)")
    lines.append("")
    stages = [("original (float32)", t["original_bytes"]),
              ("pruned (P)", t["pruned_bytes"]), ("pruned + quantized (P+Q)", t["pq_bytes"]),
              ("+ Huffman (P+Q+H, payload)", t["compressed_bytes"])]
    if t.get("file_bytes"):
        stages.append(("file on disk", t["file_bytes"]))
    for label, b in stages:
        ratio = f"{t['original_bytes'] / b:>6.1f}x" if b else f"{'n/a':>7}"
        lines.append(f"{label:<28} {round(b):>10,} bytes  {ratio}")
    return "\n".join(lines) + "\n"
