"""Stage 1: magnitude pruning with masked retraining (Han et al. 2015, "Learning both Weights
and Connections" (LWC); Deep Compression Sec. 2).

Pure array functions first (thresholds, masks), then the model-level pieces: an iterative
schedule (prune -> retrain -> prune harder -> retrain ...), the dropout adjustment of LWC Eq. 2,
and the sensitivity scan of LWC Fig. 6. Retraining goes through the one training loop
(:func:`dc_engine.core.train.fit`) with each pruned layer's weight mask set
(``layer.masks[layer.weight_name]``), so the gradient and the momentum of pruned weights are
masked and they stay exactly 0.0.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..config import build_settings
from ..core.layers import Dropout, Layer
from ..core.train import TrainConfig, check_stage_training, evaluate, fit, stage_train_config
from .inputs import split_data, training_recipe

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- array functions


def quality_threshold(w: np.ndarray, quality: float) -> float:
    """LWC Sec. 4: threshold = quality x std of the layer's weights.

    Parameters
    ----------
    w : ndarray, any shape, float. The layer's weights (pruned entries included as zeros,
        as in Caffe, so the std is over the whole weight tensor).
    quality : float >= 0.

    Returns
    -------
    float
    """
    if not (math.isfinite(quality) and quality >= 0):
        raise ValueError(f"quality must be a finite number >= 0, got {quality}")
    return float(quality) * float(np.std(w, dtype=np.float64))


def prune_mask(w: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Keep the weights whose magnitude is above ``threshold``.

    Parameters
    ----------
    w : ndarray, float.
    threshold : float >= 0. Entries with ``|w| <= threshold`` are pruned (so exact zeros are
        always pruned).
    mask : ndarray of bool, shape of ``w``, optional. An earlier mask: pruned stays pruned.

    Returns
    -------
    ndarray of bool, shape of ``w``. True where the weight is kept.
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    keep = np.abs(w) > threshold
    return keep if mask is None else keep & mask


def kept_mask(w: np.ndarray, kept: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Keep the ``round(kept * w.size)`` largest-magnitude weights (a target kept-fraction).

    Parameters
    ----------
    w : ndarray, float.
    kept : float in (0, 1]. Fraction of *all* the layer's weights to keep.
    mask : ndarray of bool, optional. An earlier mask: only its kept entries are candidates.

    Returns
    -------
    ndarray of bool, shape of ``w``. Ties in magnitude are broken by position (lower flat index
    first), so the count is exact and the result deterministic.
    """
    check_kept(kept, "kept")
    a = np.abs(np.asarray(w)).ravel()  # (w's own float type: |w| is exact in it)
    if mask is not None:
        a = np.where(mask.ravel(), a, a.dtype.type(-1))  # never re-grow a pruned connection
    n_keep = int(round(kept * a.size))
    if mask is not None:
        n_keep = min(n_keep, int(np.count_nonzero(mask)))
    if n_keep <= 0:
        return np.zeros(w.shape, dtype=bool)
    # The n_keep-th largest magnitude by selection, not a full sort (linear time: VGG-16's fc6
    # took 54 s and 3.3 GB with a stable argsort of float64 copies): every larger weight is
    # kept, and of those equal to it the ones of lowest flat index, as a stable sort would.
    t = np.partition(a, a.size - n_keep)[a.size - n_keep]
    out = a > t
    need = n_keep - int(np.count_nonzero(out))
    out[np.flatnonzero(a == t)[:need]] = True
    return out.reshape(w.shape)


def check_kept(kept, what: str) -> None:
    """ValueError unless ``kept`` is a number in (0, 1] (a kept-fraction)."""
    if (isinstance(kept, (bool, np.bool_)) or not isinstance(kept, (int, float, np.number))
            or not 0 < kept <= 1):
        raise ValueError(f"{what} must be a fraction in (0, 1], got {kept!r}")


# --------------------------------------------------------------------------------- config


MAX_ROUNDS = 1000
"""Most prune-retrain rounds a config may ask for (each retrains the model; the paper uses a
handful)."""

