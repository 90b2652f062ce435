"""The networks of the paper: the two of its MNIST experiments (Deep Compression Table 1) and
its two ImageNet ones, AlexNet and VGG-16 (Tables 4 and 5)."""

from __future__ import annotations

import math

import numpy as np

from .layers import Conv2D, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool2D, ReLU
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


def _channels(c: int, width: float, groups: int = 1) -> int:
    """``c * width`` rounded, at least ``groups`` and a multiple of it."""
    return max(groups, round(c * width / groups) * groups)


def _classifier(layers: list, input_shape: tuple, rng, dtype, hidden: int,
                num_classes: int) -> list:
    """fc6, fc7 (ReLU, dropout 0.5 each) and fc8 on top of ``layers``' output."""
    shape = input_shape
    for layer in layers:
        shape = layer.output_shape(shape)
    features = math.prod(shape)
    return layers + [
        Flatten(name="flatten"),
        Dense(features, hidden, rng=rng, dtype=dtype, name="fc6"), ReLU(name="relu6"),
        Dropout(0.5, name="drop6"),
        Dense(hidden, hidden, rng=rng, dtype=dtype, name="fc7"), ReLU(name="relu7"),
        Dropout(0.5, name="drop7"),
        Dense(hidden, num_classes, rng=rng, dtype=dtype, name="fc8"),
    ]


def alexnet(seed: int = 0, dtype=np.float32, input_size: int = 227, num_classes: int = 1000,
            width: float = 1.0) -> Model:
    """Caffe's BVLC AlexNet, the network of Deep Compression's Table 4: five convolutions
    (conv2, conv4 and conv5 in two groups, as on the original two GPUs), local response
    normalisation after conv1 and conv2 (size 5, alpha 1e-4, beta 0.75, k 1: Caffe's), three
    max poolings (3x3, stride 2), fc6-fc8 with dropout; 60,965,224 parameters at the defaults.

    ``input_size``, ``num_classes`` and ``width`` (a factor on every layer's channels and
    units) give smaller versions of the same shape of network, e.g. for tests.
    """
    rng = np.random.default_rng(seed)
    c = [_channels(n, width, 2) for n in (96, 256, 384, 384, 256)]
    convs = [
        Conv2D(3, c[0], 11, stride=4, rng=rng, dtype=dtype, name="conv1"), ReLU(name="relu1"),
        LocalResponseNorm(5, 1e-4, 0.75, 1.0, name="norm1"), MaxPool2D(3, 2, name="pool1"),
        Conv2D(c[0], c[1], 5, padding=2, groups=2, rng=rng, dtype=dtype, name="conv2"),
        ReLU(name="relu2"), LocalResponseNorm(5, 1e-4, 0.75, 1.0, name="norm2"),
        MaxPool2D(3, 2, name="pool2"),
        Conv2D(c[1], c[2], 3, padding=1, rng=rng, dtype=dtype, name="conv3"), ReLU(name="relu3"),
        Conv2D(c[2], c[3], 3, padding=1, groups=2, rng=rng, dtype=dtype, name="conv4"),
        ReLU(name="relu4"),
        Conv2D(c[3], c[4], 3, padding=1, groups=2, rng=rng, dtype=dtype, name="conv5"),
        ReLU(name="relu5"), MaxPool2D(3, 2, name="pool5"),
    ]
    shape = (3, input_size, input_size)
    return Model(_classifier(convs, shape, rng, dtype, _channels(4096, width), num_classes),
                 input_shape=shape, name="alexnet")


VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""VGG-16's convolutions (3x3, padding 1, ReLU), by stage; a 2x2 max pooling ends each."""


def vgg16(seed: int = 0, dtype=np.float32, input_size: int = 224, num_classes: int = 1000,
          width: float = 1.0) -> Model:
    """VGG-16 (configuration D of Simonyan and Zisserman), the network of Deep Compression's
    Table 5: thirteen 3x3 convolutions in five stages, each stage ending in a 2x2 max
    pooling, then fc6-fc8 with dropout; 138,357,544 parameters at the defaults.

    ``input_size``, ``num_classes`` and ``width`` give smaller versions, as for
    :func:`alexnet`.
    """
    rng = np.random.default_rng(seed)
    layers, c_in = [], 3
    for s, stage in enumerate(VGG16_STAGES, 1):
        for i, c in enumerate(stage, 1):
            c_out = _channels(c, width)
            layers += [Conv2D(c_in, c_out, 3, padding=1, rng=rng, dtype=dtype,
                              name=f"conv{s}_{i}"), ReLU(name=f"relu{s}_{i}")]
            c_in = c_out
        layers.append(MaxPool2D(2, 2, name=f"pool{s}"))
    shape = (3, input_size, input_size)
    return Model(_classifier(layers, shape, rng, dtype, _channels(4096, width), num_classes),
                 input_shape=shape, name="vgg16")


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
__all__ = ["lenet_300_100", "lenet5", "alexnet", "vgg16", "VGG16_STAGES", "ARCHITECTURES",
           "RECIPES"]
