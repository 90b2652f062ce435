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

import dataclasses
import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from .._validate import check_bits
from ..codecs.codebook import check_method, distinct_nonzero, quantize_weights
from ..config import build_settings
from ..core.optim import SGD
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
    bias_bits : dict layer name -> int in 1..16, optional. Biases shared the same way (k-means
        over the layer's non-zero biases, slot 0 holding 0.0, centroids fine-tuned with the
        summed gradients along with the weights' codebooks): Deep Compression shares weights
        only; the compressed file then stores each bias as a code (``[encode] bias``).
    keep_best : bool, default False. Fine-tune one epoch at a time (epoch ``e`` shuffles with
        seed ``seed + e - 1``, the optimizer's momentum carried over) and keep the state with
        the lowest validation error, the clustered one included (ties to the earlier).
        Fine-tuning with a summed gradient can raise the error; this never keeps a step that
        did. Not in Deep Compression.
    """

    bits: dict = field(default_factory=dict)
    init: str = "linear"
    finetune: dict = field(default_factory=dict)
    lr_scale: float = 0.01
    val_size: int = 5000
    seed: int = 0
    bias_bits: dict = field(default_factory=dict)
    keep_best: bool = False

    def __post_init__(self):
        if not isinstance(self.bits, dict) or not self.bits:
            raise ValueError("bits must be a non-empty table of layer name -> bits")
        if not isinstance(self.keep_best, bool):
            raise ValueError(f"keep_best must be true or false, got {self.keep_best!r}")
        if not isinstance(self.bias_bits, dict):
            raise ValueError("bias_bits must be a table of layer name -> bits")
        for table, values in (("bits", self.bits), ("bias_bits", self.bias_bits)):
            for name, b in values.items():
                try:
                    check_bits(b, table)
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
        for name in list(self.bits) + list(self.bias_bits):
            if name not in weighted:
                raise ValueError(f"unknown layer {name!r} in the quantization config; "
                                 f"{model.name} has weighted layers {weighted}")
        for name in self.bias_bits:
            if "b" not in model[name].params:
                raise ValueError(f"[quantize.bias_bits] names {name!r}, which has no bias")

    def train_config(self, recipe: dict) -> TrainConfig:
        return stage_train_config(recipe, self.lr_scale, self.finetune)


def _state(model) -> list:
    """Copies of every trainable array: the float parameters and the ties' trainables."""
    return [({k: np.array(v) for k, v in l.params.items() if isinstance(v, np.ndarray)},
             {k: {n: np.array(a) for n, a in t.trainables().items()} for k, t in l.ties.items()})
            for l in model.layers]


def _restore(model, state: list) -> None:
    """Write a :func:`_state` back in place (ties re-applied)."""
    for layer, (params, ties) in zip(model.layers, state):
        for k, v in params.items():
            layer.params[k][...] = v
        for k, arrays in ties.items():
            tie = layer.ties[k]
            for n, a in arrays.items():
                tie.trainables()[n][...] = a
            tie.apply(layer.params[k])


def _finetune_best(model, split, train_cfg: TrainConfig, val_clustered: float, progress: bool,
                   threads) -> tuple[list, int]:
    """Fine-tuning one epoch at a time, keeping the state of lowest validation error (epoch 0:
    the clustered state). Returns the epochs' records and the epoch kept."""
    x_train, y_train, x_val, y_val = split
    if train_cfg.lr_policy != "fixed":
        raise ValueError(f"keep_best fine-tunes one epoch at a time, so the learning rate must "
                         f"be constant: set [quantize.finetune] lr_policy = \"fixed\" (got "
                         f"{train_cfg.lr_policy!r})")
    opt = SGD(train_cfg.momentum, train_cfg.weight_decay)
    best, best_epoch, state, records = val_clustered, 0, _state(model), []
    for e in range(1, train_cfg.epochs + 1):
        cfg = dataclasses.replace(train_cfg, epochs=1, seed=train_cfg.seed + e - 1)
        rec = fit(model, x_train, y_train, cfg, x_val, y_val, optimizer=opt,
                  progress=progress, threads=threads).epochs[0]
        rec["epoch"] = e
        records.append(rec)
        if rec["val_error"] < best:
            best, best_epoch, state = rec["val_error"], e, _state(model)
    if best_epoch != train_cfg.epochs:
        _restore(model, state)
    log.info("fine-tuning: kept epoch %d (val error %.4f)", best_epoch, best)
    return records, best_epoch


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
    bias_ties = {name: share_layer(model[name], bits, config.init, rng, name="b")
                 for name, bits in config.bias_bits.items()}
    report["codebooks_clustered"] = {n: [float(c) for c in t.codebook] for n, t in ties.items()}
    if bias_ties:
        report["bias_codebooks_clustered"] = {n: [float(c) for c in t.codebook]
                                              for n, t in bias_ties.items()}
    report["val_error_clustered"] = evaluate(model, x_val, y_val)["error"]
    log.info("clustered: val error %.4f", report["val_error_clustered"])
    # Weighted layers left float keep their pruned zeros: a pruned file stores no masks (they
    # are the zeros), so hold them for the fine-tuning and drop them again afterwards.
    held = [l for l in model.weighted_layers()
            if l.name not in ties and l.weight_name not in l.masks]
    for layer in held:
        layer.masks[layer.weight_name] = layer.params[layer.weight_name] != 0
    try:
        if config.keep_best:
            epochs, report["kept_epoch"] = _finetune_best(
                model, (x_train, y_train, x_val, y_val), train_cfg,
                report["val_error_clustered"], progress, threads)
        else:
            hist = fit(model, x_train, y_train, train_cfg, x_val, y_val, progress=progress,
                       threads=threads) if train_cfg.epochs else None
            epochs = hist.epochs if hist else []
    finally:
        for layer in held:
            del layer.masks[layer.weight_name]
    report["history"] = epochs
    report["val_error_finetuned"] = evaluate(model, x_val, y_val)["error"]
    report["layers"] = [layer_report(model[n], t) for n, t in ties.items()]
    if bias_ties:
        report["bias_codebooks"] = {n: [float(c) for c in t.codebook]
                                    for n, t in bias_ties.items()}
    return report


__all__ = ["share_layer", "QuantizeConfig", "layer_report", "quantize_model"]
