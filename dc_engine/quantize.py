"""Stage 2: trained quantization by weight sharing (Deep Compression (DC) Sec. 3).

Each layer's non-zero weights are clustered by 1-D k-means (DC Sec. 3.1), every weight is
replaced by its centroid, and the centroids are then fine-tuned: the gradient of a centroid is
the sum of the gradients of the weights that share it (DC Sec. 3.3, Eq. 3).

Codebook convention (the compressed format relies on it): a b-bit layer has a codebook of
``2**b`` entries in which **slot 0 holds 0.0** for the pruned weights, as in the authors'
release, and slots ``1 .. 2**b - 1`` hold the ``k = 2**b - 1`` centroids of the non-zero
weights, sorted ascending. The index array has the weight's shape, dtype uint8 for b <= 8 and
uint16 above; pruned (zero) weights have index 0.

Pure array functions first, then :class:`WeightShare`, the tie that the optimizer trains
(:mod:`dc_engine.optim`), and :func:`share_layer`, which attaches one to a layer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from .codebook import (INIT_METHODS, MAX_BITS, _check_bits, _check_index, _check_method,
                       centroid_grad, dequantize, distinct_nonzero, index_dtype, init_centroids,
                       kmeans_1d, quantize_weights)
from .config import build_settings
from .optim import Tie
from .train import TrainConfig, check_stage_training, evaluate, fit, stage_train_config

log = logging.getLogger(__name__)


class WeightShare(Tie):
    """A weight tensor shared through a codebook: ``W = codebook[idx]`` (DC Sec. 3).

    The optimizer trains ``codebook`` in place with the summed gradient of :func:`centroid_grad`
    (DC Eq. 3, no weight decay) and then rewrites the weights with :meth:`apply`.

    Parameters
    ----------
    codebook : ndarray, shape (2**bits,), float32 or float64, bits in 1..16, ``codebook[0]``
        == 0.0. Copied; the copy is the trainable array.
    idx : ndarray, the weight's shape, uint8 (bits <= 8) or uint16, values in
        [0, 2**bits). Copied.

    Attributes
    ----------
    codebook, idx : the arrays above.
    bits : int. The index width.
    """

    weight_decay = False

    def __init__(self, codebook: np.ndarray, idx: np.ndarray):
        codebook = np.asarray(codebook)
        if codebook.dtype not in (np.float32, np.float64):
            raise TypeError(f"codebook must be float32 or float64, got {codebook.dtype}")
        m = codebook.size
        if codebook.ndim != 1 or m < 2 or m > 2**MAX_BITS or m & (m - 1):
            raise ValueError(f"codebook must be 1-D with 2**bits entries, bits in 1..{MAX_BITS}, "
                             f"got shape {codebook.shape}")
        if codebook[0] != 0:
            raise ValueError(f"codebook[0] is reserved for the pruned weights and must be 0.0, "
                             f"got {codebook[0]}")
        self.bits = m.bit_length() - 1
        idx = np.asarray(idx)
        want = index_dtype(self.bits)
        if idx.dtype != want:
            raise TypeError(f"idx of a {self.bits}-bit codebook must be {want}, got {idx.dtype}; "
                            f"convert with idx.astype(np.{want})")
        _check_index(idx, m)
        self.codebook = np.array(codebook, copy=True, order="C")
        self.codebook[0] = 0.0  # +0.0, also if given -0.0
        self.idx = np.array(idx, copy=True, order="C")

    def trainables(self) -> dict[str, np.ndarray]:
        """``{"codebook": codebook}``, updated in place by the optimizer."""
        return {"codebook": self.codebook}

    def backward(self, grad: np.ndarray) -> dict[str, np.ndarray]:
        """``{"codebook": dL/dC}`` from ``grad`` = dL/dW (shape of ``idx``); DC Eq. 3."""
        g = centroid_grad(grad, self.idx, self.codebook.size)
        return {"codebook": g.astype(self.codebook.dtype, copy=False)}

    def apply(self, param: np.ndarray) -> None:
        """Write ``codebook[idx]`` into ``param`` (shape of ``idx``) in place."""
        if param.shape != self.idx.shape:
            raise ValueError(f"parameter has shape {param.shape} but the shared index has "
                             f"{self.idx.shape}")
        param[...] = self.codebook[self.idx]

    def __repr__(self) -> str:
        return f"WeightShare(bits={self.bits}, shape={self.idx.shape})"


def share_layer(layer, bits: int, init: str = "linear", rng: np.random.Generator | None = None,
                name: str = "W") -> WeightShare:
    """Quantize ``layer.params[name]`` and tie it to a trainable codebook.

    Parameters
    ----------
    layer : dc_engine.layers.Layer.
    bits : int in 1..16.
    init : {"linear", "density", "random"}. See :func:`init_centroids`.
    rng : numpy.random.Generator, optional. For ``init="random"``.
    name : str. The parameter to share.

    Returns
    -------
    WeightShare, also set as ``layer.ties[name]``. The parameter now holds the shared weights.
    Its codebook has the parameter's dtype (the float32 values of :func:`quantize_weights`), so
    the optimizer updates it in the precision the layer computes in.
    """
    if name not in layer.params:
        raise ValueError(f"layer {layer.name!r} has no parameter {name!r}; it has "
                         f"{sorted(layer.params)}")
    w = layer.params[name]
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
                _check_bits(b)
            except (TypeError, ValueError) as e:
                raise ValueError(f"layer {name!r}: {e}") from None
        _check_method(self.init)
        check_stage_training(self.finetune, "finetune", self.lr_scale, self.val_size,
                             self.seed)

    @classmethod
    def from_dict(cls, d: dict) -> QuantizeConfig:
        return build_settings(cls, d, "quantization")

    def to_dict(self) -> dict:
        return asdict(self)

    def check_model(self, model) -> None:
        """ValueError naming any configured layer the model lacks or that has no weights."""
        weighted = [l.name for l in model.layers if "W" in l.params]
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
            "distinct_nonzero": distinct_nonzero(layer.params["W"]),
            "codebook": [float(c) for c in tie.codebook],
            "populations": [int(c) for c in counts]}


def quantize_model(model, config: QuantizeConfig, recipe: dict, x_train, y_train, x_val, y_val,
                   progress: bool = True, threads: int | None = None,
                   rng: np.random.Generator | None = None) -> dict:
    """Weight sharing, then centroid fine-tuning through the one training loop, in place
    (DC Sec. 3). Returns a report: per layer bits, codebooks before and after fine-tuning and
    cluster populations; validation error before, after clustering and after fine-tuning.
    """
    config.check_model(model)
    train_cfg = config.train_config(recipe)
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
    held = [l for l in model.layers
            if "W" in l.params and l.name not in ties and "W" not in l.masks]
    for layer in held:
        layer.masks["W"] = layer.params["W"] != 0
    try:
        hist = fit(model, x_train, y_train, train_cfg, x_val, y_val, progress=progress,
                   threads=threads) if train_cfg.epochs else None
    finally:
        for layer in held:
            del layer.masks["W"]
    report["history"] = hist.epochs if hist else []
    report["val_error_finetuned"] = evaluate(model, x_val, y_val)["error"]
    report["layers"] = [layer_report(model[n], t) for n, t in ties.items()]
    return report


__all__ = [
    "INIT_METHODS", "MAX_BITS", "init_centroids", "kmeans_1d", "quantize_weights", "dequantize",
    "centroid_grad", "distinct_nonzero", "index_dtype", "WeightShare", "share_layer",
    "QuantizeConfig", "layer_report", "quantize_model",
]
