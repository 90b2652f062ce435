"""The one training loop, used by every stage (baseline, pruned retraining, centroid
fine-tuning), and evaluation.

Constraints (masks, ties) live on the layers and are honoured by the optimizer, so the loop
itself does not change between stages.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import kernels
from .._validate import check_int
from ..limits import limit
from ..threads import limit_threads
from .losses import softmax_cross_entropy
from .optim import SGD, LRSchedule

log = logging.getLogger(__name__)


MAX_EPOCHS = 100_000
"""Most epochs a training config may ask for (a typo's guard: the paper's LeNets train for
tens)."""

@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Parameters
    ----------
    epochs : int >= 0.
    batch_size : int >= 1.
    lr : float. Base learning rate.
    lr_policy : "inv" (Caffe's LeNet policy), "step" or "fixed".
    gamma, power : float. Parameters of the policy (``inv``: lr * (1 + gamma * it) ** -power;
        ``step``: lr * gamma ** (epoch // step_epochs)).
    step_epochs : int >= 1. Epochs between decays for ``step``.
    momentum, weight_decay : float. SGD settings (decay applies to weights, not biases).
    seed : int. Seeds the shuffling, the augmentation and dropout; same seed, same result.
    augment_shift : int >= 0. Random translation of every training image by up to this many
        pixels in each direction (0: no augmentation).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01
    lr_policy: str = "inv"
    gamma: float = 1e-4
    power: float = 0.75
    step_epochs: int = 1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    augment_shift: int = 0

    def __post_init__(self):
        for name in ("epochs", "augment_shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.epochs > MAX_EPOCHS:
            raise ValueError(f"epochs must be at most {MAX_EPOCHS:,}, got {self.epochs!r}")
        for name in ("batch_size", "step_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        SGD(self.momentum, self.weight_decay)  # validates both
        self.schedule(1)  # validates the policy

    def schedule(self, iters_per_epoch: int) -> LRSchedule:
        step = self.step_epochs * max(1, int(iters_per_epoch))
        return LRSchedule(self.lr_policy, self.lr, self.gamma, self.power, step)

    def to_dict(self) -> dict:
        return asdict(self)


def check_train_table(table, what: str) -> None:
    """Validate a table of TrainConfig fields (a stage's overrides, a config's [train]
    recipe): ValueError naming ``what`` for a non-table, an unknown field or a bad value."""
    if not isinstance(table, dict):
        raise ValueError(f"{what} must be a table of training settings (TrainConfig fields), "
                         f"got {table!r}")
    known = set(TrainConfig.__dataclass_fields__)
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{what} has unknown setting(s) {sorted(unknown)}; known: "
                         f"{sorted(known)}")
    try:
        TrainConfig(**table)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from None


def check_stage_training(overrides, table: str, lr_scale, val_size, seed) -> None:
    """Validate the settings every retraining stage shares (pruning's [retrain], quantization's
    [finetune]): the table of TrainConfig overrides, the lr multiplier, the validation split.

    Raises
    ------
    ValueError
        Naming the table or setting, what was expected and what was found.
    """
    check_train_table(overrides, f"[{table}]")
    if (isinstance(lr_scale, bool) or not isinstance(lr_scale, (int, float))
            or not (math.isfinite(lr_scale) and lr_scale > 0)):
        raise ValueError(f"lr_scale must be a number > 0, got {lr_scale!r}")
    for name, v in (("val_size", val_size), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")


def stage_train_config(recipe: dict, lr_scale: float, overrides: dict) -> TrainConfig:
    """A stage's TrainConfig: the model's recipe, its lr times ``lr_scale``, then the stage's
    overrides."""
    base = dict(recipe)
    base["lr"] = base.get("lr", 0.01) * lr_scale
    base.update(overrides)
    return TrainConfig(**base)


@dataclass
class History:
    """Per-epoch records of a training run (``epochs``: list of dicts)."""

    config: dict
    epochs: list = field(default_factory=list)

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> dict:
    """Loss and error of ``model`` on (x, y) in evaluation mode.

    Batches hold at most ``batch_size`` samples, and fewer for a large model: so many that no
    layer needs more than the limit ``sample_elements`` (:mod:`dc_engine.limits`) values at once
    (one sample at least), which bounds the memory of an evaluation.

    Returns
    -------
    dict with ``loss`` (mean cross-entropy), ``error`` and ``accuracy`` (fractions) and ``n``.
    """
    n = len(x)
    if n == 0:
        raise ValueError("evaluate() needs at least one sample")
    if len(y) != n:
        raise ValueError(f"{n} inputs but {len(y)} labels")
    check_int(batch_size, "batch_size", 1)
    total, correct = 0.0, 0
    model = model.logits_model()  # a terminal Softmax is left out: the loss takes logits
    batch_size = min(batch_size, max(1, limit("sample_elements")
                                     // max([1, *model.sample_work().values()])))
    for i in range(0, n, batch_size):
        logits = model.forward(x[i:i + batch_size])
        yb = y[i:i + batch_size]
        loss, _ = softmax_cross_entropy(logits, yb)
        total += loss * len(yb)
        correct += int(np.sum(np.argmax(logits, axis=1) == yb))
    return {"loss": total / n, "error": (n - correct) / n, "accuracy": correct / n, "n": n}


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a declared dependency; degrade quietly if absent
        return None
    tty = sys.stderr.isatty()
    # On a terminal: a live bar. In a log file: one line every 30 s, not thousands.
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                mininterval=0.1 if tty else 30.0)


def fit(model, x_train: np.ndarray, y_train: np.ndarray, config: TrainConfig,
        x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
        optimizer: SGD | None = None, progress: bool = True,
        threads: int | None = None) -> History:
    """Train ``model`` in place with SGD (momentum, weight decay) under the layers' constraints.

    Parameters
    ----------
    model : Model.
    x_train : ndarray, shape (N, *model.input_shape), float32.
    y_train : ndarray, shape (N,), int64.
    config : TrainConfig.
    x_val, y_val : optional held-out split, evaluated after every epoch.
    optimizer : SGD, optional. Defaults to ``SGD(config.momentum, config.weight_decay)``.
    progress : bool. Show a progress bar (loss and accuracy) on stderr.
    threads : int, optional. BLAS and Numba threads during training (None: the libraries'
        defaults, all cores). See :mod:`dc_engine.threads` for why 1 can be faster.

    Raises
    ------
    ValueError
        Empty or mismatched data, or a model with compressed weights.
    FloatingPointError
        The loss became NaN or inf (the message names the epoch, batch and learning rate).

    Returns
    -------
    History with one record per epoch: epoch, lr, loss, acc (train, running), val_loss,
    val_error (when a validation split is given), seconds.
    """
    with limit_threads(threads):
        return _fit(model, x_train, y_train, config, x_val, y_val, optimizer, progress)


def _fit(model, x_train, y_train, config, x_val, y_val, optimizer, progress) -> History:
    if model.compressed:
        raise ValueError(f"{model.name} holds compressed weights, which run inference only; "
                         f"train the decoded model (model.to_dense()) instead")
    model = model.logits_model()  # a terminal Softmax is left out: the loss takes logits
    n = len(x_train)
    if n == 0 or len(y_train) != n:
        raise ValueError(f"need a non-empty training set with one label per input, got {n} "
                         f"inputs and {len(y_train)} labels")
    rng = np.random.default_rng(config.seed)
    model.seed(rng)
    opt = optimizer if optimizer is not None else SGD(config.momentum, config.weight_decay)
    bs = config.batch_size
    iters = math.ceil(n / bs)
    schedule = config.schedule(iters)
    history = History(config=config.to_dict())
    it = 0
    shift = config.augment_shift
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        bar = _progress(iters, f"epoch {epoch}/{config.epochs}", progress)
        loss_sum, correct, seen = 0.0, 0, 0
        lr = schedule(it)
        for b in range(iters):
            idx = order[b * bs:(b + 1) * bs]
            xb = x_train[idx]
            yb = y_train[idx]
            if shift:
                sy = rng.integers(-shift, shift + 1, size=len(idx)).astype(np.int32)
                sx = rng.integers(-shift, shift + 1, size=len(idx)).astype(np.int32)
                out = np.empty_like(xb)
                kernels.shift_images(np.ascontiguousarray(xb), sy, sx, out)
                xb = out
            lr = schedule(it)
            logits = model.forward(xb, train=True)
            loss, dlogits = softmax_cross_entropy(logits, yb)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch}, batch {b}: loss is {loss}; "
                    f"lower the learning rate (now {lr:g})")
            model.zero_grad()
            model.backward(dlogits)
            opt.step(model, lr)
            it += 1
            loss_sum += loss * len(idx)
            correct += int(np.sum(np.argmax(logits, axis=1) == yb))
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                if b % 20 == 0 or b == iters - 1:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                    lr=f"{lr:.2e}", refresh=False)
        if bar is not None:
            bar.close()
        rec = {"epoch": epoch, "lr": lr, "loss": loss_sum / seen, "acc": correct / seen,
               "seconds": time.perf_counter() - t0}
        if x_val is not None and y_val is not None and len(x_val):
            ev = evaluate(model, x_val, y_val)
            rec["val_loss"], rec["val_error"] = ev["loss"], ev["error"]
        history.epochs.append(rec)
        log.info("epoch %d/%d  %s", epoch, config.epochs,
                 "  ".join(f"{k}={v:.4g}" for k, v in rec.items() if k != "epoch"))
    return history


__all__ = ["TrainConfig", "History", "fit", "evaluate", "check_train_table",
           "check_stage_training", "stage_train_config"]
