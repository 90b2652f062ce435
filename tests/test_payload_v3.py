"""Payload version 3 (dc_engine.codecs.payload): the column scan order and the shared bias.
Round trips on random layers (hypothesis), the version written, sizes, and corrupt input with
valid CRCs (flags, bias fields, bias streams)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_payload import layers

from dc_engine.codecs.coders import coder_names
from dc_engine.codecs.payload import (
    decode_layer,
    encode_layer,
    header_size,
    payload_stats,
    scan,
    share_bias,
    unscan,
)
from dc_engine.errors import DCFormatError


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@st.composite
def biases(draw):
    """A bias with few distinct values (as stage 2's bias_bits leaves it), or any bias."""
    n = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["few", "any", "one", "zeros"]))
    if kind == "few":
        levels = rng.normal(size=draw(st.integers(1, 9))).astype(np.float32)
        return levels[rng.integers(levels.size, size=n)]
    if kind == "one":
        return np.full(n, rng.normal(), np.float32)
    if kind == "zeros":  # +0.0 and -0.0 are different floats: both must come back
        return np.where(rng.random(n) < 0.5, np.float32(0.0), np.float32(-0.0))
    return rng.normal(size=n).astype(np.float32)


@given(layers(), biases(), st.sampled_from(["rows", "cols"]),
       st.sampled_from(["float32", "shared"]), st.sampled_from(coder_names()))
def test_round_trip_every_option(layer, bias, order, bias_coding, coder):
    idx, codebook, _, ib = layer
    payload = encode_layer(idx, codebook, bias, index_bits=ib, coder=coder, order=order,
                           bias_coding=bias_coding)
    out = decode_layer(payload)
    assert np.array_equal(out["idx"], idx) and out["idx"].dtype == idx.dtype
    assert out["bias"].dtype == np.float32
    assert np.array_equal(out["bias"].view(np.uint32), bias.view(np.uint32))  # bit for bit
    assert (out["order"], out["bias_coding"]) == (order, bias_coding)
    assert out["version"] == (2 if (order, bias_coding) == ("rows", "float32") else 3)
    stats = payload_stats(payload)
    assert stats["total_bytes"] == len(payload)
    # the same layer encodes to the same bytes (files save back byte for byte)
    assert encode_layer(out["idx"], out["codebook"], out["bias"], index_bits=ib, coder=coder,
                        order=order, bias_coding=bias_coding) == payload


@given(layers(), st.sampled_from(["rows", "cols"]))
def test_scan_unscan_inverse(layer, order):
    idx = layer[0]
    flat = scan(idx, order)
    assert flat.shape == (idx.size,)
    assert np.array_equal(unscan(flat, idx.shape, order), idx)


def test_cols_scan_is_the_transposed_matrix():
    idx = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(scan(idx, "cols"), idx.reshape(2, 12).T.ravel())


@given(biases())
def test_share_bias_levels_increase_and_rebuild_the_bias(bias):
    levels, codes, bits = share_bias(bias)
    assert np.array_equal(levels[codes].view(np.uint32), bias.view(np.uint32))
    assert np.all(np.diff(levels) >= 0) and 2 ** (bits - 1) < max(levels.size, 2) <= 2**bits


def test_shared_bias_is_smaller_for_few_levels(rng):
    idx = (rng.integers(1, 8, size=(300, 100)) * (rng.random((300, 100)) < 0.05)).astype(np.uint8)
    cb = np.r_[0, rng.normal(size=7)].astype(np.float32)
    bias = rng.normal(size=16).astype(np.float32)[rng.integers(16, size=300)]
    raw = encode_layer(idx, cb, bias, 5)
    shared = encode_layer(idx, cb, bias, 5, bias_coding="shared")
    # 300 float32 values against 16 values and 300 codes of at most 4 bits
    assert len(raw) - len(shared) >= 300 * 4 - 16 * 4 - 300 // 2 - 16 - 8


