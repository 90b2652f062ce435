"""Automatic per-layer settings: each layer's kept fraction and bits chosen on the validation
split under an accuracy budget, for a model with no hand-written config.

The steps follow the papers' own way of choosing settings, made mechanical:

1. **Sensitivity** (LWC Sec. 5, Fig. 6): each weighted layer alone pruned to each fraction of
   :data:`SCAN_FRACTIONS`, without retraining. A layer's target is the smallest fraction whose
   validation error, and that of every larger fraction, is within its tolerance of the dense
   model's: ``tolerance`` for a fully connected layer, ``conv_scale`` times that for a
   convolution, ``first_conv_scale`` times it for a first layer that is a convolution (the
   papers' findings: convolutions are more sensitive than fully connected layers, the first
   convolution most of all).
2. **Iterative pruning** (LWC Sec. 3.4) towards those targets in ``rounds`` geometric rounds,
   each retrained with the masks held (``epochs`` per round). After each round the validation
   error must be within ``budget`` of the dense model's. A round over it is undone, and a
   round halfway (geometrically) between the last applied fractions and its own is tried
   before it is tried again; after ``retries`` such undone rounds pruning stops at the last
   round within the budget.
3. **Bits** (DC Sec. 3, Figs. 7-8): each layer alone shared by k-means (linear init) at each
   width from ``max_bits`` down to ``min_bits``, on the pruned model. A layer's width is the
   smallest whose validation error, and that of every wider one, is within ``budget`` of the
   pruned model's (scaled for convolutions as in step 1).
4. **Trained quantization** with those widths, centroids fine-tuned (``finetune_epochs``,
   without weight decay). If fine-tuning leaves the validation error over the budget where the
   clustered model was within it, the clustered model is kept (fine-tuning off). If it is
   still over, every layer gets one bit more and step 4 runs again (at most
   ``max_bits - min_bits`` times).

The result is an ordinary :class:`~dc_engine.stages.pipeline.CompressConfig` whose pruning
table lists the kept fraction of every round that was applied: passed back with ``--config``
(or to :func:`dc_engine.compress`) it reproduces the same model, bit for bit with a fixed
thread count, without the search.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .._validate import check_bits
from ..codecs.codebook import quantize_weights
from ..config import build_settings
from ..core.layers import Conv2D
from ..core.train import evaluate
from ..errors import ConfigError
from .encode import EncodeConfig
from .inputs import split_data, training_recipe
from .prune import LayerPrune, PruneConfig, prune_round
from .quantize import QuantizeConfig, quantize_model
from .studies import sensitivity_scan

log = logging.getLogger(__name__)

SCAN_FRACTIONS = (0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.07, 0.06, 0.05, 0.04,
                  0.03, 0.02, 0.015, 0.01)
"""Kept fractions of the sensitivity scan, largest first."""

DEFAULT_RECIPE = {"epochs": 20, "batch_size": 64, "lr": 0.01, "lr_policy": "step",
                  "gamma": 0.1, "step_epochs": 8, "momentum": 0.9, "weight_decay": 5e-4}
"""The training recipe retraining starts from when a model brings none (an imported one)
and no ``[train]`` table is given: Caffe's LeNet settings (SGD, momentum 0.9, weight decay
5e-4, lr 0.01)."""


@dataclass(frozen=True)
class AutoConfig:
    """Settings of the automatic search (module docstring for what each one does).

    Parameters
    ----------
    budget : float in [0, 1). Allowed increase of the validation error over the dense
        model's, as a fraction (0.001 = 0.1 percentage points).
    tolerance : float > 0. One-shot (not retrained) error increase a fully connected layer's
        pruning target may cost in the sensitivity scan; retraining wins most of it back.
    conv_scale, first_conv_scale : float in (0, 1]. Tolerances of convolutions and of a first
        layer that is a convolution, relative to ``tolerance`` (and to the bits budget).
    rounds : int >= 1. Prune-retrain rounds planned.
    retries : int >= 0. Rounds over the budget that may be undone and tried halfway (each
        costs one round of retraining).
    epochs : int >= 1 or None. Retraining epochs per round; None: two fifths of the recipe's
        epochs, clipped to 2..20.
    lr_scale : float > 0. Retraining lr = recipe lr x this (step schedule, gamma 0.1 after
        60% of each round's epochs).
    finetune_epochs : int >= 0. Centroid fine-tuning epochs (lr = recipe lr x 0.01, no weight
        decay: summed over a cluster's weights it would shrink the whole codebook).
    min_bits, max_bits : int, 2 <= min_bits <= max_bits <= 8. The widths searched.
    val_size : int >= 1. Validation images held out of the training set (at most a sixth of
        it); seed : int. The split's seed.
    """

    budget: float = 0.001
    tolerance: float = 0.02
    conv_scale: float = 0.5
    first_conv_scale: float = 0.25
    rounds: int = 4
    retries: int = 2
    epochs: int | None = None
    lr_scale: float = 0.3
    finetune_epochs: int = 3
    min_bits: int = 2
    max_bits: int = 8
    val_size: int = 5000
    seed: int = 0

    def __post_init__(self):
        def number(name, lo, hi, lo_open=False, hi_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
                raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, "
                                 f"{hi}{')' if hi_open else ']'}, got {v!r}")

        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")

        number("budget", 0.0, 1.0, hi_open=True)
        number("tolerance", 0.0, 1.0, lo_open=True)
        number("conv_scale", 0.0, 1.0, lo_open=True)
        number("first_conv_scale", 0.0, 1.0, lo_open=True)
        number("lr_scale", 0.0, 1e3, lo_open=True)
        integer("rounds", 1)
        integer("retries", 0)
        if self.epochs is not None:
            integer("epochs", 1)
        integer("finetune_epochs", 0)
        integer("val_size", 1)
        integer("seed", 0)
        for name in ("min_bits", "max_bits"):
            check_bits(getattr(self, name))
        if not 2 <= self.min_bits <= self.max_bits <= 8:
            raise ValueError(f"need 2 <= min_bits <= max_bits <= 8, got {self.min_bits} and "
                             f"{self.max_bits}")

    @classmethod
    def from_dict(cls, d: dict) -> AutoConfig:
        return build_settings(cls, dict(d), "automatic settings")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AutoResult:
    """What :func:`choose` returns."""

    config: object  # CompressConfig
    report: dict
    pruned: object  # Model
    quantized: object  # Model
    quantize_report: dict
    retrain_config: dict | None


def layer_scales(model, config: AutoConfig) -> dict[str, float]:
    """Each weighted layer's share of the tolerances: 1 for a fully connected layer,
    ``conv_scale`` for a convolution, ``first_conv_scale`` for a first layer that is one."""
    out = {}
    for i, layer in enumerate(model.weighted_layers()):
        if isinstance(layer, Conv2D):
            out[layer.name] = config.first_conv_scale if i == 0 else config.conv_scale
        else:
            out[layer.name] = 1.0
    return out


def envelope_choice(values, errors, baseline: float, tolerance: float, fallback):
    """The last of ``values`` (ordered from safest to boldest) whose error, and that of every
    value before it, is within ``tolerance`` of ``baseline``; ``fallback`` if the first is
    not. ``None`` errors (not measured) end the walk."""
    choice = fallback
    for v, e in zip(values, errors):
        if e is None or e - baseline > tolerance:
            break
        choice = v
    return choice


def bits_scan(model, x_val, y_val, widths) -> dict:
    """Each weighted layer alone shared by k-means (linear init, no fine-tuning) at each of
    ``widths``: ``{"baseline": error, "bits": [...], "errors": {layer: [error per width]}}``.
    The model is left unchanged."""
    out = {"baseline": evaluate(model, x_val, y_val)["error"], "bits": list(widths),
           "errors": {}}
    for layer in model.weighted_layers():
        w = layer.params[layer.weight_name]
        saved = w.copy()
        errs = []
        try:
            for b in widths:
                codebook, idx = quantize_weights(saved, b, "linear", None)
                w[...] = codebook.astype(w.dtype)[idx]
                errs.append(evaluate(model, x_val, y_val)["error"])
        finally:
            w[...] = saved
        out["errors"][layer.name] = errs
    return out


def _recipe(model, recipe: dict | None) -> tuple[dict, str]:
    if recipe is not None:  # a bad one is an error, not a reason to use the default
        return training_recipe(model, recipe), "given"
    try:
        return training_recipe(model), "model"
    except ConfigError:
        log.warning("%s brings no training recipe: retraining starts from the default %s "
                    "(give your own in a [train] table)", model.name, DEFAULT_RECIPE)
        return dict(DEFAULT_RECIPE), "default"


def choose(model, data, config: AutoConfig | None = None, *, recipe: dict | None = None,
           progress: bool = True, threads: int | None = None,
           on_step: Callable[[str], None] | None = None) -> AutoResult:
    """Search every weighted layer's kept fraction and bits on the validation split of
    ``data`` (module docstring), pruning and quantizing a copy of ``model`` on the way.

    Parameters
    ----------
    model : Model with float weights. Not changed.
    data : Dataset. Its training images are split into training and validation
        (``config.val_size``, at most a sixth of them; ``config.seed``); its test images are
        never used.
    config : AutoConfig, optional (default: ``AutoConfig()``).
    recipe : dict of TrainConfig fields, optional. Retraining starts from it (default: the
        model's recipe, else :data:`DEFAULT_RECIPE`).
    progress : bool. Training progress bars on stderr.
    threads : int, optional. BLAS and Numba threads.
    on_step : callable, optional. Called with a one-line message at each step.

    The search holds up to three copies of the model's weights at once (the model being
    pruned, the last round's snapshot, the pruned model) besides ``model`` itself.

    Returns
    -------
    AutoResult
        The chosen settings (``config``), the search's report (scans, targets, rounds, bits
        attempts, ``recipe_source``), the pruned model (masks dropped) with its retraining
        settings, the quantized model with its :func:`quantize_model` report.
    """
    from .pipeline import CompressConfig

    config = AutoConfig() if config is None else config
    t0 = time.perf_counter()

    def step(message: str) -> None:
        log.info(message)
        if on_step is not None:
            on_step(message)

    recipe, recipe_source = _recipe(model, recipe)
    if isinstance(data, (tuple, list)):  # already split: its validation arrays are the split
        split = split_data(data, 0, config.seed)
        val_size = len(split[2])
    else:
        n_train = len(split_data(data, 0, config.seed)[0])
        val_size = min(config.val_size, n_train // 6)
        split = split_data(data, val_size, config.seed) if val_size else None
    if val_size < 1:
        raise ValueError("the automatic settings need a validation split: too few training "
                         "images (a sixth of them is held out), or an empty validation array")
    x_val, y_val = split[2], split[3]
    scales = layer_scales(model, config)
    work = copy.deepcopy(model)
    for layer in work.layers:
        layer.masks.clear()
    dense_val = evaluate(work, x_val, y_val)["error"]
    limit = dense_val + config.budget
    report = {"settings": config.to_dict(), "val_size": val_size, "val_error_dense": dense_val,
              "val_error_limit": limit, "recipe_source": recipe_source, "scales": scales}

    # 1. sensitivity: pruning targets
    step(f"auto 1/4: pruning sensitivity of {len(scales)} layers on {val_size} validation "
         f"images (dense error {100 * dense_val:.2f}%)")
    scan = sensitivity_scan(work, x_val, y_val, SCAN_FRACTIONS,
                            stop_above=2 * config.tolerance)
    targets = {n: envelope_choice(SCAN_FRACTIONS, scan["errors"][n], scan["baseline"],
                                  config.tolerance * s, 1.0) for n, s in scales.items()}
    report.update(sensitivity=scan, targets=targets)
    step("auto: pruning targets " + ", ".join(f"{n} {100 * k:g}%" for n, k in targets.items()))

    # 2. iterative pruning under the budget
    epochs = config.epochs or max(2, min(20, round(0.4 * int(recipe.get("epochs", 20)))))
    retrain = {"epochs": epochs, "lr_policy": "step", "gamma": 0.1,
               "step_epochs": max(1, math.ceil(0.6 * epochs))}
    pruned_names = [n for n, k in targets.items() if k < 1.0]
    applied: dict[str, list[float]] = {n: [] for n in pruned_names}
    rounds_report = []

    def prune_config(trial: dict[str, float]) -> PruneConfig:
        return PruneConfig(
            layers={n: LayerPrune(kept=tuple(applied[n] + [trial[n]])) for n in pruned_names},
            rounds=len(next(iter(applied.values()))) + 1, retrain=retrain,
            lr_scale=config.lr_scale, val_size=val_size, seed=config.seed)

    # The planned rounds, in order. A round over the budget is undone and a round halfway
    # between the last applied fractions and its own goes before it (``retries`` times).
    queue = [{n: targets[n] ** ((r + 1) / config.rounds) for n in pruned_names}
             for r in range(config.rounds if pruned_names else 0)]
    retries, train_cfg, attempt = config.retries, None, "planned"
    while queue:
        r = len(next(iter(applied.values())))  # the round index: its seed and its place
        trial = queue[0]
        step(f"auto 2/4: pruning round {r + 1} ({attempt}; {len(queue) - 1} more planned), "
             f"retraining {epochs} epochs")
        pc = prune_config(trial)
        train_cfg = pc.train_config(recipe)
        snapshot = copy.deepcopy(work)
        rr = prune_round(work, pc, r, train_cfg, split, progress=progress, threads=threads)
        ok = rr["val_error_retrained"] is not None and rr["val_error_retrained"] <= limit
        rounds_report.append({"round": r + 1, "attempt": attempt, "targets": trial,
                              "val_error_pruned": rr["val_error_pruned"],
                              "val_error_retrained": rr["val_error_retrained"],
                              "accepted": ok, "seconds": rr["seconds"]})
        step(f"auto: round {r + 1} validation error {100 * rr['val_error_retrained']:.2f}% "
             f"({'within' if ok else 'over'} the limit {100 * limit:.2f}%)")
        if ok:
            for n in pruned_names:
                applied[n].append(trial[n])
            queue.pop(0)
            attempt = "planned"
            continue
        work = snapshot
        if not retries:
            break
        retries -= 1
        previous = {n: (applied[n][-1] if applied[n] else 1.0) for n in pruned_names}
        queue.insert(0, {n: math.sqrt(previous[n] * trial[n]) for n in pruned_names})
        attempt = "halfway"
    rounds_done = len(next(iter(applied.values()))) if pruned_names else 0
    prune_cfg = PruneConfig(
        layers={n: LayerPrune(kept=tuple(applied[n])) for n in pruned_names} if rounds_done
        else {}, rounds=max(1, rounds_done), retrain=retrain, lr_scale=config.lr_scale,
        val_size=val_size, seed=config.seed)
    if not rounds_done:
        log.warning("no pruning round stayed within the budget: %s is not pruned", model.name)
        prune_cfg = PruneConfig(retrain=dict(retrain, epochs=0), lr_scale=config.lr_scale,
                                val_size=val_size, seed=config.seed)
    for layer in work.layers:
        layer.masks.clear()
    pruned = copy.deepcopy(work)
    report["rounds"] = rounds_report
    report["kept"] = {n: (applied[n][-1] if applied.get(n) else 1.0) for n in scales}

    # 3. bits per layer
    widths = list(range(config.max_bits, config.min_bits - 1, -1))
    step(f"auto 3/4: bits scan of {len(scales)} layers, {config.max_bits} down to "
         f"{config.min_bits} bits")
    bscan = bits_scan(work, x_val, y_val, widths)
    bits = {n: envelope_choice(widths, bscan["errors"][n], bscan["baseline"],
                               config.budget * scales[n], config.max_bits)
            for n in scales}
    report.update(bits_scan=bscan, bits_scanned=dict(bits))

    # 4. trained quantization, one bit more everywhere while over the budget
    attempts = []

    def quantize(bits: dict, epochs: int):
        qc = QuantizeConfig(bits=dict(bits), init="linear",
                            finetune={"epochs": epochs, "lr_policy": "fixed",
                                      "weight_decay": 0.0},
                            lr_scale=0.01, val_size=val_size, seed=config.seed)
        quantized = copy.deepcopy(pruned)
        q = quantize_model(quantized, data, qc, recipe=recipe, progress=progress,
                           threads=threads)
        return qc, quantized, q

    for _ in range(config.max_bits - config.min_bits + 1):
        step("auto 4/4: trained quantization at " +
             ", ".join(f"{n} {b}" for n, b in bits.items()) + " bits")
        t_q = time.perf_counter()
        qc, quantized, q = quantize(bits, config.finetune_epochs)
        ok = q["val_error_finetuned"] <= limit
        finetuned = bool(config.finetune_epochs)
        if not ok and q["val_error_clustered"] <= limit and finetuned:
            # fine-tuning made it worse on validation: the clustered model, not fine-tuned
            qc, quantized, q = quantize(bits, 0)
            ok, finetuned = q["val_error_finetuned"] <= limit, False
        attempts.append({"bits": dict(bits), "val_error_clustered": q["val_error_clustered"],
                         "val_error_finetuned": q["val_error_finetuned"],
                         "finetuned": finetuned, "accepted": ok,
                         "seconds": time.perf_counter() - t_q})
        step(f"auto: quantized validation error {100 * q['val_error_finetuned']:.2f}% "
             f"({'within' if ok else 'over'} the limit {100 * limit:.2f}%"
             f"{'' if finetuned else ', clustered without fine-tuning'})")
        if ok or all(b >= config.max_bits for b in bits.values()):
            break
        bits = {n: min(config.max_bits, b + 1) for n, b in bits.items()}
    report.update(quantize_attempts=attempts, bits=dict(bits),
                  within_budget=bool(attempts[-1]["accepted"]),
                  seconds=time.perf_counter() - t0)
    chosen = CompressConfig(prune=prune_cfg, quantize=qc, encode=EncodeConfig(index_bits="auto"),
                            train=None if recipe_source == "model" else recipe)
    return AutoResult(chosen, report, pruned, quantized, q,
                      None if train_cfg is None else train_cfg.to_dict())


__all__ = ["AutoConfig", "AutoResult", "SCAN_FRACTIONS", "DEFAULT_RECIPE", "choose", "bits_scan",
           "envelope_choice", "layer_scales"]
