"""Stage 3 array codecs: bit packing (dc_engine.codecs.bitpack) and the relative sparse index
(dc_engine.codecs.relindex)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine.codecs.bitpack import pack, packed_size, unpack
from dc_engine.codecs.relindex import decode_sparse, encode_sparse
from dc_engine.errors import DCFormatError

WIDTHS = list(range(1, 17))


# --------------------------------------------------------------------------- bit packing


@pytest.mark.parametrize("width", WIDTHS)
@given(data=st.data())
def test_pack_round_trip_every_width(width, data):
    top = 2**width - 1
    elem = st.one_of(st.integers(0, top), st.sampled_from([0, 1, top]))
    values = np.array(data.draw(st.lists(elem, max_size=60)), dtype=np.int64)
    packed = pack(values, width)
    assert packed.dtype == np.uint8 and packed.shape == (packed_size(values.size, width),)
    for stream in (packed, packed.tobytes(), bytearray(packed.tobytes())):
        back = unpack(stream, width, values.size)
        assert back.dtype == np.uint16 and back.shape == values.shape
        np.testing.assert_array_equal(back, values)


def test_pack_known_bytes():
    assert pack([1, 2], 4).tobytes() == b"\x21"
    assert pack(np.array([0xABC, 0x123], dtype=np.uint16), 12).tobytes() == b"\xbc\x3a\x12"
    assert pack(np.array([1], dtype=np.uint8), 1).tobytes() == b"\x01"
    assert pack(np.zeros(0, dtype=np.uint16), 7).size == 0
    np.testing.assert_array_equal(unpack(b"\xbc\x3a\x12", 12, 2), [0xABC, 0x123])
    assert unpack(b"", 9, 0).shape == (0,)


def test_unpack_truncated_or_too_long():
    packed = pack(np.arange(10) % 8, 3)  # 30 bits -> 4 bytes
    with pytest.raises(DCFormatError, match="truncated"):
        unpack(packed[:-1], 3, 10)
    with pytest.raises(DCFormatError, match="truncated"):
        unpack(b"", 1, 1)
    with pytest.raises(DCFormatError, match="truncated"):
        unpack(b"\x00", 16, 2**40)  # never allocates for an untrusted huge n
    with pytest.raises(DCFormatError, match="too long"):
        unpack(np.append(packed, np.uint8(0)), 3, 10)


def test_unpack_nonzero_padding():
    packed = pack(np.arange(10) % 8, 3)  # 2 padding bits
    for bit in (6, 7):
        bad = packed.copy()
        bad[-1] |= 1 << bit
        with pytest.raises(DCFormatError, match="padding"):
            unpack(bad, 3, 10)
    bad = packed.copy()
    bad[-1] ^= 1 << 5  # a data bit, not padding: decodes, differently
    assert not np.array_equal(unpack(bad, 3, 10), np.arange(10) % 8)


@pytest.mark.parametrize("width", [0, 17, -1])
def test_bad_width_is_value_error(width):
    with pytest.raises(ValueError):
        pack([1], width)
    with pytest.raises(ValueError):
        unpack(b"\x00", width, 1)
    with pytest.raises(ValueError):
        packed_size(1, width)


def test_bad_arguments():
    with pytest.raises(ValueError, match="lie in"):
        pack([4], 2)
    with pytest.raises(ValueError, match="lie in"):
        pack([-1], 8)
    with pytest.raises(ValueError, match="1-D"):
        pack(np.zeros((2, 2), dtype=np.uint8), 4)
    with pytest.raises(TypeError):
        pack(np.array([1.0]), 4)
    with pytest.raises(TypeError):
        pack(np.array([True]), 4)
    with pytest.raises(TypeError):
        pack([1], 4.0)
    with pytest.raises(TypeError):
        pack([1], True)
    with pytest.raises(TypeError):
        unpack(np.zeros(1, dtype=np.int16), 4, 1)
    with pytest.raises(ValueError):
        unpack(b"", 4, -1)


# --------------------------------------------------------------------------- relative index


@st.composite
def sparse_codes(draw):
    index_bits = draw(st.integers(1, 6))
    runs = draw(st.lists(st.tuples(st.integers(0, 70), st.integers(0, 3)), max_size=10))
    parts = [np.zeros(0, dtype=np.int64)]
    for zeros, nonzeros in runs:
        parts.append(np.zeros(zeros, dtype=np.int64))
        parts.append(np.array(draw(st.lists(st.integers(1, 65535), min_size=nonzeros,
                                            max_size=nonzeros)), dtype=np.int64))
    return np.concatenate(parts), index_bits


@given(sparse_codes())
def test_sparse_round_trip(case):
    codes, index_bits = case
    gaps, entries = encode_sparse(codes, index_bits)
    assert gaps.dtype == np.uint16 and entries.dtype == np.uint16
    assert gaps.shape == entries.shape
    assert np.all(gaps < 2**index_bits)
    assert np.all(gaps[entries == 0] == 2**index_bits - 1)  # fillers only
    back = decode_sparse(gaps, entries, codes.size, index_bits)
    assert back.dtype == np.uint16 and back.shape == codes.shape
    np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize("index_bits", [1, 2, 3, 5, 16])
def test_sparse_edge_cases(index_bits):
    for codes in ([], [0], [5], [0] * 40, list(range(1, 41)), [0] * 39 + [2], [2] + [0] * 39):
        codes = np.array(codes, dtype=np.uint8)
        gaps, entries = encode_sparse(codes, index_bits)
        np.testing.assert_array_equal(decode_sparse(gaps, entries, codes.size, index_bits),
                                      codes)
    assert encode_sparse(np.zeros(40, dtype=np.uint8), index_bits)[0].size == 0


def test_sparse_row_major_order_of_a_dense_weight():
    idx = np.array([[0, 3, 0], [0, 0, 1]], dtype=np.uint8)  # Dense (out=2, in=3)
    gaps, codes = encode_sparse(idx, 2)
    np.testing.assert_array_equal(gaps, [1, 3])  # position 1, then 5 (row by row)
    np.testing.assert_array_equal(codes, [3, 1])
    np.testing.assert_array_equal(decode_sparse(gaps, codes, idx.size, 2).reshape(2, 3), idx)


def test_dc_fig2_worked_example():
    """DC Fig. 2 with a 3-bit index (largest jump 8): the 10 zeros between positions 4 and 15
    need a filler at position 12 (gap 7), then the entry at 15 stores gap 2."""
    idx = np.zeros(16, dtype=np.uint8)
    idx[[1, 4, 15]] = [3, 1, 2]
    gaps, codes = encode_sparse(idx, 3)
    np.testing.assert_array_equal(gaps, [1, 2, 7, 2])
    np.testing.assert_array_equal(codes, [3, 1, 0, 2])
    np.testing.assert_array_equal(decode_sparse(gaps, codes, 16, 3), idx)
    # and through the bit packer, as stored: 4 x 3-bit gaps -> 2 bytes
    stored = pack(gaps, 3)
    assert stored.size == 2
    np.testing.assert_array_equal(decode_sparse(unpack(stored, 3, 4), codes, 16, 3), idx)


def test_decode_corrupt_streams():
    gaps, codes = encode_sparse(np.array([0, 2, 0, 0, 1, 0], dtype=np.uint8), 2)  # [1,2],[2,1]
    with pytest.raises(DCFormatError, match="gaps must lie"):
        decode_sparse(np.array([1, 4]), codes, 6, 2)
    with pytest.raises(DCFormatError, match="gaps must lie"):
        decode_sparse(np.array([1, -1]), codes, 6, 2)
    with pytest.raises(DCFormatError, match="runs past"):
        decode_sparse(gaps, codes, 4, 2)  # last position 4 >= 4
    with pytest.raises(DCFormatError, match="runs past"):
        decode_sparse(np.array([3, 3]), codes, 7, 2)  # last position 7 >= 7
    with pytest.raises(DCFormatError, match="2 gaps but 1 codes"):
        decode_sparse(gaps, codes[:1], 6, 2)
    with pytest.raises(DCFormatError, match="at most 1 fit"):
        decode_sparse(gaps, codes, 1, 2)
    with pytest.raises(DCFormatError, match="codes must lie"):
        decode_sparse(gaps, np.array([1, 70000]), 6, 2)
    with pytest.raises(DCFormatError, match="1-D"):
        decode_sparse(gaps.reshape(1, 2), codes, 6, 2)
    np.testing.assert_array_equal(decode_sparse(gaps, codes, 9, 2), [0, 2, 0, 0, 1, 0, 0, 0, 0])


@given(st.binary(max_size=40), st.binary(max_size=40), st.integers(0, 64), st.integers(1, 8),
       st.integers(0, 7))
def test_decode_random_bytes_never_crashes(gap_bytes, code_bytes, n, index_bits, shift):
    """Random streams (read-only byte buffers) either decode to n codes consistent with their
    entries or raise DCFormatError; random packed bytes likewise."""
    m = min(len(gap_bytes), len(code_bytes))
    gaps = np.frombuffer(gap_bytes, dtype=np.uint8)[:m] >> shift
    codes = np.frombuffer(code_bytes, dtype=np.uint8)[:m]
    try:
        out = decode_sparse(gaps, codes, n, index_bits)
    except DCFormatError:
        pass
    else:
        assert out.shape == (n,) and out.dtype == np.uint16
        positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
        np.testing.assert_array_equal(out[positions], codes)
        assert np.count_nonzero(out) == np.count_nonzero(codes)
    try:
        values = unpack(gap_bytes, index_bits, n)
    except DCFormatError:
        return
    assert values.shape == (n,) and np.all(values < 2**index_bits)
    assert pack(values, index_bits).tobytes() == gap_bytes


def test_sparse_bad_arguments():
    for bits in (0, 17):
        with pytest.raises(ValueError):
            encode_sparse([1, 0], bits)
        with pytest.raises(ValueError):
            decode_sparse([0], [1], 2, bits)
    with pytest.raises(TypeError):
        encode_sparse(np.array([1.0, 0.0]), 3)
    with pytest.raises(TypeError):
        decode_sparse(np.array([0.0]), np.array([1]), 2, 3)
    with pytest.raises(ValueError, match="65535"):
        encode_sparse(np.array([70000]), 3)
    with pytest.raises(ValueError):
        encode_sparse(np.array([-1]), 3)
    with pytest.raises(ValueError):
        decode_sparse([], [], -1, 3)
