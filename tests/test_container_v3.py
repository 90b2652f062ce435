"""Tests for the compact container (compressed format version 3, docs/FORMAT.md): round trips,
the classic container kept byte for byte, the bytes it saves, Model.encoding, and corrupt or
crafted files (each a DCFormatError, never another exception)."""

from __future__ import annotations

import copy
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compressed_file import load_fails as loaders_fail
from test_compressed_file import records_strategy, truncations_fail

import dc_engine
from dc_engine import runtime
from dc_engine.app import jobs
from dc_engine.app.cli import main
from dc_engine.core.layers import Add, Dense, ReLU
from dc_engine.core.model import Model
from dc_engine.errors import DCFormatError
from dc_engine.io import _h5 as h5io
from dc_engine.io import compressed as container
from dc_engine.io.compressed import (
    COMPACT_LIMIT,
    COMPACT_VERSION,
    COMPRESSED_VERSION,
    LayerRecord,
)
from dc_engine.limits import MAX_ARCHITECTURE_BYTES
from dc_engine.stages.encode import encode_model
from dc_engine.stages.quantize import share_layer

MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
LENETS = ("lenet-300-100", "lenet-5")
#: Bytes the compact container saves over the classic one, measured (LeNet-300-100: 896 ->
#: 403 B of container, LeNet-5: 1,100 -> 481 B), less a margin for other zlib builds.
MIN_SAVING = {"lenet-300-100": 480, "lenet-5": 600}
TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
FUZZ = settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenets() -> dict[str, Model]:
    """The shipped compressed LeNets, loaded once (tests save them, never change them)."""
    return {name: dc_engine.load(MODELS_DIR / f"{name}.dc.h5") for name in LENETS}


def save_as(model: Model, path: Path, container_name: str | None) -> Path:
    """``dc_engine.save`` of ``model`` with ``model.encoding["container"]`` set for the call
    (None: no setting)."""
    old = model.encoding
    model.encoding = {} if container_name is None else {"container": container_name}
    try:
        return dc_engine.save(model, path)
    finally:
        model.encoding = old


@pytest.fixture
def compact_file(lenets, tmp_path) -> Path:
    """LeNet-300-100 as a compact file (payloads inside the ``model`` attribute)."""
    return save_as(lenets["lenet-300-100"], tmp_path / "c.dc.h5", "compact")


def deflate(data: bytes) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush()


def model_attr(path: Path) -> bytes:
    with h5py.File(path, "r") as f:
        return f.attrs["model"].tobytes()


def split_model_attr(path: Path) -> tuple[bytes, bytes, bytes]:
    """(architecture JSON, deflated JSON, payloads) of a compact file."""
    raw = model_attr(path)
    (n,) = struct.unpack_from("<I", raw)
    packed = raw[4:4 + n]
    return zlib.decompress(packed, -15), packed, raw[4 + n:]


def set_model_attr(path: Path, value) -> None:
    """Replace the ``model`` attribute (bytes become a uint8 array)."""
    if isinstance(value, (bytes, bytearray)):
        value = np.frombuffer(bytes(value), np.uint8)
    with h5py.File(path, "r+") as f:
        del f.attrs["model"]
        f.attrs.create("model", value)


def pack(text: bytes, payloads: bytes = b"", packed: bytes | None = None) -> bytes:
    """A ``model`` attribute: u32 length, deflated ``text`` (or ``packed``), payloads."""
    packed = deflate(text) if packed is None else packed
    return struct.pack("<I", len(packed)) + packed + payloads


def load_fails(path: Path, match: str) -> str:
    """container.read, runtime.load and dc_engine.load all raise DCFormatError naming the
    file, on one line; returns the message."""
    with pytest.raises(DCFormatError, match=match):
        container.read(path)
    return loaders_fail(path, match)


