"""Tests for dc_engine.io.dense: dense HDF5 save/load, validation errors, atomic writes."""

from __future__ import annotations

import ast
import json
import os
import stat
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dc_engine
from dc_engine import _files as files
from dc_engine.codecs.codebook import index_dtype
from dc_engine.core import zoo
from dc_engine.core.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dc_engine.core.model import Model
from dc_engine.core.optim import SGD
from dc_engine.core.ties import Tie, WeightShare
from dc_engine.errors import DCFormatError
from dc_engine.io import _h5 as h5io
from dc_engine.io import dense as store
from dc_engine.io.dense import DENSE_VERSION, FORMAT_NAME, load, read_metadata, save
from dc_engine.limits import MAX_BITS
from dc_engine.stages.quantize import share_layer

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "dc_engine"
MODELS_DIR = PACKAGE_DIR.parent / "data" / "models"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def randomize(model: Model, seed: int = 0) -> Model:
    """Give every parameter (biases too) random values, so round trips test real data."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for name, w in layer.params.items():
            layer.set_param(name, rng.standard_normal(w.shape))
    return model


def tiny_model(dtype=np.float32) -> Model:
    rng = np.random.default_rng(1)
    model = Model([Dense(4, 3, rng=rng, dtype=dtype, name="fc1"), ReLU(name="relu"),
                   Dense(3, 2, rng=rng, dtype=dtype, name="fc2")], input_shape=(4,), name="tiny")
    return randomize(model, 2)


def assert_same_model(a: Model, b: Model, x: np.ndarray) -> None:
    assert b.name == a.name
    assert b.input_shape == a.input_shape
    assert [layer.name for layer in b.layers] == [layer.name for layer in a.layers]
    for la, lb in zip(a.layers, b.layers):
        assert type(lb) is type(la)
        assert lb.type_name == la.type_name
        assert lb.hyperparameters == la.hyperparameters
        assert sorted(lb.params) == sorted(la.params)
        for k in la.params:
            assert lb.params[k].dtype == la.params[k].dtype
            assert lb.params[k].shape == la.params[k].shape
            assert np.array_equal(lb.params[k], la.params[k])
            assert lb.grads[k].shape == la.params[k].shape
        assert sorted(lb.masks) == sorted(la.masks)
        for k in la.masks:
            assert lb.masks[k].dtype == np.bool_
            assert np.array_equal(lb.masks[k], la.masks[k])
        shared = sorted(k for k, t in la.ties.items() if isinstance(t, WeightShare))
        assert sorted(lb.ties) == shared
        for k in shared:
            ta, tb = la.ties[k], lb.ties[k]
            assert isinstance(tb, WeightShare) and tb.bits == ta.bits
            assert tb.codebook.dtype == ta.codebook.dtype and tb.idx.dtype == ta.idx.dtype
            assert tb.codebook.tobytes() == ta.codebook.tobytes()
            assert tb.idx.tobytes() == ta.idx.tobytes()
            assert lb.params[k].tobytes() == la.params[k].tobytes()  # bit-exact, signs of 0
    ya, yb = a.forward(x), b.forward(x)
    assert ya.dtype == yb.dtype
    assert np.array_equal(ya, yb)


def round_trip(model: Model, path: Path, metadata=None) -> Model:
    out = save(model, path, metadata)
    assert out == path.resolve()
    loaded = load(path)
    x = np.random.default_rng(3).random((2, *model.input_shape))
    assert_same_model(model, loaded, x)
    return loaded


def text(obj, key: str) -> str:
    """A string attribute as written by the store: fixed-length UTF-8, never variable-length."""
    info = h5py.check_string_dtype(obj.attrs.get_id(key).dtype)
    assert info is not None and info.encoding == "utf-8" and info.length is not None
    return obj.attrs[key].decode("utf-8")


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def prune_and_share(layer, bits: int, keep: float = 1.0, seed: int = 0) -> WeightShare:
    """Stage 1 then stage 2 on one layer: zero all but ``keep`` of W (with a mask), share W."""
    if keep < 1.0:
        mask = np.random.default_rng(seed).random(layer.params["W"].shape) < keep
        layer.set_param("W", layer.params["W"] * mask)
        layer.masks["W"] = mask
    return share_layer(layer, bits)


def shared_tiny_model(dtype=np.float32) -> Model:
    """tiny_model with fc1.W shared at 2 bits (uint8 index) and fc2.W at 9 bits (uint16)."""
    model = tiny_model(dtype)
    share_layer(model["fc1"], 2)
    share_layer(model["fc2"], 9)
    return model


@pytest.fixture
def saved(tmp_path) -> Path:
    """A small valid model file to corrupt."""
    path = tmp_path / "model.h5"
    save(tiny_model(), path, {"note": "tiny"})
    return path


@pytest.fixture
def shared_saved(tmp_path) -> Path:
    """A small valid model file with shared weights (fc1: 4-entry codebook; fc2: 512) to corrupt."""
    path = tmp_path / "shared.h5"
    save(shared_tiny_model(), path)
    return path


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [zoo.lenet_300_100, zoo.lenet5])
def test_zoo_round_trip(tmp_path, build):
    model = randomize(build(), 7)
    loaded = round_trip(model, tmp_path / "zoo.h5")
    assert loaded.metadata == {}


def test_float64_model_stays_float64(tmp_path):
    model = randomize(zoo.lenet5(dtype=np.float64), 5)
    loaded = round_trip(model, tmp_path / "f64.h5")
    assert loaded.dtype == np.float64
    assert all(w.dtype == np.float64 for _, _, w in loaded.parameters())


def test_dropout_and_masks_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    model = randomize(Model([
        Conv2D(1, 3, 3, stride=2, padding=1, rng=rng, name="conv"), MaxPool2D(2, 1, name="pool"),
        Flatten(name="flat"), Dropout(0.25, name="drop"),
        Dense(12, 5, rng=rng, name="fc"), ReLU(name="relu"), Dropout(0.5, name="drop2"),
        Dense(5, 2, rng=rng, name="out"),
    ], input_shape=(1, 6, 6), name="masked"))
    for layer in (model["conv"], model["fc"]):
        mask = rng.random(layer.params["W"].shape) > 0.5
        layer.set_param("W", layer.params["W"] * mask)
        layer.masks["W"] = mask
    model["out"].masks["b"] = np.array([1, 0], dtype=np.uint8)  # 0/1 ints load as bool
    metadata = {"config": {"lr": 0.01, "epochs": 3}, "history": [{"loss": np.float32(0.5)}]}
    loaded = round_trip(model, tmp_path / "masked.h5", metadata)
    assert loaded["drop"].rate == 0.25 and loaded["drop2"].rate == 0.5
    assert loaded.metadata == {"config": {"lr": 0.01, "epochs": 3}, "history": [{"loss": 0.5}]}


def test_layout_and_root_attributes(tmp_path):
    model = zoo.lenet5()
    path = save(model, tmp_path / "m.h5", {"seed": 3})
    with h5py.File(path, "r") as f:
        assert text(f, "format") == FORMAT_NAME
        assert f.attrs["version"] == 2  # a chain: the version older readers know
        assert f.attrs["version"].dtype == np.int64
        assert text(f, "kind") == "dense"
        assert text(f, "architecture") == "lenet-5"
        assert f.attrs["input_shape"].tolist() == [1, 28, 28]
        assert text(f, "dc_engine_version") == dc_engine.__version__
        assert json.loads(text(f, "metadata")) == {"seed": 3}
        assert f.attrs["metadata_crc32"] == zlib.crc32(text(f, "metadata").encode())
        assert json.loads(text(f, "layer_order")) == [layer.name for layer in model.layers]
        assert list(f["layers"]) == ["00_conv1", "01_pool1", "02_conv2", "03_pool2",
                                     "04_flatten", "05_ip1", "06_relu1", "07_ip2"]
        g = f["layers/00_conv1"]
        assert text(g, "type") == "Conv2D" and text(g, "name") == "conv1"
        assert json.loads(text(g, "hyperparameters"))["kernel_size"] == 5
        ds = g["W"]
        assert ds.dtype == np.float32 and ds.shape == (20, 1, 5, 5)
        assert ds.chunks is None and ds.compression is None
        assert ds.attrs["crc32"].dtype == np.uint32
        assert int(ds.attrs["crc32"]) == store._crc32(model["conv1"].params["W"])


def test_layer_name_with_slash(tmp_path):
    model = Model([Dense(2, 2, name="a/b"), Dense(2, 1, name="c")], input_shape=(2,))
    loaded = round_trip(randomize(model), tmp_path / "slash.h5")
    assert loaded.layers[0].name == "a/b"


def test_load_leaves_file_closed(tmp_path, saved):
    load(saved)
    with h5py.File(saved, "r+"):  # HDF5 refuses this while the file is still open read-only
        pass
    with h5py.File(saved, "r+") as f:
        f["layers/00_fc1/W"][0, 0] += 1.0
    with pytest.raises(DCFormatError):
        load(saved)
    with h5py.File(saved, "r+"):
        pass


def test_read_metadata(saved):
    info = read_metadata(saved)
    json.dumps(info)
    assert info["format"] == FORMAT_NAME and info["kind"] == "dense"
    assert info["version"] == 2 and info["architecture"] == "tiny"
    assert info["input_shape"] == [4] and info["metadata"] == {"note": "tiny"}
    assert info["layer_order"] == ["fc1", "relu", "fc2"]
    assert info["file_size"] == os.path.getsize(saved)
    assert isinstance(info["dc_engine_version"], str)
    assert info["layers"][0]["arrays"]["W"] == {"shape": [3, 4], "dtype": "float32"}
    assert info["layers"][1] == {"name": "relu", "type": "ReLU", "hyperparameters": {},
                                 "arrays": {}}


# --------------------------------------------------------------------------------------------
# Shared weights (stage 2, version 2) and version-1 files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build, bits", [
    (zoo.lenet5, {"conv1": 5, "conv2": 9, "ip1": 8, "ip2": 5}),
    (zoo.lenet_300_100, {"ip1": 8, "ip2": 9, "ip3": 5}),
])
def test_shared_zoo_round_trip(tmp_path, build, bits):
    model = randomize(build(), 11)
    for name, b in bits.items():
        prune_and_share(model[name], b, keep=0.1 if name == "ip1" else 1.0)
    loaded = round_trip(model, tmp_path / "shared.h5", {"stage": 2})
    for name, b in bits.items():
        tie = loaded[name].ties["W"]
        assert tie.bits == b and tie.codebook.shape == (2**b,)
        assert tie.idx.dtype == index_dtype(b) == (np.uint8 if b <= 8 else np.uint16)
        assert tie.codebook[0] == 0.0
        assert np.array_equal(loaded[name].params["W"], tie.codebook[tie.idx])
        assert "b" not in loaded[name].ties
    assert sorted(loaded["ip1"].masks) == ["W"]
    assert loaded.metadata == {"stage": 2}
    with h5py.File(tmp_path / "shared.h5", "r") as f:
        assert f.attrs["version"] == 2 and DENSE_VERSION == 3
        g = f["layers"][[k for k in f["layers"] if k.endswith("_ip1")][0]]
        assert sorted(g) == ["b", "codebook_W", "index_W", "mask_W"]
        assert sorted(g.attrs) == ["hyperparameters", "name", "type"]  # bits is implicit
        assert g["codebook_W"].dtype == np.float32 and g["index_W"].dtype == np.uint8
        for key in ("codebook_W", "index_W"):
            assert g[key].chunks is None and g[key].compression is None
            assert g[key].attrs["crc32"].dtype == np.uint32
        tie = model["ip1"].ties["W"]
        assert int(g["codebook_W"].attrs["crc32"]) == store._crc32(tie.codebook)
        assert int(g["index_W"].attrs["crc32"]) == store._crc32(tie.idx)
    info = read_metadata(tmp_path / "shared.h5")
    arrays = {layer["name"]: layer["arrays"] for layer in info["layers"]}
    assert arrays["ip1"]["index_W"]["dtype"] == "uint8"
    assert "W" not in arrays["ip1"]


def test_shared_file_is_smaller(tmp_path):
    model = randomize(zoo.lenet_300_100(), 1)
    dense = save(model, tmp_path / "dense.h5").stat().st_size
    prune_and_share(model["ip1"], 5, keep=0.1)
    model["ip1"].masks.clear()  # the pruned weights are index 0; a mask would add a byte each
    shared = save(model, tmp_path / "shared.h5").stat().st_size
    # A uint8 index instead of float32 weights: 3 bytes less per weight, plus a few headers.
    assert dense - 3 * 784 * 300 < shared < dense - 3 * 784 * 300 + 2048


def test_shared_float64_and_mixed_codebook_dtypes(tmp_path):
    model = shared_tiny_model(np.float64)
    assert model["fc1"].ties["W"].codebook.dtype == np.float64
    # A float32 codebook in a float64 layer (quantize_weights' own output) is stored as float32.
    layer = model["fc2"]
    tie = WeightShare(model["fc2"].ties["W"].codebook.astype(np.float32), layer.ties["W"].idx)
    layer.ties["W"] = tie
    tie.apply(layer.params["W"])
    loaded = round_trip(model, tmp_path / "f64.h5")
    assert loaded["fc2"].dtype == np.float64
    assert loaded["fc2"].ties["W"].codebook.dtype == np.float32
    assert loaded["fc1"].ties["W"].codebook.dtype == np.float64


def test_all_parameters_shared(tmp_path):
    model = tiny_model(np.float64)
    for name in ("W", "b"):
        share_layer(model["fc1"], 3, name=name)
    loaded = round_trip(model, tmp_path / "all.h5")
    assert loaded["fc1"].dtype == np.float64 and sorted(loaded["fc1"].ties) == ["W", "b"]
    # With no float array left, the codebooks carry the layer dtype: a float32 one cannot.
    tie = model["fc1"].ties["b"]
    model["fc1"].ties["b"] = WeightShare(tie.codebook.astype(np.float32), tie.idx)
    with pytest.raises(TypeError, match=r"'fc1'.*every parameter is shared.*\['b'\]"):
        save(model, tmp_path / "all.h5")


def test_loaded_shared_model_keeps_training(tmp_path):
    model = load(save(shared_tiny_model(), tmp_path / "m.h5"))
    rng = np.random.default_rng(5)
    for layer, name, w in model.parameters():
        layer.grads[name][...] = rng.standard_normal(w.shape)
    before = model["fc2"].ties["W"].codebook.copy()
    SGD().step(model, 0.1)
    tie = model["fc2"].ties["W"]
    assert not np.array_equal(tie.codebook, before) and tie.codebook[0] == 0.0
    assert np.array_equal(model["fc2"].params["W"], tie.codebook[tie.idx])
    round_trip(model, tmp_path / "again.h5")


def test_other_ties_are_not_stored(tmp_path):
    class Frozen(Tie):
        pass

    model = tiny_model()
    model["fc1"].ties["W"] = Frozen()
    save(model, tmp_path / "m.h5")
    loaded = load(tmp_path / "m.h5")
    assert loaded["fc1"].ties == {}
    assert np.array_equal(loaded["fc1"].params["W"], model["fc1"].params["W"])


def test_max_bits_matches_quantize():
    assert store._MAX_CODES == 2**MAX_BITS


@pytest.mark.parametrize("name, arch, n_params", [
    ("lenet-300-100", "lenet-300-100", 266_610), ("lenet-300-100.pruned", "lenet-300-100", 266_610),
    ("lenet-5", "lenet-5", 431_080), ("lenet-5.pruned", "lenet-5", 431_080),
])
def test_shipped_version_1_models_still_load(name, arch, n_params):
    path = MODELS_DIR / f"{name}.h5"
    info = read_metadata(path)
    assert info["version"] == 1 and info["architecture"] == arch
    model = load(path)
    assert model.name == arch and model.num_params() == n_params
    assert all(not layer.ties for layer in model.layers)
    with h5py.File(path, "r") as f:  # bit-exact: the parameters are the stored bytes
        for i, layer in enumerate(model.layers):
            g = f["layers"][store._group_key(i, len(model.layers), layer.name)]
            assert sorted(g) == sorted(layer.params)
            for k, w in layer.params.items():
                assert w.dtype == g[k].dtype and w.tobytes() == g[k][()].tobytes()
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    assert np.all(np.isfinite(model.forward(x)))


def test_version_1_file_loads_unchanged(saved):
    expected = load(saved)
    with h5py.File(saved, "r+") as f:
        f.attrs["version"] = np.int64(1)  # what a version-1 writer wrote for this model
    assert read_metadata(saved)["version"] == 1
    assert_same_model(expected, load(saved), np.random.default_rng(0).random((2, 4)))


def test_shared_arrays_in_version_1_file_rejected(shared_saved):
    with h5py.File(shared_saved, "r+") as f:
        f.attrs["version"] = np.int64(1)
    with pytest.raises(DCFormatError, match=r"layer 'fc1'.*shared-weight arrays in a "
                                            r"version-1 file.*'codebook_W', 'index_W'"):
        load(shared_saved)


@st.composite
def small_models(draw):
    """Valid random stacks: [Conv2D, optional MaxPool2D]* -> Flatten -> Dense*, or Dense only."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers = []
    if draw(st.booleans()):
        c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 7)), draw(st.integers(3, 7))
        input_shape = (c, h, w)
        for _ in range(draw(st.integers(0, 2))):
            k = draw(st.integers(1, min(h, w)))
            s, p = draw(st.integers(1, 2)), draw(st.integers(0, 1))
            oc = draw(st.integers(1, 3))
            layers.append(Conv2D(c, oc, k, stride=s, padding=p, rng=rng, dtype=dtype))
            c, h, w = oc, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if draw(st.booleans()) and min(h, w) >= 2:
                layers.append(MaxPool2D(2))
                h, w = (h - 2) // 2 + 1, (w - 2) // 2 + 1
        layers.append(Flatten())
        n = c * h * w
    else:
        n = draw(st.integers(1, 6))
        input_shape = (n,)
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, 5))
        layers.append(Dense(n, out, rng=rng, dtype=dtype))
        if draw(st.booleans()):
            layers.append(ReLU())
        n = out
    name = draw(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8))
    model = Model(layers, input_shape=input_shape, name=name)
    for layer in model.layers:
        if layer.params and draw(st.booleans()):
            layer.masks["W"] = rng.random(layer.params["W"].shape) > 0.3
    model = randomize(model, draw(st.integers(0, 1000)))
    for layer in model.layers:
        if layer.params and draw(st.booleans()):
            share_layer(layer, draw(st.integers(1, 9)))
    return model


