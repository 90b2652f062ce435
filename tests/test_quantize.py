"""Stage 2 at the model level: QuantizeConfig validation, quantize_model on a tiny network
(codebook convention, zero pattern, report), and the ``quantize`` and ``bits-sweep`` commands
end to end on a tiny IDX set. The array-level functions are tested in test_quantize.py."""

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

import dc_engine
from dc_engine.app.cli import main
from dc_engine.app.jobs import read_quantize_config
from dc_engine.config import dump_toml
from dc_engine.core.layers import Dense, Flatten, ReLU
from dc_engine.core.model import Model
from dc_engine.core.ties import WeightShare
from dc_engine.core.train import TrainConfig, evaluate
from dc_engine.core.zoo import ARCHITECTURES
from dc_engine.stages.quantize import QuantizeConfig, quantize_model

from _helpers import prune_toml

RECIPE = {"lr": 0.1, "lr_policy": "fixed", "momentum": 0.9, "weight_decay": 5e-4}
PNG = b"\x89PNG\r\n\x1a\n"


def _tiny_model(seed: int = 0) -> Model:
    """Flatten + Dense(12, 8) + ReLU + Dense(8, 3) on (1, 3, 4) inputs."""
    rng = np.random.default_rng(seed)
    return Model([Flatten(name="flatten"), Dense(12, 8, rng=rng, name="first"),
                  ReLU(name="relu"), Dense(8, 3, rng=rng, name="second")],
                 input_shape=(1, 3, 4), name="tiny")


def _tiny_data(seed: int = 1, n: int = 64, n_val: int = 16):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 3, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def _pruned_tiny_model(seed: int = 0) -> Model:
    """The tiny model with weights bounded away from 0 (|w| in [0.2, 1]) and ~half of each
    layer's weights zeroed (a prune mask applied)."""
    model = _tiny_model(seed)
    rng = np.random.default_rng(seed + 100)
    for name in ("first", "second"):
        w = model[name].params["W"]
        mag = rng.uniform(0.2, 1.0, size=w.shape)
        sign = np.where(rng.random(w.shape) < 0.5, -1.0, 1.0)
        keep = rng.random(w.shape) < 0.5
        w[...] = np.where(keep, sign * mag, 0.0).astype(w.dtype)
        assert 0 < np.count_nonzero(w) < w.size
    return model


# ------------------------------------------------------------------ QuantizeConfig validation

GOOD = {"bits": {"fc1": 4}}


