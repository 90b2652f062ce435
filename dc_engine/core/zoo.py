"""The two networks of the paper's MNIST experiments (Deep Compression Table 1)."""

from __future__ import annotations

import numpy as np

from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from .model import Model


def lenet_300_100(seed: int = 0, dtype=np.float32) -> Model:
    """LeNet-300-100: fully connected 784-300-100-10 with ReLU (266,610 parameters)."""
    rng = np.random.default_rng(seed)
    return Model([
        Flatten(name="flatten"),
        Dense(784, 300, rng=rng, dtype=dtype, name="ip1"), ReLU(name="relu1"),
        Dense(300, 100, rng=rng, dtype=dtype, name="ip2"), ReLU(name="relu2"),
        Dense(100, 10, rng=rng, dtype=dtype, name="ip3"),
    ], input_shape=(1, 28, 28), name="lenet-300-100")


def lenet5(seed: int = 0, dtype=np.float32) -> Model:
    """Caffe's LeNet ("LeNet-5-Caffe"): conv 20@5x5, pool 2, conv 50@5x5, pool 2, FC 800-500,
    ReLU, FC 500-10. No ReLU after the convolutions (431,080 parameters)."""
    rng = np.random.default_rng(seed)
    return Model([
        Conv2D(1, 20, 5, rng=rng, dtype=dtype, name="conv1"), MaxPool2D(2, 2, name="pool1"),
        Conv2D(20, 50, 5, rng=rng, dtype=dtype, name="conv2"), MaxPool2D(2, 2, name="pool2"),
        Flatten(name="flatten"),
        Dense(800, 500, rng=rng, dtype=dtype, name="ip1"), ReLU(name="relu1"),
        Dense(500, 10, rng=rng, dtype=dtype, name="ip2"),
    ], input_shape=(1, 28, 28), name="lenet-5")


ARCHITECTURES = {"lenet-300-100": lenet_300_100, "lenet-5": lenet5}
"""Name -> constructor, for the CLI and for files that name their architecture."""



RECIPES = {
    "lenet-300-100": {"epochs": 50, "batch_size": 64, "lr": 0.01, "lr_policy": "step",
                      "gamma": 0.1, "step_epochs": 20, "momentum": 0.9, "weight_decay": 5e-4,
                      "augment_shift": 1},
    "lenet-5": {"epochs": 30, "batch_size": 64, "lr": 0.01, "lr_policy": "step",
                "gamma": 0.1, "step_epochs": 12, "momentum": 0.9, "weight_decay": 5e-4,
                "augment_shift": 2},
}
"""Baseline training recipes (TrainConfig fields), chosen on the validation split; README
gives the runs that chose them."""
__all__ = ["lenet_300_100", "lenet5", "ARCHITECTURES", "RECIPES"]
