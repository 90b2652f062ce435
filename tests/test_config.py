"""Stage settings in TOML: dump_toml round-trips, PruneConfig round-trips, the shipped configs
fit their architectures, and unreadable files give errors naming the file."""

from __future__ import annotations

import math
import re
import string

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine.app.jobs import read_encode_config, read_prune_config, read_quantize_config
from dc_engine.config import (
    CONFIG_DIR,
    PRESETS,
    ConfigError,
    default_config_path,
    dump_toml,
    load_toml,
)
from dc_engine.core.zoo import ARCHITECTURES, RECIPES
from dc_engine.stages.encode import EncodeConfig
from dc_engine.stages.pipeline import CompressConfig
from dc_engine.stages.prune import LayerPrune, PruneConfig
from dc_engine.stages.quantize import QuantizeConfig

SHIPPED = sorted(CONFIG_DIR.glob("*.toml"))

keys = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"))
    | st.sampled_from(['"', "\\", "\n", "\t", "'", "#", "=", "[", "]"]),
    max_size=12)
floats = st.floats(allow_nan=False) | st.sampled_from([1e-4, 0.1, 5e-4, 1e-5, -0.0, 1e300])
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | floats | texts
           | st.lists(floats, max_size=5))
tables = st.recursive(st.dictionaries(keys, scalars, max_size=4),
                      lambda inner: st.dictionaries(keys, scalars | inner, max_size=4),
                      max_leaves=15)


