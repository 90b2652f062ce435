"""Weight sharing's arithmetic (dc_engine.codecs.codebook) and its tie (dc_engine.core.ties):
k-means and its initialisations, the codebook convention (slot 0 = 0.0, at most 2**b - 1 shared
non-zero values), the centroid gradient of DC Eq. 3 against NumPy and finite differences, and a
weight-shared layer trained through ``fit``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dc_engine.codecs.codebook import (
    centroid_grad,
    dequantize,
    distinct_nonzero,
    init_centroids,
    kmeans_1d,
    quantize_weights,
)
from dc_engine.core.layers import Dense
from dc_engine.core.model import Model
from dc_engine.core.ties import WeightShare
from dc_engine.core.train import TrainConfig, fit
from dc_engine.kernels import reference
from dc_engine.stages.quantize import share_layer

INITS = ["linear", "density", "random"]


def _nearest(values, centroids):
    labels = np.empty(values.size, dtype=np.int32)
    reference.assign_sorted(values, centroids, labels)
    return labels


# ----------------------------------------------------------------------------- init


@pytest.mark.parametrize("k", [1, 2, 7])
def test_linear_init_is_linspace(rng, k):
    x = rng.standard_normal(50)
    np.testing.assert_array_equal(init_centroids(x, k, "linear"),
                                  np.linspace(x.min(), x.max(), k))


@pytest.mark.parametrize("k", [1, 3, 8])
def test_density_init_is_quantiles(rng, k):
    x = rng.standard_normal(50) ** 3
    np.testing.assert_allclose(init_centroids(x, k, "density"),
                               np.quantile(x, (np.arange(k) + 0.5) / k), rtol=0, atol=0)


def test_random_init_draws_values_without_replacement():
    x = np.arange(20.0)
    c = init_centroids(x, 8, "random", np.random.default_rng(5))
    assert np.unique(c).size == 8 and set(c) <= set(x)
    np.testing.assert_array_equal(c, init_centroids(x, 8, "random", np.random.default_rng(5)))
    c = init_centroids(np.array([1.0, 2.0]), 5, "random", np.random.default_rng(0))
    assert c.shape == (5,) and set(c) <= {1.0, 2.0}  # k > n: with replacement


@given(st.integers(1, 200), st.integers(1, 20), st.sampled_from(INITS),
       st.integers(0, 2**32 - 1))
def test_inits_and_kmeans_are_sorted_within_range(n, k, init, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * rng.uniform(0.1, 3)
    for c in (init_centroids(x, k, init, np.random.default_rng(seed)),
              kmeans_1d(x, k, init, np.random.default_rng(seed))[0]):
        assert c.shape == (k,) and c.dtype == np.float64
        assert np.all(np.diff(c) >= 0)
        assert c.min() >= x.min() and c.max() <= x.max()


@pytest.mark.parametrize("bad", [
    dict(values=np.ones(3), k=2, method="kmeans++"),
    dict(values=np.empty(0), k=2, method="linear"),
    dict(values=np.ones(3), k=0, method="linear"),
    dict(values=np.array([1.0, np.nan]), k=1, method="linear"),
])
def test_init_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        init_centroids(**bad)


# ----------------------------------------------------------------------------- kmeans_1d


@given(st.integers(2, 300), st.integers(1, 16), st.sampled_from(INITS),
       st.integers(0, 2**32 - 1))
def test_kmeans_converges_to_a_fixed_point(n, k, init, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_normal(n - n // 4), 3 + rng.standard_normal(n // 4)])
    centroids, labels = kmeans_1d(x, k, init, np.random.default_rng(seed), max_iter=10_000)
    assert labels.dtype == np.int32 and labels.shape == (n,)
    # Each label is the nearest centroid (ties lowest), each used centroid its members' mean.
    np.testing.assert_array_equal(labels, _nearest(x, centroids))
    for j in np.unique(labels):
        np.testing.assert_allclose(centroids[j], x[labels == j].mean(), rtol=1e-12, atol=1e-12)


def test_kmeans_lowers_the_squared_error_of_its_init(rng):
    x = rng.standard_normal(400) ** 3
    c0 = init_centroids(x, 6, "linear")
    c, labels = kmeans_1d(x, 6)
    sse0 = np.sum((x - c0[_nearest(x, c0)]) ** 2)
    assert np.sum((x - c[labels]) ** 2) < sse0


@given(st.lists(st.sampled_from([-2.5, -1.0, 0.25, 0.5, 3.0]), min_size=1, max_size=40),
       st.integers(0, 4), st.sampled_from(INITS))
def test_kmeans_is_exact_with_at_most_k_distinct_values(values, extra, init):
    x = np.array(values)
    k = np.unique(x).size + extra
    centroids, labels = kmeans_1d(x, k, init)
    assert centroids.shape == (k,) and np.all(np.diff(centroids) >= 0)
    np.testing.assert_array_equal(centroids[labels], x)
    np.testing.assert_array_equal(centroids[:np.unique(x).size], np.unique(x))
    np.testing.assert_array_equal(centroids[np.unique(x).size:], x.max())  # padding


def test_kmeans_single_value():
    centroids, labels = kmeans_1d(np.array([0.7]), 4)
    np.testing.assert_array_equal(centroids, [0.7] * 4)
    np.testing.assert_array_equal(labels, [0])
    centroids, labels = kmeans_1d(np.array([-1.5]), 1, "random")
    np.testing.assert_array_equal(centroids, [-1.5])


def test_kmeans_max_iter_zero_is_the_assigned_init(rng):
    x = rng.standard_normal(30)
    c, labels = kmeans_1d(x, 4, max_iter=0)
    np.testing.assert_array_equal(c, np.linspace(x.min(), x.max(), 4))
    np.testing.assert_array_equal(labels, _nearest(x, c))


@pytest.mark.parametrize("kw, exc", [(dict(k=0), ValueError), (dict(k=2.5), TypeError),
                                     (dict(init="forgy"), ValueError),
                                     (dict(max_iter=-1), ValueError), (dict(tol=-1.0), ValueError),
                                     (dict(tol="0"), TypeError)])
def test_kmeans_rejects_bad_settings(kw, exc):
    args = dict(values=np.arange(5.0), k=2) | kw
    with pytest.raises(exc):
        kmeans_1d(**args)


# ----------------------------------------------------------------------------- quantize


def _sparse_weights(shape, density, seed, signs="mixed"):
    """Weights with |w| in [0.1, 1] (bounded away from 0) and exact zeros elsewhere."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.1, 1.0, size=shape)
    if signs == "mixed":
        w *= rng.choice([-1.0, 1.0], size=shape)
    elif signs == "negative":
        w = -w
    w[rng.random(shape) >= density] = 0.0
    return w.astype(np.float32)