@settings(max_examples=25,  # deadline and derandomisation come from the "dc" profile
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(model=small_models(), metadata=st.dictionaries(st.text(max_size=5), st.integers()))
def test_random_stacks_round_trip(tmp_path, model, metadata):
    loaded = round_trip(model, tmp_path / "rand.h5", metadata)
    assert loaded.metadata == metadata


# --------------------------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load(tmp_path / "nope.h5")
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "noise.h5"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DCFormatError, match="not an HDF5 file or truncated"):
        load(path)
    with pytest.raises(DCFormatError, match="not an HDF5 file or truncated"):
        read_metadata(path)


def test_truncated_files(tmp_path):
    path = save(randomize(zoo.lenet_300_100()), tmp_path / "full.h5")
    raw = path.read_bytes()
    for frac in (0.0, 0.001, 0.1, 0.5, 0.9, 0.999):
        cut = tmp_path / f"cut{frac}.h5"
        cut.write_bytes(raw[:int(len(raw) * frac)])
        with pytest.raises(DCFormatError, match="truncated"):
            load(cut)


def test_foreign_hdf5(tmp_path):
    path = tmp_path / "keras.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15"
        f.create_dataset("model_weights", data=np.zeros(3))
    with pytest.raises(DCFormatError, match="foreign file.*no 'format' attribute"):
        load(path)
    with h5py.File(path, "a") as f:
        h5io.set_attr(f, "format", "other-engine")
    with pytest.raises(DCFormatError, match="foreign file.*other-engine"):
        read_metadata(path)
    with h5py.File(path, "a") as f:
        f.attrs["format"] = "dc-engine"  # h5py writes a variable-length string
    with pytest.raises(DCFormatError, match="foreign file.*variable-length 'format'"):
        load(path)