def _drop_none(d: dict) -> dict:
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def _assert_same(got, want, where="root"):
    """Equal values of the same types (1 == 1.0 == True would hide a type change)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for k in want:
            _assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == want and math.copysign(1, got) == math.copysign(1, want), where
    else:
        assert got == want, where


# ------------------------------------------------------------------------------- dump_toml


@given(data=tables)
def test_dump_toml_round_trips_through_tomllib(data):
    _assert_same(tomllib.loads(dump_toml(data)), _drop_none(data))


def test_dump_toml_round_trips_a_hand_written_config():
    data = {"prune": {"rounds": 3, "lr_scale": 0.1, "flag": False, "seed": 0,
                      "note": 'say "hi"\\n\nnext line\tend', "none": None,
                      "retrain": {"lr": 1e-4, "weight_decay": 5e-4, "lr_policy": "step"},
                      "empty": {},
                      "layers": {"ip1": {"kept": [0.5, 0.25, 0.07]}, "ip2": {"quality": 1.3}},
                      "odd keys": {"a.b": 1, "": 2, 'q"uote': 3}}}
    want = _drop_none(data)
    _assert_same(tomllib.loads(dump_toml(data)), want)


def test_dump_toml_writes_nan_and_inf():
    got = tomllib.loads(dump_toml({"a": math.nan, "b": math.inf, "c": -math.inf}))
    assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == -math.inf


def test_dump_toml_rejects_values_toml_cannot_hold():
    with pytest.raises(TypeError, match="cannot write"):
        dump_toml({"a": object()})


@pytest.mark.parametrize("text", ["carriage\rreturn", "nul\x00byte", "escape\x1b[0m",
                                  "delete\x7f", "bell\x07", "unit\x1fsep"])
def test_dump_toml_escapes_control_characters_in_strings(text):
    # TOML basic strings may not hold U+0000-U+0008, U+000A-U+001F (bar \t) or U+007F raw.
    assert tomllib.loads(dump_toml({"s": text})) == {"s": text}


@pytest.mark.parametrize("key", ["é", "layer_β", "ключ", "²"])
def test_dump_toml_quotes_non_ascii_keys(key):
    # TOML bare keys are ASCII letters, digits, '_' and '-' only; str.isalnum() is wider.
    assert tomllib.loads(dump_toml({key: 1, "t": {key: {key: 2}}})) == {
        key: 1, "t": {key: {key: 2}}}


def test_dump_toml_writes_numpy_floats_as_toml_floats():
    # np.float64 is a float (and PruneConfig accepts it as a kept-fraction), so it must be
    # written as a TOML float, not as its NumPy 2 repr "np.float64(0.1)".
    text = dump_toml({"prune": {"layers": {"ip1": {"kept": np.float64(0.1)}}}})
    assert tomllib.loads(text) == {"prune": {"layers": {"ip1": {"kept": 0.1}}}}


# ----------------------------------------------------------------------- PruneConfig <-> TOML


def _round_trip(config: PruneConfig) -> PruneConfig:
    text = dump_toml({"prune": config.to_dict()})
    return PruneConfig.from_dict(tomllib.loads(text)["prune"])


@pytest.mark.parametrize("config", [
    PruneConfig(),
    PruneConfig(layers={"ip1": {"kept": 0.07}, "ip2": {"kept": 1}}, rounds=3),
    PruneConfig(layers={"conv1": LayerPrune(kept=[0.8, 0.7, 0.66])}, rounds=3,
                retrain={"epochs": 6, "lr": 1e-4, "lr_policy": "step", "gamma": 0.1},
                lr_scale=0.05, val_size=0, seed=7),
    PruneConfig(layers={"ip1": {"quality": 1.3}, "ip2": {"quality": [0.5, 1.0]},
                        "ip3": {"kept": 0.25}}, rounds=2),
])
def test_prune_config_round_trips_through_toml(config):
    back = _round_trip(config)
    assert back == config
    assert back.to_dict() == config.to_dict()


per_layer = st.integers(1, 4).flatmap(lambda rounds: st.tuples(
    st.just(rounds),
    st.dictionaries(keys, st.one_of(
        st.floats(0.0, 1.0, exclude_min=True).map(lambda k: {"kept": k}),
        st.lists(st.floats(0.0, 1.0, exclude_min=True), min_size=rounds, max_size=rounds)
        .map(lambda ks: {"kept": ks}),
        st.floats(0.0, 5.0).map(lambda q: {"quality": q}),
        st.lists(st.floats(0.0, 5.0), min_size=rounds, max_size=rounds)
        .map(lambda qs: {"quality": qs}),
    ), max_size=4)))


@given(spec=per_layer, lr_scale=st.floats(1e-6, 10.0), val_size=st.integers(0, 10**5),
       seed=st.integers(0, 2**31))
def test_random_prune_configs_round_trip_through_toml(spec, lr_scale, val_size, seed):
    rounds, layers = spec
    config = PruneConfig(layers=layers, rounds=rounds, retrain={"epochs": 2, "lr": 1e-4},
                         lr_scale=lr_scale, val_size=val_size, seed=seed)
    assert _round_trip(config) == config


# ---------------------------------------------------------------------- shipped configs


def _arch_preset(path):
    """``("lenet-5", "max")`` for ``lenet-5.max.toml``, ``("lenet-5", "paper")`` for
    ``lenet-5.toml``."""
    arch, _, preset = path.stem.partition(".")
    return arch, preset or "paper"


def test_every_architecture_has_a_shipped_config_per_preset():
    assert {_arch_preset(p) for p in SHIPPED} == {(a, p) for a in ARCHITECTURES
                                                  for p in PRESETS}
    for arch in ARCHITECTURES:
        assert default_config_path(arch) == CONFIG_DIR / f"{arch}.toml"
        assert default_config_path(arch, "max") == CONFIG_DIR / f"{arch}.max.toml"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_config_builds_and_fits_its_architecture(path):
    arch, preset = _arch_preset(path)
    assert arch in ARCHITECTURES, f"{path.name} names no zoo architecture"
    table = load_toml(path)
    # the paper preset is the paper's stages as configured; the max preset adds the guard
    assert set(table) == {"prune", "quantize", "encode"} | ({"guard"} if preset == "max"
                                                            else set())
    whole = CompressConfig.from_dict(table, str(path))
    assert (whole.guard is not None) == (preset == "max")
    assert CompressConfig.from_dict(whole.to_dict()) == whole
    config = PruneConfig.from_dict(table["prune"])
    given = None if preset == "paper" else path  # the jobs' default is the paper preset
    assert read_prune_config(given, arch) == (config, path)
    model = ARCHITECTURES[arch]()
    config.check_model(model)
    assert config.layers, "a shipped config prunes nothing"
    assert set(config.layers) == {l.name for l in model.layers if "W" in l.params}
    config.train_config(RECIPES[arch])  # the retraining settings form a valid TrainConfig
    assert _round_trip(config) == config
    qconfig = QuantizeConfig.from_dict(table["quantize"])
    assert read_quantize_config(given, arch) == (qconfig, path)
    qconfig.check_model(model)
    assert set(qconfig.bits) == {l.name for l in model.layers if "W" in l.params}
    qconfig.train_config(RECIPES[arch])
    assert QuantizeConfig.from_dict(
        tomllib.loads(dump_toml({"quantize": qconfig.to_dict()}))["quantize"]) == qconfig
    econfig = EncodeConfig.from_dict(table["encode"])
    assert read_encode_config(given, arch) == (econfig, path)
    assert EncodeConfig.from_dict(
        tomllib.loads(dump_toml({"encode": econfig.to_dict()}))["encode"]) == econfig


def test_default_config_path_of_unknown_architecture_lists_shipped():
    with pytest.raises(ConfigError, match=r"no shipped config for architecture 'vgg'.*lenet-5"):
        default_config_path("vgg")


# --------------------------------------------------------------------------- load errors


def test_load_toml_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.toml") as e:
        load_toml(path)
    assert isinstance(e.value, ValueError)
    assert str(path) in str(e.value)


def test_load_toml_bad_syntax_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[prune]\nrounds = = 3\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + " is not valid TOML") as e:
        load_toml(path)
    assert isinstance(e.value, ValueError)
    assert "line 2" in str(e.value)


def test_read_prune_config_names_the_file_on_bad_settings(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text("[prune]\nrounds = 2\n[prune.layers.ip1]\nkept = 1.5\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r": layer 'ip1': kept must"):
        read_prune_config(path, "lenet-300-100")
    path.write_text("[prune]\nrounds = 2\n[prune.layers.ip1]\nkeep = 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['keep'\]"):
        read_prune_config(path, "lenet-300-100")
    path.write_text("prune = 3\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r" has no \[prune\] table"):
        read_prune_config(path, "lenet-300-100")