@pytest.fixture(scope="module")
def v3_payload():
    rng = np.random.default_rng(5)
    idx = (rng.integers(1, 8, size=(5, 6)) * (rng.random((5, 6)) < 0.5)).astype(np.uint8)
    cb = np.r_[0, rng.normal(size=7)].astype(np.float32)
    bias = np.float32([0.5, -0.25, 0.5, 0.5, 0.0])
    return encode_layer(idx, cb, bias, index_bits=2, order="cols", bias_coding="shared")


def test_v3_every_truncation_and_bit_flip_raises(v3_payload):
    for n in range(len(v3_payload)):
        with pytest.raises(DCFormatError, match="truncated|CRC mismatch|magic"):
            decode_layer(v3_payload[:n], name="ip9")
    for i in range(len(v3_payload)):
        for bit in (0, 3, 7):
            bad = bytearray(v3_payload)
            bad[i] ^= 1 << bit
            with pytest.raises(DCFormatError, match="ip9"):
                decode_layer(bytes(bad), name="ip9")


def _fields(payload: bytes) -> int:
    """Offset of the flags byte of a 2-D version-3 payload."""
    return header_size(2, 2)


@pytest.mark.parametrize("offset, value, match", [
    (0, 0x04, "unknown flags"),
    (0, 0x80, "unknown flags"),
    (0, 0x01, "length mismatch|Huffman|Kraft|corrupt"),  # shared-bias fields dropped
    (1, 0, "bias_bits must be in 1..16"),
    (1, 17, "bias_bits must be in 1..16"),
    (2, 200, "unknown bias-stream coder id 200"),
])
def test_bad_v3_header_bytes_with_valid_crc(v3_payload, offset, value, match):
    body = bytearray(v3_payload[:-4])
    body[_fields(v3_payload) + offset] = value
    with pytest.raises(DCFormatError, match=match):
        decode_layer(_with_crc(bytes(body)), name="fc")


@pytest.mark.parametrize("delta", [-9, -1, 1, 8, 2**31])
def test_bias_nbits_mismatch_with_valid_crc(v3_payload, delta):
    body = bytearray(v3_payload[:-4])
    pos = _fields(v3_payload) + 3
    (nbits,) = struct.unpack_from("<I", body, pos)
    struct.pack_into("<I", body, pos, max(0, min(2**32 - 1, nbits + delta)))
    with pytest.raises(DCFormatError, match="fc"):
        decode_layer(_with_crc(bytes(body)), name="fc")


def test_shared_bias_with_no_bias_count_is_refused(v3_payload):
    body = bytearray(v3_payload[:-4])
    n_bias_at = 7 + 4 * 2 + 8  # after magic..ndim, the shape, n_entries and nnz
    struct.pack_into("<I", body, n_bias_at, 0)
    with pytest.raises(DCFormatError, match="n_bias = 0"):
        decode_layer(_with_crc(bytes(body)), name="fc")


def test_non_finite_shared_bias_value_with_valid_crc():
    idx = np.zeros((2, 3), np.uint8)
    idx[0, 1] = 1
    cb = np.float32([0, 1])
    bias = np.float32([7.0, 7.0])
    body = bytearray(encode_layer(idx, cb, bias, 2, bias_coding="shared")[:-4])
    at = bytes(body).index(np.float32(7.0).tobytes())
    body[at:at + 4] = np.float32(np.nan).tobytes()
    with pytest.raises(DCFormatError, match="bias holds non-finite"):
        decode_layer(_with_crc(bytes(body)))


def test_encoder_checks_the_new_options(rng):
    idx = np.zeros((2, 3), np.uint8)
    cb = np.float32([0, 1])
    with pytest.raises(ValueError, match="order must be one of"):
        encode_layer(idx, cb, order="diagonal")
    with pytest.raises(ValueError, match="bias_coding must be one of"):
        encode_layer(idx, cb, np.ones(2, np.float32), bias_coding="float16")
    # no bias: nothing to share, so the version-2 layout is written
    assert decode_layer(encode_layer(idx, cb, None, bias_coding="shared"))["version"] == 2