def tiny_graph(rng) -> Model:
    """A quantized residual graph: fc1 -> relu -> fc2, add(fc2, relu) -> fc3 (output: add)."""
    model = Model([Dense(6, 4, rng=rng, name="fc1"), ReLU(name="r"),
                   Dense(4, 4, rng=rng, name="fc2"), Add(name="add", inputs=["fc2", "r"]),
                   Dense(4, 3, rng=rng, name="fc3", inputs=["add"])],
                  input_shape=(6,), name="g", output="fc3")
    for layer in model.weighted_layers():
        w = layer.params["W"]
        w[rng.random(w.shape) < 0.5] = 0.0
        share_layer(layer, 3)
    return model


# --------------------------------------------------------------------------------------------
# Round trips and layout
# --------------------------------------------------------------------------------------------


@FUZZ
@given(records=records_strategy, name=st.text(TEXT, max_size=10),
       input_shape=st.lists(st.integers(1, 2**31), min_size=1, max_size=8),
       output=st.one_of(st.none(), st.text(TEXT, max_size=5)))
def test_compact_round_trip_of_arbitrary_records(tmp_path, records, name, input_shape, output):
    """Any layer list, payload bytes and graph wiring come back unchanged from a version-3
    file holding nothing but the four root attributes."""
    path = container.write(tmp_path / "r.dc.h5", name, input_shape, records, output=output,
                           compact=True)
    c = container.read(path)
    assert (c.architecture, c.input_shape, c.output) == (name, tuple(input_shape), output)
    assert c.version == COMPACT_VERSION == 3 and c.compact
    assert c.layers == records and c.file_bytes == os.path.getsize(path)
    with h5py.File(path, "r") as f:
        assert list(f) == [] and sorted(f.attrs) == ["format", "kind", "model", "version"]
        assert f.attrs["version"] == 3 and f.attrs["version"].dtype == np.uint8
    text, _, payloads = split_model_attr(path)
    assert payloads == b"".join(r.payload for r in records if r.payload is not None)
    classic = container.write(tmp_path / "k.dc.h5", name, input_shape, records, output=output)
    assert container.read(classic).layers == records
    with h5py.File(classic, "r") as f:
        assert text == bytes(f.attrs["architecture"])  # the same JSON document


@pytest.mark.parametrize("name", LENETS)
def test_shipped_models(lenets, tmp_path, name):
    """Classic load + save reproduces the shipped file byte for byte; compact load + save is
    smaller by at least MIN_SAVING, loads to the same outputs, and saves back byte for byte,
    also from a deep copy; and a compact model saved classic is the shipped file again."""
    shipped = MODELS_DIR / f"{name}.dc.h5"
    model = lenets[name]
    assert model.encoding == {} and container.read(shipped).version == 1
    classic = save_as(model, tmp_path / "classic.dc.h5", None)
    assert classic.read_bytes() == shipped.read_bytes()
    assert save_as(model, tmp_path / "k.dc.h5", "classic").read_bytes() == shipped.read_bytes()

    compact = save_as(model, tmp_path / "compact.dc.h5", "compact")
    saving = os.path.getsize(shipped) - os.path.getsize(compact)
    assert saving >= MIN_SAVING[name], saving
    back = dc_engine.load(compact)
    assert back.encoding == {"container": "compact"}
    x = np.random.default_rng(0).random((5, *model.input_shape), dtype=np.float32)
    assert np.array_equal(back.forward(x), model.forward(x))
    assert np.array_equal(back.forward(x[:1]), model.forward(x[:1]))
    assert dc_engine.save(back, tmp_path / "again.dc.h5").read_bytes() == compact.read_bytes()
    twin = copy.deepcopy(back)
    assert twin.encoding == back.encoding and twin.encoding is not back.encoding
    assert dc_engine.save(twin, tmp_path / "twin.dc.h5").read_bytes() == compact.read_bytes()
    back.encoding = {}
    assert dc_engine.save(back, tmp_path / "old.dc.h5").read_bytes() == shipped.read_bytes()
    c = container.read(compact)
    payload = sum(len(r.payload) for r in c.layers if r.payload is not None)
    assert c.layers == container.read(shipped).layers
    assert c.file_bytes - payload <= os.path.getsize(shipped) - payload - MIN_SAVING[name]


