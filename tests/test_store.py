"""Tests for dc_engine.store: dense HDF5 save/load, validation errors, atomic writes."""

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
from dc_engine import store, zoo
from dc_engine.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dc_engine.model import Model
from dc_engine.store import DENSE_VERSION, FORMAT_NAME, DCFormatError, load, read_metadata, save

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "dc_engine"


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


@pytest.fixture
def saved(tmp_path) -> Path:
    """A small valid model file to corrupt."""
    path = tmp_path / "model.h5"
    save(tiny_model(), path, {"note": "tiny"})
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
        assert f.attrs["version"] == DENSE_VERSION
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
    assert info["version"] == DENSE_VERSION and info["architecture"] == "tiny"
    assert info["input_shape"] == [4] and info["metadata"] == {"note": "tiny"}
    assert info["layer_order"] == ["fc1", "relu", "fc2"]
    assert info["file_size"] == os.path.getsize(saved)
    assert isinstance(info["dc_engine_version"], str)
    assert info["layers"][0]["arrays"]["W"] == {"shape": [3, 4], "dtype": "float32"}
    assert info["layers"][1] == {"name": "relu", "type": "ReLU", "hyperparameters": {},
                                 "arrays": {}}


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
    name = draw(st.text(st.characters(exclude_characters="\x00"), max_size=8))
    model = Model(layers, input_shape=input_shape, name=name)
    for layer in model.layers:
        if layer.params and draw(st.booleans()):
            layer.masks["W"] = rng.random(layer.params["W"].shape) > 0.3
    return randomize(model, draw(st.integers(0, 1000)))


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
        store._set_attr(f, "format", "other-engine")
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
    ("kind", "compressed", "unsupported file kind"),
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
        store._set_attr(f, attr, value)
        if attr == "metadata":
            store._set_attr(f, "metadata_crc32", np.uint32(zlib.crc32(value.encode())))
    with pytest.raises(DCFormatError, match=match):
        load(saved)


def test_variable_length_attribute_not_read(saved):
    with h5py.File(saved, "r+") as f:
        f["layers/01_relu"].attrs["type"] = "ReLU"  # variable-length: lives in the global heap
    with pytest.raises(DCFormatError, match="layer 'relu'.*bad attribute 'type'.*fixed-size"):
        load(saved)


def test_corrupted_metadata(saved):
    with h5py.File(saved, "r+") as f:
        store._set_attr(f, "metadata", '{"note": "tinY"}')
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
        store._set_attr(f["layers/00_fc1"], attr, value)
    with pytest.raises(DCFormatError, match=match) as err:
        load(saved)
    assert "layer 'fc1'" in str(err.value)


def test_absurd_hyperparameters_fail_before_allocation(saved):
    with h5py.File(saved, "r+") as f:
        store._set_attr(f["layers/00_fc1"], "hyperparameters",
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


def test_damaged_bytes_never_load_silently(tmp_path):
    model = tiny_model()
    path = save(model, tmp_path / "m.h5", {"h": [1.5]})
    raw = path.read_bytes()
    damaged = tmp_path / "damaged.h5"
    x = np.random.default_rng(4).random((2, 4))
    failures = 0
    for i in range(0, len(raw), 19):
        flipped = bytearray(raw)
        flipped[i] ^= 0x10
        damaged.write_bytes(bytes(flipped))
        try:
            loaded = load(damaged)
        except DCFormatError:
            failures += 1
            continue
        assert_same_model(model, loaded, x)  # a flip in unused space changes nothing
        assert loaded.metadata == {"h": [1.5]}
    assert failures > len(raw) // 19 // 3


def test_missing_crc(saved):
    with h5py.File(saved, "r+") as f:
        del f["layers/00_fc1/b"].attrs["crc32"]
    with pytest.raises(DCFormatError, match="missing attribute 'crc32'"):
        load(saved)


# --------------------------------------------------------------------------------------------
# Save: validation and atomicity
# --------------------------------------------------------------------------------------------


def _no_disk(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("save() touched the disk before validating its input")

    monkeypatch.setattr(store.tempfile, "mkstemp", refuse)


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

    monkeypatch.setattr(store, "_fsync_file", broken)
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


def test_only_store_imports_h5py():
    importers = sorted(p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.py")
                       if "h5py" in _imported_modules(p.read_text(encoding="utf-8")))
    assert importers == ["store.py"]