def test_future_version(saved):
    with h5py.File(saved, "r+") as f:
        f.attrs["version"] = np.int64(DENSE_VERSION + 1)
    with pytest.raises(DCFormatError, match=rf"version {DENSE_VERSION + 1}") as err:
        load(saved)
    assert f"<= {DENSE_VERSION}" in str(err.value)
    assert "Upgrade dc-engine" in str(err.value) and str(saved) in str(err.value)


@pytest.mark.parametrize("attr, value, match", [
    ("kind", "sparse", "unsupported file kind"),
    ("version", np.int64(0), "unsupported file format version"),
    ("version", "1", "bad attribute 'version'"),
    ("metadata", "{not json", "broken JSON in attribute 'metadata'"),
    ("metadata", "[1, 2]", "bad attribute 'metadata'"),
    ("layer_order", '["fc1", "fc1"]', "distinct layer names"),
    ("layer_order", '["fc1", "relu"]', "do not match layer_order"),
    ("input_shape", np.array([5], dtype=np.int64), "layers do not form a model"),
    ("input_shape", np.array([0], dtype=np.int64), "positive integers"),
])
def test_bad_root_attributes(saved, attr, value, match):
    with h5py.File(saved, "r+") as f:
        h5io.set_attr(f, attr, value)
        if attr == "metadata":
            h5io.set_attr(f, "metadata_crc32", np.uint32(zlib.crc32(value.encode())))
    with pytest.raises(DCFormatError, match=match):
        load(saved)