def test_graph_model_round_trip(tmp_path, rng):
    """A compressed graph (inputs, output) in the compact container: same wiring and outputs,
    saved back byte for byte."""
    model = tiny_graph(rng)
    compressed = encode_model(model)
    compressed.encoding["container"] = "compact"
    path = dc_engine.save(compressed, tmp_path / "g.dc.h5")
    assert container.read(path).version == 3
    back = dc_engine.load(path)
    assert back.encoding == {"container": "compact"} and back.output == "fc3"
    assert [l.inputs for l in back.layers] == [l.inputs for l in model.layers]
    x = rng.random((4, 6), dtype=np.float32)
    np.testing.assert_allclose(back.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)
    assert dc_engine.save(back, tmp_path / "again.dc.h5").read_bytes() == path.read_bytes()


def test_large_payloads_go_to_a_contiguous_dataset(tmp_path):
    """``model`` holds the payloads while it stays within COMPACT_LIMIT bytes; one byte more
    and they go to a contiguous ``payload`` dataset (still version 3)."""
    rng = np.random.default_rng(1)
    for extra, in_attr in ((0, True), (1, False), (3 * COMPACT_LIMIT, False)):
        n = COMPACT_LIMIT + extra - 76
        for _ in range(5):  # the head's length depends on the digits of the sizes
            records = [LayerRecord("x", "Dense", {}, bytes(7)),
                       LayerRecord("y", "Dense", {}, bytes(n - 7))]
            head = len(container._model_head(container._architecture_json("big", (3,),
                                                                          records)))
            if head + n == COMPACT_LIMIT + extra:
                break
            n = COMPACT_LIMIT + extra - head
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        records = [LayerRecord("x", "Dense", {}, blob[:7]), LayerRecord("y", "Dense", {},
                                                                        blob[7:])]
        path = container.write(tmp_path / "big.dc.h5", "big", (3,), records, compact=True)
        with h5py.File(path, "r") as f:
            assert f.attrs["model"].shape == ((COMPACT_LIMIT + extra,) if in_attr else (head,))
            assert list(f) == ([] if in_attr else ["payload"])
            if not in_attr:
                plist = f["payload"].id.get_create_plist()
                assert plist.get_layout() == h5py.h5d.CONTIGUOUS
        c = container.read(path)
        assert c.version == 3 and c.layers == records
        assert len(blob) < c.file_bytes < len(blob) + 4096


def test_weightless_model(tmp_path):
    path = container.write(tmp_path / "w.dc.h5", "w", (2, 3), [LayerRecord("r", "ReLU", {})],
                           compact=True)
    with h5py.File(path, "r") as f:
        assert list(f) == []
    model = dc_engine.load(path)
    assert model.num_params() == 0 and model.encoding == {"container": "compact"}
    assert dc_engine.save(model, tmp_path / "again.dc.h5", kind="compressed").read_bytes() \
        == path.read_bytes()


def test_classic_is_still_the_default(tmp_path):
    records = [LayerRecord("a", "ReLU", {})]
    for kwargs in ({}, {"compact": False}):
        path = container.write(tmp_path / "d.dc.h5", "d", (3,), records, **kwargs)
        assert container.read(path).version == 1 and not container.read(path).compact
    with pytest.raises(TypeError, match="compact must be a bool"):
        container.write(tmp_path / "x.dc.h5", "x", (3,), records, compact="yes")
    assert COMPRESSED_VERSION == 3


