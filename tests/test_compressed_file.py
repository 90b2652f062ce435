"""Tests for the compressed model file: dc_engine.io.compressed (write/read),
dc_engine.stages.encode (encode_model), dc_engine.stages.sizes and the size table, and
dc_engine.runtime (load and save of compressed models)."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dc_engine
from dc_engine import runtime
from dc_engine.app import jobs as pipeline
from dc_engine.app.report import size_table
from dc_engine.codecs.payload import encode_layer, payload_stats
from dc_engine.core.layers import LAYER_TYPES, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dc_engine.core.model import Model
from dc_engine.errors import DCFormatError
from dc_engine.io import _h5 as h5io
from dc_engine.io import compressed as container
from dc_engine.io import dense as store
from dc_engine.io.compressed import COMPACT_LIMIT, COMPRESSED_VERSION, LayerRecord
from dc_engine.runtime.files import layer_payload
from dc_engine.stages.encode import EncodeConfig, encode_model
from dc_engine.stages.quantize import share_layer
from dc_engine.stages.sizes import size_report

MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
TEXT = st.characters(codec="utf-8", exclude_characters="\x00")  # no NUL, no lone surrogates
FUZZ = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def sparsify(layer, rng: np.random.Generator, zero_fraction: float, run: bool) -> None:
    """Zero ``zero_fraction`` of W at random and, with ``run``, a long contiguous stretch
    (gaps longer than a small index field spans: the encoder needs filler entries)."""
    w = layer.params["W"].copy().reshape(-1)
    w[rng.random(w.size) < zero_fraction] = 0.0
    if run and w.size > 2:
        start = int(rng.integers(0, w.size // 2))
        w[start:start + max(2, (3 * w.size) // 4)] = 0.0
    layer.set_param("W", w.reshape(layer.params["W"].shape))


def quantize(model: Model, rng: np.random.Generator, bits: dict) -> Model:
    """Random biases, then share every weighted layer's W at ``bits[name]`` (stage 2)."""
    for layer in model.layers:
        if layer.params:
            layer.set_param("b", rng.standard_normal(layer.params["b"].shape))
            share_layer(layer, bits[layer.name])
    return model


def small_model() -> Model:
    """Conv (stride 2, padding 1) -> ReLU -> Flatten -> fc1 -> Dropout -> fc2; quantized."""
    rng = np.random.default_rng(0)
    model = Model([Conv2D(1, 2, 3, stride=2, padding=1, rng=rng, name="conv"), ReLU(),
                   Flatten(), Dense(18, 4, rng=rng, name="fc1"), Dropout(0.5),
                   Dense(4, 2, rng=rng, name="fc2")], input_shape=(1, 6, 6), name="small")
    sparsify(model["fc1"], rng, 0.5, run=True)
    return quantize(model, rng, {"conv": 3, "fc1": 2, "fc2": 4})


def records_of(model: Model, config: EncodeConfig | None = None) -> list[LayerRecord]:
    """The layer records a compressed file of the encoded model holds."""
    return [LayerRecord(l.name, l.type_name, l.hyperparameters,
                        layer_payload(l) if l.params else None)
            for l in encode_model(model, config).layers]


def write_model(model: Model, path: Path, config: EncodeConfig | None = None) -> Path:
    return dc_engine.save(encode_model(model, config), path)


def assert_decodes_to(model: Model, compressed: Model) -> None:
    """The compressed model holds the model's layers and, bit for bit, its weights and biases."""
    dense = compressed.to_dense()
    assert isinstance(dense, Model)
    assert dense.name == model.name and dense.input_shape == model.input_shape
    assert [(l.name, l.type_name, l.hyperparameters) for l in dense.layers] == \
        [(l.name, l.type_name, l.hyperparameters) for l in model.layers]
    for la, lb in zip(model.layers, dense.layers):
        assert sorted(lb.params) == sorted(la.params)
        for k, w in la.params.items():
            got = lb.params[k]
            assert got.dtype == np.float32 and got.shape == w.shape
            assert np.array_equal(got.view(np.uint32), w.view(np.uint32)), (la.name, k)


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture
def small_file(tmp_path) -> tuple[Path, Model]:
    """A small valid compressed file (conv, fc1, fc2 with payloads) to corrupt."""
    model = small_model()
    return write_model(model, tmp_path / "small.dc.h5", EncodeConfig(index_bits=2)), model


def edit_architecture(path: Path, edit) -> None:
    """Rewrite the ``architecture`` attribute: ``edit(doc)`` changes the parsed JSON in place,
    or returns a str that replaces the attribute verbatim."""
    with h5py.File(path, "r+") as f:
        doc = json.loads(f.attrs["architecture"].decode("utf-8"))
        new = edit(doc)
        h5io.set_attr(f, "architecture", new if isinstance(new, str) else json.dumps(doc))


def row(doc: dict, name: str) -> list:
    return next(r for r in doc["layers"] if r[0] == name)


