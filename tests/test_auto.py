"""Automatic per-layer settings (dc_engine.stages.auto, `dc-engine compress --auto`) on a tiny
conv net and a synthetic .npz data set: the choices, the budget's back-off, the TOML that
replays the run, and the command line's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dc_engine
from dc_engine.app.cli import main
from dc_engine.app.jobs import auto_toml
from dc_engine.config import tomllib
from dc_engine.core.layers import Conv2D, Dense, Flatten
from dc_engine.core.model import Model
from dc_engine.core.train import evaluate
from dc_engine.errors import ConfigError
from dc_engine.io.data import Dataset
from dc_engine.stages import auto as auto_mod
from dc_engine.stages.auto import AutoConfig, envelope_choice, layer_scales
from dc_engine.stages.pipeline import CompressConfig, auto_settings, compress

from _helpers import four_class_dataset, four_class_images, tiny_convnet, trained_tiny_convnet

FAST = {"rounds": 2, "epochs": 1, "finetune_epochs": 1}


@pytest.fixture(scope="module")
def data():
    return four_class_dataset()


@pytest.fixture(scope="module")
def dense(data):
    return trained_tiny_convnet(data)


def test_layer_scales_follow_the_papers_findings():
    rng = np.random.default_rng(0)
    cfg = AutoConfig(conv_scale=0.5, first_conv_scale=0.25)
    assert layer_scales(tiny_convnet(rng), cfg) == {"c1": 0.25, "fc1": 1.0, "fc2": 1.0}
    two_convs = Model([Conv2D(1, 2, 3, rng=rng, name="a"), Conv2D(2, 2, 3, rng=rng, name="b"),
                       Flatten(), Dense(32, 3, rng=rng, name="d")], input_shape=(1, 8, 8))
    assert layer_scales(two_convs, cfg) == {"a": 0.25, "b": 0.5, "d": 1.0}
    mlp = Model([Dense(4, 3, rng=rng, name="d1"), Dense(3, 2, rng=rng, name="d2")],
                input_shape=(4,))
    assert layer_scales(mlp, cfg) == {"d1": 1.0, "d2": 1.0}  # a dense first layer: no rule


def test_envelope_choice_stops_at_the_first_value_over_the_tolerance():
    values = [0.5, 0.3, 0.1, 0.05]
    assert envelope_choice(values, [0.10, 0.11, 0.12, 0.5], 0.10, 0.02, 1.0) == 0.1
    # a later value back within the tolerance does not count: the walk stopped before it
    assert envelope_choice(values, [0.10, 0.20, 0.10, 0.10], 0.10, 0.02, 1.0) == 0.5
    assert envelope_choice(values, [0.30, 0.10, 0.10, 0.10], 0.10, 0.02, 1.0) == 1.0
    assert envelope_choice(values, [0.10, None, None, None], 0.10, 0.02, 1.0) == 0.5
    assert envelope_choice(values, [0.10] * 4, 0.10, 0.0, 1.0) == 0.05


@pytest.mark.parametrize("bad, needle", [
    ({"budget": -0.1}, "budget"), ({"budget": 1.0}, "budget"),
    ({"budget": float("nan")}, "budget"), ({"tolerance": 0}, "tolerance"),
    ({"rounds": 0}, "rounds"), ({"epochs": 0}, "epochs"), ({"rounds": True}, "rounds"),
    ({"retries": -1}, "retries"),
    ({"min_bits": 5, "max_bits": 4}, "min_bits"), ({"max_bits": 9}, "max_bits"),
    ({"conv_scale": 1.5}, "conv_scale"), ({"val_size": 0}, "val_size"),
])
def test_bad_auto_settings_are_named(bad, needle):
    with pytest.raises(ValueError, match=needle):
        AutoConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        AutoConfig.from_dict({"budgte": 0.1})


def test_when_the_settings_are_searched():
    assert auto_settings(None, None, "some-imported-net") == AutoConfig()
    assert auto_settings(None, None, "lenet-5") is None  # the shipped config wins
    assert auto_settings(None, True, "lenet-5") == AutoConfig()
    assert auto_settings(None, {"budget": 0.002}, "x").budget == 0.002
    assert auto_settings("cfg.toml", None, "x") is None
    assert auto_settings(None, False, "x") is None
    with pytest.raises(ValueError, match="not both"):
        auto_settings("cfg.toml", True, "x")


def test_auto_compress_chooses_reports_and_replays(dense, data):
    """The search runs end to end, keeps the model unchanged, reports every choice, and its
    config reproduces the quantized model bit for bit without the search."""
    before = {l.name: l.params[l.weight_name].copy() for l in dense.weighted_layers()}
    c, rep = compress(dense, data, auto=dict(FAST, budget=0.01), progress=False, threads=1)
    for l in dense.weighted_layers():
        np.testing.assert_array_equal(l.params[l.weight_name], before[l.name])
    a = rep["auto"]
    assert a["recipe_source"] == "default"  # the model brings no recipe
    assert set(a["targets"]) == set(a["bits"]) == {"c1", "fc1", "fc2"}
    assert a["val_size"] == 900 // 6
    # each target is the scan's boldest fraction within the layer's share of the tolerance
    assert a["scales"] == {"c1": 0.25, "fc1": 1.0, "fc2": 1.0}
    scan = a["sensitivity"]
    for n, s in a["scales"].items():
        k = a["targets"][n]
        errs = dict(zip(scan["fractions"], scan["errors"][n]))
        assert all(errs[f] - scan["baseline"] <= 0.02 * s for f in scan["fractions"] if f >= k)
        bolder = [f for f in scan["fractions"] if f < k]
        if bolder:
            e = errs[bolder[0]]
            assert e is None or e - scan["baseline"] > 0.02 * s
    # every accepted round is within the limit; the last quantization attempt decides
    assert all(r["val_error_retrained"] <= a["val_error_limit"]
               for r in a["rounds"] if r["accepted"])
    assert a["within_budget"] == (a["quantize_attempts"][-1]["val_error_finetuned"]
                                  <= a["val_error_limit"])
    cfg = CompressConfig.from_dict(rep["config"])
    assert cfg.quantize.bits == a["bits"]
    for name, spec in cfg.prune.layers.items():
        assert len(spec.kept) == cfg.prune.rounds
        nnz = np.count_nonzero(rep["models"]["pruned"][name].params["W"])
        assert nnz == pytest.approx(spec.kept[-1] * dense[name].params["W"].size, abs=1)
    assert cfg.train is not None  # the default recipe is written down, so a replay has it
    # the file's error is the quantized model's
    assert evaluate(c, data.x_test, data.y_test)["error"] == rep["test_error_compressed"]
    c2, rep2 = compress(dense, data, cfg, progress=False, threads=1)
    for la, lb in zip(rep["models"]["quantized"].weighted_layers(),
                      rep2["models"]["quantized"].weighted_layers()):
        np.testing.assert_array_equal(la.params["W"], lb.params["W"])


def test_a_round_over_the_budget_is_undone_and_tried_halfway(dense, data, monkeypatch):
    """Round 2 reports an error over the limit: it is undone, a round halfway between round
    1's fractions and its own goes first, then round 2's target is tried again."""
    real = auto_mod.prune_round
    calls = []

    def fake(model, config, r, train_cfg, split, **kw):
        out = real(model, config, r, train_cfg, split, **kw)
        calls.append((r, {n: s.kept[r] for n, s in config.layers.items()}))
        # round 2 as planned is over the limit; every other round within it
        out["val_error_retrained"] = 1.0 if len(calls) == 2 else 0.0
        return out

    monkeypatch.setattr(auto_mod, "prune_round", fake)
    res = auto_mod.choose(dense, data, AutoConfig(**FAST, budget=0.01), progress=False,
                          threads=1)
    assert [r for r, _ in calls] == [0, 1, 1, 2]
    first, planned, halfway, again = (k for _, k in calls)
    assert again == planned
    for n in planned:
        assert halfway[n] == pytest.approx(np.sqrt(first[n] * planned[n]))
    assert [(r["attempt"], r["accepted"]) for r in res.report["rounds"]] == [
        ("planned", True), ("planned", False), ("halfway", True), ("planned", True)]
    assert {n: list(s.kept) for n, s in res.config.prune.layers.items()} == {
        n: [first[n], halfway[n], planned[n]] for n in first}


def test_retries_run_out(dense, data, monkeypatch):
    """Every round from the second on is over the limit: two retries, then pruning stops
    at round 1, whose weights are kept."""
    real = auto_mod.prune_round
    calls = []

    def fake(model, config, r, train_cfg, split, **kw):
        out = real(model, config, r, train_cfg, split, **kw)
        calls.append(r)
        if r >= 1:
            out["val_error_retrained"] = 1.0
        return out

    monkeypatch.setattr(auto_mod, "prune_round", fake)
    res = auto_mod.choose(dense, data, AutoConfig(**FAST, retries=2), progress=False,
                          threads=1)
    assert calls == [0, 1, 1, 1]
    assert res.config.prune.rounds == 1
    for name, spec in res.config.prune.layers.items():
        nnz = np.count_nonzero(res.pruned[name].params["W"])
        assert nnz == pytest.approx(spec.kept[0] * dense[name].params["W"].size, abs=1)


def test_no_round_within_the_budget_leaves_the_model_unpruned(dense, data, monkeypatch):
    real = auto_mod.prune_round

    def over(*args, **kw):
        out = real(*args, **kw)
        out["val_error_retrained"] = 1.0
        return out

    monkeypatch.setattr(auto_mod, "prune_round", over)
    res = auto_mod.choose(dense, data, AutoConfig(**FAST), progress=False, threads=1)
    assert res.config.prune.layers == {} and res.config.prune.retrain["epochs"] == 0
    for l in res.pruned.weighted_layers():
        np.testing.assert_array_equal(l.params["W"], dense[l.name].params["W"])


def test_a_bad_recipe_is_refused_not_replaced_by_the_default(dense, data):
    with pytest.raises(ConfigError, match="lr"):
        compress(dense, data, auto=FAST, recipe={"lr": -1.0}, progress=False)


def test_too_little_data_for_a_validation_split(dense):
    x, y = four_class_images(np.random.default_rng(0), 5)
    with pytest.raises(ValueError, match="validation split"):
        compress(dense, Dataset(x, y, x, y), auto=FAST, progress=False)


@pytest.fixture(scope="module")
def files(dense, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auto")
    model = folder / "tiny.h5"
    dc_engine.save(dense, model)
    npz = folder / "tiny.npz"
    # NHWC uint8, as a user's Keras data might come
    to_u8 = lambda x: np.clip(x[:, 0, :, :, None] * 100 + 60, 0, 255).astype(np.uint8)  # noqa
    np.savez(npz, x_train=to_u8(data.x_train), y_train=data.y_train,
             x_test=to_u8(data.x_test), y_test=data.y_test)
    return folder, model, npz


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_compress_without_a_config_searches_and_writes_a_replayable_toml(files, capsys):
    folder, model, npz = files
    out = folder / "a" / "tiny.dc.h5"
    rc, stdout, err = _run(["compress", model, "--data", npz, "--out", out, "--threads", "1",
                            "--no-progress", "--budget", "0.5"], capsys)
    assert rc == 0, err
    assert "automatic settings" in stdout and "c1" in stdout and "fc1" in stdout
    toml = folder / "a" / "tiny.auto.toml"
    assert f"wrote them to {toml}" in stdout
    report = json.loads((folder / "a" / "tiny.report.json").read_text())
    assert report["auto"]["settings"]["budget"] == 0.005
    assert report["config_file"] == str(toml)
    assert tomllib.loads(toml.read_text()) == report["config"]
    # a newline in a path stays inside the header's comment
    odd = auto_toml(report, folder / "a\nb.h5", "x\n[prune]\nrounds = 9\n.npz")
    assert tomllib.loads(odd) == report["config"]
    again = folder / "b" / "tiny.dc.h5"
    rc, stdout, err = _run(["compress", model, "--data", npz, "--out", again, "--threads",
                            "1", "--no-progress", "--config", toml], capsys)
    assert rc == 0, err
    assert "automatic settings" not in stdout
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("extra, needle", [
    (["--auto", "--config", "x.toml"], "not both"),
    (["--budget", "-1"], "--budget"), (["--budget", "nan"], "--budget"),
    (["--budget", "100"], "--budget"),
])
def test_cli_bad_auto_options(files, capsys, extra, needle):
    folder, model, npz = files
    out = folder / "bad.dc.h5"
    rc, _, err = _run(["compress", model, "--data", npz, "--out", out, *extra], capsys)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