@pytest.mark.parametrize("kwargs, match", [
    ({"bits": {}}, "bits must be a non-empty table"),
    ({"bits": [("fc1", 4)]}, "bits must be a non-empty table"),
    ({"bits": {"fc1": 0}}, r"layer 'fc1': bits must be in 1\.\.16, got 0"),
    ({"bits": {"fc1": 17}}, r"layer 'fc1': bits must be in 1\.\.16, got 17"),
    ({"bits": {"fc1": 2.5}}, r"layer 'fc1': bits must be an integer, got 2\.5"),
    ({"bits": {"fc1": "6"}}, r"layer 'fc1': bits must be an integer, got '6'"),
    ({"bits": {"fc1": True}}, r"layer 'fc1': bits must be an integer, got True"),
    ({"bits": {"fc1": 4, "fc2": -3}}, r"layer 'fc2': bits must be in 1\.\.16, got -3"),
    (dict(GOOD, init="kmeans++"), r"unknown centroid initialisation 'kmeans\+\+'.*'linear'"),
    (dict(GOOD, finetune={"epoch": 1}), r"\[finetune\] has unknown setting\(s\) \['epoch'\]"),
    (dict(GOOD, finetune={"epochs": -1}), r"\[finetune\]: epochs must be an integer >= 0, got -1"),
    (dict(GOOD, finetune={"batch_size": 0}), r"\[finetune\]: batch_size must be an integer >= 1"),
    (dict(GOOD, finetune={"lr": -0.1}), r"\[finetune\]: lr must be a finite number > 0"),
    (dict(GOOD, finetune=[("epochs", 1)]), r"\[finetune\] must be a table"),
    (dict(GOOD, lr_scale=0), "lr_scale must be a number > 0, got 0"),
    (dict(GOOD, lr_scale=0.0), "lr_scale must be a number > 0, got 0.0"),
    (dict(GOOD, lr_scale=-1), "lr_scale must be a number > 0, got -1"),
    (dict(GOOD, lr_scale="x"), "lr_scale must be a number > 0, got 'x'"),
    (dict(GOOD, lr_scale=math.nan), "lr_scale must be a number > 0, got nan"),
    (dict(GOOD, lr_scale=math.inf), "lr_scale must be a number > 0, got inf"),
    (dict(GOOD, lr_scale=True), "lr_scale must be a number > 0, got True"),
    (dict(GOOD, val_size=-1), "val_size must be an integer >= 0, got -1"),
    (dict(GOOD, val_size=1.5), r"val_size must be an integer >= 0, got 1\.5"),
    (dict(GOOD, seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(GOOD, seed=True), "seed must be an integer >= 0, got True"),
])
def test_quantize_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizeConfig(**kwargs)
    with pytest.raises(ValueError, match=match):  # the TOML path goes through from_dict
        QuantizeConfig.from_dict(kwargs)


def test_quantize_config_rejects_unknown_top_level_key():
    with pytest.raises(ValueError, match=r"unknown quantization setting\(s\) \['bitz'\].*'bits'"):
        QuantizeConfig.from_dict({"bits": {"fc1": 4}, "bitz": 3})


@pytest.mark.parametrize("bits", [1, 8, 9, 16])
def test_quantize_config_accepts_every_width_and_round_trips(bits):
    cfg = QuantizeConfig(bits={"a": bits, "b": 2}, init="density",
                         finetune={"epochs": 1, "lr_policy": "fixed"}, lr_scale=0.5,
                         val_size=0, seed=3)
    assert QuantizeConfig.from_dict(cfg.to_dict()) == cfg
    assert QuantizeConfig.from_dict(tomllib.loads(dump_toml({"quantize": cfg.to_dict()}))
                                    ["quantize"]) == cfg


def test_quantize_config_with_empty_finetune_round_trips_through_toml():
    cfg = QuantizeConfig(bits={"ip1": 6})
    assert QuantizeConfig.from_dict(tomllib.loads(dump_toml({"quantize": cfg.to_dict()}))
                                    ["quantize"]) == cfg


def test_quantize_config_defaults():
    cfg = QuantizeConfig(bits={"fc1": 5})
    assert (cfg.init, cfg.finetune, cfg.lr_scale, cfg.val_size, cfg.seed) == (
        "linear", {}, 0.01, 5000, 0)


def test_check_model_names_the_unknown_layer_and_lists_the_weighted_ones():
    model = _tiny_model()
    QuantizeConfig(bits={"first": 2, "second": 3}).check_model(model)  # no error
    with pytest.raises(ValueError, match=r"unknown layer 'fc9'.*tiny has weighted layers "
                                         r"\['first', 'second'\]"):
        QuantizeConfig(bits={"first": 2, "fc9": 3}).check_model(model)
    with pytest.raises(ValueError, match=r"unknown layer 'relu'.*\['first', 'second'\]"):
        QuantizeConfig(bits={"relu": 3}).check_model(model)


def test_train_config_scales_the_recipe_lr_and_finetune_overrides():
    recipe = {"lr": 0.02, "epochs": 50, "momentum": 0.8, "lr_policy": "inv"}
    kept = dict(recipe)
    cfg = QuantizeConfig(bits={"x": 2}, finetune={"epochs": 3, "batch_size": 32}, lr_scale=0.5)
    tc = cfg.train_config(recipe)
    assert tc == TrainConfig(lr=0.02 * 0.5, epochs=3, batch_size=32, momentum=0.8,
                             lr_policy="inv")
    assert recipe == kept  # the recipe is not modified
    # an explicit fine-tuning lr is used as given, not scaled
    assert QuantizeConfig(bits={"x": 2}, finetune={"lr": 0.3}).train_config(recipe).lr == 0.3
    # a recipe without lr: TrainConfig's default 0.01, scaled
    assert QuantizeConfig(bits={"x": 2}, lr_scale=0.1).train_config({}).lr == 0.01 * 0.1


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_shipped_configs_have_a_valid_quantize_table(arch):
    cfg, path = read_quantize_config(None, arch)
    assert path.name == f"{arch}.toml"
    cfg.check_model(ARCHITECTURES[arch](seed=0))
    assert cfg.init == "linear" and cfg.lr_scale > 0


# ------------------------------------------------------------------------- quantize_model

TINY_BITS = {"first": 3, "second": 2}


@pytest.fixture(scope="module")
def tiny_run():
    model = _pruned_tiny_model()
    original = copy.deepcopy(model)
    x_tr, y_tr, x_val, y_val = _tiny_data()
    cfg = QuantizeConfig(bits=TINY_BITS, finetune={"epochs": 2, "batch_size": 16},
                         lr_scale=0.1, val_size=16)
    report = quantize_model(model, (x_tr, y_tr, x_val, y_val), cfg, recipe=RECIPE,
                            progress=False, threads=1)
    return {"model": model, "original": original, "report": report, "cfg": cfg,
            "val": (x_val, y_val)}


def test_quantize_model_leaves_codebook_values_only(tiny_run):
    model = tiny_run["model"]
    for name, bits in TINY_BITS.items():
        layer = model[name]
        tie = layer.ties["W"]
        assert isinstance(tie, WeightShare) and tie.bits == bits
        w = layer.params["W"]
        assert w.dtype == np.float32 and tie.codebook.dtype == np.float32
        assert tie.codebook.shape == (2**bits,) and tie.codebook[0] == 0
        assert not np.signbit(tie.codebook[0])
        np.testing.assert_array_equal(w, tie.codebook[tie.idx])
        nz = np.unique(w[w != 0])
        assert nz.size <= 2**bits - 1, name
        assert set(nz.tolist()) <= set(tie.codebook[1:].tolist())
        assert "b" not in layer.ties  # biases stay float


def test_quantize_model_keeps_the_zero_pattern(tiny_run):
    model, original = tiny_run["model"], tiny_run["original"]
    for name in TINY_BITS:
        w0 = original[name].params["W"]
        w = model[name].params["W"]
        tie = model[name].ties["W"]
        assert np.all(tie.codebook[1:] != 0), "a centroid is exactly 0: pick another seed"
        np.testing.assert_array_equal(w == 0, w0 == 0)
        np.testing.assert_array_equal(tie.idx == 0, w0 == 0)
        assert not np.signbit(w[w == 0]).any(), "a pruned weight became -0.0"


def test_quantize_model_report(tiny_run):
    report, model, original = tiny_run["report"], tiny_run["model"], tiny_run["original"]
    x_val, y_val = tiny_run["val"]
    for key in ("val_error_before", "val_error_clustered", "val_error_finetuned"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["val_error_before"] == evaluate(original, x_val, y_val)["error"]
    assert report["val_error_finetuned"] == evaluate(model, x_val, y_val)["error"]
    assert len(report["history"]) == 2
    tc = report["train_config"]
    assert tc["epochs"] == 2 and tc["batch_size"] == 16 and tc["lr"] == RECIPE["lr"] * 0.1
    assert [l["name"] for l in report["layers"]] == list(TINY_BITS)
    clustered = copy.deepcopy(model)
    for entry in report["layers"]:
        name = entry["name"]
        tie = model[name].ties["W"]
        w0 = original[name].params["W"]
        assert entry["bits"] == TINY_BITS[name]
        assert entry["weights"] == w0.size
        assert entry["nonzero"] == np.count_nonzero(w0)
        assert entry["distinct_nonzero"] == np.unique(
            model[name].params["W"][model[name].params["W"] != 0]).size
        assert len(entry["populations"]) == 2**entry["bits"]
        assert sum(entry["populations"]) == w0.size
        assert entry["populations"][0] == w0.size - np.count_nonzero(w0)
        assert entry["populations"] == np.bincount(tie.idx.ravel(),
                                                   minlength=2**entry["bits"]).tolist()
        assert entry["codebook"] == tie.codebook.tolist()
        before = report["codebooks_clustered"][name]
        assert len(before) == 2**entry["bits"] and before[0] == 0.0
        assert before[1:] == sorted(before[1:]), "clustered centroids are not ascending"
        assert before != entry["codebook"], f"{name}: fine-tuning did not move the centroids"
        # idx is fixed by clustering: the clustered model is codebooks_clustered[idx]
        clustered[name].ties.clear()
        clustered[name].params["W"][...] = np.asarray(before, np.float32)[tie.idx]
    assert report["val_error_clustered"] == evaluate(clustered, x_val, y_val)["error"]


def test_quantize_model_without_finetuning_keeps_the_clustered_codebooks():
    model = _pruned_tiny_model()
    x_tr, y_tr, x_val, y_val = _tiny_data()
    cfg = QuantizeConfig(bits={"second": 1}, finetune={"epochs": 0})
    report = quantize_model(model, (x_tr, y_tr, x_val, y_val), cfg, recipe=RECIPE,
                            progress=False, threads=1)
    assert report["history"] == []
    assert report["val_error_finetuned"] == report["val_error_clustered"]
    assert report["codebooks_clustered"]["second"] == report["layers"][0]["codebook"]
    assert "W" not in model["first"].ties  # a layer left out keeps float weights
    w = model["second"].params["W"]
    assert np.unique(w).size <= 2  # 1 bit: zero and one centroid


def test_quantize_model_rejects_an_unknown_layer_before_touching_the_model():
    model = _pruned_tiny_model()
    w0 = model["first"].params["W"].copy()
    x_tr, y_tr, x_val, y_val = _tiny_data()
    with pytest.raises(ValueError, match=r"unknown layer 'nope'"):
        quantize_model(model, (x_tr, y_tr, x_val, y_val),
                       QuantizeConfig(bits={"first": 2, "nope": 2}), recipe=RECIPE,
                       progress=False, threads=1)
    assert not model["first"].ties
    np.testing.assert_array_equal(model["first"].params["W"], w0)


# ------------------------------------------------------------------------- CLI end to end

PRUNE_CONFIG = prune_toml(rounds=1)

QUANT_CONFIG = """\
[quantize]
init = "linear"
lr_scale = 0.01
val_size = 16
seed = 0

[quantize.finetune]
epochs = 1

[quantize.bits]
ip1 = 4
ip2 = 4
ip3 = 3
"""
QUANT_BITS = {"ip1": 4, "ip2": 4, "ip3": 3}


@pytest.fixture(scope="module")
def pruned_model(tiny_mlp_model, tiny_mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("q_pruned")
    cfg = folder / "prune.toml"
    cfg.write_text(PRUNE_CONFIG)
    out = folder / "pruned.h5"
    rc = main(["prune", str(tiny_mlp_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--threads", "1", "--no-progress"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def quant_run(pruned_model, tiny_mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized")
    cfg = folder / "quant.toml"
    cfg.write_text(QUANT_CONFIG)
    out, reports = folder / "quantized.h5", folder / "reports"
    rc = main(["quantize", str(pruned_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--report-dir", str(reports), "--threads", "1",
               "--no-progress"])
    return {"rc": rc, "out": out, "cfg": cfg, "reports": reports, "folder": folder}


def test_cli_quantize_writes_codebook_and_index(quant_run, pruned_model):
    assert quant_run["rc"] == 0
    model = dc_engine.load(quant_run["out"])
    pruned = dc_engine.load(pruned_model)
    assert model.name == "lenet-300-100"
    for name, bits in QUANT_BITS.items():
        layer = model[name]
        tie = layer.ties["W"]
        assert isinstance(tie, WeightShare) and tie.bits == bits
        assert tie.codebook.shape == (2**bits,) and tie.codebook[0] == 0
        assert tie.idx.dtype == np.uint8 and tie.idx.shape == layer.params["W"].shape
        np.testing.assert_array_equal(layer.params["W"], tie.codebook[tie.idx])
        # pruned weights stay exactly +0.0 with index 0
        w0 = pruned[name].params["W"]
        np.testing.assert_array_equal(tie.idx == 0, w0 == 0)
        assert not np.signbit(layer.params["W"][w0 == 0]).any()
        # biases are stored as floats, untied
        assert "b" not in layer.ties


def test_cli_quantized_file_keeps_at_most_2_to_the_b_values(quant_run):
    assert quant_run["rc"] == 0
    model = dc_engine.load(quant_run["out"])
    for name, bits in QUANT_BITS.items():
        w = model[name].params["W"]
        assert np.unique(w).size <= 2**bits, name
        assert np.unique(w[w != 0]).size <= 2**bits - 1, name


def test_cli_quantize_report_and_metadata(quant_run, tiny_mnist):
    assert quant_run["rc"] == 0
    model = dc_engine.load(quant_run["out"])
    meta = model.metadata
    assert meta["command"] == "quantize"
    assert "prune" in meta  # the earlier stage's report is kept
    report = meta["quantize"]
    want = QuantizeConfig.from_dict(tomllib.loads(QUANT_CONFIG)["quantize"])
    assert QuantizeConfig.from_dict(report["config"]) == want
    assert QuantizeConfig.from_dict(tomllib.loads(report["config_toml"])["quantize"]) == want
    for key in ("val_error_before", "val_error_clustered", "val_error_finetuned",
                "test_error_before", "test_error"):
        assert 0.0 <= report[key] <= 1.0, key
    assert [l["name"] for l in report["layers"]] == list(QUANT_BITS)
    for entry in report["layers"]:
        assert entry["bits"] == QUANT_BITS[entry["name"]]
        assert sum(entry["populations"]) == entry["weights"] == model[entry["name"]].params[
            "W"].size
        assert entry["codebook"] == model[entry["name"]].ties["W"].codebook.tolist()
    assert len(report["history"]) == 1
    on_disk = json.loads((quant_run["reports"] / "quantized.report.json").read_text())
    assert on_disk == report
    ds_err = evaluate(model, *_test_split(tiny_mnist))["error"]
    assert report["test_error"] == ds_err
    pytest.importorskip("matplotlib")
    assert (quant_run["reports"] / "quantized.codebook.png").read_bytes()[:8] == PNG


def _test_split(folder):
    from dc_engine.io.data import load_mnist
    ds = load_mnist(folder)
    return ds.x_test, ds.y_test


def test_cli_eval_reads_the_quantized_model(quant_run, tiny_mnist, capsys):
    assert quant_run["rc"] == 0
    capsys.readouterr()
    assert main(["eval", str(quant_run["out"]), "--data", str(tiny_mnist), "--json",
                 "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 40
    model = dc_engine.load(quant_run["out"])
    assert res["error"] == evaluate(model, *_test_split(tiny_mnist))["error"]
    assert res["error"] == model.metadata["quantize"]["test_error"]


def test_cli_quantize_refuses_to_overwrite_without_force(quant_run, pruned_model, tiny_mnist,
                                                        capsys):
    assert quant_run["rc"] == 0
    out = quant_run["out"]
    before = out.read_bytes()
    rc = main(["quantize", str(pruned_model), "--out", str(out), "--config",
               str(quant_run["cfg"]), "--data", str(tiny_mnist), "--threads", "1",
               "--no-progress"])
    assert rc == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before


@pytest.mark.parametrize("text, message", [
    (QUANT_CONFIG + "ip9 = 4\n", "'ip9'"),
    (QUANT_CONFIG + "relu1 = 4\n", "'relu1'"),
    (QUANT_CONFIG.replace("ip3 = 3", "ip3 = 17"), "layer 'ip3': bits must be in 1..16"),
    (QUANT_CONFIG.replace('init = "linear"', 'init = "kmeans"'), "'kmeans'"),
    (QUANT_CONFIG.replace("epochs = 1", "epochs = -1"), "epochs must be an integer >= 0"),
    (QUANT_CONFIG.replace("val_size = 16", "val_size = 0"), "val_size must be > 0"),
    ("[prune]\nrounds = 1\n", "no [quantize] table"),
])
def test_cli_quantize_rejects_a_bad_config(text, message, pruned_model, tiny_mnist, tmp_path,
                                           capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out, reports = tmp_path / "q.h5", tmp_path / "reports"
    rc = main(["quantize", str(pruned_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--report-dir", str(reports), "--no-progress",
               "--threads", "1"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dc-engine quantize: error:") and message in err
    if "ip9" in message:
        assert "['ip1', 'ip2', 'ip3']" in err
    assert not out.exists() and not reports.exists()


def test_cli_quantize_works_on_a_dense_model(tiny_mlp_model, tiny_mnist, tmp_path):
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG.replace("epochs = 1", "epochs = 0")
                   .replace("ip1 = 4\nip2 = 4\n", ""))
    out = tmp_path / "dense_q.h5"
    rc = main(["quantize", str(tiny_mlp_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--threads", "1", "--no-progress"])
    assert rc == 0
    assert (tmp_path / "dense_q.report.json").exists()  # default report dir: --out's folder
    model = dc_engine.load(out)
    dense = dc_engine.load(tiny_mlp_model)
    assert set(n for n in ("ip1", "ip2", "ip3") if model[n].ties) == {"ip3"}
    np.testing.assert_array_equal(model["ip1"].params["W"], dense["ip1"].params["W"])
    w = model["ip3"].params["W"]
    assert np.unique(w[w != 0]).size <= 7
    np.testing.assert_array_equal(w == 0, dense["ip3"].params["W"] == 0)


def test_cli_quantize_keeps_the_zeros_of_pruned_layers_left_out(pruned_model, tiny_mnist,
                                                                 tmp_path):
    # A pruned file stores no masks (the zeros are the mask). Fine-tuning the centroids of ip3
    # must not regrow the pruned weights of ip1 and ip2, which keep float weights.
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG.replace("ip1 = 4\nip2 = 4\n", ""))
    out = tmp_path / "q.h5"
    rc = main(["quantize", str(pruned_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--threads", "1", "--no-progress"])
    assert rc == 0
    model, pruned = dc_engine.load(out), dc_engine.load(pruned_model)
    assert not model["ip1"].ties and not model["ip2"].ties and "W" in model["ip3"].ties
    for name in ("ip1", "ip2", "ip3"):
        w, w0 = model[name].params["W"], pruned[name].params["W"]
        assert np.count_nonzero(w) == np.count_nonzero(w0), (
            f"{name}: {np.count_nonzero(w0)} non-zero weights after pruning, "
            f"{np.count_nonzero(w)} after quantization fine-tuning")
        np.testing.assert_array_equal(w == 0, w0 == 0)


def test_cli_quantize_requantizes_a_quantized_file(quant_run, tiny_mnist, tmp_path):
    assert quant_run["rc"] == 0
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG.replace("ip3 = 3", "ip3 = 2").replace("epochs = 1",
                                                                      "epochs = 0"))
    out = tmp_path / "q2.h5"
    rc = main(["quantize", str(quant_run["out"]), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--threads", "1", "--no-progress"])
    assert rc == 0
    model, before = dc_engine.load(out), dc_engine.load(quant_run["out"])
    assert model["ip3"].ties["W"].bits == 2
    assert np.unique(model["ip3"].params["W"]).size <= 4
    # 4 -> 4 bits: at most 15 distinct non-zero values, so k-means is exact
    np.testing.assert_array_equal(model["ip1"].params["W"], before["ip1"].params["W"])


def test_cli_quantize_rejects_a_report_dir_that_is_a_file(pruned_model, tiny_mnist, tmp_path,
                                                          capsys):
    # --report-dir names an existing file: a clean exit 2 before any work, no model written
    # (not a FileExistsError traceback after the model has been saved).
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG.replace("epochs = 1", "epochs = 0"))
    not_a_dir = tmp_path / "reports"
    not_a_dir.write_text("a file")
    out = tmp_path / "q.h5"
    rc = main(["quantize", str(pruned_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--report-dir", str(not_a_dir), "--threads", "1",
               "--no-progress"])
    assert rc == 2
    assert str(not_a_dir) in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------ bits-sweep


def test_cli_bits_sweep_writes_json_table_and_png(pruned_model, tiny_mnist, tmp_path, capsys):
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG)
    out = tmp_path / "sweep"
    rc = main(["bits-sweep", str(pruned_model), "--out", str(out), "--bits", "2", "3",
               "--epochs", "0", "--config", str(cfg), "--data", str(tiny_mnist),
               "--threads", "1"])
    assert rc == 0
    sweep = json.loads((out / "bits_sweep.json").read_text())
    assert sweep["bits"] == [2, 3] and sweep["finetune_epochs"] == 0
    assert sweep["layers"] == ["ip1", "ip2", "ip3"]
    assert 0.0 <= sweep["baseline"] <= 1.0
    for stage in ("clustered", "finetuned"):
        assert sorted(sweep[stage]) == ["density", "linear", "random"]
        for init, errs in sweep[stage].items():
            assert len(errs) == 2 and all(0.0 <= e <= 1.0 for e in errs), (stage, init)
    assert sweep["finetuned"] == sweep["clustered"]  # 0 epochs: nothing to fine-tune
    table = (out / "bits_sweep.md").read_text()
    assert "| init | 2 bits | 3 bits |" in table
    rows = [line for line in table.splitlines()
            if line.startswith(("| linear", "| density", "| random"))]
    assert len(rows) == 3 and all(row.count("|") == 4 for row in rows)
    assert "| linear |" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (out / "bits_sweep.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("args, message", [
    (["--bits", "0"], "--bits must lie in 1..16, got [0]"),
    (["--bits", "2", "17"], "--bits must lie in 1..16, got [17]"),
    (["--epochs", "-1"], "--epochs must be >= 0, got -1"),
])
def test_cli_bits_sweep_rejects_bad_arguments(args, message, pruned_model, tiny_mnist, tmp_path,
                                              capsys):
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG)
    out = tmp_path / "sweep"
    rc = main(["bits-sweep", str(pruned_model), "--out", str(out), "--config", str(cfg),
               "--data", str(tiny_mnist), "--threads", "1", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("dc-engine bits-sweep: error:") and message in err
    assert not out.exists()


def test_cli_bits_sweep_rejects_an_unknown_layer(pruned_model, tiny_mnist, tmp_path, capsys):
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG + "ip9 = 4\n")
    out = tmp_path / "sweep"
    rc = main(["bits-sweep", str(pruned_model), "--out", str(out), "--bits", "2", "--epochs",
               "0", "--config", str(cfg), "--data", str(tiny_mnist), "--threads", "1"])
    assert rc == 2
    assert "'ip9'" in capsys.readouterr().err
    assert not out.exists()


def test_cli_bits_sweep_rejects_out_that_is_a_file(pruned_model, tiny_mnist, tmp_path, capsys):
    # --out names an existing file: exit 2 with a message (not a FileExistsError traceback
    # after the whole sweep has run).
    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANT_CONFIG)
    out = tmp_path / "sweep"
    out.write_text("a file")
    rc = main(["bits-sweep", str(pruned_model), "--out", str(out), "--bits", "2", "--epochs",
               "0", "--config", str(cfg), "--data", str(tiny_mnist), "--threads", "1"])
    assert rc == 2
    assert str(out) in capsys.readouterr().err
    assert out.read_text() == "a file"
