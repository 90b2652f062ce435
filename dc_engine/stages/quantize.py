"""Stage 2: trained quantization by weight sharing (Deep Compression (DC) Sec. 3).

Each layer's non-zero weights are clustered by 1-D k-means (DC Sec. 3.1), every weight is
replaced by its centroid, and the centroids are then fine-tuned: the gradient of a centroid is
the sum of the gradients of the weights that share it (DC Sec. 3.3, Eq. 3).

Codebook convention (the compressed format relies on it): a b-bit layer has a codebook of
``2**b`` entries in which **slot 0 holds 0.0** for the pruned weights, as in the authors'
release, and slots ``1 .. 2**b - 1`` hold the ``k = 2**b - 1`` centroids of the non-zero
weights, sorted ascending. The index array has the weight's shape, dtype uint8 for b <= 8 and
uint16 above; pruned (zero) weights have index 0.

The array arithmetic (k-means, codebooks, the summed gradient) is in
:mod:`dc_engine.codecs.codebook`, the trainable tie in :mod:`dc_engine.core.ties`; here are
:func:`share_layer`, which attaches a tie to a layer, and the model-level stage.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from .._validate import check_bits
from ..codecs.codebook import check_method, distinct_nonzero, quantize_weights
from ..config import build_settings
from ..core.ties import WeightShare
from ..core.train import TrainConfig, check_stage_training, evaluate, fit, stage_train_config
from .inputs import split_data, training_recipe

log = logging.getLogger(__name__)


def share_layer(layer, bits: int, init: str = "linear", rng: np.random.Generator | None = None,
                name: str | None = None) -> WeightShare:
    """Quantize ``layer.params[name]`` and tie it to a trainable codebook.

    Parameters
    ----------
    layer : dc_engine.core.layers.Layer.
    bits : int in 1..16.
    init : {"linear", "density", "random"}. See
        :func:`dc_engine.codecs.codebook.init_centroids`.
    rng : numpy.random.Generator, optional. For ``init="random"``.
    name : str, optional. The parameter to share (default: the layer's weight).

    Returns
    -------
    WeightShare, also set as ``layer.ties[name]``. The parameter now holds the shared weights.
    Its codebook has the parameter's dtype (the float32 values of :func:`quantize_weights`), so
    the optimizer updates it in the precision the layer computes in.
    """
    name = layer.weight_name if name is None else name
    if name not in layer.params:
        raise ValueError(f"layer {layer.name!r} has no parameter {name!r}; it has "
                         f"{sorted(layer.params)}")
    w = layer.params[name]
    if not isinstance(w, np.ndarray):
        raise ValueError(f"layer {layer.name!r}: {name!r} is already compressed; quantize the "
                         f"decoded model (model.to_dense())")
    codebook, idx = quantize_weights(w, bits, init, rng)
    tie = WeightShare(codebook.astype(w.dtype), idx)
    layer.ties[name] = tie
    tie.apply(w)
    return tie


# ---------------------------------------------------------------------------- model level


@dataclass(frozen=True)
class QuantizeConfig:
    """Settings of the trained-quantization stage (the ``[quantize]`` table of a config).

    Parameters
    ----------
    bits : dict layer name -> int in 1..16. Layers not named keep float weights.
    init : "linear" (default; DC Sec. 3.2's best), "density" or "random".
    finetune : dict of TrainConfig fields for fine-tuning the centroids; fields left out come
        from the model's training recipe, with ``lr`` = recipe lr x ``lr_scale``.
    lr_scale : float > 0.
    val_size, seed : the validation split held out of the training images (as ``train``).
    """

    bits: dict = field(default_factory=dict)
    init: str = "linear"
    finetune: dict = field(default_factory=dict)
    lr_scale: float = 0.01
    val_size: int = 5000
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.bits, dict) or not self.bits:
            raise ValueError("bits must be a non-empty table of layer name -> bits")
        for name, b in self.bits.items():
            try:
                check_bits(b)
            except (TypeError, ValueError) as e:
                raise ValueError(f"layer {name!r}: {e}") from None
        check_method(self.init)
        check_stage_training(self.finetune, "finetune", self.lr_scale, self.val_size,
                             self.seed)

    @classmethod
    def from_dict(cls, d: dict) -> QuantizeConfig:
        return build_settings(cls, d, "quantization")

    def to_dict(self) -> dict:
        return asdict(self)

    def check_model(self, model) -> None:
        """ValueError naming any configured layer the model lacks or that has no weights."""
        weighted = [l.name for l in model.weighted_layers()]
        for name in self.bits:
            if name not in weighted:
                raise ValueError(f"unknown layer {name!r} in the quantization config; "
                                 f"{model.name} has weighted layers {weighted}")

    def train_config(self, recipe: dict) -> TrainConfig:
        return stage_train_config(recipe, self.lr_scale, self.finetune)


def layer_report(layer, tie: WeightShare) -> dict:
    """Bits, codebook and cluster populations of one shared layer."""
    counts = np.bincount(tie.idx.ravel(), minlength=len(tie.codebook))
    return {"name": layer.name, "bits": tie.bits, "weights": int(tie.idx.size),
            "nonzero": int(np.count_nonzero(tie.idx)),
            "distinct_nonzero": distinct_nonzero(layer.params[layer.weight_name]),
            "codebook": [float(c) for c in tie.codebook],
            "populations": [int(c) for c in counts]}


def quantize_model(model, data, config: QuantizeConfig, *, recipe: dict | None = None,
                   progress: bool = True, threads: int | None = None,
                   rng: np.random.Generator | None = None) -> dict:
    """Weight sharing, then centroid fine-tuning through the one training loop, in place
    (DC Sec. 3).

    Parameters
    ----------
    model : Model with float weights (usually pruned: its zeros stay zero). Changed in place:
        each configured layer's weight gets a :class:`~dc_engine.core.ties.WeightShare` tie.
    data : Dataset (split by ``config.val_size`` and ``config.seed``) or
        ``(x_train, y_train, x_val, y_val)``.
    config : QuantizeConfig.
    recipe : dict of TrainConfig fields, optional (default: the model's own recipe).
    progress : bool. Progress bars on stderr.
    threads : int, optional. BLAS and Numba threads.
    rng : numpy.random.Generator, optional. For ``init="random"`` (default: seeded by
        ``config.seed``).

    Returns
    -------
    dict report: per layer bits, codebooks before and after fine-tuning and cluster
    populations; validation error before, after clustering and after fine-tuning.

    Raises
    ------
    ValueError
        The config names a layer the model lacks, or bad data.
    ConfigError
        No training recipe for the model.
    """
    config.check_model(model)
    train_cfg = config.train_config(training_recipe(model, recipe))
    x_train, y_train, x_val, y_val = split_data(data, config.val_size, config.seed)
    if len(x_val) == 0:
        raise ValueError("quantization reports validation errors: it needs a validation split "
                         "(val_size > 0)")
    rng = np.random.default_rng(config.seed) if rng is None else rng
    report = {"val_error_before": evaluate(model, x_val, y_val)["error"],
              "train_config": train_cfg.to_dict(), "layers": []}
    ties = {}
    for name, bits in config.bits.items():
        ties[name] = share_layer(model[name], bits, config.init, rng)
    report["codebooks_clustered"] = {n: [float(c) for c in t.codebook] for n, t in ties.items()}
    report["val_error_clustered"] = evaluate(model, x_val, y_val)["error"]
    log.info("clustered: val error %.4f", report["val_error_clustered"])
    # Weighted layers left float keep their pruned zeros: a pruned file stores no masks (they
    # are the zeros), so hold them for the fine-tuning and drop them again afterwards.
    held = [l for l in model.weighted_layers()
            if l.name not in ties and l.weight_name not in l.masks]
    for layer in held:
        layer.masks[layer.weight_name] = layer.params[layer.weight_name] != 0
    try:
        hist = fit(model, x_train, y_train, train_cfg, x_val, y_val, progress=progress,
                   threads=threads) if train_cfg.epochs else None
    finally:
        for layer in held:
            del layer.masks[layer.weight_name]
    report["history"] = hist.epochs if hist else []
    report["val_error_finetuned"] = evaluate(model, x_val, y_val)["error"]
    report["layers"] = [layer_report(model[n], t) for n, t in ties.items()]
    return report


__all__ = ["share_layer", "QuantizeConfig", "layer_report", "quantize_model"]