def test_variable_length_attribute_not_read(saved):
    with h5py.File(saved, "r+") as f:
        f["layers/01_relu"].attrs["type"] = "ReLU"  # variable-length: lives in the global heap
    with pytest.raises(DCFormatError, match="layer 'relu'.*bad attribute 'type'.*fixed-size"):
        load(saved)


def test_corrupted_metadata(saved):
    with h5py.File(saved, "r+") as f:
        h5io.set_attr(f, "metadata", '{"note": "tinY"}')
    with pytest.raises(DCFormatError, match="CRC32 mismatch in attribute 'metadata'"):
        load(saved)


def test_missing_root_attribute(saved):
    with h5py.File(saved, "r+") as f:
        del f.attrs["architecture"]
    with pytest.raises(DCFormatError, match="missing attribute 'architecture'"):
        load(saved)


@pytest.mark.parametrize("attr, value, match", [
    ("type", "Conv3D", "unknown layer type.*'Conv3D'"),
    ("hyperparameters", '{"in_features": 4,', "broken JSON in attribute 'hyperparameters'"),
    ("hyperparameters", '{"in_features": 5, "out_features": 3}', "array 'W' has the wrong shape"),
    ("hyperparameters", '{"in_features": 4}', "bad hyperparameters"),
    ("hyperparameters", '{"in_features": 4, "out_features": 3, "rng": 1}', "bad hyperparameters"),
    ("hyperparameters", '{"in_features": 4.0, "out_features": 3}', "bad hyperparameters"),
    ("name", "other", "wrong name"),
])
def test_bad_layer_attributes(saved, attr, value, match):
    with h5py.File(saved, "r+") as f:
        h5io.set_attr(f["layers/00_fc1"], attr, value)
    with pytest.raises(DCFormatError, match=match) as err:
        load(saved)
    assert "layer 'fc1'" in str(err.value)


