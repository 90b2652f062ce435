"""Removing dead units from a pruned model (after stage 1; not in Deep Compression).

Hard pruning leaves hidden units that no longer matter: a unit (a Dense output feature or a
Conv2D output channel) whose outgoing weights in the next weighted layer are all pruned is
never read, and one whose incoming weights are all pruned outputs a constant,
``act(bias)``, which the next layer can absorb into its bias. Both are removed from the two
layers around them (the row and bias of the producer, the columns of the consumer), so the
compressed file stores neither their bias nor the runs of zeros they leave in the relative
index. Network-slimming papers remove units the same way (e.g. Li et al. 2017, "Pruning
Filters for Efficient ConvNets"; Dynamic Network Surgery keeps them); here it follows
magnitude pruning and changes no output beyond float rounding of the absorbed constants.

Only a chain of layers is rewritten (no ``inputs`` wiring), and only between two weighted
layers joined by unit-wise layers (ReLU, MaxPool2D, Dropout, Flatten), with ungrouped
convolutions; anything else is left as it is. The model's input features and its output units
are never removed.
"""

from __future__ import annotations

import numpy as np

from ..core.layers import build_layer
from ..core.model import Model

_WEIGHTED = ("Dense", "Conv2D")
_UNITWISE = ("ReLU", "MaxPool2D", "Dropout", "Flatten")
_UNITS = {"Dense": ("in_features", "out_features"), "Conv2D": ("in_channels", "out_channels")}


def _pairs(layers: list) -> list[tuple[int, list[int], int]]:
    """``(producer, between, consumer)`` layer positions that the surgery may rewrite."""
    out = []
    weighted = [i for i, l in enumerate(layers) if l.type_name in _WEIGHTED]
    for p, c in zip(weighted, weighted[1:]):
        between = list(range(p + 1, c))
        if not all(layers[i].type_name in _UNITWISE for i in between):
            continue
        if any(layers[i].hyperparameters.get("groups", 1) != 1 for i in (p, c)):
            continue
        out.append((p, between, c))
    return out


def _unit_columns(wp: np.ndarray, wc: np.ndarray) -> int | None:
    """Consumer inputs per producer unit (1, or H*W after a Flatten of a conv's channels),
    from the producer's and the consumer's weights; None when the two do not line up."""
    n_units, n_in = wp.shape[0], wc.shape[1]
    if wc.ndim == 4:  # a convolution reads channels
        return 1 if n_in == n_units else None
    if n_in % n_units or (n_in != n_units and wp.ndim != 4):
        return None
    return n_in // n_units


def _constant(value: np.ndarray, between: list) -> np.ndarray:
    """What a constant unit output ``value`` (its bias) is after the unit-wise layers."""
    for layer in between:
        if layer.type_name == "ReLU":
            value = np.maximum(value, 0)
    return value


def remove_dead_units(model: Model) -> tuple[Model, dict]:
    """A new model without the dead hidden units of ``model`` (float weights), and a report.

    Parameters
    ----------
    model : Model with float weights (e.g. after :func:`dc_engine.stages.prune.prune_model`).
        Not changed.

    Returns
    -------
    (Model, dict)
        The model, rebuilt with smaller layers where units were dead (metadata copied), and
        ``{layer name: {"units": before, "kept": after, "unread": n, "constant": n}}`` for
        each producer layer considered (``unread``: no outgoing weight; ``constant``: no
        incoming weight, its output absorbed by the next layer's bias). Repeats until nothing
        changes (a removal can leave another unit dead).
    """
    if model.output is not None or any(l.inputs is not None for l in model.layers):
        return model, {}
    if any(l.ties or l.masks for l in model.layers) or model.compressed:
        raise ValueError("remove dead units from a pruned model with float weights (no masks, "
                         "ties or compressed weights)")
    layers = model.layers
    params = [{k: np.array(v) for k, v in l.params.items()} for l in layers]
    hps = [dict(l.hyperparameters) for l in layers]
    report: dict = {}
    changed = True
    while changed:
        changed = False
        for p, between, c in _pairs(layers):
            wp, wc = params[p]["W"], params[c]["W"]
            per = _unit_columns(wp, wc)
            if per is None:
                continue
            n = wp.shape[0]
            reads = wc.reshape(wc.shape[0], n, -1)  # consumer outputs x units x reads per unit
            unread = ~np.any(reads != 0, axis=(0, 2))
            incoming = np.any(wp.reshape(n, -1) != 0, axis=1)
            bias = params[p].get("b")
            const = _constant(bias if bias is not None else np.zeros(n, wp.dtype),
                              [layers[i] for i in between])
            constant = ~incoming & ~unread
            # a constant channel is absorbed only where the consumer sees it everywhere the
            # same: a Dense consumer, or an unpadded convolution; Dropout would scale it
            absorbable = (not any(layers[i].type_name == "Dropout"
                                  or np.any(layers[i].hyperparameters.get("padding", 0))
                                  for i in between)
                          and (layers[c].type_name == "Dense" or not any(layers[c].pads)))
            if not absorbable:
                constant &= const == 0
            drop = unread | constant
            if not drop.any() or drop.all():
                continue
            stats = report.setdefault(layers[p].name, {"units": n, "kept": n, "unread": 0,
                                                       "constant": 0})
            stats["unread"] += int(unread.sum())
            stats["constant"] += int(constant.sum())
            if constant.any() and "b" in params[c]:
                # sum over the consumer's reads of each constant unit, times its value
                contrib = reads[:, constant, :].sum(axis=2) @ const[constant].astype(wc.dtype)
                params[c]["b"] = (params[c]["b"] + contrib).astype(params[c]["b"].dtype)
            keep = ~drop
            params[p]["W"] = np.ascontiguousarray(wp[keep])
            if bias is not None:
                params[p]["b"] = np.ascontiguousarray(bias[keep])
            kept = int(keep.sum())
            params[c]["W"] = np.ascontiguousarray(reads[:, keep, :].reshape(
                (wc.shape[0], kept * per) if wc.ndim == 2 else (wc.shape[0], kept) + wc.shape[2:]))
            hps[p][_UNITS[layers[p].type_name][1]] = kept
            hps[c][_UNITS[layers[c].type_name][0]] = kept * (per if wc.ndim == 2 else 1)
            stats["kept"] = kept
            changed = True
    if not report:
        return model, {}
    out = Model([build_layer(l.type_name, hp, l.name, ps or None)
                 for l, hp, ps in zip(layers, hps, params)], model.input_shape, name=model.name)
    out.metadata = dict(model.metadata)
    out.encoding = dict(model.encoding)
    return out, report


__all__ = ["remove_dead_units"]
