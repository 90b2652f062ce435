"""Stage 3's accounting: the paper-style size table of encoded layers (DC Tables 2-3).

:func:`size_report` computes it from the payloads alone, so ``dc-engine inspect`` gives the
same numbers from a file as ``dc-engine compress`` prints; :func:`model_size_report` computes
it for a model with compressed weights in memory (from the payloads a save would write).

Size accounting (bytes; ``e`` = relative-index entries incl. fillers, ``wb``/``ib`` = weight
and index bits, ``n`` = the layer's weights, ``nb`` = its biases)

- original: ``4 * (n + nb)`` summed over layers (float32 weights and biases);
- pruned (P): ``e * (32 + ib) / 8 + 4 * nb``: float32 non-zeros with relative indices;
- pruned + quantized (P+Q): ``e * (wb + ib) / 8 + 4 * 2**wb + 4 * nb``: fixed-width codes and
  gaps plus a full float32 codebook;
- P+Q+H: the payload bytes (coded streams, their tables, the codebook entries stored,
  biases, header, CRC);
- file: the size of the ``.dc.h5`` file on disk (payloads + HDF5 container).

Per layer, the compress rates ``cr_pq`` and ``cr_pqh`` leave the biases out, as the paper's
per-layer rates do: ``(e * (wb + ib) / 8 + 4 * 2**wb) / (4 n)`` and ``(payload - 4 nb) / (4 n)``.
"""

from __future__ import annotations

import math

from ..codecs.payload import payload_stats
from ..io.compressed import LayerRecord
from ..runtime.files import layer_payload


def _layer_sizes(name: str, s: dict) -> dict:
    n = math.prod(s["shape"])
    e, wb, ib, nb = s["n_entries"], s["weight_bits"], s["index_bits"], s["n_bias"]
    pq_w = e * (wb + ib) / 8 + 4 * 2**wb
    # a shared bias (payload version 3) is its table, its distinct values and its stream
    bias_bytes = s["bias_table_bytes"] + s["bias_bytes"] + s["bias_stream_bytes"]
    pqh_w = s["total_bytes"] - bias_bytes
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
        "order": s["order"], "bias_coding": s["bias_coding"],
    }


def size_report(records, file_bytes: int | None = None, architecture: str = "") -> dict:
    """The paper-style size table of encoded layers (JSON-able).

    ``records`` are the layers in order, each with ``name`` and ``payload`` (bytes, or None for
    a layer without weights): :class:`dc_engine.io.compressed.LayerRecord` s.

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


def model_size_report(model, file_bytes: int | None = None) -> dict:
    """:func:`size_report` of a model whose weighted layers hold compressed weights (the
    payloads :func:`dc_engine.save` would write).

    Raises
    ------
    ValueError
        A weighted layer is not compressed.
    """
    records = [LayerRecord(layer.name, layer.type_name, layer.hyperparameters,
                           layer_payload(layer) if layer.params else None)
               for layer in model.layers]
    return size_report(records, file_bytes, model.name)


__all__ = ["size_report", "model_size_report"]