def test_absurd_hyperparameters_fail_before_allocation(saved):
    with h5py.File(saved, "r+") as f:
        h5io.set_attr(f["layers/00_fc1"], "hyperparameters",
                        json.dumps({"in_features": 10**7, "out_features": 10**7}))
    with pytest.raises(DCFormatError, match="wrong shape"):
        load(saved)


def test_wrong_array_shape(saved):
    with h5py.File(saved, "r+") as f:
        g = f["layers/02_fc2"]
        del g["W"]
        w = np.zeros((2, 4), dtype=np.float32)
        g.create_dataset("W", data=w).attrs["crc32"] = np.uint32(store._crc32(w))
    with pytest.raises(DCFormatError, match=r"layer 'fc2'.*array 'W' has the wrong shape"):
        load(saved)


def test_corrupted_array_bytes(saved):
    with h5py.File(saved, "r+") as f:
        f["layers/02_fc2/b"][1] += 1.0
    with pytest.raises(DCFormatError, match=r"layer 'fc2'.*CRC32 mismatch in array 'b'"):
        load(saved)


@pytest.mark.parametrize("name, match", [("W", "arrays do not match"),
                                         ("b", "arrays do not match")])
def test_missing_array(saved, name, match):
    with h5py.File(saved, "r+") as f:
        del f[f"layers/00_fc1/{name}"]
    with pytest.raises(DCFormatError, match=match):
        load(saved)


def test_unexpected_array_and_group(saved):
    with h5py.File(saved, "r+") as f:
        f["layers/01_relu"].create_dataset("W", data=np.zeros(2, dtype=np.float32))
    with pytest.raises(DCFormatError, match="layer 'relu'.*arrays do not match"):
        load(saved)
    with h5py.File(saved, "r+") as f:
        del f["layers/01_relu/W"]
        f["layers"].create_group("03_extra")
    with pytest.raises(DCFormatError, match=r"unexpected \['03_extra'\]"):
        load(saved)


def _replace(saved: Path, key: str, data: np.ndarray, **kw) -> None:
    """Overwrite dataset ``key`` with ``data`` and a matching CRC32."""
    with h5py.File(saved, "r+") as f:
        del f[key]
        ds = f.create_dataset(key, data=data, **kw)
        ds.attrs["crc32"] = np.uint32(store._crc32(np.ascontiguousarray(data)))


