"""The training loop: determinism, learning, evaluation, augmentation and divergence."""

from __future__ import annotations

import numpy as np
import pytest

from dc_engine.core.layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU
from dc_engine.core.model import Model
from dc_engine.core.train import TrainConfig, evaluate, fit


def _blobs(rng, n_per_class=20, features=6, classes=3, spread=0.3):
    """Well separated Gaussian blobs, float32 inputs and int64 labels."""
    centres = 2.0 * np.eye(classes, features)
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, features))
                        for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    return x, y


def _mlp(init_seed=0, dropout=0.2):
    rng = np.random.default_rng(init_seed)
    return Model([Dense(6, 8, rng=rng), ReLU(), Dropout(dropout), Dense(8, 3, rng=rng)],
                 input_shape=(6,), name="mlp")


def _params(model):
    return [w.copy() for _, _, w in model.parameters()]


def test_fit_is_deterministic_for_a_seed(rng):
    x, y = _blobs(rng)
    config = TrainConfig(epochs=3, batch_size=8, lr=0.05, seed=11)
    runs = []
    for _ in range(2):
        model = _mlp()
        history = fit(model, x, y, config, progress=False)
        runs.append((_params(model), [rec["loss"] for rec in history.epochs]))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]

    other = _mlp()
    fit(other, x, y, TrainConfig(epochs=3, batch_size=8, lr=0.05, seed=12), progress=False)
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0][0], _params(other)))


def test_fit_seeds_dropout_from_the_config_seed(rng):
    x, y = _blobs(rng)
    states = []
    for seed in (11, 11, 12):
        model = _mlp()
        fit(model, x, y, TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=seed), progress=False)
        states.append(model.layers[2].rng.bit_generator.state["state"]["state"])
    assert states[0] == states[1]
    assert states[0] != states[2]


def test_fit_lowers_the_loss_on_separable_data(rng):
    x, y = _blobs(rng)
    model = _mlp(dropout=0.0)
    start = evaluate(model, x, y)
    config = TrainConfig(epochs=15, batch_size=10, lr=0.1, lr_policy="fixed", seed=0)
    history = fit(model, x, y, config, x_val=x, y_val=y, progress=False)
    end = evaluate(model, x, y)
    assert len(history.epochs) == 15
    assert history.last["epoch"] == 15
    assert history.last["loss"] < history.epochs[0]["loss"]
    assert end["loss"] < 0.3 * start["loss"]
    assert end["error"] <= 0.05
    assert history.last["val_error"] == pytest.approx(end["error"])
    assert history.last["val_loss"] == pytest.approx(end["loss"], rel=1e-6)


def test_evaluate_hand_made_case():
    layer = Dense(2, 2, dtype=np.float64)
    layer.set_param("W", np.eye(2))
    layer.set_param("b", np.zeros(2))
    model = Model([layer], input_shape=(2,))  # logits = x
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    y = np.array([0, 0, 0, 1, 1])  # predictions 0, 1, 0, 1, 0: two of five wrong
    out = evaluate(model, x, y, batch_size=2)
    assert out["n"] == 5
    assert out["error"] == pytest.approx(0.4)
    assert out["accuracy"] == pytest.approx(0.6)
    want = np.mean(np.logaddexp(x[:, 0], x[:, 1]) - x[np.arange(5), y])
    assert out["loss"] == pytest.approx(want, rel=1e-12)


def test_evaluate_rejects_bad_inputs():
    model = Model([Dense(2, 2)], input_shape=(2,))
    with pytest.raises(ValueError):
        evaluate(model, np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError):
        evaluate(model, np.zeros((3, 2)), np.zeros(2, dtype=np.int64))


def test_fit_rejects_bad_inputs(rng):
    model = _mlp()
    with pytest.raises(ValueError):
        fit(model, np.zeros((0, 6), np.float32), np.zeros(0, np.int64), TrainConfig(),
            progress=False)
    with pytest.raises(ValueError):
        fit(model, np.zeros((4, 6), np.float32), np.zeros(3, np.int64), TrainConfig(),
            progress=False)


class Spy(Layer):
    """Identity layer that records every training batch it sees."""

    type_name = "Spy"

    def __init__(self):
        super().__init__("spy")
        self.seen = []

    def forward(self, x, train=False):
        if train:
            self.seen.append(np.array(x, copy=True))
        return x

    def backward(self, dy, need_dx=True):
        return dy if need_dx else None


def _tiny_convnet():
    rng = np.random.default_rng(0)
    return Model([Spy(), Conv2D(1, 2, 3, rng=rng), MaxPool2D(2), Flatten(),
                  Dense(8, 3, rng=rng)], input_shape=(1, 6, 6), name="tiny-conv")


def _shifted(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = (
        img[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)])
    return out


def test_fit_with_shift_augmentation(rng):
    x = rng.random((24, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=24)
    results = {}
    for shift in (0, 1):
        model = _tiny_convnet()
        config = TrainConfig(epochs=2, batch_size=8, lr=0.05, seed=3, augment_shift=shift)
        history = fit(model, x, y, config, progress=False)
        assert len(history.epochs) == 2 and np.isfinite(history.last["loss"])
        results[shift] = _params(model)
        for w in results[shift]:
            assert np.isfinite(w).all() and w.dtype == np.float32
        # Every image the model trained on is a training image moved by at most `shift`.
        moves = []
        for img in np.concatenate(model["spy"].seen):
            found = [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
                     for src in x if np.array_equal(img, _shifted(src, dy, dx))]
            assert found, "a training batch holds an image that is no shifted training image"
            moves.append(found[0])
        assert len(moves) == 2 * len(x)
        if shift == 0:
            assert set(moves) == {(0, 0)}
        else:
            assert len(set(moves)) > 1  # the images were really moved, in several directions
    assert any(not np.array_equal(a, b) for a, b in zip(results[0], results[1]))


def test_divergence_raises_naming_the_learning_rate(rng):
    x, y = _blobs(rng)
    model = _mlp(dropout=0.0)
    config = TrainConfig(epochs=20, batch_size=8, lr=1e6, lr_policy="fixed", seed=0)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError) as info:
        fit(model, x, y, config, progress=False)
    message = str(info.value)
    assert "learning rate" in message
    assert "1e+06" in message