small_sparse = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements=st.one_of(st.just(0.0), st.floats(0.125, 1.0, width=32),
                       st.floats(-1.0, -0.125, width=32)),
)


def _check_quantized(w, bits, codebook, idx):
    assert codebook.shape == (2**bits,) and codebook.dtype == np.float32
    assert idx.shape == w.shape and idx.dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert codebook[0] == 0.0 and not np.signbit(codebook[0])
    assert np.all(np.diff(codebook[1:]) >= 0) or not np.any(w)
    shared = dequantize(codebook, idx)
    assert shared.shape == w.shape and shared.dtype == np.float32
    assert distinct_nonzero(shared) <= 2**bits - 1
    assert np.unique(shared).size <= 2**bits
    # The zero pattern, in index space: pruned weights and only they use slot 0.
    np.testing.assert_array_equal(idx == 0, w == 0)
    assert np.all(shared[w == 0] == 0) and not np.signbit(shared[w == 0]).any()
    return shared


@given(small_sparse, st.integers(1, 8))
def test_quantize_small_arrays(w, bits):
    _check_quantized(w, bits, *quantize_weights(w, bits))


@given(st.integers(1, 8), st.integers(1, 3000), st.floats(0.05, 1.0),
       st.sampled_from(["positive", "negative"]), st.sampled_from(INITS),
       st.integers(0, 2**32 - 1))