def test_non_finite_weights(saved):
    w = np.ones((3, 4), dtype=np.float32)
    w[1, 2] = np.nan
    _replace(saved, "layers/00_fc1/W", w)
    with pytest.raises(DCFormatError, match="layer 'fc1'.*non-finite values in array 'W'"):
        load(saved)


@pytest.mark.parametrize("data, match", [
    (np.ones((3, 4), dtype=np.int32), "bad parameter dtype"),
    (np.ones((3, 4), dtype=np.float16), "bad parameter dtype"),
])
def test_bad_param_dtype(saved, data, match):
    _replace(saved, "layers/00_fc1/W", data)
    with pytest.raises(DCFormatError, match=match):
        load(saved)


def test_mixed_param_dtypes(saved):
    _replace(saved, "layers/00_fc1/b", np.zeros(3, dtype=np.float64))
    with pytest.raises(DCFormatError, match="one dtype per layer"):
        load(saved)


@pytest.mark.parametrize("key, data, match", [
    ("mask_W", np.full((3, 4), 2, dtype=np.uint8), "only 0/1 values"),
    ("mask_W", np.ones((4, 3), dtype=np.uint8), "bad mask 'mask_W'"),
    ("mask_W", np.ones((3, 4), dtype=np.float32), "bad mask 'mask_W'"),
    ("mask_V", np.ones((3, 4), dtype=np.uint8), "has no parameter"),
])
def test_bad_masks(saved, key, data, match):
    with h5py.File(saved, "r+") as f:
        ds = f["layers/00_fc1"].create_dataset(key, data=data)
        ds.attrs["crc32"] = np.uint32(store._crc32(data))
    with pytest.raises(DCFormatError, match=match):
        load(saved)


def test_chunked_dataset_rejected(saved):
    w = np.ones((3, 4), dtype=np.float32)
    _replace(saved, "layers/00_fc1/W", w, chunks=(1, 4), compression="gzip")
    with pytest.raises(DCFormatError, match="unsupported storage for array 'W'"):
        load(saved)


def test_soft_link_layer_rejected(saved):
    with h5py.File(saved, "r+") as f:
        f.move("layers/01_relu", "relu_elsewhere")
        f["layers/01_relu"] = h5py.SoftLink("/relu_elsewhere")
    with pytest.raises(DCFormatError, match="soft or external link"):
        load(saved)


def _flip_fuzz(model, metadata, tmp_path, step: int, bit: int) -> tuple[int, int]:
    """Flip ``bit`` in every ``step``-th byte of a saved file; each load must either raise
    DCFormatError or give back the same model and metadata. Returns (failures, trials)."""
    path = save(model, tmp_path / "m.h5", metadata)
    raw = path.read_bytes()
    damaged = tmp_path / "damaged.h5"
    x = np.random.default_rng(4).random((2, 4))
    failures = 0
    for i in range(0, len(raw), step):
        flipped = bytearray(raw)
        flipped[i] ^= bit
        damaged.write_bytes(bytes(flipped))
        try:
            loaded = load(damaged)
        except DCFormatError:
            failures += 1
            continue
        assert_same_model(model, loaded, x)  # a flip in unused space changes nothing
        assert loaded.metadata == (metadata or {})
    return failures, len(raw) // step


def test_damaged_bytes_never_load_silently(tmp_path):
    failures, trials = _flip_fuzz(tiny_model(), {"h": [1.5]}, tmp_path, 19, 0x10)
    # Most flips must be caught (checksums on headers and data); the rest must be harmless.
    assert failures > trials // 3


def test_missing_crc(saved):
    with h5py.File(saved, "r+") as f:
        del f["layers/00_fc1/b"].attrs["crc32"]
    with pytest.raises(DCFormatError, match="missing attribute 'crc32'"):
        load(saved)


def _set_crc(saved: Path, key: str) -> None:
    """Recompute the CRC32 of dataset ``key`` after an edit (a consistent crafted file)."""
    with h5py.File(saved, "r+") as f:
        f[key].attrs["crc32"] = np.uint32(store._crc32(f[key][()]))