def test_model_encoding_attribute(lenets, tmp_path):
    """A new model has encoding {}; to_dense keeps it; a bad value is refused before the disk
    is touched; a dense file ignores it."""
    model = Model([Dense(3, 2, name="fc")], input_shape=(3,))
    assert model.encoding == {}
    model.encoding["container"] = "compact"
    assert model.to_dense().encoding == {"container": "compact"}
    dense = dc_engine.save(model, tmp_path / "d.h5")
    assert dc_engine.load(dense).encoding == {}
    lenet = lenets["lenet-300-100"]
    for bad, exc in (({"container": "zip"}, ValueError), ("compact", TypeError)):
        lenet.encoding = bad
        try:
            with pytest.raises(exc, match="model.encoding"):
                dc_engine.save(lenet, tmp_path / "bad.dc.h5")
        finally:
            lenet.encoding = {}
    assert not (tmp_path / "bad.dc.h5").exists()


def test_inspect_shows_the_container(lenets, compact_file, capsys):
    """inspect prints the container's bytes (file minus payloads), and for version 3 says
    "compact container"."""
    for path, version, note in ((MODELS_DIR / "lenet-300-100.dc.h5", 1, ""),
                                (compact_file, 3, " (compact container)")):
        report = jobs.inspect(path)
        assert report["version"] == version
        assert report["container"] == ("compact" if version == 3 else "classic")
        t = report["totals"]
        assert main(["inspect", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"compressed format version {version}{note}, input shape" in out
        line = next(l for l in out.splitlines() if l.startswith("container (HDF5"))
        assert line.split() == ["container", "(HDF5", "+", "architecture)",
                                f"{t['file_bytes'] - t['compressed_bytes']:,}", "bytes"]
        disk = next(l for l in out.splitlines() if l.startswith("file on disk"))
        assert line.index("bytes") == disk.index("bytes")  # aligned columns


# --------------------------------------------------------------------------------------------
# Corrupt and crafted files
# --------------------------------------------------------------------------------------------


def test_truncated_files(compact_file):
    size = compact_file.stat().st_size
    truncations_fail(compact_file, {0, 1, 8, 47, 48, 200, size // 2, size - 4, size - 1})


def test_every_bit_flip_on_disk_is_caught(tmp_path):
    """Every byte of a compact file lies under a checksum (the superblock's or the root
    object header's): one flipped bit anywhere fails to load."""
    rng = np.random.default_rng(3)
    model = encode_model(tiny_graph(rng))
    path = save_as(model, tmp_path / "t.dc.h5", "compact")
    raw = path.read_bytes()
    damaged = tmp_path / "damaged.dc.h5"
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 1 << (i % 8)
        damaged.write_bytes(bytes(flipped))
        with pytest.raises(DCFormatError):
            runtime.load(damaged)


def test_flipped_bits_in_the_deflated_json(compact_file):
    """The deflated JSON rewritten with one bit flipped (HDF5's checksum made valid again, as
    a crafted file would): a DCFormatError or a file that reads, never another exception;
    most flips are refused."""
    _, packed, payloads = split_model_attr(compact_file)
    raw = compact_file.read_bytes()
    rng = np.random.default_rng(11)
    refused = 0
    bits = rng.choice(8 * len(packed), 120, replace=False)
    for bit in bits:
        flipped = bytearray(packed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        compact_file.write_bytes(raw)
        set_model_attr(compact_file, pack(b"", payloads, packed=bytes(flipped)))
        try:
            runtime.load(compact_file)
        except DCFormatError as exc:
            assert str(compact_file) in str(exc)
            refused += 1
    assert refused > 0.8 * len(bits)


def _n(p: bytes) -> int:
    """The declared length of the deflated JSON in a ``model`` attribute ``p``."""
    return struct.unpack_from("<I", p)[0]


def _relen(p: bytes, n: int) -> bytes:
    return struct.pack("<I", n) + p[4:]


@pytest.mark.parametrize("make, match", [
    (lambda text, pay, p: p[:4] + bytes([p[4] | 0b110]) + p[5:],  # block type 3: reserved
     "invalid deflate data"),
    (lambda text, pay, p: _relen(p, _n(p) - 1), r"does not end within them \(truncated\)"),
    (lambda text, pay, p: _relen(p, _n(p) + 1), r"1 bytes after the end of the stream"),
    (lambda text, pay, p: _relen(p, len(p) - 3), r"a declared length of"),
    (lambda text, pay, p: _relen(p, 0xFFFFFFFF), r"a declared length of 4294967295"),
    (lambda text, pay, p: _relen(p, 1), r"a declared length of 1"),
    (lambda text, pay, p: pack(text + b" "),
     r"unexpected root members: expected \['payload'\], found \[\]"),
    (lambda text, pay, p: pack(text, b"\0" * 9), "do not match the architecture.*found 9 bytes"),
    (lambda text, pay, p: p + b"\0", "do not match the architecture.*found 23077 bytes"),
    (lambda text, pay, p: p[:-1], "do not match the architecture.*found 23075 bytes"),
    (lambda text, pay, p: pack(b"{not json", pay), r"broken JSON in attribute 'model'"),
    (lambda text, pay, p: pack(b"\xff\xfe{}", pay), r"broken JSON in attribute 'model'"),
    (lambda text, pay, p: pack(b"[1, 2]", pay), r"bad attribute 'model'.*a JSON dict"),
    (lambda text, pay, p: pack(b"[" * 100_000, pay), r"broken JSON in attribute 'model'"),
    (lambda text, pay, p: pack(text.replace(b'"Dense"', b'"Sparse"'), pay),
     "unknown layer type.*'Sparse'"),
    (lambda text, pay, p: pack(text.replace(b'"input_shape"', b'"shape"'), pay),
     r"bad architecture in attribute 'model'.*keys name, input_shape, layers"),
    (lambda text, pay, p: pack(text.replace(b'18596]', b'18597]'), pay),
     r"do not match the architecture.*23077 bytes after the architecture.*found 23076"),
    (lambda text, pay, p: b"\0\0", r"bad attribute 'model'.*at least 6 bytes"),
])
def test_bad_model_attribute(compact_file, make, match):
    text, _, payloads = split_model_attr(compact_file)
    set_model_attr(compact_file, make(text, payloads, model_attr(compact_file)))
    load_fails(compact_file, match)


@pytest.mark.parametrize("value, match", [
    (np.zeros(40, np.uint16), "bad attribute 'model'.*uint16"),
    (np.zeros(40, np.int8), "bad attribute 'model'.*int8"),
    (np.zeros((2, 20), np.uint8), r"bad attribute 'model'.*shape \(2, 20\)"),
    (np.uint8(7), r"bad attribute 'model'.*shape \(\)"),
    (np.array(b"x" * 40), "bad attribute 'model'"),
    (np.zeros(40, np.float32), "bad attribute 'model'.*float32"),
    (h5py.Empty("u1"), "bad attribute 'model'.*shape None"),
])
def test_wrong_attribute_types(compact_file, value, match):
    set_model_attr(compact_file, value)
    load_fails(compact_file, match)


def test_variable_length_model_attribute_not_read(compact_file):
    with h5py.File(compact_file, "r+") as f:
        del f.attrs["model"]
        data = np.empty(2, dtype=h5py.vlen_dtype(np.uint8))
        data[0], data[1] = np.arange(3, dtype=np.uint8), np.arange(2, dtype=np.uint8)
        f.attrs.create("model", data)
    load_fails(compact_file, "bad attribute 'model'")


def test_deflate_bomb_is_stopped_without_memory(compact_file):
    """A 16 KB stream that inflates to 16 MiB, past MAX_ARCHITECTURE_BYTES: refused after
    inflating at most that much."""
    bomb = deflate(b" " * (4 * MAX_ARCHITECTURE_BYTES))
    assert len(bomb) < 20_000
    _, _, payloads = split_model_attr(compact_file)
    set_model_attr(compact_file, pack(b"", payloads, packed=bomb))
    tracemalloc.start()
    try:
        load_fails(compact_file, r"inflates beyond 4,194,304 bytes \(a deflate bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_ARCHITECTURE_BYTES


def test_writer_refuses_an_architecture_above_the_cap(tmp_path):
    records = [LayerRecord("r", "ReLU", {"pad": "x" * MAX_ARCHITECTURE_BYTES})]
    with pytest.raises(ValueError, match="above the 4,194,304 a compact compressed file"):
        container.write(tmp_path / "x.dc.h5", "x", (3,), records, compact=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.create_group("extra"), r"unexpected root members.*\['extra'\]"),
    (lambda f: f.create_dataset("payload", data=np.zeros(3, np.uint8)),
     r"unexpected root members.*the payloads are in attribute 'model'.*\['payload'\]"),
    (lambda f: h5io.set_attr(f, "architecture", "{}"),
     r"unexpected root attributes.*'architecture'"),
    (lambda f: h5io.set_attr(f, "note", "hi"), r"unexpected root attributes.*'note'"),
    (lambda f: f.attrs.__delitem__("model"), r"unexpected root attributes"),
    (lambda f: (f.attrs.__delitem__("version"), f.attrs.create("version", np.uint8(4))),
     r"version too new.*version <= 3.*version 4.*Upgrade"),
    (lambda f: (f.attrs.__delitem__("version"), f.attrs.create("version", np.uint8(1))),
     r"missing attribute 'architecture'"),
])
def test_bad_root(compact_file, edit, match):
    with h5py.File(compact_file, "r+") as f:
        edit(f)
    load_fails(compact_file, match)


def test_classic_layout_claiming_version_3(tmp_path):
    path = container.write(tmp_path / "k.dc.h5", "k", (3,),
                           [LayerRecord("a", "Dense", {}, b"\1\2\3")])
    with h5py.File(path, "r+") as f:
        del f.attrs["version"]
        f.attrs.create("version", np.uint8(3))
    load_fails(path, r"unexpected root attributes.*found \['architecture', 'format'")


def test_payloads_in_a_dataset_must_be_there(tmp_path):
    """The large layout (``model`` without payloads): its dataset is checked as in versions
    1/2; a missing or short one is refused."""
    records = [LayerRecord("x", "Dense", {}, bytes(COMPACT_LIMIT + 10))]
    path = container.write(tmp_path / "big.dc.h5", "big", (3,), records, compact=True)
    with h5py.File(path, "r+") as f:
        data = f["payload"][()]
        del f["payload"]
    load_fails(path, r"unexpected root members: expected \['payload'\], found \[\]")
    with h5py.File(path, "r+") as f:
        f.create_dataset("payload", data=data[:-1])
    load_fails(path, r"bad dataset 'payload'.*sum of the layers' payload sizes")


def test_corrupt_payload_bytes_name_the_layer(compact_file):
    raw = bytearray(model_attr(compact_file))
    raw[-1] ^= 0xFF  # inside the last layer's CRC
    set_model_attr(compact_file, bytes(raw))
    container.read(compact_file)  # the container moves bytes
    with pytest.raises(DCFormatError, match="CRC mismatch") as err:
        runtime.load(compact_file)
    assert "layer 'ip3'" in str(err.value)


def test_failure_midway_keeps_the_old_file(lenets, compact_file, monkeypatch):
    before = compact_file.read_bytes()
    real = container._write_compact

    def flaky(tmp, head, blob):
        real(tmp, head, blob)
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(container, "_write_compact", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        save_as(lenets["lenet-5"], compact_file, "compact")
    assert compact_file.read_bytes() == before
    assert os.listdir(compact_file.parent) == [compact_file.name]
    monkeypatch.undo()
    # a refused write leaves the good file too
    with pytest.raises(ValueError):
        container.write(compact_file, "x", (3,), [LayerRecord("a", "Nope", {})], compact=True)
    assert compact_file.read_bytes() == before
