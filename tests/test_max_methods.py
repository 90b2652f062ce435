"""The methods of the max preset beyond Deep Compression: dead-unit removal (stages.surgery),
shared biases (stage 2's bias_bits, the payload's shared bias), the column scan order and the
encode stage's choices, and the preset plumbing (config, CLI). Small models, fast."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dc_engine
from dc_engine.config import PRESETS, default_config_path
from dc_engine.core.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dc_engine.core.model import Model
from dc_engine.errors import ConfigError
from dc_engine.stages.encode import EncodeConfig, encode_model
from dc_engine.stages.pipeline import CompressConfig
from dc_engine.stages.prune import PruneConfig
from dc_engine.stages.quantize import QuantizeConfig, quantize_model, share_layer
from dc_engine.stages.surgery import remove_dead_units

RECIPE = {"lr": 0.05, "lr_policy": "fixed", "momentum": 0.9, "weight_decay": 5e-4}


def _mlp(rng, hidden=(9, 7)) -> Model:
    return Model([Flatten(name="flat"), Dense(12, hidden[0], rng=rng, name="fc1"),
                  ReLU(name="r1"), Dense(hidden[0], hidden[1], rng=rng, name="fc2"),
                  ReLU(name="r2"), Dense(hidden[1], 3, rng=rng, name="fc3")],
                 input_shape=(1, 3, 4), name="mlp")


def _cnn(rng, pad=0, dropout=False, pool_pad=0) -> Model:
    layers = [Conv2D(1, 6, 3, padding=pad, rng=rng, name="c1"), ReLU(name="r1"),
              MaxPool2D(2, padding=pool_pad, name="p1"), Conv2D(6, 5, 3, rng=rng, name="c2"),
              ReLU(name="r2"), Flatten(name="flat")]
    if dropout:
        layers.append(Dropout(0.5, name="drop"))
    side = (10 + 2 * pad - 2 + 2 * pool_pad) // 2 - 2  # after c1, p1 and c2
    layers.append(Dense(5 * side * side, 4, rng=rng, name="fc"))
    return Model(layers, input_shape=(1, 10, 10), name="cnn")


def _kill(model, rng, p_zero_row=0.3, p_zero_col=0.3, density=0.6):
    """Prune at random, then zero whole rows (no incoming weights) and input units (no
    outgoing weights), and give every unit a bias of either sign."""
    for layer in model.weighted_layers():
        w = layer.params["W"]
        w *= rng.random(w.shape) < density
        w[rng.random(w.shape[0]) < p_zero_row] = 0
        cols = rng.random(w.shape[1]) < p_zero_col
        w[:, cols] = 0
        layer.params["b"][:] = rng.normal(size=w.shape[0]).astype(w.dtype)
    return model


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1),
       st.sampled_from(["mlp", "cnn", "cnn-pad", "cnn-drop", "cnn-poolpad"]))
def test_removing_dead_units_keeps_the_outputs(seed, kind):
    rng = np.random.default_rng(seed)
    model = (_mlp(rng) if kind == "mlp" else
             _cnn(rng, pad=1 if kind == "cnn-pad" else 0, dropout=kind == "cnn-drop",
                  pool_pad=1 if kind == "cnn-poolpad" else 0))
    model = _kill(model, rng)
    x = rng.random((8,) + model.input_shape).astype(np.float32)
    before = model.forward(x)
    weights = {l.name: np.array(l.params["W"]) for l in model.weighted_layers()}
    slim, report = remove_dead_units(model)
    np.testing.assert_allclose(slim.forward(x), before, rtol=1e-5, atol=1e-5)
    # the input model is not changed
    for l in model.weighted_layers():
        assert np.array_equal(l.params["W"], weights[l.name])
    # every remaining hidden unit is read and either fed or non-constant-foldable
    for name, r in report.items():
        assert r["kept"] == slim[name].params["W"].shape[0] < r["units"]
        assert r["units"] - r["kept"] <= r["unread"] + r["constant"]
    assert slim.output_shape() == model.output_shape()
    # the output layer keeps its units, the first layer its inputs
    assert slim.weighted_layers()[-1].params["W"].shape[0] == \
        model.weighted_layers()[-1].params["W"].shape[0]
    assert slim.weighted_layers()[0].params["W"].shape[1:] == \
        model.weighted_layers()[0].params["W"].shape[1:]


def test_dead_unit_counts_on_a_known_model(rng):
    model = _mlp(rng, hidden=(5, 4))
    w1, w2, w3 = (l.params["W"] for l in model.weighted_layers())
    w2[:, 0] = 0            # fc1 unit 0: read by nobody
    w1[1] = 0               # fc1 unit 1: constant relu(b) = 0.5, absorbed by fc2's bias
    model["fc1"].params["b"][1] = 0.5
    w3[:, 3] = 0            # fc2 unit 3: unread
    slim, report = remove_dead_units(model)
    assert report == {"fc1": {"units": 5, "kept": 3, "unread": 1, "constant": 1},
                      "fc2": {"units": 4, "kept": 3, "unread": 1, "constant": 0}}
    assert slim["fc2"].hyperparameters == {"in_features": 3, "out_features": 3}
    x = rng.random((4, 1, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(slim.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)


def test_nothing_dead_returns_the_model_itself(rng):
    model = _mlp(rng)
    assert remove_dead_units(model) == (model, {})


def test_surgery_refuses_masks_and_ties(rng):
    model = _mlp(rng)
    model["fc1"].masks["W"] = np.ones_like(model["fc1"].params["W"], bool)
    with pytest.raises(ValueError, match="no masks, ties or compressed weights"):
        remove_dead_units(model)


def test_prune_config_remove_dead_units_is_a_bool():
    with pytest.raises(ValueError, match="remove_dead_units must be true or false"):
        PruneConfig(layers={}, remove_dead_units="yes")


# ------------------------------------------------------------------- shared biases


def test_bias_bits_share_and_finetune_the_biases(rng):
    model = _mlp(rng)
    for l in model.weighted_layers():
        l.params["b"][:] = rng.normal(size=l.params["b"].shape).astype(np.float32)
    x = rng.standard_normal((48, 1, 3, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=48)
    cfg = QuantizeConfig(bits={"fc1": 3, "fc2": 3, "fc3": 3}, bias_bits={"fc1": 2, "fc2": 2},
                         finetune={"epochs": 2, "batch_size": 16}, val_size=16)
    report = quantize_model(model, (x[16:], y[16:], x[:16], y[:16]), cfg, recipe=RECIPE,
                            progress=False)
    for name in ("fc1", "fc2"):
        tie = model[name].ties["b"]
        b = model[name].params["b"]
        assert np.array_equal(tie.codebook[tie.idx], b) and len(np.unique(b)) <= 4
        assert report["bias_codebooks"][name] != report["bias_codebooks_clustered"][name]
    assert "b" not in model["fc3"].ties
    # the encode stage stores them shared (auto picks it: fewer bytes) and decodes them exactly
    comp = encode_model(model, EncodeConfig(bias="auto", index_bits="auto"))
    assert comp["fc1"].encoding["W"]["bias_coding"] == "shared"
    assert comp["fc3"].encoding["W"]["bias_coding"] == "float32"  # 3 distinct values
    for name in ("fc1", "fc2", "fc3"):
        assert np.array_equal(comp[name].params["b"], model[name].params["b"])


def test_bias_bits_config_checks(rng):
    with pytest.raises(ValueError, match="layer 'fc1'.*bias_bits"):
        QuantizeConfig(bits={"fc1": 3}, bias_bits={"fc1": 0})
    with pytest.raises(ValueError, match="bias_bits must be a table"):
        QuantizeConfig(bits={"fc1": 3}, bias_bits=[4])
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        QuantizeConfig(bits={"fc1": 3}, bias_bits={"nope": 3}).check_model(_mlp(rng))


@pytest.mark.parametrize("order, bias, container", [("rows", "float32", "classic"),
                                                   ("cols", "shared", "compact"),
                                                   ("auto", "auto", "compact")])
def test_files_with_every_layout_save_and_load_byte_for_byte(tmp_path, rng, order, bias,
                                                             container):
    model = _kill(_mlp(rng), rng)
    for name in ("fc1", "fc2", "fc3"):
        share_layer(model[name], 3)
        share_layer(model[name], 2, name="b")
    comp = encode_model(model, EncodeConfig(order=order, bias=bias, container=container,
                                            index_bits="auto"))
    a, b = tmp_path / "a.dc.h5", tmp_path / "b.dc.h5"
    dc_engine.save(comp, a)
    loaded = dc_engine.load(a)
    dc_engine.save(loaded, b)
    assert a.read_bytes() == b.read_bytes()
    x = rng.random((5, 1, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), comp.forward(x))
    np.testing.assert_allclose(loaded.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)


def test_auto_layout_is_never_larger_than_the_paper_layout(tmp_path, rng):
    model = _kill(_mlp(rng, hidden=(40, 30)), rng, density=0.2)
    for name in ("fc1", "fc2", "fc3"):
        share_layer(model[name], 3)
        share_layer(model[name], 2, name="b")
    sizes = {}
    for key, cfg in {"paper": EncodeConfig(index_bits="auto"),
                     "auto": EncodeConfig(index_bits="auto", order="auto", bias="auto")}.items():
        dc_engine.save(encode_model(model, cfg), tmp_path / f"{key}.dc.h5")
        sizes[key] = (tmp_path / f"{key}.dc.h5").stat().st_size
    assert sizes["auto"] < sizes["paper"]  # the shared biases alone save bytes here


# ------------------------------------------------------------------------- presets


def test_presets_resolve_to_shipped_files():
    assert PRESETS == ("paper", "max")
    for arch in ("lenet-300-100", "lenet-5"):
        assert default_config_path(arch).name == f"{arch}.toml"
        path = default_config_path(arch, "max")
        assert path.name == f"{arch}.max.toml"
        cfg = CompressConfig.from_toml(path)  # a valid config
        assert cfg.encode.container == "compact" and cfg.prune.remove_dead_units
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        default_config_path("lenet-5", "tiny")
    with pytest.raises(ConfigError, match="no shipped max config for architecture 'vgg'"):
        default_config_path("vgg", "max")


def test_cli_preset_conflicts(tmp_path, capsys):
    from dc_engine.app.cli import main

    for extra in (["--config", "x.toml"], ["--auto"]):
        rc = main(["compress", "data/models/lenet-5.h5", "--out", str(tmp_path / "o.dc.h5"),
                   "--preset", "max", *extra])
        assert rc == 2
        assert "not two of them" in capsys.readouterr().err
        assert not (tmp_path / "o.dc.h5").exists()
    with pytest.raises(SystemExit) as e:  # argparse: an unknown preset
        main(["compress", "data/models/lenet-5.h5", "--preset", "tiny"])
    assert e.value.code == 2 and "invalid choice: 'tiny'" in capsys.readouterr().err


# ------------------------------------------------------------------------ keep_best


def _quantize_tiny(rng, keep_best, epochs=3, lr=0.05, policy="fixed"):
    model = _kill(_mlp(rng), np.random.default_rng(3), density=0.8)
    x = rng.standard_normal((64, 1, 3, 4)).astype(np.float32)
    y = (x.reshape(64, -1).sum(1) > 0).astype(np.int64)
    cfg = QuantizeConfig(bits={"fc1": 2, "fc2": 2, "fc3": 2}, keep_best=keep_best,
                         finetune={"epochs": epochs, "batch_size": 16, "lr_policy": policy},
                         val_size=16, lr_scale=1.0)
    split = (x[16:], y[16:], x[:16], y[:16])
    rep = quantize_model(model, split, cfg, recipe=dict(RECIPE, lr=lr), progress=False)
    return model, rep, split


def test_keep_best_keeps_the_lowest_validation_error(rng):
    from dc_engine.core.train import evaluate

    kept = []
    for lr in (0.02, 2.0):  # a gentle rate and one that makes fine-tuning worse
        model, rep, split = _quantize_tiny(np.random.default_rng(7), True, lr=lr)
        kept.append(rep["kept_epoch"])
        errors = [rep["val_error_clustered"]] + [r["val_error"] for r in rep["history"]]
        assert rep["kept_epoch"] == int(np.argmin(errors))
        assert rep["val_error_finetuned"] == min(errors)
        assert evaluate(model, split[2], split[3])["error"] == min(errors)
        for layer in model.weighted_layers():  # the state restored is consistent
            tie = layer.ties["W"]
            assert np.array_equal(tie.codebook[tie.idx], layer.params["W"])
    assert min(kept) < 3 and max(kept) > 0  # a state before the last epoch was restored


def test_keep_best_needs_a_fixed_rate(rng):
    with pytest.raises(ValueError, match="lr_policy = \"fixed\""):
        _quantize_tiny(rng, True, policy="step")
    with pytest.raises(ValueError, match="keep_best must be true or false"):
        QuantizeConfig(bits={"fc1": 2}, keep_best=1)


@pytest.mark.parametrize("arch, limit", [("lenet-300-100", 7_110), ("lenet-5", 13_264)])
def test_shipped_max_files(tmp_path, arch, limit):
    """The shipped max-preset files: within the size goal on disk, compact container, payload
    version 3, saved back byte for byte, and their codes give the same outputs as the decoded
    dense weights."""
    from dc_engine.io import compressed as compressed_file

    path = f"data/models/{arch}.max.dc.h5"
    data = open(path, "rb").read()
    assert len(data) <= limit
    c = compressed_file.read(path)
    assert c.compact and c.version == 3
    model = dc_engine.load(path)
    dc_engine.save(model, tmp_path / "again.dc.h5")
    assert (tmp_path / "again.dc.h5").read_bytes() == data
    x = np.random.default_rng(0).random((4,) + model.input_shape).astype(np.float32)
    np.testing.assert_allclose(model.forward(x), model.to_dense().forward(x), rtol=1e-5,
                               atol=1e-5)


def test_auto_bias_falls_back_to_float32_for_too_many_distinct_values(rng):
    n = 2**16 + 1
    model = Model([Dense(1, n, rng=rng, name="wide"), ReLU(name="r"),
                   Dense(n, 2, rng=rng, name="out")], input_shape=(1,), name="wide")
    model["wide"].params["b"][:] = np.arange(n, dtype=np.float32) / n  # all distinct
    for name in ("wide", "out"):
        share_layer(model[name], 2)
    comp = encode_model(model, EncodeConfig(bias="auto"))
    assert comp["wide"].encoding["W"]["bias_coding"] == "float32"
    with pytest.raises(ValueError, match="distinct values.*store it as float32"):
        encode_model(model, EncodeConfig(bias="shared"))


# ------------------------------------------------------------- ratio against the zoo net


@pytest.mark.parametrize("arch, params, ratio", [("lenet-300-100", 266_610, "177.9x"),
                                                 ("lenet-5", 431_080, "135.1x")])
def test_slimmed_files_are_also_measured_against_the_zoo_net(arch, params, ratio, capsys):
    """A max file holds the network left after dead-unit removal; eval and inspect also give
    the ratio against the zoo's dense network (the README's number)."""
    from dc_engine.app import jobs
    from dc_engine.app.cli import main

    path = f"data/models/{arch}.max.dc.h5"
    assert jobs.zoo_params(dc_engine.load(path)) == params
    assert jobs.inspect(path)["zoo_params"] == params
    for cmd in (["inspect", path], ["eval", path, "--data", "data/mnist"]):
        assert main(cmd) == 0
        line = capsys.readouterr().out.splitlines()
        assert any(f"{params:,} parameters" in s and f"{ratio} smaller" in s for s in line)


def _zoo_variant(change):
    """The zoo's LeNet-300-100 rebuilt layer by layer (flatten, ip1, relu1, ip2, relu2, ip3),
    then ``change``d."""
    from dc_engine.core.zoo import lenet_300_100

    zoo = lenet_300_100()
    layers = [type(l)(**l.hyperparameters, name=l.name) for l in zoo.layers]
    assert [l.name for l in layers] == ["flatten", "ip1", "relu1", "ip2", "relu2", "ip3"]
    layers, name, shape = change(layers, zoo.name, zoo.input_shape)
    return Model(layers, input_shape=shape, name=name)


@pytest.mark.parametrize("change, expected", [
    (lambda l, n, s: (l, n, s), None),                                  # the zoo net itself
    (lambda l, n, s: (l[:1] + [Dense(784, 120, name="ip1"), l[2], Dense(120, 100, name="ip2")]
                      + l[4:], n, s), 266_610),                         # slimmed
    (lambda l, n, s: (l, "my-mlp", s), None),                           # another name
    (lambda l, n, s: (l[:1] + [Dense(784, 400, name="ip1"), l[2], Dense(400, 100, name="ip2")]
                      + l[4:], n, s), None),                            # wider
    (lambda l, n, s: (l[:1] + [Dense(784, 120, name="fc1"), l[2], Dense(120, 100, name="ip2")]
                      + l[4:], n, s), None),                            # a layer renamed
    (lambda l, n, s: (l[:5] + [Dense(100, 8, name="ip3")], n, s), None),  # other outputs
])
def test_zoo_params_only_for_a_slimmed_zoo_net(change, expected):
    from dc_engine.app.jobs import zoo_params

    assert zoo_params(_zoo_variant(change)) == expected


def test_zoo_params_checks_the_hyperparameters_besides_the_widths():
    from dc_engine.app.jobs import zoo_params
    from dc_engine.core.zoo import lenet5

    zoo = lenet5()
    layers = [type(l)(**l.hyperparameters, name=l.name) for l in zoo.layers]
    layers[0] = Conv2D(1, 20, 3, name="conv1")                          # kernel 3, not 5
    assert zoo_params(Model(layers, input_shape=(1, 28, 28), name="lenet-5")) is None
