"""Studies that choose a stage's settings, in memory: the pruning sensitivity scan (LWC
Fig. 6) and the error against bits and centroid initialisation (DC Figs. 7-8).

Their text tables are in :mod:`dc_engine.app.report`, their figures in
:mod:`dc_engine.app.plots`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import numpy as np

from ..core.train import evaluate
from .inputs import split_data, training_recipe
from .prune import check_kept, kept_mask
from .quantize import QuantizeConfig, quantize_model

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)


def sensitivity_scan(model, x_val, y_val, fractions=DEFAULT_FRACTIONS,
                     layers: list[str] | None = None, stop_above: float | None = None) -> dict:
    """LWC Fig. 6: each layer alone pruned to each kept-fraction, without retraining; the
    validation error of each. The model is left unchanged.

    Parameters
    ----------
    model : Model with float weights.
    x_val, y_val : ndarray. The validation split.
    fractions : kept-fractions, each in (0, 1].
    layers : names of weighted layers to scan (default: all).
    stop_above : float, optional. Stop a layer's scan (fractions in the given order) once
        its error exceeds the baseline by more than this; the fractions left get None.

    Returns
    -------
    dict: ``fractions`` (list), ``errors`` {layer: [error per fraction]}, ``baseline``.
    """
    weighted = [l.name for l in model.weighted_layers()]
    names = weighted if layers is None else list(layers)
    for name in names:
        if name not in weighted:
            raise ValueError(f"cannot scan layer {name!r}: {model.name} has weighted layers "
                             f"{weighted}")
    for f in fractions:
        check_kept(f, "fraction")
    out = {"fractions": list(fractions), "errors": {},
           "baseline": evaluate(model, x_val, y_val)["error"]}
    for name in names:
        layer = model[name]
        w = layer.params[layer.weight_name]
        if not isinstance(w, np.ndarray):
            raise ValueError(f"layer {name!r} holds a compressed weight; scan the decoded "
                             f"model (model.to_dense())")
        saved = w.copy()
        errs = []
        try:
            stopped = False
            for f in fractions:
                if stopped:
                    errs.append(None)
                    continue
                w[...] = saved * kept_mask(saved, f, saved != 0)
                errs.append(evaluate(model, x_val, y_val)["error"])
                stopped = stop_above is not None and errs[-1] - out["baseline"] > stop_above
        finally:
            w[...] = saved
        out["errors"][name] = errs
    return out


def bits_sweep(model, data, config: QuantizeConfig, bits=range(2, 9),
               inits=("linear", "density", "random"), finetune_epochs: int = 1, *,
               recipe: dict | None = None, threads: int | None = None) -> dict:
    """Validation error against bits (every layer of ``config.bits`` at the same width) for
    each initialisation, after clustering and after ``finetune_epochs`` of centroid
    fine-tuning (like DC Figs. 7-8). Each point quantizes a fresh copy of ``model``.

    Parameters
    ----------
    model : Model with float weights (usually pruned). Not changed.
    data : Dataset or ``(x_train, y_train, x_val, y_val)``, as :func:`quantize_model`.
    config : QuantizeConfig. Its layers, fine-tuning settings and validation split.
    bits : widths to try. inits : initialisations to try.
    finetune_epochs : int >= 0.
    recipe, threads : as :func:`quantize_model`.

    Returns
    -------
    dict: ``architecture``, ``bits``, ``finetune_epochs``, ``layers``, ``baseline``
    (validation error of ``model``), ``clustered`` and ``finetuned`` ({init: [error per
    width]}).
    """
    recipe = training_recipe(model, recipe)
    _, _, x_val, y_val = split_data(data, config.val_size, config.seed)
    bits = [int(b) for b in bits]
    out = {"architecture": model.name, "bits": bits, "finetune_epochs": finetune_epochs,
           "layers": list(config.bits), "clustered": {}, "finetuned": {},
           "baseline": evaluate(model, x_val, y_val)["error"]}
    for init in inits:
        out["clustered"][init], out["finetuned"][init] = [], []
        for b in bits:
            work = copy.deepcopy(model)
            cfg = replace(config, bits={n: b for n in config.bits}, init=init,
                          finetune=dict(config.finetune, epochs=finetune_epochs))
            r = quantize_model(work, data, cfg, recipe=recipe, progress=False,
                               threads=threads)
            out["clustered"][init].append(r["val_error_clustered"])
            out["finetuned"][init].append(r["val_error_finetuned"])
            log.info("%s %d bits: clustered %.4f fine-tuned %.4f", init, b,
                     r["val_error_clustered"], r["val_error_finetuned"])
    return out


__all__ = ["DEFAULT_FRACTIONS", "sensitivity_scan", "bits_sweep"]
