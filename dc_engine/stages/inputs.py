"""What the retraining stages take besides a model and a config: the data and the training
recipe."""

from __future__ import annotations

import numpy as np

from ..core.zoo import RECIPES
from ..errors import ConfigError
from ..io.data import Dataset, train_val_split


def split_data(data, val_size: int, seed: int) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_val, y_val)`` for a stage.

    Parameters
    ----------
    data : Dataset, or a tuple ``(x_train, y_train, x_val, y_val)`` of arrays already split.
        A Dataset's training images are split by ``val_size`` and ``seed``
        (:func:`dc_engine.io.data.train_val_split`); its test images are not used.
    val_size, seed : int. The validation split of a Dataset.

    Raises
    ------
    TypeError
        ``data`` is neither.
    ValueError
        ``val_size`` out of range, or arrays of different lengths.
    """
    if isinstance(data, Dataset):
        return train_val_split(data.x_train, data.y_train, val_size, seed)
    if isinstance(data, (tuple, list)) and len(data) == 4:
        x_tr, y_tr, x_val, y_val = (np.asarray(a) for a in data)
        if len(x_tr) != len(y_tr) or len(x_val) != len(y_val):
            raise ValueError(f"data: {len(x_tr)} training inputs but {len(y_tr)} labels, "
                             f"{len(x_val)} validation inputs but {len(y_val)} labels")
        return x_tr, y_tr, x_val, y_val
    raise TypeError(f"data must be a dc_engine Dataset (e.g. dc_engine.load_mnist(PATH)) or a "
                    f"tuple (x_train, y_train, x_val, y_val), got {type(data).__name__}")


def check_recipe(recipe, source: str = "recipe") -> dict:
    """``recipe`` (a dict of TrainConfig fields, e.g. a config's ``[train]`` table) checked:
    ConfigError naming ``source`` for an unknown field or a bad value."""
    from ..core.train import check_train_table

    try:
        check_train_table(recipe, source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return dict(recipe)


def training_recipe(model, recipe: dict | None = None) -> dict:
    """The training settings (TrainConfig fields) that retraining starts from: ``recipe`` when
    given (an argument, or a config's ``[train]`` table), else the one the model was trained
    with (``model.metadata["train_config"]``), else its architecture's recipe in the zoo.

    Raises
    ------
    ConfigError
        None of the three exists (an imported model has no recipe: give a ``[train]`` table),
        or ``recipe`` is bad.
    """
    if recipe is not None:
        if not isinstance(recipe, dict):
            raise TypeError(f"recipe must be a dict of TrainConfig fields, got "
                            f"{type(recipe).__name__}")
        return {k: v for k, v in check_recipe(recipe).items() if k != "seed"}
    meta = getattr(model, "metadata", {}) or {}
    cfg = meta.get("train_config")
    if isinstance(cfg, dict):
        return {k: v for k, v in cfg.items() if k != "seed"}
    if model.name in RECIPES:
        return dict(RECIPES[model.name])
    raise ConfigError(f"{model.name}: no training recipe in the model's metadata and none in "
                      "the zoo; add a [train] table to the config (or pass recipe={...}) with "
                      "the TrainConfig fields retraining starts from: lr, batch_size, "
                      "momentum, weight_decay, lr_policy")


__all__ = ["split_data", "check_recipe", "training_recipe"]