@pytest.mark.parametrize("key, data, match", [
    ("00_fc1/index_W", np.full((3, 4), 4, dtype=np.uint8),
     r"bad index 'index_W'.*values < 4 .*maximum of 4"),
    ("02_fc2/index_W", np.full((2, 3), 512, dtype=np.uint16), r"bad index.*values < 512"),
    ("00_fc1/codebook_W", np.array([0.5, 1, 2, 3], dtype=np.float32),
     r"bad codebook 'codebook_W'.*codebook\[0\] == 0.0.*0\.5"),
    ("00_fc1/codebook_W", np.array([0, 1, 2], dtype=np.float32),
     r"bad codebook 'codebook_W'.*2\*\*bits entries.*shape \(3,\)"),
    ("00_fc1/codebook_W", np.zeros(1, dtype=np.float32), r"bad codebook.*shape \(1,\)"),
    ("00_fc1/codebook_W", np.zeros((2, 2), dtype=np.float32), r"bad codebook.*shape \(2, 2\)"),
    ("00_fc1/codebook_W", np.zeros(4, dtype=np.int32), r"bad codebook.*float32 or float64"),
    ("00_fc1/codebook_W", np.zeros(4, dtype=np.float16), r"bad codebook.*float32 or float64"),
    ("00_fc1/codebook_W", np.array([0, 1, np.inf, 3], dtype=np.float32),
     r"non-finite values in array 'codebook_W'"),
    ("00_fc1/index_W", np.zeros((3, 4), dtype=np.uint16),
     r"bad index 'index_W'.*uint8 for a 2-bit codebook of 4 entries.*uint16"),
    ("00_fc1/index_W", np.zeros((3, 4), dtype=np.int8), r"bad index.*uint8.*int8"),
    ("02_fc2/index_W", np.zeros((2, 3), dtype=np.uint8),
     r"bad index.*uint16 for a 9-bit codebook.*uint8"),
    ("00_fc1/index_W", np.zeros((4, 3), dtype=np.uint8), r"array 'index_W' has the wrong shape"),
])
def test_bad_shared_weights(shared_saved, key, data, match):
    _replace(shared_saved, f"layers/{key}", data)
    with pytest.raises(DCFormatError, match=match) as err:
        load(shared_saved)
    layer = key.split("_", 1)[1].split("/")[0]
    assert f"layer {layer!r}" in str(err.value) and str(shared_saved) in str(err.value)


def test_huge_codebook_rejected_before_reading(shared_saved, monkeypatch):
    _replace(shared_saved, "layers/00_fc1/codebook_W", np.zeros(2**17, dtype=np.float32))
    monkeypatch.setattr(store, "_read_array", lambda *a: pytest.fail("read an array"))
    with pytest.raises(DCFormatError, match=r"bad codebook.*2 to 65536.*shape \(131072,\)"):
        load(shared_saved)


def test_absurd_shared_hyperparameters_fail_before_allocation(shared_saved):
    with h5py.File(shared_saved, "r+") as f:
        h5io.set_attr(f["layers/00_fc1"], "hyperparameters",
                        json.dumps({"in_features": 10**7, "out_features": 10**7}))
    with pytest.raises(DCFormatError, match="array 'index_W' has the wrong shape"):
        load(shared_saved)


@pytest.mark.parametrize("key", ["00_fc1/index_W", "00_fc1/codebook_W", "02_fc2/index_W",
                                 "02_fc2/codebook_W"])
def test_corrupted_shared_bytes(shared_saved, key):
    with h5py.File(shared_saved, "r+") as f:
        ds = f[f"layers/{key}"]
        data = ds[()]
        data.reshape(-1)[-1] = 1 if data.dtype.kind == "u" else data.reshape(-1)[-1] + 1
        ds[...] = data
    layer, array = key.split("_", 1)[1].split("/")
    with pytest.raises(DCFormatError, match=rf"layer '{layer}'.*CRC32 mismatch in array "
                                            rf"'{array}' \(corrupt data\)"):
        load(shared_saved)


@pytest.mark.parametrize("drop, add, match", [
    ("index_W", None, r"incomplete shared weights.*\['W'\]"),
    ("codebook_W", None, r"incomplete shared weights.*\['W'\]"),
    (None, "W", r"parameter stored twice.*\['W'\]"),
    ("index_W", "index_b", "incomplete shared weights"),
])
def test_inconsistent_shared_arrays(shared_saved, drop, add, match):
    with h5py.File(shared_saved, "r+") as f:
        g = f["layers/00_fc1"]
        if drop:
            del g[drop]
        if add:
            data = np.zeros((3, 4), dtype=np.float32 if add == "W" else np.uint8)
            g.create_dataset(add, data=data).attrs["crc32"] = np.uint32(store._crc32(data))
    with pytest.raises(DCFormatError, match=match):
        load(shared_saved)


def test_damaged_shared_bytes_never_load_silently(tmp_path):
    failures, trials = _flip_fuzz(shared_tiny_model(), None, tmp_path, 23, 0x08)
    assert failures > trials // 3


# --------------------------------------------------------------------------------------------
# Save: validation and atomicity
# --------------------------------------------------------------------------------------------


def _no_disk(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("save() touched the disk before validating its input")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)


def test_non_json_metadata_fails_before_disk(saved, monkeypatch):
    before = saved.read_bytes()
    _no_disk(monkeypatch)
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        save(tiny_model(), saved, {"callback": object()})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        save(tiny_model(), saved, [1, 2])
    assert saved.read_bytes() == before
    assert files_in(saved.parent) == ["model.h5"]


def test_bad_models_fail_before_disk(tmp_path, monkeypatch):
    _no_disk(monkeypatch)
    model = tiny_model()
    model["fc1"].params["W"][0, 0] = np.inf
    with pytest.raises(ValueError, match="'fc1'.*'W' has 1 NaN or inf"):
        save(model, tmp_path / "m.h5")
    model = tiny_model()
    model["fc1"].masks["W"] = np.ones((4, 3), dtype=bool)
    with pytest.raises(ValueError, match="mask for 'W' must have shape"):
        save(model, tmp_path / "m.h5")
    model["fc1"].masks["W"] = np.full((3, 4), 0.5)
    with pytest.raises(ValueError, match="only 0/1"):
        save(model, tmp_path / "m.h5")
    with pytest.raises(TypeError, match="Model"):
        save(object(), tmp_path / "m.h5")
    model = tiny_model()
    model.layers[1].name = "re\x00lu"
    with pytest.raises(ValueError, match="no NUL characters"):
        save(model, tmp_path / "m.h5")
    model.layers[1].name = "relu"
    model.name = "bad\ud800"  # a lone surrogate: not encodable as UTF-8
    with pytest.raises(ValueError, match="model.name.*cannot be stored.*surrogate"):
        save(model, tmp_path / "m.h5")
    assert files_in(tmp_path) == []


