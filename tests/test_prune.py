"""Stage 1, magnitude pruning: thresholds and masks against NumPy references, the round
schedule, masked retraining through prune_model, dropout adjustment, the sensitivity scan,
bad configs, and the ``prune`` and ``sensitivity`` commands end to end on a tiny IDX set."""

from __future__ import annotations

import copy
import json
import math

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dc_engine.app.cli import main
from dc_engine.core.layers import Dense, Dropout, Flatten, ReLU
from dc_engine.core.model import Model
from dc_engine.core.train import TrainConfig, evaluate, fit
from dc_engine.core.zoo import lenet_300_100
from dc_engine.io import dense as store
from dc_engine.stages.prune import (
    LayerPrune,
    PruneConfig,
    adjust_dropout,
    kept_mask,
    prune_mask,
    prune_model,
    prune_step,
    quality_threshold,
)
from dc_engine.stages.studies import sensitivity_scan

from _helpers import TINY_KEPT, prune_toml

RECIPE = {"lr": 0.1, "lr_policy": "fixed", "momentum": 0.9, "weight_decay": 5e-4}

float_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
    elements=st.floats(-3.0, 3.0, width=32),
)


def _tiny_model(seed: int, dropout: float | None = None) -> Model:
    """Flatten + Dense(12, 8) + ReLU [+ Dropout] + Dense(8, 3) on (1, 3, 4) inputs."""
    rng = np.random.default_rng(seed)
    layers = [Flatten(name="flatten"), Dense(12, 8, rng=rng, name="fc1"), ReLU(name="relu1")]
    if dropout is not None:
        layers.append(Dropout(dropout, name="drop1"))
    layers.append(Dense(8, 3, rng=rng, name="fc2"))
    return Model(layers, input_shape=(1, 3, 4), name="tiny")


def _tiny_data(seed: int, n: int = 64, n_val: int = 16):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 3, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def _kept_reference(w, kept, mask=None):
    """Naive kept_mask: rank by (-|w|, flat index), keep the first round(kept * n) allowed."""
    mag = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    allowed = np.ones(mag.size, dtype=bool) if mask is None else np.asarray(mask).ravel()
    n_keep = round(kept * mag.size)
    if mask is not None:
        n_keep = min(n_keep, int(allowed.sum()))
    order = sorted(range(mag.size), key=lambda i: (-mag[i], i))
    candidates = [i for i in order if allowed[i]]
    out = np.zeros(mag.size, dtype=bool)
    out[candidates[:n_keep]] = True
    return out.reshape(np.shape(w))


# ---------------------------------------------------------------------- quality_threshold


@given(w=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
                    elements=st.floats(-1e3, 1e3)),
       quality=st.floats(0.0, 10.0))
def test_quality_threshold_is_quality_times_std(w, quality):
    t = quality_threshold(w, quality)
    assert type(t) is float
    assert t == quality * float(np.std(w))


@given(w=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
                    elements=st.floats(-3.0, 3.0, width=32)),
       quality=st.floats(0.0, 10.0))
