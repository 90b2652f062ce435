"""SGD update rule, masks and ties through real training, learning-rate schedules, configs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dc_engine import kernels
from dc_engine.core.layers import Dense, ReLU
from dc_engine.core.losses import softmax_cross_entropy
from dc_engine.core.model import Model
from dc_engine.core.optim import SGD, LRSchedule
from dc_engine.core.ties import Tie
from dc_engine.core.train import TrainConfig, fit
from dc_engine.kernels import reference


def _dataset(rng, n=24, features=6, classes=3):
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    return x, y


# ----------------------------------------------------------------------------- SGD rule


def test_sgd_update_matches_formula_over_three_steps(rng):
    layer = Dense(4, 3, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(3)
    model = Model([layer], input_shape=(4,))
    momentum, decay = 0.9, 0.05
    opt = SGD(momentum=momentum, weight_decay=decay)
    w = {k: p.copy() for k, p in layer.params.items()}
    v = {k: np.zeros_like(p) for k, p in layer.params.items()}
    for lr in (0.1, 0.05, 0.02):
        g = {k: rng.standard_normal(p.shape) for k, p in layer.params.items()}
        for k in g:
            layer.grads[k][...] = g[k]
        opt.step(model, lr)
        for k in w:
            wd = decay if k == "W" else 0.0  # biases are not decayed
            v[k] = momentum * v[k] - lr * (g[k] + wd * w[k])
            w[k] = w[k] + v[k]
            np.testing.assert_allclose(layer.params[k], w[k], rtol=1e-13, atol=1e-15, err_msg=k)
    # With decay on the bias too the result would differ: the check can tell them apart.
    assert np.max(np.abs(decay * w["b"])) > 1e-3


@pytest.mark.parametrize("kwargs", [
    {"momentum": 1.0}, {"momentum": -0.1}, {"weight_decay": -1e-4}, {"weight_decay": np.inf},
])
def test_sgd_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        SGD(**kwargs)


@settings(max_examples=40)
@given(n=st.integers(0, 40), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1), masked=st.booleans(),
       lr=st.floats(0.0, 1.0), momentum=st.floats(0.0, 0.99), decay=st.floats(0.0, 0.1))
def test_sgd_kernels_equal_reference(n, dtype, seed, masked, lr, momentum, decay):
    # The fused update kernels (kernels/sgd.py) against their NumPy twins.
    rng = np.random.default_rng(seed)
    w, g, v = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    mask = rng.random(n) < 0.6
    outs = []
    for impl in (kernels, reference):
        wk, vk = w.copy(), v.copy()
        if masked:
            impl.sgd_momentum_masked(wk, g.copy(), vk, mask.copy(), lr, momentum, decay)
        else:
            impl.sgd_momentum(wk, g.copy(), vk, lr, momentum, decay)
        assert wk.dtype == dtype and vk.dtype == dtype
        outs.append((wk, vk))
    (w1, v1), (w2, v2) = outs
    eps = np.finfo(dtype).eps
    scale = float(np.abs(np.concatenate([w, v, g, w1, v1])).max()) if n else 0.0
    np.testing.assert_allclose(w1, w2, rtol=4 * eps, atol=4 * eps * scale)
    np.testing.assert_allclose(v1, v2, rtol=4 * eps, atol=4 * eps * scale)
    want_v = momentum * v.astype(np.float64) - lr * (g + decay * w.astype(np.float64))
    if masked:
        want_v[~mask] = 0.0
        for a in (w1, v1, w2, v2):
            np.testing.assert_array_equal(a[~mask], np.zeros_like(a[~mask]))
            assert not np.signbit(a[~mask]).any()
    np.testing.assert_allclose(v1, want_v, rtol=4 * eps, atol=4 * eps * scale)


def test_sgd_rejects_masks_that_are_not_bool_or_misshaped(rng):
    layer = Dense(3, 2, rng=rng)
    model = Model([layer], input_shape=(3,))
    for bad in (np.ones((2, 3), dtype=np.uint8), np.ones((3, 2), dtype=bool)):
        layer.masks["W"] = bad
        with pytest.raises(ValueError, match="mask"):
            SGD().step(model, 0.1)


# ----------------------------------------------------------------------------- masks


def _masked_model(seed, mask1, mask2):
    rng = np.random.default_rng(seed)
    model = Model([Dense(6, 5, rng=rng), ReLU(), Dense(5, 3, rng=rng)], input_shape=(6,))
    for layer, mask in ((model.layers[0], mask1), (model.layers[2], mask2)):
        layer.masks["W"] = mask
        # Pruning by multiplication leaves -0.0 at negative pruned weights.
        layer.set_param("W", layer.params["W"] * mask)
    return model


@settings(max_examples=25)
@given(seed=st.integers(0, 2**16),
       mask1=hnp.arrays(np.bool_, (5, 6)),
       mask2=hnp.arrays(np.bool_, (3, 5)))
def test_pruned_weights_stay_zero_through_fit(seed, mask1, mask2):
    model = _masked_model(seed, mask1, mask2)
    before = {layer.name: layer.params["W"].copy() for layer in model.layers if layer.params}
    x, y = _dataset(np.random.default_rng(seed + 1))
    opt = SGD(momentum=0.9, weight_decay=5e-4)
    config = TrainConfig(epochs=3, batch_size=8, lr=0.1, seed=seed)
    fit(model, x, y, config, optimizer=opt, progress=False)
    for layer in (model.layers[0], model.layers[2]):
        w, mask = layer.params["W"], layer.masks["W"]
        pruned = w[~mask]
        np.testing.assert_array_equal(pruned, np.zeros_like(pruned))
        # +0.0 exactly, byte for byte (not -0.0).
        assert not np.signbit(pruned).any(), f"{layer.name}: pruned weights hold -0.0"
        kept_before, kept_after = before[layer.name][mask], w[mask]
        assert np.all(kept_after != kept_before), f"{layer.name}: some kept weights never moved"
        velocity = opt.velocity[(layer.name, "W")]
        np.testing.assert_array_equal(velocity[~mask], np.zeros_like(velocity[~mask]))
        assert np.isfinite(w).all()


def test_masked_entries_ignore_their_gradient(rng):
    # One direct step: a pruned entry with a huge gradient still ends at exactly +0.0.
    layer = Dense(3, 2, rng=rng, dtype=np.float64)
    model = Model([layer], input_shape=(3,))
    mask = np.array([[True, False, True], [False, True, True]])
    layer.masks["W"] = mask
    layer.params["W"][~mask] = -0.0
    layer.grads["W"][...] = 1e3
    opt = SGD(momentum=0.9, weight_decay=0.1)
    opt.step(model, 0.5)
    w = layer.params["W"]
    assert (w[~mask] == 0).all() and not np.signbit(w[~mask]).any()
    assert (opt.velocity[(layer.name, "W")][~mask] == 0).all()
    assert (w[mask] < -100).all()


# ----------------------------------------------------------------------------- ties


class SharedWeights(Tie):
    """W = codebook[idx]: the gradient of a centroid is the sum over its weights (DC Eq. 3)."""

    def __init__(self, codebook: np.ndarray, idx: np.ndarray):
        self.codebook = codebook
        self.idx = idx

    def trainables(self):
        return {"codebook": self.codebook}

    def backward(self, grad):
        sums = np.bincount(self.idx.ravel(), weights=grad.ravel(), minlength=self.codebook.size)
        return {"codebook": sums}

    def apply(self, param):
        param[...] = self.codebook[self.idx]


def _tied_model(rng, dtype):
    layer = Dense(6, 3, rng=rng, dtype=dtype)
    model = Model([layer], input_shape=(6,))
    codebook = np.array([-0.3, 0.05, 0.4], dtype=dtype)
    idx = rng.integers(0, 3, size=layer.params["W"].shape)
    idx.ravel()[:3] = [0, 1, 2]  # every centroid is used
    tie = SharedWeights(codebook, idx)
    layer.ties["W"] = tie
    tie.apply(layer.params["W"])
    return model, layer, tie


def test_tied_weights_keep_codebook_values_through_fit(rng):
    model, layer, tie = _tied_model(rng, np.float32)
    start = tie.codebook.copy()
    x, y = _dataset(rng)
    fit(model, x, y, TrainConfig(epochs=3, batch_size=8, lr=0.1, seed=1), progress=False)
    w = layer.params["W"]
    np.testing.assert_array_equal(w, tie.codebook[tie.idx])
    assert set(np.unique(w)) <= set(tie.codebook.tolist())
    assert np.all(tie.codebook != start)


def test_tied_codebook_moves_along_summed_gradient(rng):
    model, layer, tie = _tied_model(rng, np.float64)
    x, y = _dataset(rng, n=8)
    x = x.astype(np.float64)
    lr = 0.1
    # Manual step on a copy: gradient of the mean loss over the one full batch.
    ref = copy.deepcopy(model)
    _, dlogits = softmax_cross_entropy(ref.forward(x, train=True), y)
    ref.zero_grad()
    ref.backward(dlogits)
    g_w = ref.layers[0].grads["W"]
    g_b = ref.layers[0].grads["b"]
    summed = np.bincount(tie.idx.ravel(), weights=g_w.ravel(), minlength=3)
    codebook0, b0 = tie.codebook.copy(), layer.params["b"].copy()

    config = TrainConfig(epochs=1, batch_size=8, lr=lr, lr_policy="fixed", momentum=0.9,
                         weight_decay=0.01, seed=0)
    fit(model, x, y, config, progress=False)

    assert np.all(np.abs(summed) > 1e-6)
    # First step: zero momentum, no decay on a tie's codebook (Tie.weight_decay is False).
    np.testing.assert_allclose(tie.codebook, codebook0 - lr * summed, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(np.sign(tie.codebook - codebook0), -np.sign(summed))
    np.testing.assert_allclose(layer.params["b"], b0 - lr * g_b, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(layer.params["W"], tie.codebook[tie.idx])


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("it", [0, 1, 7, 1000])
def test_lr_fixed(it):
    assert LRSchedule("fixed", base_lr=0.03)(it) == pytest.approx(0.03, rel=1e-15)


@pytest.mark.parametrize("it,want", [(0, 0.1), (2, 0.1), (3, 0.05), (5, 0.05), (6, 0.025),
                                     (9, 0.0125)])
def test_lr_step(it, want):
    assert LRSchedule("step", base_lr=0.1, gamma=0.5, step_size=3)(it) == pytest.approx(
        want, rel=1e-12)


@pytest.mark.parametrize("it,want", [
    (0, 0.01),
    (1, 0.01 * 1.0001 ** -0.75),
    (10000, 0.005946035575013605),  # 0.01 * 2 ** -0.75
    (30000, 0.0035355339059327377),  # 0.01 * 4 ** -0.75
])
def test_lr_inv_caffe_lenet(it, want):
    schedule = LRSchedule("inv", base_lr=0.01, gamma=1e-4, power=0.75)
    assert schedule(it) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("kwargs", [
    {"policy": "cosine"}, {"base_lr": -0.01}, {"base_lr": float("nan")}, {"gamma": -1.0},
    {"step_size": 0},
])
def test_lr_schedule_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        LRSchedule(**kwargs)


# ----------------------------------------------------------------------------- TrainConfig


@pytest.mark.parametrize("kwargs,word", [
    ({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"),
    ({"momentum": 1.0}, "momentum"), ({"lr_policy": "cosine"}, "policy"),
    ({"augment_shift": -1}, "augment_shift"), ({"step_epochs": 0}, "step_epochs"),
    ({"batch_size": 2.5}, "batch_size"),
])
def test_train_config_rejects_bad_settings(kwargs, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**kwargs)


def test_train_config_step_schedule_counts_epochs():
    schedule = TrainConfig(lr=0.1, lr_policy="step", gamma=0.1, step_epochs=2).schedule(5)
    assert schedule(9) == pytest.approx(0.1)
    assert schedule(10) == pytest.approx(0.01)