def _break_tie(model, what):
    tie = model["fc1"].ties["W"]
    if what == "codebook0":
        tie.codebook[0] = 0.25
    elif what == "codebook_nan":
        tie.codebook[2] = np.nan
        model["fc1"].set_param("W", np.zeros((3, 4)))
        tie.idx[...] = 0
    elif what == "index_range":
        tie.idx[0, 0] = 4
    elif what == "index_dtype":
        tie.idx = tie.idx.astype(np.uint16)
    elif what == "index_shape":
        tie.idx = tie.idx.T.copy()
    elif what == "codebook_len":
        tie.codebook = np.zeros(3, dtype=np.float32)
    elif what == "stale_param":
        tie.codebook[1] += 1.0  # trained, but apply() not called
    elif what == "edited_param":
        model["fc1"].params["W"][0, 0] += 1.0
    elif what == "orphan":
        model["fc1"].ties["V"] = model["fc1"].ties.pop("W")
    elif what == "param_name":
        model["fc1"].params["index_W"] = model["fc1"].params["b"]


@pytest.mark.parametrize("what, exc, match", [
    ("codebook0", ValueError, r"'fc1': shared parameter 'W': codebook\[0\] must be 0.0"),
    ("codebook_nan", ValueError, "codebook has NaN or inf"),
    ("index_range", ValueError, "index values must be < 4"),
    ("index_dtype", TypeError, "index must be uint8 with shape"),
    ("index_shape", TypeError, r"index must be uint8 with shape \(3, 4\)"),
    ("codebook_len", TypeError, r"2\*\*bits entries.*shape \(3,\)"),
    ("stale_param", ValueError, r"differs from codebook\[index\].*apply"),
    ("edited_param", ValueError, r"differs from codebook\[index\]"),
    ("orphan", ValueError, "tie for 'V' has no parameter"),
    ("param_name", ValueError, "'index_W' cannot be stored"),
])
def test_bad_shared_models_fail_before_disk(tmp_path, monkeypatch, what, exc, match):
    model = shared_tiny_model()
    _break_tie(model, what)
    _no_disk(monkeypatch)
    with pytest.raises(exc, match=match):
        save(model, tmp_path / "m.h5")
    assert files_in(tmp_path) == []


def test_failure_midway_keeps_old_file(saved, monkeypatch):
    before = saved.read_bytes()
    real = store._write_layer
    calls = []

    def flaky(group, key, plan):
        calls.append(key)
        real(group, key, plan)
        if len(calls) == 2:
            raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(store, "_write_layer", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        save(randomize(zoo.lenet_300_100()), saved)
    assert len(calls) == 2
    assert saved.read_bytes() == before
    assert files_in(saved.parent) == ["model.h5"]
    load(saved)


def test_failure_at_fsync_keeps_old_file(saved, monkeypatch):
    before = saved.read_bytes()

    def broken(path):
        raise OSError("fsync failed (simulated)")

    monkeypatch.setattr(files, "_fsync_file", broken)
    with pytest.raises(OSError, match="simulated"):
        save(tiny_model(np.float64), saved)
    assert saved.read_bytes() == before
    assert files_in(saved.parent) == ["model.h5"]


def test_overwrite_replaces_and_keeps_mode(saved):
    os.chmod(saved, 0o600)
    model = randomize(tiny_model(), 9)
    save(model, saved, {"v": 2})
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert load(saved).metadata == {"v": 2}
    assert files_in(saved.parent) == ["model.h5"]


def test_bad_target_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected an existing folder"):
        save(tiny_model(), tmp_path / "no" / "such" / "m.h5")
    with pytest.raises(IsADirectoryError, match="found a directory"):
        save(tiny_model(), tmp_path)
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Boundaries
# --------------------------------------------------------------------------------------------


def _imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_file_modules_import_h5py():
    importers = sorted(p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.py")
                       if "h5py" in _imported_modules(p.read_text(encoding="utf-8")))
    assert importers == ["io/_h5.py", "io/compressed.py", "io/dense.py"]


def test_save_keeps_the_model_metadata_by_default(tmp_path):
    """dc_engine.save(dc_engine.load(f), g) keeps f's metadata (the training recipe): a later
    compress still finds it; an explicit dict replaces it."""
    import dc_engine

    src = Path(__file__).resolve().parents[1] / "data" / "models" / "lenet-300-100.h5"
    model = dc_engine.load(src)
    assert model.metadata["train_config"]
    again = dc_engine.load(dc_engine.save(model, tmp_path / "copy.h5"))
    assert again.metadata == model.metadata
    other = dc_engine.load(dc_engine.save(model, tmp_path / "other.h5", metadata={"a": 1}))
    assert other.metadata == {"a": 1}
