"""Stage 3 layer payload codec (dc_engine.codecs.payload): round trips with every coder,
version-1 payloads, real models, corrupt input."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dc_engine
from dc_engine.codecs.codebook import index_dtype
from dc_engine.codecs.coders import CODERS, coder_names
from dc_engine.codecs.huffman import HuffmanCoder
from dc_engine.codecs.payload import (
    MAGIC,
    MAX_WEIGHTS,
    decode_layer,
    encode_layer,
    header_size,
    payload_stats,
)
from dc_engine.errors import DCFormatError

MODELS = "data/models"


def _codebook(bits: int, rng: np.random.Generator) -> np.ndarray:
    cb = rng.normal(size=2**bits).astype(np.float32)
    cb[0] = 0.0
    return cb


def _check_round_trip(idx, codebook, bias, index_bits, name="layer", coder="huffman",
                      gap_coder=None):
    payload = encode_layer(idx, codebook, bias, index_bits=index_bits, coder=coder,
                           gap_coder=gap_coder, name=name)
    out = decode_layer(payload, name=name)
    wb = codebook.size.bit_length() - 1
    assert out["idx"].dtype == index_dtype(wb) and out["idx"].shape == idx.shape
    assert np.array_equal(out["idx"], idx)
    assert out["codebook"].dtype == np.float32
    assert (out["code_coder"], out["gap_coder"]) == (coder, gap_coder or coder)
    assert out["version"] == 2  # the default options need no version-3 field
    used = np.zeros(codebook.size, bool)
    if coder == "fixed":  # no table: every slot is stored
        used[:] = True
    else:
        used[idx.ravel()] = True
    used[0] = False
    expect = np.where(used, codebook, np.float32(0.0)).astype(np.float32)
    assert np.array_equal(out["codebook"].view(np.uint32), expect.view(np.uint32))
    # the decoded weights equal codebook[idx] bit for bit, which is what the model runs on
    assert np.array_equal(out["codebook"][out["idx"]].view(np.uint32),
                          codebook[idx].view(np.uint32))
    want_bias = np.zeros(0, np.float32) if bias is None else bias
    assert out["bias"].dtype == np.float32
    assert np.array_equal(out["bias"].view(np.uint32), want_bias.view(np.uint32))
    assert out["weight_bits"] == wb and out["index_bits"] == index_bits
    assert out["nnz"] == np.count_nonzero(idx)
    stats = payload_stats(payload)
    assert stats["total_bytes"] == len(payload) and stats["nnz"] == out["nnz"]
    assert stats["n_entries"] == out["n_entries"] >= out["nnz"]
    return payload


BITS = st.integers(1, 8)


@st.composite
def layers(draw, bits=BITS):
    wb = draw(bits)
    ib = draw(st.integers(1, 6))
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9 if ndim > 2 else 40), min_size=ndim,
                                max_size=ndim)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    density = draw(st.sampled_from([0.0, 0.02, 0.3, 1.0]))
    size = int(np.prod(shape))
    idx = rng.integers(1, 2**wb, size=size) * (rng.random(size) < density)
    if draw(st.booleans()) and size:  # a single non-zero somewhere
        idx[:] = 0
        idx[rng.integers(size)] = rng.integers(1, 2**wb)
    idx = idx.astype(index_dtype(wb)).reshape(shape)
    bias = rng.normal(size=draw(st.integers(1, 12))).astype(np.float32)
    bias = draw(st.sampled_from([None, bias]))
    return idx, _codebook(wb, rng), bias, ib


@given(layers())
def test_round_trip_random(layer):
    _check_round_trip(*layer)


@given(layers(), st.sampled_from(coder_names()), st.sampled_from(coder_names()))
def test_round_trip_every_coder_pair(layer, coder, gap_coder):
    _check_round_trip(*layer, coder=coder, gap_coder=gap_coder)


@given(layers(bits=st.integers(9, 12)))
def test_round_trip_uint16(layer):
    idx, codebook, bias, ib = layer
    assert idx.dtype == np.uint16
    _check_round_trip(idx, codebook, bias, ib)


@pytest.mark.parametrize("ib", [1, 2, 3, 5])
def test_long_zero_runs_and_edge_patterns(ib, rng):
    cb = _codebook(4, rng)
    span = 2**ib
    idx = np.zeros(7 * span + 5, np.uint8)
    idx[[0, 3 * span + 2, 7 * span + 4]] = [3, 15, 1]  # runs longer than the index span
    payload = _check_round_trip(idx, cb, None, ib)
    assert payload_stats(payload)["n_entries"] > 3  # fillers were needed
    _check_round_trip(np.zeros((3, 4, 5), np.uint8), cb, None, ib)  # all zero: no entries
    one = np.zeros((2, 3, 4, 5), np.uint8)
    one[1, 2, 3, 4] = 9
    _check_round_trip(one, cb, np.ones(2, np.float32), ib)
    _check_round_trip(np.full(17, 2, np.uint8), cb, None, ib)  # dense, single symbol


def test_uint8_idx_for_wide_codebook_is_widened(rng):
    idx = np.array([[0, 200], [7, 0]], np.uint8)
    out = decode_layer(encode_layer(idx, _codebook(10, rng), None))
    assert out["idx"].dtype == np.uint16 and np.array_equal(out["idx"], idx)


def test_weight_bits_16(rng):
    idx = np.array([0, 65535, 1, 0, 40000], np.uint16)
    _check_round_trip(idx, _codebook(16, rng), None, 3)


def test_header_layout(rng):
    idx = np.array([[0, 1, 0], [2, 0, 3]], np.uint8)
    cb = _codebook(2, rng)
    bias = np.array([0.5, -1.0], np.float32)
    p = encode_layer(idx, cb, bias, index_bits=3)
    assert p[:7] == MAGIC + bytes([2, 2, 3, 2])
    assert struct.unpack_from("<2I", p, 7) == (2, 3)
    n_entries, nnz, n_bias, code_nbits, gap_nbits = struct.unpack_from("<5I", p, 15)
    assert (n_entries, nnz, n_bias) == (3, 3, 2)
    assert p[35:37] == bytes([1, 1])  # both streams Huffman (coder id 1)
    h = header_size(2)
    assert h == 37 and header_size(2, version=1) == 35
    s = payload_stats(p)
    assert (s["code_table_bytes"], s["gap_table_bytes"], s["codebook_bytes"]) == (2, 4, 12)
    off = h + 2 + 4
    assert np.array_equal(np.frombuffer(p[off:off + 12], "<f4"), cb[1:])
    assert np.array_equal(np.frombuffer(p[off + 12:off + 20], "<f4"), bias)
    assert s["code_stream_bytes"] == -(-code_nbits // 8)
    assert s["gap_stream_bytes"] == -(-gap_nbits // 8)
    assert struct.unpack("<I", p[-4:])[0] == zlib.crc32(p[:-4])


# --------------------------------------------------------------------------- real models


def _model_layers(path):
    model = dc_engine.load(path)
    return [(layer.name, layer.ties["W"], layer.params["b"]) for layer in model.layers
            if getattr(layer, "ties", None) and "W" in layer.ties]


@pytest.mark.parametrize("model", ["lenet-300-100", "lenet-5"])
def test_real_quantized_models(model):
    found = _model_layers(f"{MODELS}/{model}.quantized.h5")
    assert found
    for name, tie, bias in found:
        payload = _check_round_trip(tie.idx, tie.codebook, bias, 5, name=name)
        if model == "lenet-300-100" and name == "ip1":
            nnz = int(np.count_nonzero(tie.idx))
            fixed_pq_bytes = nnz * (tie.bits + 5) / 8
            assert len(payload) < fixed_pq_bytes


# --------------------------------------------------------------------------- corrupt input


@pytest.fixture(scope="module")
def small_payload():
    rng = np.random.default_rng(7)
    idx = (rng.integers(1, 8, size=(4, 6)) * (rng.random((4, 6)) < 0.4)).astype(np.uint8)
    return encode_layer(idx, _codebook(3, rng), np.ones(3, np.float32), index_bits=2)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_every_truncation_raises(small_payload):
    for n in range(len(small_payload)):
        with pytest.raises(DCFormatError, match="truncated|CRC mismatch|magic"):
            decode_layer(small_payload[:n], name="ip9")


def test_every_bit_flip_raises(small_payload):
    for i in range(len(small_payload)):
        for bit in (0, 7):
            bad = bytearray(small_payload)
            bad[i] ^= 1 << bit
            with pytest.raises(DCFormatError, match="ip9"):
                decode_layer(bytes(bad), name="ip9")


def test_trailing_byte_raises(small_payload):
    with pytest.raises(DCFormatError, match="CRC mismatch"):
        decode_layer(small_payload + b"\0")


def test_wrong_magic_and_version(small_payload):
    with pytest.raises(DCFormatError, match="bad magic"):
        decode_layer(b"HDF" + small_payload[3:])
    with pytest.raises(DCFormatError, match="payload version 4.*newer dc-engine"):
        decode_layer(_with_crc(small_payload[:3] + b"\x04" + small_payload[4:-4]))
    # a version-2 body labelled version 3 reads a table byte as its flags
    with pytest.raises(DCFormatError, match="length mismatch|unknown flags|Huffman|Kraft"):
        decode_layer(_with_crc(small_payload[:3] + b"\x03" + small_payload[4:-4]))
    with pytest.raises(DCFormatError, match="payload version 0"):
        decode_layer(_with_crc(small_payload[:3] + b"\x00" + small_payload[4:-4]))
    # a version-2 body labelled version 1 is two bytes too long for its parts
    with pytest.raises(DCFormatError, match="length mismatch|Huffman|Kraft"):
        decode_layer(_with_crc(small_payload[:3] + b"\x01" + small_payload[4:-4]))


def _as_version_1(payload: bytes) -> bytes:
    """The version-1 payload of a version-2 one with both streams Huffman-coded: version byte
    1, no coder-id bytes (what dc-engine wrote before the coder interface)."""
    ndim = payload[6]
    ids = 7 + 4 * ndim + 20
    assert payload[3] == 2 and payload[ids:ids + 2] == bytes([1, 1])
    return _with_crc(payload[:3] + b"\x01" + payload[4:ids] + payload[ids + 2:-4])


@given(layers())
def test_version_1_payloads_decode(layer):
    idx, codebook, bias, ib = layer
    v2 = encode_layer(idx, codebook, bias, index_bits=ib)
    v1 = _as_version_1(v2)
    a, b = decode_layer(v2), decode_layer(v1)
    assert b["version"] == 1 and (b["code_coder"], b["gap_coder"]) == ("huffman", "huffman")
    for key in ("idx", "codebook", "bias"):
        assert np.array_equal(a[key], b[key]) and a[key].dtype == b[key].dtype
    s1, s2 = payload_stats(v1), payload_stats(v2)
    assert s1["total_bytes"] == len(v1) == len(v2) - 2 and s1["header_bytes"] == \
        s2["header_bytes"] - 2


@pytest.mark.parametrize("stream, offset", [("code", 0), ("gap", 1)])
def test_unknown_coder_id_with_valid_crc(small_payload, stream, offset):
    body = bytearray(small_payload[:-4])
    body[7 + 4 * 2 + 20 + offset] = 200
    with pytest.raises(DCFormatError, match=f"'ip4': unknown {stream}-stream coder id 200"):
        decode_layer(_with_crc(bytes(body)), name="ip4")


def test_coder_registry_ids_and_names_are_distinct():
    names = [c.name for c in CODERS.values()]
    assert len(set(names)) == len(names) and all(0 <= i <= 255 for i in CODERS)
    assert all(cls.id == i for i, cls in CODERS.items())


def test_fixed_coder_payload_is_the_uncoded_size(rng):
    codes = np.minimum(rng.geometric(0.3, size=(60, 80)), 31)  # skewed, as trained codes are
    idx = (codes * (rng.random((60, 80)) < 0.2)).astype(np.uint8)
    cb = _codebook(5, rng)
    p = encode_layer(idx, cb, None, index_bits=4, coder="fixed")
    s = payload_stats(p)
    assert s["code_table_bytes"] == s["gap_table_bytes"] == 0
    assert s["codebook_bytes"] == 4 * 31  # every slot but 0: no table says which are used
    assert s["code_stream_bytes"] == -(-s["n_entries"] * 5 // 8)
    assert s["gap_stream_bytes"] == -(-s["n_entries"] * 4 // 8)
    assert len(encode_layer(idx, cb, None, index_bits=4)) < len(p)  # Huffman beats it here


@pytest.mark.parametrize("offset, value, match", [
    (4, 0, "weight_bits must be in 1..16"),
    (4, 17, "weight_bits must be in 1..16"),
    (5, 0, "index_bits must be in 1..16"),
    (5, 200, "index_bits must be in 1..16"),
    (6, 0, "ndim must be in 1..4"),
    (6, 5, "ndim must be in 1..4"),
])
def test_bad_header_bytes(small_payload, offset, value, match):
    body = bytearray(small_payload[:-4])
    body[offset] = value
    with pytest.raises(DCFormatError, match=match):
        decode_layer(_with_crc(bytes(body)), name="conv1")


def _patch_u32(payload: bytes, offset: int, value: int) -> bytes:
    body = bytearray(payload[:-4])
    struct.pack_into("<I", body, offset, value)
    return _with_crc(bytes(body))


@pytest.mark.parametrize("field, value, match", [
    ("dim0", 2**32 - 1, "more than the cap"),
    ("dim1", 2**31, "more than the cap"),
    ("dim0", 0, "exceeds the 0 weights"),
    ("n_entries", 2**32 - 1, "n_entries=.* exceeds"),
    ("n_entries", 24, "length mismatch|Huffman|relative index|nnz"),
    ("nnz", 2**32 - 1, "nnz=.* exceeds"),
    ("nnz", 0, "nnz=0"),
    ("n_bias", 2**32 - 1, "length mismatch"),
    ("n_bias", 2, "length mismatch"),
    ("code_nbits", 2**32 - 1, "length mismatch"),
    ("gap_nbits", 2**32 - 8, "length mismatch"),
    ("gap_nbits", 1, "length mismatch|Huffman"),
])
def test_absurd_counts_with_valid_crc(small_payload, field, value, match):
    fields = ["dim0", "dim1", "n_entries", "nnz", "n_bias", "code_nbits", "gap_nbits"]
    bad = _patch_u32(small_payload, 7 + 4 * fields.index(field), value)
    t0 = time.perf_counter()
    with pytest.raises(DCFormatError, match=match):
        decode_layer(bad, name="ip1")
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("field", ["code_nbits", "gap_nbits"])
def test_nbits_off_by_one_with_valid_crc(field, rng):
    idx = (rng.integers(1, 16, size=200) * (rng.random(200) < 0.5)).astype(np.uint8)
    p = encode_layer(idx, _codebook(4, rng), None, index_bits=3)
    off = 7 + 4 + 4 * (3 if field == "code_nbits" else 4)
    (nbits,) = struct.unpack_from("<I", p, off)
    new = nbits - 1 if nbits % 8 != 1 else nbits + 1  # same byte count, wrong bit count
    with pytest.raises(DCFormatError, match="'fc7': Huffman stream"):
        decode_layer(_patch_u32(p, off, new), name="fc7")


def test_huge_shape_within_u32_is_rejected_before_allocating(small_payload):
    body = bytearray(small_payload[:-4])
    struct.pack_into("<2I", body, 7, 2**16, MAX_WEIGHTS // 2**16 + 1)
    with pytest.raises(DCFormatError, match="ip1.*more than the cap"):
        decode_layer(_with_crc(bytes(body)), name="ip1")


def test_non_finite_codebook_with_valid_crc(rng):
    p = encode_layer(np.array([1, 0, 2], np.uint8), _codebook(2, rng), None, index_bits=2)
    off = header_size(1) + 2 + 2  # tables: 4 code lengths (2 bytes), 4 gap lengths (2 bytes)
    body = bytearray(p[:-4])
    body[off:off + 4] = np.float32(np.nan).tobytes()
    with pytest.raises(DCFormatError, match="non-finite"):
        decode_layer(_with_crc(bytes(body)))


def test_corrupt_length_table_with_valid_crc(small_payload):
    body = bytearray(small_payload[:-4])
    h = header_size(2)
    body[h] = 0x11  # two length-1 codes + the others: Kraft sum > 1
    body[h + 1] = 0x11
    with pytest.raises(DCFormatError, match="ip2.*(Kraft|Huffman)"):
        decode_layer(_with_crc(bytes(body)), name="ip2")


def test_payload_type():
    with pytest.raises(TypeError, match="payload must be bytes"):
        decode_layer("DCL")


# --------------------------------------------------------------------------- encoder checks


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(idx=np.zeros(3, np.int32)), TypeError, "uint8 or uint16"),
    (dict(idx=np.zeros((1,) * 5, np.uint8)), ValueError, "1..4 dims"),
    (dict(idx=np.array([8], np.uint8)), ValueError, "only 8 entries"),
    (dict(codebook=np.zeros(8)), TypeError, "float32"),
    (dict(codebook=np.zeros(6, np.float32)), ValueError, "2\\*\\*bits"),
    (dict(codebook=np.ones(8, np.float32)), ValueError, "codebook\\[0\\]"),
    (dict(codebook=np.r_[0, np.inf, np.zeros(6)].astype(np.float32)), ValueError, "non-finite"),
    (dict(bias=np.zeros(2)), TypeError, "float32"),
    (dict(bias=np.full(2, np.nan, np.float32)), ValueError, "non-finite"),
    (dict(index_bits=0), ValueError, "index_bits"),
    (dict(index_bits=17), ValueError, "index_bits"),
    (dict(index_bits=2.0), TypeError, "index_bits"),
    (dict(coder="rans"), ValueError, "unknown coder 'rans'"),
    (dict(gap_coder=3), TypeError, "gap_coder"),
])
def test_encoder_rejects_bad_input(kwargs, exc, match):
    args = dict(idx=np.array([0, 1, 7], np.uint8), codebook=np.zeros(8, np.float32), bias=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        encode_layer(**args, name="fc")


def test_large_shape_in_a_short_payload_is_rejected_before_allocating(rng):
    """A few bytes cannot declare more than 2**20 weights beyond 2**16 per payload byte: the
    decoder would allocate a code per weight (hundreds of MB for a 100-byte file)."""
    p = encode_layer(np.array([[0, 3], [1, 0]], np.uint8), _codebook(2, rng), None, 2)
    body = bytearray(p[:-4])
    struct.pack_into("<2I", body, 7, 2**14, 2**14)  # 268M weights, under MAX_WEIGHTS
    tracemalloc.start()
    try:
        with pytest.raises(DCFormatError, match="conv9.*weights per byte"):
            decode_layer(_with_crc(bytes(body)), name="conv9")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_huffman_coder_options_are_checked():
    with pytest.raises(ValueError, match="max_code_length"):
        HuffmanCoder(max_code_length=16)
    with pytest.raises(TypeError, match="max_code_length"):
        HuffmanCoder(max_code_length=2.5)


def test_encoder_refuses_a_layer_decoders_would_refuse():
    idx = np.zeros((2**13, 2**10), np.uint8)  # 2**23 weights, all pruned: ~60 bytes
    cb = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="'empty'.*weights per byte"):
        encode_layer(idx, cb, None, 5, name="empty")
    idx[-1, -1] = 1  # one weight at the very end: fillers make the payload long enough
    out = decode_layer(encode_layer(idx, cb, None, 5, name="ok"))
    assert np.array_equal(out["idx"], idx)