@dataclass(frozen=True)
class LayerPrune:
    """How one layer is pruned: a target kept-fraction or a quality parameter, either one value
    (reached over the rounds) or one value per round.

    Exactly one of ``kept`` and ``quality`` is set.
    """

    kept: float | tuple[float, ...] | None = None
    quality: float | tuple[float, ...] | None = None

    def __post_init__(self):
        if (self.kept is None) == (self.quality is None):
            raise ValueError("give a layer exactly one of 'kept' (fraction of weights to keep) "
                             f"and 'quality' (threshold = quality x std), got {self}")
        for name in ("kept", "quality"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        values = self.kept if self.kept is not None else self.quality
        values = values if isinstance(values, tuple) else (values,)
        if not values:
            raise ValueError("an empty list of per-round values")
        for v in values:
            if self.kept is not None:
                check_kept(v, "kept")
            elif (isinstance(v, bool) or not isinstance(v, (int, float))
                  or not math.isfinite(v) or v < 0):
                raise ValueError(f"quality must be a finite number >= 0, got {v!r}")

    def per_round(self, rounds: int) -> list[tuple[str, float]]:
        """The (kind, value) applied in each of ``rounds`` rounds.

        A single kept-fraction k is reached geometrically: round r of R keeps k**(r/R), so each
        round removes the same share of what is left. A single quality q is reached linearly:
        q*r/R. A list gives one value per round and must have ``rounds`` entries.
        """
        kind = "kept" if self.kept is not None else "quality"
        v = getattr(self, kind)
        if isinstance(v, tuple):
            if len(v) != rounds:
                raise ValueError(f"{kind} lists {len(v)} values for {rounds} rounds")
            return [(kind, float(x)) for x in v]
        if kind == "kept":
            return [(kind, float(v) ** (r / rounds)) for r in range(1, rounds + 1)]
        return [(kind, float(v) * r / rounds) for r in range(1, rounds + 1)]


@dataclass(frozen=True)
class PruneConfig:
    """Settings of the pruning stage (a TOML file; see ``dc_engine/configs/``).

    Parameters
    ----------
    layers : dict layer name -> LayerPrune. Layers not named are not pruned.
    rounds : int in 1..MAX_ROUNDS. Prune-retrain iterations (LWC Sec. 3.4).
    retrain : dict of TrainConfig fields for each round's retraining; fields left out come from
        the model's training recipe, with ``lr`` = recipe lr x ``lr_scale``.
    lr_scale : float > 0. LWC Sec. 4 retrains the LeNets at 1/10 of the original rate.
    val_size, seed : the validation split held out of the training images (as ``train``).
    remove_dead_units : bool, default False. After the last round, remove the hidden units
        left without incoming or outgoing weights from the layers around them
        (:func:`dc_engine.stages.surgery.remove_dead_units`; not in Deep Compression).
    """

    layers: dict = field(default_factory=dict)
    rounds: int = 1
    retrain: dict = field(default_factory=dict)
    lr_scale: float = 0.1
    val_size: int = 5000
    seed: int = 0
    remove_dead_units: bool = False

    def __post_init__(self):
        if (isinstance(self.rounds, bool) or not isinstance(self.rounds, int)
                or not 1 <= self.rounds <= MAX_ROUNDS):
            raise ValueError(f"rounds must be an integer in 1..{MAX_ROUNDS}, got "
                             f"{self.rounds!r}")
        if not isinstance(self.layers, dict):
            raise ValueError(f"layers must be a table of layer name -> settings, got "
                             f"{type(self.layers).__name__}")
        layers = {}
        for name, spec in self.layers.items():
            if isinstance(spec, dict):
                unknown = set(spec) - {"kept", "quality"}
                if unknown:
                    raise ValueError(f"layer {name!r}: unknown setting(s) {sorted(unknown)}; "
                                     "use 'kept' or 'quality'")
                try:
                    spec = LayerPrune(**spec)
                except ValueError as e:
                    raise ValueError(f"layer {name!r}: {e}") from None
            if not isinstance(spec, LayerPrune):
                raise TypeError(f"layer {name!r}: expected a table with 'kept' or 'quality'")
            try:
                spec.per_round(self.rounds)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: {e}") from None
            layers[name] = spec
        object.__setattr__(self, "layers", layers)
        if not isinstance(self.remove_dead_units, bool):
            raise ValueError(f"remove_dead_units must be true or false, got "
                             f"{self.remove_dead_units!r}")
        check_stage_training(self.retrain, "retrain", self.lr_scale, self.val_size, self.seed)

    def check_model(self, model) -> None:
        """Raise ValueError naming any configured layer that the model lacks or cannot prune."""
        names = {layer.name: layer for layer in model.layers}
        for name in self.layers:
            if name not in names:
                prunable = [l.name for l in model.weighted_layers()]
                raise ValueError(f"unknown layer {name!r} in the pruning config; "
                                 f"{model.name} has prunable layers {prunable}")
            if names[name].weight_name is None:
                raise ValueError(f"layer {name!r} ({names[name].type_name}) has no weights "
                                 "to prune")

    def train_config(self, recipe: dict) -> TrainConfig:
        """The retraining TrainConfig of one round: recipe, lr scaled, then [retrain]."""
        return stage_train_config(recipe, self.lr_scale, self.retrain)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = {k: {kk: (list(vv) if isinstance(vv, tuple) else vv)
                           for kk, vv in asdict(v).items() if vv is not None}
                       for k, v in self.layers.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        return build_settings(cls, dict(d), "pruning")


# ---------------------------------------------------------------------------- model level


def _weight(layer: Layer) -> np.ndarray:
    """The layer's weight as a float array (ValueError for a compressed one)."""
    w = layer.params[layer.weight_name]
    if not isinstance(w, np.ndarray):
        raise ValueError(f"layer {layer.name!r} holds a compressed weight; prune the decoded "
                         f"model (model.to_dense())")
    return w


def apply_masks(model, masks: dict[str, np.ndarray]) -> None:
    """Set each named layer's weight mask and zero the pruned weights (exactly 0.0)."""
    for layer in model.layers:
        m = masks.get(layer.name)
        if m is not None:
            layer.masks[layer.weight_name] = m
            _weight(layer)[~m] = 0.0


def adjust_dropout(model, kept_before: dict[str, float], kept_after: dict[str, float]) -> None:
    """LWC Eq. 2: D_r = D_o * sqrt(C_ir / C_io) for each Dropout layer, where C_i is the
    connection count of the weighted layer that follows it (the one whose inputs it drops)."""
    layers = model.layers
    for i, layer in enumerate(layers):
        if not isinstance(layer, Dropout):
            continue
        nxt = next((l for l in layers[i + 1:] if l.weight_name is not None), None)
        if nxt is None or nxt.name not in kept_after:
            continue
        ratio = kept_after[nxt.name] / max(kept_before.get(nxt.name, 1.0), 1e-12)
        layer.rate = layer.rate * math.sqrt(ratio)


def layer_stats(model) -> list[dict]:
    """Per weighted layer: name, #weights, #kept (non-zero), kept fraction."""
    out = []
    for layer in model.weighted_layers():
        w = _weight(layer)
        nnz = int(np.count_nonzero(w))
        out.append({"name": layer.name, "weights": int(w.size), "kept": nnz,
                    "kept_fraction": nnz / w.size})
    return out


def _kept_fraction(layer: Layer) -> float:
    w = _weight(layer)
    return float(np.count_nonzero(w)) / w.size


def prune_step(model, config: PruneConfig, round_index: int) -> dict[str, np.ndarray]:
    """Compute and apply the masks of round ``round_index`` (0-based); returns them."""
    masks = {}
    for name, spec in config.layers.items():
        layer = model[name]
        kind, value = spec.per_round(config.rounds)[round_index]
        w = _weight(layer)
        old = layer.masks.get(layer.weight_name, w != 0)
        if kind == "kept":
            masks[name] = kept_mask(w, value, old)
        else:
            masks[name] = prune_mask(w, quality_threshold(w, value), old)
    apply_masks(model, masks)
    return masks


def prune_round(model, config: PruneConfig, round_index: int, train_cfg: TrainConfig,
                split: tuple, *, progress: bool = True, threads: int | None = None) -> dict:
    """One round of :func:`prune_model`, in place: prune every configured layer to round
    ``round_index``'s target (0-based), scale the dropout rates (LWC Eq. 2), retrain with the
    masks applied (seed ``train_cfg.seed + round_index``). ``split`` is ``(x_train, y_train,
    x_val, y_val)``. Returns the round's report."""
    x_train, y_train, x_val, y_val = split
    t0 = time.perf_counter()
    before = {n: _kept_fraction(model[n]) for n in config.layers}
    prune_step(model, config, round_index)
    after = {n: _kept_fraction(model[n]) for n in config.layers}
    adjust_dropout(model, before, after)
    err_pruned = evaluate(model, x_val, y_val)["error"] if len(x_val) else None
    log.info("round %d/%d: kept %s, val error after pruning %s", round_index + 1,
             config.rounds, {n: round(v, 4) for n, v in after.items()}, err_pruned)
    cfg = replace(train_cfg, seed=train_cfg.seed + round_index)
    hist = fit(model, x_train, y_train, cfg, x_val, y_val, progress=progress, threads=threads)
    return {"round": round_index + 1, "kept": after, "val_error_pruned": err_pruned,
            "val_error_retrained": hist.last.get("val_error"), "history": hist.epochs,
            "seconds": time.perf_counter() - t0}


def prune_model(model, data, config: PruneConfig, *, recipe: dict | None = None,
                progress: bool = True, threads: int | None = None,
                on_round: Callable[[int, object], None] | None = None) -> dict:
    """Iterative pruning with masked retraining, in place (LWC Sec. 3; DC Sec. 2).

    Each round: prune every configured layer to that round's target, evaluate on the
    validation split, retrain with the masks applied, evaluate again. The masks stay on the
    layers (``layer.masks``); a file need not store them, as the pruned weights are exact
    zeros.

    Parameters
    ----------
    model : Model with float weights. Changed in place.
    data : Dataset (split by ``config.val_size`` and ``config.seed``) or
        ``(x_train, y_train, x_val, y_val)``.
    config : PruneConfig.
    recipe : dict of TrainConfig fields, optional. What retraining starts from (default: the
        model's own recipe, :func:`dc_engine.stages.inputs.training_recipe`).
    progress : bool. Progress bars on stderr.
    threads : int, optional. BLAS and Numba threads.
    on_round : callable, optional. Called as ``on_round(r, model)`` after round ``r``
        (0-based) has been retrained, with the masks still on the model (e.g. to keep a copy).

    Returns
    -------
    dict report: ``rounds`` (per round: targets, kept per layer, val error after pruning and
    after retraining, seconds), ``layers`` (final per-layer stats), ``val_error_dense``,
    ``train_config`` (the retraining settings).

    Raises
    ------
    ValueError
        The config names a layer the model lacks or cannot prune, or bad data.
    ConfigError
        No training recipe for the model.
    """
    config.check_model(model)
    train_cfg = config.train_config(training_recipe(model, recipe))
    split = split_data(data, config.val_size, config.seed)
    x_val, y_val = split[2], split[3]
    report = {"val_error_dense": evaluate(model, x_val, y_val)["error"] if len(x_val) else None,
              "train_config": train_cfg.to_dict(), "rounds": []}
    for r in range(config.rounds):
        report["rounds"].append(prune_round(model, config, r, train_cfg, split,
                                            progress=progress, threads=threads))
        if on_round is not None:
            on_round(r, model)
    report["layers"] = layer_stats(model)
    return report


__all__ = ["quality_threshold", "prune_mask", "kept_mask", "check_kept", "LayerPrune",
           "PruneConfig", "apply_masks", "adjust_dropout", "layer_stats", "prune_step",
           "prune_round", "prune_model"]
