"""The paper's ImageNet networks (dc_engine.core.zoo.alexnet, vgg16): shapes at full size, and
a forward and backward pass of reduced versions."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from dc_engine import CompressedMatrix
from dc_engine.core import zoo

ALEXNET = {  # Caffe's bvlc_alexnet deploy.prototxt: W shapes (grouped convs: in / 2)
    "conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
    "fc7": (4096, 4096), "fc8": (1000, 4096)}


def _shapes(model) -> dict:
    return {layer.name: layer.params["W"].shape for layer in model.weighted_layers()}


def test_full_size_alexnet_and_vgg16_have_the_published_shapes():
    model = zoo.alexnet()
    assert _shapes(model) == ALEXNET
    assert model.num_params() == 60_965_224 and model.output_shape() == (1000,)
    assert [layer.type_name for layer in model.layers].count("LocalResponseNorm") == 2
    del model
    gc.collect()
    model = zoo.vgg16()
    shapes = _shapes(model)
    assert model.num_params() == 138_357_544 and model.output_shape() == (1000,)
    assert shapes["conv1_1"] == (64, 3, 3, 3) and shapes["conv5_3"] == (512, 512, 3, 3)
    assert shapes["fc6"] == (4096, 25088) and shapes["fc8"] == (1000, 4096)
    assert len(shapes) == 16


@pytest.mark.parametrize("make, size", [(zoo.alexnet, 67), (zoo.vgg16, 32)])
def test_reduced_versions_run_forward_and_backward(make, size, rng):
    model = make(seed=1, input_size=size, num_classes=10, width=1 / 16)
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    y = model.forward(x, train=True)
    assert y.shape == (2, 10) and np.isfinite(y).all()
    model.zero_grad()
    dx = model.backward(rng.standard_normal(y.shape).astype(np.float32), input_grad=True)
    assert dx.shape == x.shape and np.isfinite(dx).all()
    for layer in model.weighted_layers():
        assert np.isfinite(layer.grads["W"]).all() and np.abs(layer.grads["W"]).sum() > 0
    # and with compressed weights (inference): the decoded model's outputs within rounding,
    # at batch 2 and at batch 1
    for layer in model.weighted_layers():
        w = np.array(layer.params["W"]).reshape(layer.params["W"].shape[0], -1)
        layer.set_param("W", CompressedMatrix.from_codes(
            np.arange(1, w.size + 1, dtype=np.uint16).reshape(w.shape) % 255 + 1,
            np.concatenate([[0.0], np.linspace(-0.05, 0.05, 255)]).astype(np.float32),
            index_bits=4))
    out = model.forward(x)
    dense = model.to_dense().forward(x)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out, dense, rtol=1e-4, atol=1e-4 * np.abs(dense).max())
    np.testing.assert_allclose(model.forward(x[:1]), dense[:1], rtol=1e-4,
                               atol=1e-4 * np.abs(dense).max())


@pytest.mark.parametrize("make", [zoo.alexnet, zoo.vgg16])
def test_an_input_too_small_for_the_network_is_refused(make):
    with pytest.raises(ValueError, match="does not fit|too small|fit"):
        make(input_size=20 if make is zoo.alexnet else 16, width=1 / 16)