def load_fails(path: Path, match: str, layer: str | None = None) -> str:
    """runtime.load and the package-level loader both raise DCFormatError naming the file
    (and the layer); returns the message."""
    with pytest.raises(DCFormatError, match=match) as err:
        runtime.load(path)
    with pytest.raises(DCFormatError, match=match):
        dc_engine.load(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    if layer is not None:
        assert f"layer {layer!r}" in msg
    return msg


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@st.composite
def quantized_models(draw):
    """Random quantized stacks: [Conv2D (stride, padding), MaxPool2D?, ReLU?]* -> Flatten ->
    Dropout? -> [Dense, ReLU?, Dropout?]+, or Dense layers only; random zeros (some layers all
    zero, some with long zero runs), random bits 1..8 per layer."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers = []
    if draw(st.booleans()):
        c, h, w = draw(st.integers(1, 2)), draw(st.integers(3, 8)), draw(st.integers(3, 8))
        input_shape = (c, h, w)
        for _ in range(draw(st.integers(1, 2))):
            s, p = draw(st.integers(1, 3)), draw(st.integers(0, 2))
            k = draw(st.integers(1, min(h, w) + 2 * p))
            oc = draw(st.integers(1, 3))
            layers.append(Conv2D(c, oc, k, stride=s, padding=p, rng=rng))
            c, h, w = oc, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if draw(st.booleans()) and min(h, w) >= 2:
                size = draw(st.integers(1, 2))
                stride = draw(st.integers(1, 2))
                layers.append(MaxPool2D(size, stride))
                h, w = (h - size) // stride + 1, (w - size) // stride + 1
            if draw(st.booleans()):
                layers.append(ReLU())
        layers.append(Flatten())
        n = c * h * w
    else:
        n = draw(st.integers(1, 40))
        input_shape = (n,)
    if draw(st.booleans()):
        layers.append(Dropout(draw(st.sampled_from([0.0, 0.25, 0.5]))))
    for i in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, 12))
        name = draw(st.sampled_from([None, f"fc{i}", f"schicht-ü{i}", f"层{i}"]))
        layers.append(Dense(n, out, rng=rng, name=name))
        if draw(st.booleans()):
            layers.append(ReLU())
        if draw(st.booleans()):
            layers.append(Dropout(0.5))
        n = out
    name = draw(st.text(TEXT, max_size=8))
    model = Model(layers, input_shape=input_shape, name=name)
    bits = {}
    for layer in model.layers:
        if layer.params:
            zeros = draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
            sparsify(layer, rng, zeros, run=draw(st.booleans()))
            bits[layer.name] = draw(st.integers(1, 8))
    return quantize(model, rng, bits)


INDEX_BITS = st.one_of(st.integers(1, 8), st.just("auto"))


@FUZZ
@given(model=quantized_models(), index_bits=INDEX_BITS, override=INDEX_BITS,
       seed=st.integers(0, 2**16))
def test_random_models_round_trip(tmp_path, model, index_bits, override, seed):
    weighted = [l.name for l in model.layers if l.params]
    config = EncodeConfig(index_bits=index_bits, layers={weighted[-1]: {"index_bits": override}})
    records = records_of(model, config)
    assert [(r.name, r.type) for r in records] == [(l.name, l.type_name) for l in model.layers]
    for r, layer in zip(records, model.layers):
        assert (r.payload is None) == (not layer.params)
        if r.payload is not None:
            stats = payload_stats(r.payload, r.name)
            ib = config.for_layer(r.name)[0]
            assert stats["index_bits"] == ib or ib == "auto"
            assert stats["weight_bits"] == layer.ties["W"].bits
            assert stats["nnz"] == np.count_nonzero(layer.params["W"])
    path = container.write(tmp_path / "m.dc.h5", model.name, model.input_shape, records)

    compressed = runtime.load(path)
    assert type(compressed) is Model and (compressed.compressed or not model.weighted_layers())
    assert compressed.name == model.name and compressed.input_shape == model.input_shape
    assert compressed.num_params() == model.num_params()
    assert compressed.output_shape() == model.output_shape()
    assert_decodes_to(model, compressed)
    x = np.random.default_rng(seed).standard_normal((3, *model.input_shape)).astype(np.float32)
    want = model.forward(x)
    got = compressed.forward(x)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(compressed.predict(x, batch_size=2), np.argmax(got, axis=1))
    assert np.array_equal(compressed.to_dense().forward(x), want)  # same weights, same math
    assert type(dc_engine.load(path)) is Model
    # the in-memory encoding is the file: its model saves to the same bytes
    again = dc_engine.save(encode_model(model, config), tmp_path / "again.dc.h5")
    assert again.read_bytes() == path.read_bytes()
    assert dc_engine.save(compressed, tmp_path / "back.dc.h5").read_bytes() == path.read_bytes()


def test_filler_entries_and_all_zero_layer_round_trip(tmp_path):
    """A layer with a gap of 199 zeros at 1- and 2-bit indices (fillers needed) and an
    all-zero layer (no entries at all) decode exactly."""
    rng = np.random.default_rng(3)
    model = Model([Dense(50, 4, rng=rng, name="gappy"), ReLU(),
                   Dense(4, 3, rng=rng, name="empty")], input_shape=(50,), name="gaps")
    w = model["gappy"].params["W"].copy()
    w.reshape(-1)[:199] = 0.0
    model["gappy"].set_param("W", w)
    model["empty"].set_param("W", np.zeros((3, 4), np.float32))
    quantize(model, rng, {"gappy": 1, "empty": 2})
    for ib in (1, 2, 8):
        records = records_of(model, EncodeConfig(index_bits=ib))
        gappy, empty = (payload_stats(r.payload, r.name) for r in records if r.payload)
        assert gappy["nnz"] == 1
        # A gap of 199 needs fillers below 8 bits: 2**ib - 1 zeros per filler entry.
        assert gappy["n_entries"] == 1 + 199 // 2**ib
        assert empty["nnz"] == 0 and empty["n_entries"] == 0
        path = container.write(tmp_path / "gaps.dc.h5", "gaps", (50,), records)
        loaded = runtime.load(path)
        assert_decodes_to(model, loaded)
        w = loaded.layers[2].params["W"]
        assert w.nnz == 0 and not w.to_dense().any()


records_strategy = st.lists(
    st.builds(LayerRecord,
              name=st.text(TEXT, min_size=0, max_size=6),
              type=st.sampled_from(sorted(LAYER_TYPES)),
              hyperparameters=st.dictionaries(
                  st.text(TEXT, max_size=4).filter(
                      lambda k: k not in ("name", "rng", "dtype", "params", "inputs")),
                  st.one_of(st.integers(-2**40, 2**40), st.text(TEXT, max_size=4),
                            st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                            st.none()), max_size=3),
              payload=st.one_of(st.none(), st.binary(min_size=1, max_size=300)),
              inputs=st.one_of(st.none(), st.lists(st.text(TEXT, max_size=4), min_size=1,
                                                   max_size=3))),
    min_size=1, max_size=6, unique_by=lambda r: r.name)


@FUZZ
@given(records=records_strategy, name=st.text(TEXT, max_size=10),
       input_shape=st.lists(st.integers(1, 2**31), min_size=1, max_size=8))
def test_container_round_trip_of_arbitrary_records(tmp_path, records, name, input_shape):
    """The container moves bytes: any payloads and JSON hyperparameters come back unchanged."""
    path = container.write(tmp_path / "r.dc.h5", name, input_shape, records)
    assert path == (tmp_path / "r.dc.h5").resolve()
    c = container.read(path)
    assert c.architecture == name and c.input_shape == tuple(input_shape)
    graph = any(r.inputs is not None for r in records)
    assert c.version == (2 if graph else 1) and c.file_bytes == os.path.getsize(path)
    assert c.layers == records
    with h5py.File(path, "r") as f:
        total = sum(len(r.payload) for r in records if r.payload is not None)
        assert sorted(f) == (["payload"] if total else [])
        if total:
            assert f["payload"].shape == (total,) and f["payload"].dtype == np.uint8


def test_empty_payload_is_stored_as_no_payload(tmp_path):
    """``payload_bytes`` 0 means "a layer without weights": b"" reads back as None."""
    path = container.write(tmp_path / "e.dc.h5", "e", (2,),
                           [LayerRecord("a", "ReLU", {}, b""), LayerRecord("b", "Dense", {})])
    assert [r.payload for r in container.read(path).layers] == [None, None]


def test_model_without_weights(tmp_path):
    """No payloads: the file has no dataset at all; it loads, runs and has a size table."""
    model = Model([Flatten(), ReLU(name="ü"), Dropout(0.5)], input_shape=(2, 3), name="nix")
    records = records_of(model)
    assert all(r.payload is None for r in records)
    path = container.write(tmp_path / "nix.dc.h5", model.name, model.input_shape, records)
    with h5py.File(path, "r") as f:
        assert list(f) == []
    loaded = runtime.load(path)
    assert [l.name for l in loaded.layers] == ["flatten1", "ü", "dropout1"]
    x = np.random.default_rng(0).standard_normal((2, 2, 3)).astype(np.float32)
    assert np.array_equal(loaded.forward(x), np.maximum(x.reshape(2, 6), 0))
    assert loaded.num_params() == 0
    report = pipeline.inspect(path)
    assert report["layers"] == [] and report["totals"]["compressed_bytes"] == 0
    assert report["totals"]["file_bytes"] == os.path.getsize(path)
    assert "n/a" in size_table(report) and "file on disk" in size_table(report)


def test_large_payload_is_stored_contiguous(tmp_path):
    """Payloads up to COMPACT_LIMIT live in the object header, larger ones contiguously."""
    rng = np.random.default_rng(1)
    for n, layout in ((COMPACT_LIMIT, h5py.h5d.COMPACT),
                      (COMPACT_LIMIT + 1, h5py.h5d.CONTIGUOUS)):
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        path = container.write(tmp_path / "big.dc.h5", "big", (3,),
                               [LayerRecord("x", "Dense", {}, blob[:7]),
                                LayerRecord("y", "Dense", {}, blob[7:])])
        with h5py.File(path, "r") as f:
            assert f["payload"].id.get_create_plist().get_layout() == layout
        c = container.read(path)
        assert c.layers[0].payload + c.layers[1].payload == blob
        assert n < c.file_bytes < n + 4096


def test_layout_and_determinism(small_file, tmp_path):
    path, model = small_file
    with h5py.File(path, "r") as f:
        assert sorted(f.attrs) == ["architecture", "format", "kind", "version"]
        assert f.attrs["format"] == b"dc-engine" and f.attrs["kind"] == b"compressed"
        assert f.attrs["version"] == 1  # a chain: the version older readers know
        assert f.attrs["version"].dtype == np.uint8
        doc = json.loads(f.attrs["architecture"].decode("utf-8"))
        assert doc["name"] == "small" and doc["input_shape"] == [1, 6, 6]
        assert [r[:2] for r in doc["layers"]] == [[l.name, l.type_name] for l in model.layers]
        assert doc["layers"][0][2] == model["conv"].hyperparameters
        assert sum(r[3] for r in doc["layers"]) == f["payload"].shape[0]
    # No timestamps: the same model gives the same bytes.
    again = write_model(model, tmp_path / "again.dc.h5", EncodeConfig(index_bits=2))
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("records, input_shape, exc, match", [
    ([], (3,), ValueError, "1 to 10000 layers"),
    ([LayerRecord("a", "ReLU", {}), LayerRecord("a", "ReLU", {})], (3,), ValueError,
     "distinct"),
    ([LayerRecord("a", "Sparse", {})], (3,), ValueError, "unknown type 'Sparse'"),
    ([LayerRecord("a\x00", "ReLU", {})], (3,), ValueError, "without NUL"),
    ([LayerRecord(3, "ReLU", {})], (3,), ValueError, "layer name must be a str"),
    ([LayerRecord("a", "ReLU", {"name": "b"})], (3,), ValueError, "without the keys"),
    ([LayerRecord("a", "ReLU", [1])], (3,), ValueError, "hyperparameters must be a dict"),
    ([LayerRecord("a", "Dense", {}, "text")], (3,), TypeError, "payload must be bytes"),
    ([LayerRecord("a", "ReLU", {})], (), ValueError, "input_shape"),
    ([LayerRecord("a", "ReLU", {})], (3, 0), ValueError, "input_shape"),
    ([LayerRecord("a", "ReLU", {})], (1,) * 9, ValueError, "input_shape"),
    ([LayerRecord("a", "ReLU", {})], (2**31 + 1,), ValueError, "input_shape"),
])
def test_write_rejects_what_read_would_reject_before_disk(tmp_path, records, input_shape, exc,
                                                          match):
    with pytest.raises(exc, match=match):
        container.write(tmp_path / "x.dc.h5", "arch", input_shape, records)
    assert files_in(tmp_path) == []


def test_write_rejects_bad_architecture_name(tmp_path):
    for name in (None, "a\x00b"):
        with pytest.raises(ValueError, match="architecture must be a str"):
            container.write(tmp_path / "x.dc.h5", name, (3,), [LayerRecord("a", "ReLU", {})])
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------------------------
# encode_model and EncodeConfig
# --------------------------------------------------------------------------------------------


def test_encode_model_refuses_unquantized_and_foreign_layers():
    model = small_model()
    model["fc2"].ties.clear()
    with pytest.raises(ValueError, match=r"'fc2' is not quantized.*dc-engine quantize"):
        encode_model(model)
    with pytest.raises(ValueError, match=r"\[encode.layers\] names \['nope'\]"):
        encode_model(small_model(), EncodeConfig(layers={"nope": {"index_bits": 3}}))
    model = small_model()
    tie = model["fc1"].ties["W"]
    tie.codebook[1] += 1.0  # W no longer equals codebook[idx]
    with pytest.raises(ValueError, match="'fc1'.*does not decode to the layer's weights"):
        encode_model(model)


@pytest.mark.parametrize("kwargs, match", [
    ({"index_bits": 0}, "index_bits"), ({"index_bits": 17}, "index_bits"),
    ({"index_bits": True}, "index_bits"), ({"index_bits": "best"}, "index_bits"),
    ({"layers": {"fc1": {"index_bits": 0}}}, r"encode.layers.fc1"),
    ({"layers": {"fc1": {"bits": 3}}},
     r"may only set \['bias', 'coder', 'index_bits', 'order'\]"),
    ({"order": "diagonal"}, r"order must be one of \['rows', 'cols', 'auto'\]"),
    ({"bias": "float16"}, r"bias must be one of \['float32', 'shared', 'auto'\]"),
    ({"container": "auto"}, r"container must be one of \['classic', 'compact'\]"),
    ({"layers": {"fc1": {"order": "cols ", "index_bits": 3}}}, r"encode.layers.fc1.*order"),
    ({"layers": {"fc1": {"coder": "rans"}}}, r"encode.layers.fc1.*unknown coder 'rans'"),
    ({"layers": []}, "table"), ({"coder": "rans"}, "unknown coder 'rans'"),
    ({"coder_options": {"max_code_length": 16}}, "max_code_length"),
    ({"coder_options": {"depth": 2}}, "does not take"),
    ({"coder": "fixed", "coder_options": {"max_code_length": 9}}, "does not take"),
])
def test_encode_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncodeConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown encode setting"):
        EncodeConfig.from_dict({"index_bit": 5})
    with pytest.raises(ValueError, match=r"move it to \[encode.coder_options\]"):
        EncodeConfig.from_dict({"max_code_length": 12})
    assert EncodeConfig.from_dict(EncodeConfig().to_dict()) == EncodeConfig()
    cfg = EncodeConfig(coder="huffman", coder_options={"max_code_length": 9},
                       layers={"fc1": {"coder": "fixed", "index_bits": "auto"}})
    assert EncodeConfig.from_dict(cfg.to_dict()) == cfg


def test_auto_index_bits_is_never_larger(small_file):
    _, model = small_file
    auto = records_of(model, EncodeConfig(index_bits="auto"))
    for ib in range(1, 13):
        fixed = records_of(model, EncodeConfig(index_bits=ib))
        for a, b in zip(auto, fixed):
            if a.payload is not None:
                assert len(a.payload) <= len(b.payload)


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def test_size_report_totals_are_sums_of_layers(small_file):
    path, model = small_file
    records = container.read(path).layers
    report = size_report(records, os.path.getsize(path), "small")
    layers, t = report["layers"], report["totals"]
    assert [l["name"] for l in layers] == ["conv", "fc1", "fc2"]
    payloads = {r.name: r.payload for r in records if r.payload is not None}
    for l in layers:
        layer = model[l["name"]]
        w = layer.params["W"]
        assert l["shape"] == list(w.shape) and l["weights"] == w.size
        assert l["nnz"] == np.count_nonzero(w) and l["kept"] == l["nnz"] / w.size
        assert l["biases"] == layer.params["b"].size
        assert l["weight_bits"] == layer.ties["W"].bits and l["index_bits"] == 2
        assert l["bytes"] == len(payloads[l["name"]]) == sum(l["parts"].values())
        assert l["original_bytes"] == 4 * (w.size + layer.params["b"].size)
        assert l["cr_pqh"] == (l["bytes"] - 4 * l["biases"]) / (4 * w.size)
    for key in ("weights", "nnz", "original_bytes", "pruned_bytes", "pq_bytes"):
        assert t[key] == sum(l[key] for l in layers), key
    assert t["compressed_bytes"] == sum(l["bytes"] for l in layers) == sum(map(len,
                                                                             payloads.values()))
    assert t["original_bytes"] == 4 * model.num_params()
    assert t["kept"] == t["nnz"] / t["weights"]
    assert t["file_bytes"] == os.path.getsize(path)
    assert t["ratio_file"] == t["original_bytes"] / t["file_bytes"]
    assert t["ratio_payload"] == t["original_bytes"] / t["compressed_bytes"]
    entries = sum(l["entries"] for l in layers)
    assert t["coded_weight_bits"] == pytest.approx(
        sum(l["coded_weight_bits"] * l["entries"] for l in layers) / entries)
    json.dumps(report)
    assert size_report(records)["totals"]["file_bytes"] is None
    assert size_report(records)["totals"]["ratio_file"] is None
    text = size_table(report)
    assert "P+Q+H" in text and f"{t['file_bytes']:,}" in text
    assert "file on disk" not in size_table(size_report(records))


def test_file_bytes_equal_size_on_disk(small_file):
    path, _ = small_file
    size = os.path.getsize(path)
    assert container.read(path).file_bytes == size
    assert pipeline.inspect(path)["totals"]["file_bytes"] == size


@pytest.mark.parametrize("name, params, min_ratio", [
    ("lenet-300-100", 266_610, 40), ("lenet-5", 431_080, 39),
])
def test_committed_models(name, params, min_ratio):
    path = MODELS_DIR / f"{name}.dc.h5"
    size = os.path.getsize(path)
    assert 4 * params / size >= min_ratio
    compressed = dc_engine.load(path)
    assert type(compressed) is Model and compressed.compressed
    assert compressed.name == name and compressed.num_params() == params
    quantized = store.load(MODELS_DIR / f"{name}.quantized.h5")
    assert_decodes_to(quantized, compressed)
    report = pipeline.inspect(path)
    assert report["totals"]["original_bytes"] == 4 * params
    assert report["totals"]["file_bytes"] == size
    assert report["totals"]["ratio_file"] >= min_ratio
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(compressed.forward(x.reshape(4, *compressed.input_shape)),
                               quantized.forward(x.reshape(4, *quantized.input_shape)),
                               rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------------------------


def test_missing_file_is_not_a_format_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        runtime.load(tmp_path / "nope.dc.h5")
    with pytest.raises(IsADirectoryError):
        container.read(tmp_path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "noise.dc.h5"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    load_fails(path, "not an HDF5 file or truncated")


def truncations_fail(path: Path, lengths: set) -> None:
    """The file cut at each of ``lengths`` and at 40 random lengths fails to load with a
    DCFormatError naming the cut file."""
    raw = path.read_bytes()
    cut = path.with_name("cut.dc.h5")
    lengths = set(lengths) | {int(n) for n in np.random.default_rng(7).integers(0, len(raw), 40)}
    for n in sorted(lengths):
        cut.write_bytes(raw[:n])
        with pytest.raises(DCFormatError, match="truncated|corrupt") as err:
            runtime.load(cut)
        assert str(cut) in str(err.value), n


def test_truncated_files(small_file):
    path, _ = small_file
    size = path.stat().st_size
    truncations_fail(path, {0, 1, 8, 48, size // 2, size - 1})


def _flip_and_load(raw: bytes, bit: int, damaged: Path, model: Model) -> bool:
    """Flip one bit of the file; True when loading raised DCFormatError, False when the model
    loaded and decodes to the original (anything else fails the test)."""
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    damaged.write_bytes(bytes(flipped))
    try:
        loaded = runtime.load(damaged)
    except DCFormatError:
        return True
    assert_decodes_to(model, loaded)  # a flip in unused space changes nothing
    return False


def test_flipped_bits_never_load_silently(small_file):
    path, model = small_file
    raw = path.read_bytes()
    damaged = path.with_name("damaged.dc.h5")
    bits = np.random.default_rng(2024).choice(len(raw) * 8, 300, replace=False)
    caught = sum(_flip_and_load(raw, int(b), damaged, model) for b in bits)
    assert caught > len(bits) // 2  # HDF5 v110 metadata checksums and the payload CRCs
    # Every byte of the payloads: CRC32 catches every single-bit error.
    payloads = b"".join(r.payload for r in records_of(model, EncodeConfig(index_bits=2))
                        if r.payload is not None)
    start = raw.find(payloads)
    assert start > 0
    for i in range(start, start + len(payloads)):
        assert _flip_and_load(raw, 8 * i + i % 8, damaged, model), f"byte {i} flipped silently"


@pytest.mark.parametrize("value, match", [
    (np.uint8(COMPRESSED_VERSION + 1),
     rf"version too new.*version <= {COMPRESSED_VERSION}.*version {COMPRESSED_VERSION + 1}"
     r".*Upgrade"),
    (np.uint8(0), "unsupported compressed format version.*version 0"),
    (np.int64(-1), "unsupported compressed format version"),
    (np.float64(1.0), "bad attribute 'version'.*an integer"),
    ("1", "bad attribute 'version'"),
])
def test_bad_version(small_file, value, match):
    path, _ = small_file
    with h5py.File(path, "r+") as f:
        del f.attrs["version"]
        h5io.set_attr(f, "version", value)
    with pytest.raises(DCFormatError, match=match):
        container.read(path)
    load_fails(path, match)


def test_missing_version(small_file):
    path, _ = small_file
    with h5py.File(path, "r+") as f:
        del f.attrs["version"]
    load_fails(path, "missing attribute 'version'")


def test_wrong_kind(small_file):
    path, _ = small_file
    with h5py.File(path, "r+") as f:
        h5io.set_attr(f, "kind", "sparse")
    with pytest.raises(DCFormatError, match="not a compressed model file.*kind = 'sparse'"):
        container.read(path)
    for load in (runtime.load, dc_engine.load):  # neither kind: the dense reader says so
        with pytest.raises(DCFormatError, match="unsupported file kind.*'sparse'"):
            load(path)


def test_dense_file_is_named_dense(tmp_path):
    path = store.save(Model([Dense(3, 2, name="fc")], input_shape=(3,)), tmp_path / "d.h5")
    for read in (container.read, pipeline.inspect):
        with pytest.raises(DCFormatError, match=r"not a compressed model file.*kind = 'dense'.*"
                                                r"This is a dense model.*dc-engine encode"):
            read(path)
    assert isinstance(dc_engine.load(path), Model)  # the package loader dispatches on kind


def test_foreign_hdf5(tmp_path):
    path = tmp_path / "keras.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15"
        f.create_dataset("payload", data=np.zeros(3, np.uint8))
    load_fails(path, "foreign file.*no 'format' attribute")
    with h5py.File(path, "a") as f:
        h5io.set_attr(f, "format", "other-engine")
    with pytest.raises(DCFormatError, match="foreign file.*other-engine"):
        container.read(path)


def test_variable_length_architecture_not_read(small_file):
    path, _ = small_file
    with h5py.File(path, "r+") as f:
        arch = f.attrs["architecture"].decode("utf-8")
        del f.attrs["architecture"]
        f.attrs["architecture"] = arch  # h5py writes a variable-length string (global heap)
    load_fails(path, "bad attribute 'architecture'.*fixed-size")


def _set(doc, *keys_and_value):
    *keys, value = keys_and_value
    target = doc
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value


@pytest.mark.parametrize("edit, match, layer", [
    (lambda d: "{not json", "broken JSON in attribute 'architecture'", None),
    (lambda d: "[1, 2]", "bad attribute 'architecture'.*a JSON dict", None),
    (lambda d: d.pop("input_shape"), "keys name, input_shape, layers", None),
    (lambda d: _set(d, "extra", 1), "keys name, input_shape, layers", None),
    (lambda d: _set(d, "name", 5), "a str 'name'", None),
    (lambda d: _set(d, "input_shape", []), "'input_shape' as 1 to 8 positive", None),
    (lambda d: _set(d, "input_shape", [1, 6, 0]), "'input_shape' as 1 to 8 positive", None),
    (lambda d: _set(d, "input_shape", [1, 6, 2**40]), "'input_shape'", None),
    (lambda d: _set(d, "input_shape", "1,6,6"), "'input_shape'", None),
    (lambda d: _set(d, "layers", []), "'layers' as a list of 1 to 10000", None),
    (lambda d: _set(d, "layers", {"conv": 1}), "'layers' as a list", None),
    (lambda d: _set(d, "layers", d["layers"] * 2000), "'layers' as a list of 1 to 10000", None),
    (lambda d: d["layers"][1].pop(), r"each layer as \[name, type", None),
    (lambda d: _set(d, "layers", 1, 3, -1), r"payload_bytes >= 0", None),
    (lambda d: _set(d, "layers", 1, 3, True), r"payload_bytes >= 0", None),
    (lambda d: _set(d, "layers", 1, 3, 0.0), r"payload_bytes >= 0", None),
    (lambda d: _set(d, "layers", 1, 2, []), r"\{hyperparameters\}", None),
    (lambda d: _set(d, "layers", 1, 1, "Sparse"), "unknown layer type.*'Sparse'", "relu1"),
    (lambda d: _set(d, "layers", 2, 0, "relu1"), "distinct layer names.*'relu1'", None),
    (lambda d: _set(d, "layers", 1, 2, {"dtype": "f8"}), "bad hyperparameters.*'dtype'", "relu1"),
])
def test_bad_architecture_attribute(small_file, edit, match, layer):
    path, _ = small_file
    edit_architecture(path, edit)
    with pytest.raises(DCFormatError, match=match):
        container.read(path)
    load_fails(path, match, layer)


def test_left_out_hyperparameters_take_their_defaults(small_file):
    """A file may leave out a hyperparameter that has a default (hyperparameters added later
    have one, so older files keep loading): here the conv's padding 1 becomes 0, and the
    model then no longer chains."""
    path, _ = small_file
    edit_architecture(path, lambda d: _set(row(d, "conv"), 2, {
        "in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 2}))
    load_fails(path, r"do not form a model.*fc1: expects \(18,\) per sample, got \(8,\)")


@pytest.mark.parametrize("layer, hp, match", [
    ("fc1", {"in_features": 18.0, "out_features": 4}, "bad hyperparameters"),
    ("fc1", {"in_features": True, "out_features": 4}, "bad hyperparameters"),
    ("fc1", {"in_features": "18", "out_features": 4}, "bad hyperparameters"),
    ("fc1", {"in_features": 18}, "bad hyperparameters"),
    ("fc1", {"in_features": 18, "out_features": 4, "bias": False}, "bad hyperparameters"),
    ("fc1", {"in_features": 4, "out_features": 18}, r"weights of shape \(4, 18\).*need \(18, 4\)"),
    ("conv", {"in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 0,
              "padding": 1}, "bad hyperparameters"),
    ("conv", {"in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 2,
              "padding": -1}, "bad hyperparameters"),
    ("conv", {"in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 2,
              "padding": 1, "groups": 2}, "bad hyperparameters.*divisible by groups"),
    ("conv", {"in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 2,
              "padding": [1, 1, 1]}, "bad hyperparameters.*top, left, bottom, right"),
    ("conv", {"kernel_size": 3, "out_channels": 2}, "bad hyperparameters.*required"),
    ("conv", {"in_channels": 1, "out_channels": 2, "kernel_size": 2, "stride": 2,
              "padding": 1}, r"need \(2, 1, 2, 2\)"),
    ("relu1", {"slope": 0.1}, "bad hyperparameters"),
    ("dropout1", {"rate": 1.5}, "bad hyperparameters"),
    ("dropout1", {"rate": "half"}, "bad hyperparameters"),
])
def test_bad_layer_hyperparameters(small_file, layer, hp, match):
    path, _ = small_file
    edit_architecture(path, lambda d: _set(row(d, layer), 2, hp))
    container.read(path)  # the container does not interpret hyperparameters
    load_fails(path, match, layer)


@pytest.mark.parametrize("in_features, match", [
    (10**7, r"layer 'fc1'.*weights of shape \(4, 18\).*need \(4, 10000000\)"),
    (10**9, r"declare 4,000,000,034 weights, above the limit of .*DC_ENGINE_MAX_MODEL_WEIGHTS"),
])
def test_absurd_shape_fails_without_allocating(small_file, in_features, match):
    path, _ = small_file
    edit_architecture(path, lambda d: _set(row(d, "fc1"), 2,
                                           {"in_features": in_features, "out_features": 4}))
    tracemalloc.start()
    try:
        with pytest.raises(DCFormatError, match=match):
            runtime.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_layers_that_do_not_chain(small_file):
    path, _ = small_file
    edit_architecture(path, lambda d: _set(d, "input_shape", [1, 7, 7]))  # 2x4x4 = 32 != 18
    load_fails(path, "the layers do not form a model.*input shape")


def test_payload_sizes_must_sum_to_the_dataset(small_file):
    path, _ = small_file
    edit_architecture(path, lambda d: _set(row(d, "fc1"), 3, row(d, "fc1")[3] + 1))
    load_fails(path, r"bad dataset 'payload'.*sum of the layers' payload sizes")


def test_payload_boundary_moved_names_the_layer(small_file):
    """Sizes that still sum to the dataset length but split it wrongly: fc1's payload is one
    byte short (its CRC or length check fails)."""
    path, _ = small_file

    def move(d):
        row(d, "fc1")[3] -= 1
        row(d, "fc2")[3] += 1

    edit_architecture(path, move)
    load_fails(path, "payload", "fc1")


def test_payload_sizes_on_weightless_layers(small_file):
    """A byte of conv's payload declared as belonging to relu1."""
    path, _ = small_file

    def move(d):
        row(d, "conv")[3] -= 1
        row(d, "relu1")[3] += 1

    edit_architecture(path, move)
    load_fails(path, "payload", "conv")


def test_swapped_payloads(tmp_path):
    model = small_model()
    records = records_of(model)
    records[3].payload, records[5].payload = records[5].payload, records[3].payload
    path = container.write(tmp_path / "swap.dc.h5", model.name, model.input_shape, records)
    container.read(path)
    load_fails(path, r"the payload holds weights of shape \(2, 4\).*need \(4, 18\)", "fc1")


def test_weightless_layer_with_payload_and_weighted_layer_without(tmp_path):
    model = small_model()
    records = records_of(model)
    payload = records[3].payload
    records[1].payload = payload  # relu1
    path = container.write(tmp_path / "a.dc.h5", model.name, model.input_shape, records)
    load_fails(path, "has no weights but the file holds a payload", "relu1")
    records[1].payload = records[3].payload = None
    path = container.write(tmp_path / "b.dc.h5", model.name, model.input_shape, records)
    load_fails(path, "needs a payload, the file has none", "fc1")


def test_bias_count_must_match(tmp_path):
    model = small_model()
    records = records_of(model)
    tie = model["fc1"].ties["W"]
    records[3].payload = encode_layer(tie.idx, tie.codebook, np.ones(3, np.float32), 2)
    path = container.write(tmp_path / "b.dc.h5", model.name, model.input_shape, records)
    load_fails(path, "3 biases, expected 4", "fc1")


def test_corrupt_payload_bytes_name_the_layer(small_file):
    path, _ = small_file
    with h5py.File(path, "r+") as f:
        doc = json.loads(f.attrs["architecture"].decode("utf-8"))
        last = sum(r[3] for r in doc["layers"]) - 1  # inside fc2's CRC
        data = f["payload"][()]
        data[last] ^= 0xFF
        f["payload"][...] = data
    load_fails(path, "CRC mismatch", "fc2")


def _rewrite_payload(path: Path, make) -> None:
    with h5py.File(path, "r+") as f:
        data = f["payload"][()]
        del f["payload"]
        make(f, data)


@pytest.mark.parametrize("make, match", [
    (lambda f, d: f.create_dataset("payload", data=d.astype(np.uint16)), "bad dataset 'payload'"),
    (lambda f, d: f.create_dataset("payload", data=d[:-1]), "bad dataset 'payload'"),
    (lambda f, d: f.create_dataset("payload", data=d.reshape(1, -1)), "bad dataset 'payload'"),
    (lambda f, d: f.create_group("payload"), "bad dataset 'payload'.*Group"),
    (lambda f, d: f.create_dataset("payload", data=d, chunks=(64,), compression="gzip"),
     "unsupported storage"),
    (lambda f, d: f.create_dataset("payload", shape=d.shape, dtype=np.uint8),
     "truncated or unallocated"),
    (lambda f, d: (f.create_dataset("elsewhere", data=d),
                   f.__setitem__("payload", h5py.SoftLink("/elsewhere"))),
     "unexpected root members"),
    (lambda f, d: f.__setitem__("payload", h5py.SoftLink("/elsewhere")),
     "soft or external link"),
    (lambda f, d: f.__setitem__("payload", h5py.ExternalLink("other.h5", "/payload")),
     "soft or external link"),
    (lambda f, d: None, r"unexpected root members: expected \['payload'\], found \[\]"),
    (lambda f, d: (f.create_dataset("payload", data=d), f.create_dataset("extra", data=d)),
     "unexpected root members.*'extra'"),
    (lambda f, d: (f.create_dataset("payload", data=d), f.create_group("layers")),
     "unexpected root members.*'layers'"),
])
def test_bad_payload_dataset(small_file, make, match):
    path, _ = small_file
    _rewrite_payload(path, make)
    load_fails(path, match)


def test_extra_member_in_weightless_file(tmp_path):
    path = container.write(tmp_path / "w.dc.h5", "w", (3,), [LayerRecord("r", "ReLU", {})])
    with h5py.File(path, "r+") as f:
        f.create_dataset("payload", data=np.zeros(4, np.uint8))
    load_fails(path, r"unexpected root members: expected \[\], found \['payload'\]")


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def test_failure_midway_keeps_old_file(small_file, monkeypatch):
    path, model = small_file
    before = path.read_bytes()
    real = container._write
    temps = []

    def flaky(tmp, arch, blob, version):
        real(tmp, arch, blob, version)
        temps.append(tmp)
        assert os.path.getsize(tmp) > 0 and Path(tmp).parent == path.parent
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(container, "_write", flaky)
    bigger = small_model()
    with pytest.raises(RuntimeError, match="simulated"):
        write_model(bigger, path, EncodeConfig(index_bits=7))
    assert len(temps) == 1 and not os.path.exists(temps[0])
    assert path.read_bytes() == before
    assert files_in(path.parent) == ["small.dc.h5"]
    assert_decodes_to(model, runtime.load(path))
    with pytest.raises(RuntimeError, match="simulated"):
        write_model(bigger, path.with_name("new.dc.h5"))
    assert files_in(path.parent) == ["small.dc.h5"]


def test_write_replaces_existing_file(small_file):
    path, _ = small_file
    other = Model([Dense(5, 2, name="only")], input_shape=(5,), name="other")
    quantize(other, np.random.default_rng(1), {"only": 2})
    assert write_model(other, path) == path.resolve()
    assert_decodes_to(other, runtime.load(path))
    assert files_in(path.parent) == ["small.dc.h5"]


def test_runtime_rejects_training_and_bad_batches(small_file):
    path, _ = small_file
    model = runtime.load(path)
    with pytest.raises(ValueError, match="inference only"):
        model.forward(np.zeros((1, 1, 6, 6), np.float32), train=True)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 6, 6\)"):
        model.forward(np.zeros((1, 6, 6), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(np.zeros((1, 1, 6, 6), np.float32), batch_size=0)
    assert model.predict(np.zeros((0, 1, 6, 6), np.float32)).shape == (0,)
    assert "conv" in repr(model) and "compressed" in repr(model)
    assert model.layers[0].params["W"].shape == (2, 9)  # the conv weight as a matrix