def test_quantize_keeps_the_zero_pattern_and_at_most_2b_values(bits, n, density, signs, init,
                                                                seed):
    w = _sparse_weights((n,), density, seed, signs)
    codebook, idx = quantize_weights(w, bits, init, np.random.default_rng(seed))
    shared = _check_quantized(w, bits, codebook, idx)
    # One-signed weights in [0.1, 1]: every centroid is too, so no shared weight is zero.
    np.testing.assert_array_equal(shared != 0, w != 0)
    if np.any(w):
        assert 0.1 - 1e-6 <= np.abs(codebook[1:]).min() <= np.abs(codebook[1:]).max() <= 1.0


@pytest.mark.parametrize("bits", [9, 12, 16])
def test_quantize_wide_indices_are_uint16(bits):
    w = _sparse_weights((7, 9), 0.7, bits)
    codebook, idx = quantize_weights(w, bits)
    shared = _check_quantized(w, bits, codebook, idx)
    np.testing.assert_array_equal(shared, w)  # fewer weights than centroids: exact


def test_quantize_one_bit_has_one_centroid():
    w = np.array([[0.0, 0.2, 0.4], [0.6, 0.0, 0.0]], dtype=np.float32)
    codebook, idx = quantize_weights(w, 1)
    np.testing.assert_allclose(codebook, [0.0, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(idx, [[0, 1, 1], [1, 0, 0]])


def test_quantize_all_zero_weights():
    codebook, idx = quantize_weights(np.zeros((3, 4), dtype=np.float32), 4)
    np.testing.assert_array_equal(codebook, np.zeros(16, dtype=np.float32))
    np.testing.assert_array_equal(idx, np.zeros((3, 4), dtype=np.uint8))


@pytest.mark.parametrize("bits, exc", [(0, ValueError), (17, ValueError), (-1, ValueError),
                                       (2.0, TypeError), (True, TypeError), ("4", TypeError),
                                       (None, TypeError)])
def test_quantize_rejects_bad_bits(bits, exc):
    with pytest.raises(exc, match="bits"):
        quantize_weights(np.ones(4, dtype=np.float32), bits)


def test_quantize_rejects_integer_weights():
    with pytest.raises(TypeError):
        quantize_weights(np.ones(4, dtype=np.int32), 2)


# ----------------------------------------------------------------------------- gradient


def test_centroid_grad_is_the_sum_of_member_gradients(rng):
    idx = rng.integers(0, 8, size=(5, 7)).astype(np.uint8)
    grad = rng.standard_normal((5, 7))
    want = np.bincount(idx.ravel(), grad.ravel(), minlength=8)
    want[0] = 0.0
    got = centroid_grad(grad, idx, 8)
    assert got.shape == (8,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    got32 = centroid_grad(grad.astype(np.float32), idx, 8)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-6)


def test_centroid_grad_sums_not_averages():
    idx = np.array([1, 2, 2, 2, 0, 0], dtype=np.uint8)
    grad = np.array([1.0, 1.0, 1.0, 1.0, 5.0, 5.0])
    got = centroid_grad(grad, idx, 4)
    np.testing.assert_array_equal(got, [0.0, 1.0, 3.0, 0.0])  # the mean would give 1 for k=2


def test_centroid_grad_rejects_bad_input():
    with pytest.raises(ValueError):
        centroid_grad(np.ones(3), np.array([0, 1, 4], dtype=np.uint8), 4)
    with pytest.raises(ValueError):
        centroid_grad(np.ones(4), np.array([0, 1, 2], dtype=np.uint8), 4)
    with pytest.raises(TypeError):
        centroid_grad(np.ones(3), np.array([0.0, 1.0, 2.0]), 4)


def test_weight_share_codebook_gradient_matches_finite_differences(rng):
    layer = Dense(5, 4, rng=rng, dtype=np.float64)
    w = layer.params["W"]
    w[rng.random(w.shape) < 0.3] = 0.0  # pruned weights: slot 0
    pruned = w == 0
    tie = share_layer(layer, bits=2)
    assert layer.ties["W"] is tie and tie.codebook.dtype == np.float64
    np.testing.assert_array_equal(w, tie.codebook[tie.idx])
    assert set(np.unique(tie.idx)) == {0, 1, 2, 3}  # every centroid has members
    x = rng.standard_normal((6, 5))
    r = rng.standard_normal((6, 4))

    def loss():
        tie.apply(layer.params["W"])
        return float(np.sum(layer.forward(x) * r))

    layer.zero_grad()
    layer.forward(x, train=True)
    layer.backward(r)
    analytic = tie.backward(layer.grads["W"])["codebook"]
    h = 1e-5
    numeric = np.zeros_like(analytic)
    for k in range(tie.codebook.size):
        c = tie.codebook[k]
        tie.codebook[k] = c + h
        up = loss()
        tie.codebook[k] = c - h
        down = loss()
        tie.codebook[k] = c
        numeric[k] = (up - down) / (2 * h)
    loss()
    for k in range(1, tie.codebook.size):
        rel = abs(analytic[k] - numeric[k]) / max(abs(analytic[k]), abs(numeric[k]))
        assert rel < 1e-6, (k, analytic[k], numeric[k])
    assert analytic[0] == 0.0 and abs(numeric[0]) > 1e-3  # slot 0 is held, not insensitive
    assert np.all(layer.params["W"][pruned] == 0)


# ----------------------------------------------------------------------------- the tie


def test_weight_share_validates_its_arrays():
    idx = np.zeros((2, 3), dtype=np.uint8)
    with pytest.raises(TypeError):
        WeightShare(np.zeros(4, dtype=np.int32), idx)
    with pytest.raises(ValueError):
        WeightShare(np.zeros(3, dtype=np.float32), idx)  # not a power of two
    with pytest.raises(ValueError):
        WeightShare(np.array([0.5, 1.0], dtype=np.float32), idx)  # slot 0 not 0.0
    with pytest.raises(TypeError):
        WeightShare(np.zeros(4, dtype=np.float32), idx.astype(np.int64))
    with pytest.raises(ValueError):
        WeightShare(np.zeros(4, dtype=np.float32), idx + 4)  # out of range
    tie = WeightShare(np.zeros(4, dtype=np.float32), idx)
    assert tie.bits == 2 and tie.weight_decay is False
    with pytest.raises(ValueError):
        tie.apply(np.zeros((3, 2), dtype=np.float32))


def test_share_layer_rejects_unknown_parameter(rng):
    with pytest.raises(ValueError, match="no parameter"):
        share_layer(Dense(3, 2, rng=rng), 2, name="V")


def test_fit_trains_the_codebook_and_keeps_shared_values(rng):
    layer = Dense(6, 3, rng=rng, dtype=np.float32)
    mask = rng.random(layer.params["W"].shape) >= 0.4
    layer.params["W"][~mask] = 0.0
    layer.masks["W"] = mask
    model = Model([layer], input_shape=(6,))
    tie = share_layer(layer, bits=2)
    start = tie.codebook.copy()
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=32)
    config = TrainConfig(epochs=3, batch_size=8, lr=0.1, lr_policy="fixed", seed=1)
    fit(model, x, y, config, progress=False)
    w = layer.params["W"]
    np.testing.assert_array_equal(w, tie.codebook[tie.idx])
    assert distinct_nonzero(w) <= 3
    assert np.all(w[~mask] == 0) and not np.signbit(w[~mask]).any()
    assert tie.codebook[0] == 0.0 and not np.signbit(tie.codebook[0])
    assert np.all(tie.codebook[1:] != start[1:])