def test_quality_threshold_of_float32_uses_a_float64_std(w, quality):
    want = quality * float(np.std(w.astype(np.float64)))
    np.testing.assert_allclose(quality_threshold(w, quality), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("quality", [-1e-9, -1.0, math.nan, math.inf, -math.inf])
def test_quality_threshold_rejects_negative_or_non_finite_quality(quality):
    with pytest.raises(ValueError, match="quality must be a finite number >= 0"):
        quality_threshold(np.ones(4, dtype=np.float32), quality)


# ----------------------------------------------------------------------------- prune_mask


@given(w=float_arrays, threshold=st.floats(0.0, 3.0), data=st.data())
def test_prune_mask_equals_numpy_reference(w, threshold, data):
    old = data.draw(st.none() | hnp.arrays(np.bool_, w.shape))
    got = prune_mask(w, threshold, old)
    want = np.abs(w) > threshold
    if old is not None:
        want &= old
    assert got.dtype == np.bool_ and got.shape == w.shape
    np.testing.assert_array_equal(got, want)
    assert not got[w == 0].any(), "an exact zero was kept"


def test_prune_mask_prunes_exact_zeros_at_threshold_zero():
    w = np.array([[0.0, -0.0, 1e-30], [-1e-30, 2.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(prune_mask(w, 0.0),
                                  [[False, False, True], [True, True, False]])


# ------------------------------------------------------------------------------ kept_mask


@settings(max_examples=150)
@given(data=st.data(),
       shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
       ties=st.booleans(),
       kept=st.floats(0.0, 1.0, exclude_min=True))
def test_kept_mask_equals_naive_reference(data, shape, ties, kept):
    # Small integer values force ties (and exact zeros); floats exercise the plain ranking.
    elements = (st.integers(-3, 3).map(float) if ties
                else st.floats(-3.0, 3.0, width=32))
    w = data.draw(hnp.arrays(np.float32, shape, elements=elements))
    old = data.draw(st.none() | hnp.arrays(np.bool_, shape))
    got = kept_mask(w, kept, old)
    want = _kept_reference(w, kept, old)
    assert got.dtype == np.bool_ and got.shape == w.shape
    np.testing.assert_array_equal(got, want)
    n_keep = round(kept * w.size)
    if old is None:
        assert np.count_nonzero(got) == n_keep
    else:
        assert np.count_nonzero(got) == min(n_keep, np.count_nonzero(old))
        assert not (got & ~old).any(), "a pruned entry grew back"


def test_kept_mask_breaks_ties_by_flat_index():
    w = np.array([[1.0, -2.0, 2.0], [-1.0, 2.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(kept_mask(w, 2 / 6), [[False, True, True], [False] * 3])
    np.testing.assert_array_equal(kept_mask(w, 4 / 6), [[True, True, True], [False, True, False]])


def test_kept_mask_size_one_and_empty():
    assert kept_mask(np.array([0.0], dtype=np.float32), 1.0).tolist() == [True]
    assert kept_mask(np.array([5.0], dtype=np.float32), 0.4).tolist() == [False]  # round(0.4)
    assert kept_mask(np.array([5.0]), 1.0, np.array([False])).tolist() == [False]
    empty = kept_mask(np.zeros((0, 3), dtype=np.float32), 0.5)
    assert empty.shape == (0, 3) and empty.dtype == np.bool_


@pytest.mark.parametrize("kept", [0, 0.0, -0.1, 1.0000001, 1.5, math.nan, math.inf, "abc",
                                  None, True])
def test_kept_mask_rejects_fractions_outside_0_1(kept):
    with pytest.raises(ValueError, match=r"kept must be a fraction in \(0, 1\]"):
        kept_mask(np.ones(4, dtype=np.float32), kept)


# ------------------------------------------------------------------------ round schedule


@given(kept=st.floats(0.0, 1.0, exclude_min=True), rounds=st.integers(1, 6))
def test_per_round_kept_is_geometric_and_ends_exactly_at_target(kept, rounds):
    steps = LayerPrune(kept=kept).per_round(rounds)
    assert len(steps) == rounds
    assert all(kind == "kept" for kind, _ in steps)
    values = [v for _, v in steps]
    for r, v in enumerate(values, start=1):
        assert v == pytest.approx(kept ** (r / rounds), rel=1e-12)
    assert values[-1] == kept  # exactly the target
    assert values == sorted(values, reverse=True)


def test_per_round_kept_removes_the_same_share_each_round():
    values = [v for _, v in LayerPrune(kept=0.001).per_round(3)]
    np.testing.assert_allclose(values, [0.1, 0.01, 0.001], rtol=1e-12)


@given(quality=st.floats(0.0, 5.0), rounds=st.integers(1, 6))
def test_per_round_quality_is_linear(quality, rounds):
    steps = LayerPrune(quality=quality).per_round(rounds)
    assert [k for k, _ in steps] == ["quality"] * rounds
    np.testing.assert_allclose([v for _, v in steps],
                               [quality * r / rounds for r in range(1, rounds + 1)], rtol=1e-15)
    assert steps[-1][1] == pytest.approx(quality, rel=1e-15)


def test_per_round_lists_give_one_value_per_round():
    assert LayerPrune(kept=[0.5, 0.2]).per_round(2) == [("kept", 0.5), ("kept", 0.2)]
    assert LayerPrune(quality=(0.7, 1.4, 2)).per_round(3) == [
        ("quality", 0.7), ("quality", 1.4), ("quality", 2.0)]
    with pytest.raises(ValueError, match="kept lists 2 values for 3 rounds"):
        LayerPrune(kept=[0.5, 0.2]).per_round(3)


# ------------------------------------------------------------------- model-level pruning


@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), kept1=st.floats(0.02, 1.0), kept2=st.floats(0.02, 1.0))
def test_prune_model_keeps_exact_counts_and_pruned_weights_stay_zero(seed, kept1, kept2):
    model = _tiny_model(seed)
    x, y, xv, yv = _tiny_data(seed + 1)
    kept = {"fc1": kept1, "fc2": kept2}
    config = PruneConfig(layers={n: {"kept": k} for n, k in kept.items()}, rounds=2,
                         retrain={"epochs": 2, "batch_size": 16})
    dense = {n: model[n].params["W"].copy() for n in kept}
    round1 = prune_step(copy.deepcopy(model), config, 0)  # the first round, on a copy

    report = prune_model(model, (x, y, xv, yv), config, recipe=RECIPE, progress=False)

    for name, k in kept.items():
        w, mask = model[name].params["W"], model[name].masks["W"]
        assert mask.dtype == np.bool_ and mask.shape == w.shape
        n = w.size
        assert np.count_nonzero(round1[name]) == round(math.sqrt(k) * n)
        assert np.count_nonzero(w) == round(k * n), name
        np.testing.assert_array_equal(w == 0, ~mask)
        assert not np.signbit(w[~mask]).any(), f"{name}: pruned weights hold -0.0"
        assert not (mask & ~round1[name]).any(), f"{name}: round-2 mask not inside round 1's"
        assert np.all(w[mask] != dense[name][mask]), f"{name}: kept weights never retrained"
        fractions = [r["kept"][name] for r in report["rounds"]]
        assert fractions == [round(math.sqrt(k) * n) / n, round(k * n) / n]
        stats = next(s for s in report["layers"] if s["name"] == name)
        assert stats == {"name": name, "weights": n, "kept": round(k * n),
                         "kept_fraction": round(k * n) / n}
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert all(len(r["history"]) == 2 for r in report["rounds"])
    assert report["train_config"]["lr"] == pytest.approx(RECIPE["lr"] * config.lr_scale)
    assert report["train_config"]["batch_size"] == 16


def test_prune_step_by_quality_is_nested_and_matches_reference(rng):
    model = _tiny_model(3)
    config = PruneConfig(layers={"fc1": LayerPrune(quality=1.0)}, rounds=2)
    w0 = model["fc1"].params["W"].copy()
    m1 = prune_step(model, config, 0)["fc1"]
    np.testing.assert_array_equal(m1, np.abs(w0) > 0.5 * np.std(w0.astype(np.float64)))
    w1 = model["fc1"].params["W"].copy()
    np.testing.assert_array_equal(w1, np.where(m1, w0, np.float32(0.0)))
    # Move the kept weights (as retraining would) and prune again: the std includes the zeros.
    scale = rng.uniform(0.5, 1.5, size=int(m1.sum())).astype(np.float32)
    model["fc1"].params["W"][m1] *= scale
    w1 = model["fc1"].params["W"].copy()
    m2 = prune_step(model, config, 1)["fc1"]
    np.testing.assert_array_equal(m2, (np.abs(w1) > np.std(w1.astype(np.float64))) & m1)
    assert m2.sum() < m1.sum()
    assert model["fc1"].masks["W"] is m2
    w2 = model["fc1"].params["W"]
    np.testing.assert_array_equal(w2 == 0, ~m2)
    assert not np.signbit(w2[~m2]).any()
    assert "fc2" not in m1 and not model["fc2"].masks  # layers not named are not pruned


def test_adjust_dropout_follows_eq2():
    model = _tiny_model(0, dropout=0.5)
    adjust_dropout(model, {"fc2": 1.0}, {"fc2": 0.25})
    assert model["drop1"].rate == pytest.approx(0.25, rel=1e-15)  # 0.5 * sqrt(0.25)
    adjust_dropout(model, {"fc1": 1.0}, {"fc1": 0.25})  # fc1 is not after the dropout
    assert model["drop1"].rate == pytest.approx(0.25, rel=1e-15)


def test_prune_model_lowers_dropout_over_rounds():
    model = _tiny_model(0, dropout=0.5)
    x, y, xv, yv = _tiny_data(1)
    config = PruneConfig(layers={"fc2": {"kept": 0.25}}, rounds=2,
                         retrain={"epochs": 1, "batch_size": 16})
    prune_model(model, (x, y, xv, yv), config, recipe=RECIPE, progress=False)
    assert np.count_nonzero(model["fc2"].params["W"]) == 6  # 0.25 * 24
    assert model["drop1"].rate == pytest.approx(0.25, rel=1e-12)


# ---------------------------------------------------------------------------- sensitivity


@pytest.fixture(scope="module")
def trained_tiny():
    model = _tiny_model(7)
    x, y, xv, yv = _tiny_data(8)
    fit(model, x, y, TrainConfig(epochs=5, batch_size=16, lr=0.1, lr_policy="fixed"),
        progress=False)
    return model, xv, yv


def test_sensitivity_scan_leaves_weights_bit_identical(trained_tiny):
    model, xv, yv = trained_tiny
    before = {(layer.name, k): w.tobytes() for layer, k, w in model.parameters()}
    fractions = (1.0, 0.5, 0.2, 0.05)
    scan = sensitivity_scan(model, xv, yv, fractions=fractions)
    assert {(layer.name, k): w.tobytes() for layer, k, w in model.parameters()} == before
    assert scan["fractions"] == list(fractions)
    assert scan["baseline"] == evaluate(model, xv, yv)["error"]
    assert list(scan["errors"]) == ["fc1", "fc2"]
    for name, errs in scan["errors"].items():
        assert len(errs) == len(fractions)
        assert errs[0] == scan["baseline"], f"{name}: keeping everything changed the error"
        assert all(0.0 <= e <= 1.0 for e in errs)
        # Each entry is that layer alone pruned by kept_mask, without retraining.
        pruned = copy.deepcopy(model)
        w = pruned[name].params["W"]
        w[~kept_mask(w, 0.2)] = 0.0
        assert errs[2] == evaluate(pruned, xv, yv)["error"]


def test_sensitivity_scan_restores_weights_after_a_bad_fraction(trained_tiny):
    model, xv, yv = trained_tiny
    before = model["fc1"].params["W"].copy()
    with pytest.raises(ValueError, match="fraction"):
        sensitivity_scan(model, xv, yv, fractions=(1.0, 0.0))
    np.testing.assert_array_equal(model["fc1"].params["W"], before)
    scan = sensitivity_scan(model, xv, yv, fractions=(0.5,), layers=["fc2"])
    assert list(scan["errors"]) == ["fc2"]


# ---------------------------------------------------------------------------- bad configs


def test_check_model_names_unknown_layer_and_lists_prunable_ones():
    model = lenet_300_100()
    with pytest.raises(ValueError, match=r"unknown layer 'ip9'.*\['ip1', 'ip2', 'ip3'\]"):
        PruneConfig(layers={"ip1": {"kept": 0.5}, "ip9": {"kept": 0.5}}).check_model(model)
    with pytest.raises(ValueError, match=r"layer 'relu1' \(ReLU\) has no weights"):
        PruneConfig(layers={"relu1": {"kept": 0.5}}).check_model(model)
    PruneConfig(layers={"ip1": {"kept": 0.5}, "ip3": {"quality": 1.0}}).check_model(model)


@pytest.mark.parametrize("d, error, message", [
    ({"layers": {"ip1": {"quality": -1.0}}}, ValueError,
     r"layer 'ip1': quality must be a finite number >= 0, got -1.0"),
    ({"layers": {"ip1": {"quality": math.nan}}}, ValueError, r"layer 'ip1': quality must be"),
    ({"layers": {"ip1": {"quality": "abc"}}}, ValueError, r"layer 'ip1': quality must be"),
    ({"layers": {"ip1": {"kept": 0}}}, ValueError,
     r"layer 'ip1': kept must be a fraction in \(0, 1\], got 0"),
    ({"layers": {"ip1": {"kept": 1.5}}}, ValueError,
     r"kept must be a fraction in \(0, 1\], got 1.5"),
    ({"layers": {"ip1": {"kept": "abc"}}}, ValueError, r"kept must be a fraction .*'abc'"),
    ({"layers": {"ip1": {"kept": True}}}, ValueError, r"kept must be a fraction"),
    ({"layers": {"ip1": {"kept": 0.5, "quality": 1.0}}}, ValueError,
     r"layer 'ip1': give a layer exactly one of 'kept'.*and 'quality'"),
    ({"layers": {"ip1": {}}}, ValueError, r"layer 'ip1': give a layer exactly one of"),
    ({"layers": {"ip1": {"kept": 0.5, "keep": 0.2}}}, ValueError,
     r"layer 'ip1': unknown setting\(s\) \['keep'\]; use 'kept' or 'quality'"),
    ({"layers": {"ip1": 0.5}}, TypeError, r"layer 'ip1': expected a table"),
    ({"layer": {"ip1": {"kept": 0.5}}}, ValueError, r"unknown pruning setting\(s\) \['layer'\]"),
    ({"retrain": {"epoch": 3}}, ValueError,
     r"\[retrain\] has unknown setting\(s\) \['epoch'\]; known: .*'epochs'"),
    ({"rounds": 0}, ValueError, r"rounds must be an integer in 1..1000, got 0"),
    ({"rounds": 2.0}, ValueError, r"rounds must be an integer in 1..1000"),
    ({"rounds": True}, ValueError, r"rounds must be an integer in 1..1000"),
    ({"rounds": 10**11}, ValueError, r"rounds must be an integer in 1..1000, got 100000000000"),
    ({"rounds": 2, "layers": {"ip1": {"kept": [0.5, 0.3, 0.1]}}}, ValueError,
     r"layer 'ip1': kept lists 3 values for 2 rounds"),
    ({"rounds": 2, "layers": {"ip1": {"quality": [1.0]}}}, ValueError,
     r"layer 'ip1': quality lists 1 values for 2 rounds"),
    ({"layers": {"ip1": {"kept": []}}}, ValueError, r"layer 'ip1': an empty list"),
    ({"rounds": 2, "layers": {"ip1": {"kept": [0.5, 2.0]}}}, ValueError, r"got 2.0"),
    ({"lr_scale": 0.0}, ValueError, r"lr_scale must be a number > 0"),
    ({"lr_scale": math.inf}, ValueError, r"lr_scale must be a number > 0"),
    ({"val_size": -1}, ValueError, r"val_size must be an integer >= 0"),
])
def test_bad_prune_config_gives_clear_error(d, error, message):
    with pytest.raises(error, match=message):
        PruneConfig.from_dict(d)


@pytest.mark.parametrize("d, message", [
    ({"retrain": {"epochs": -1}}, r"retrain.*epochs"),
    ({"retrain": {"lr_policy": "bogus"}}, r"retrain.*lr_policy|retrain.*bogus"),
    ({"retrain": 5}, r"retrain"),
    ({"seed": "x"}, r"seed"),
])
def test_prune_config_validates_every_setting_up_front(d, message):
    # Settings are validated in __post_init__, so a bad [prune.retrain] value or
    # seed fails when the file is read (with the file named), not after the model and the data
    # set are loaded, and never with a bare "'int' object is not iterable".
    with pytest.raises(ValueError, match=message):
        PruneConfig.from_dict(d)


def test_layer_prune_direct_construction_errors():
    with pytest.raises(ValueError, match="exactly one of 'kept'"):
        LayerPrune()
    with pytest.raises(ValueError, match="exactly one of 'kept'"):
        LayerPrune(kept=0.5, quality=1.0)
    with pytest.raises(ValueError, match=r"kept must be a fraction in \(0, 1\]"):
        LayerPrune(kept=-0.5)
    assert LayerPrune(kept=[0.5, 0.25]).kept == (0.5, 0.25)  # lists become tuples (frozen)


def test_train_config_scales_recipe_lr_and_applies_retrain():
    config = PruneConfig(retrain={"epochs": 3, "batch_size": 32}, lr_scale=0.5)
    tc = config.train_config({"lr": 0.02, "epochs": 50, "momentum": 0.8})
    assert tc == TrainConfig(lr=0.01, epochs=3, batch_size=32, momentum=0.8)
    tc = PruneConfig(retrain={"lr": 0.3}).train_config({"lr": 0.02})
    assert tc.lr == 0.3  # an explicit retraining rate is used as given


# ------------------------------------------------------------------------- CLI end to end


CLI_CONFIG = prune_toml(rounds=2)
CLI_KEPT = TINY_KEPT


@pytest.fixture(scope="module")
def pruned_run(tiny_mlp_model, tiny_mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pruned")
    cfg = folder / "cfg.toml"
    cfg.write_text(CLI_CONFIG)
    out, reports = folder / "pruned.h5", folder / "reports"
    rc = main(["prune", str(tiny_mlp_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--report-dir", str(reports), "--threads", "1",
               "--no-progress"])
    return {"rc": rc, "out": out, "cfg": cfg, "reports": reports}


def test_cli_prune_writes_pruned_model_report_and_png(pruned_run, tiny_mlp_model):
    assert pruned_run["rc"] == 0
    model = store.load(pruned_run["out"])
    dense = store.load(tiny_mlp_model)
    assert model.name == "lenet-300-100"
    for name, k in CLI_KEPT.items():
        w = model[name].params["W"]
        assert np.count_nonzero(w) == round(k * w.size), name
        assert not np.signbit(w[w == 0]).any()
        assert not model[name].masks  # the mask is the zero pattern; none stored
        kept = w != 0
        assert np.count_nonzero(w[kept] != dense[name].params["W"][kept]) > 0.9 * kept.sum()
    meta = model.metadata
    assert meta["command"] == "prune"
    report = meta["prune"]
    want = PruneConfig.from_dict(tomllib.loads(CLI_CONFIG)["prune"])
    assert PruneConfig.from_dict(report["config"]) == want
    assert PruneConfig.from_dict(tomllib.loads(report["config_toml"])["prune"]) == want
    assert len(report["rounds"]) == 2
    assert {s["name"]: s["kept"] for s in report["layers"]} == {
        n: round(k * model[n].params["W"].size) for n, k in CLI_KEPT.items()}
    assert report["kept"] == sum(s["kept"] for s in report["layers"])
    assert 0.0 <= report["test_error"] <= 1.0
    on_disk = json.loads((pruned_run["reports"] / "pruned.report.json").read_text())
    assert on_disk == report
    pytest.importorskip("matplotlib")
    png = pruned_run["reports"] / "pruned.weights.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_eval_reads_the_pruned_model(pruned_run, tiny_mnist, capsys):
    assert pruned_run["rc"] == 0
    capsys.readouterr()
    assert main(["eval", str(pruned_run["out"]), "--data", str(tiny_mnist), "--json",
                 "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 40
    assert res["error"] == pytest.approx(store.load(pruned_run["out"]).metadata["prune"]
                                         ["test_error"])


def test_cli_prune_refuses_to_overwrite_without_force(pruned_run, tiny_mlp_model, tiny_mnist,
                                                     capsys):
    out = pruned_run["out"]
    before = out.read_bytes()
    rc = main(["prune", str(tiny_mlp_model), "--out", str(out), "--config", str(pruned_run["cfg"]),
               "--data", str(tiny_mnist), "--no-progress", "--threads", "1"])
    assert rc == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before


@pytest.mark.parametrize("text, message", [
    (CLI_CONFIG + "\n[prune.layers.ip9]\nkept = 0.5\n", "'ip9'"),
    (CLI_CONFIG + "\n[prune.layers.relu1]\nkept = 0.5\n", "'relu1'"),
    (CLI_CONFIG.replace("kept = 0.5", "kept = 1.5"), "kept must be a fraction"),
    (CLI_CONFIG.replace("kept = 0.5", "quality = -1"), "quality must be"),
    ("[prune\nrounds = 2\n", "not valid TOML"),
    ("[train]\nepochs = 1\n", "no [prune] table"),
])
def test_cli_prune_rejects_a_bad_config(text, message, tiny_mlp_model, tiny_mnist, tmp_path,
                                        capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "pruned.h5"
    rc = main(["prune", str(tiny_mlp_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--no-progress", "--threads", "1"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dc-engine prune: error:") and message in err
    assert not out.exists()


def test_cli_sensitivity_writes_json_table_and_png(tiny_mlp_model, tiny_mnist, tmp_path, capsys):
    out = tmp_path / "sens"
    rc = main(["sensitivity", str(tiny_mlp_model), "--out", str(out), "--data", str(tiny_mnist),
               "--val-size", "16", "--threads", "1", "--fractions", "1", "0.5", "0.1"])
    assert rc == 0
    scan = json.loads((out / "sensitivity.json").read_text())
    assert scan["fractions"] == [1.0, 0.5, 0.1]
    assert list(scan["errors"]) == ["ip1", "ip2", "ip3"]
    for errs in scan["errors"].values():
        assert len(errs) == 3 and errs[0] == scan["baseline"]
        assert all(0.0 <= e <= 1.0 for e in errs)
    assert [s["name"] for s in scan["layers"]] == ["ip1", "ip2", "ip3"]
    table = (out / "sensitivity.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ip")]
    assert len(rows) == 3 and all(row.count("|") == 5 for row in rows)
    assert "| layer | 100% kept | 50% kept | 10% kept |" in table
    assert "ip1" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sensitivity_rejects_bad_fraction(tiny_mlp_model, tiny_mnist, tmp_path, capsys):
    rc = main(["sensitivity", str(tiny_mlp_model), "--out", str(tmp_path / "s"), "--data",
               str(tiny_mnist), "--val-size", "16", "--fractions", "1", "1.5"])
    assert rc == 2
    assert "fraction" in capsys.readouterr().err
