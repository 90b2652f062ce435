"""Bit-packing kernels (pack_bits, unpack_bits) against their twins in kernels.reference."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.kernels import reference

WIDTHS = list(range(1, 17))


def _nbytes(n, width):
    return -(-n * width // 8)


def _pack(fn, values, width):
    out = np.full(_nbytes(values.size, width), 0xAA, dtype=np.uint8)  # garbage: must be set
    fn(values, width, out)
    return out


def _unpack(fn, data, width, n):
    out = np.full(n, 0xBEEF, dtype=np.uint16)
    fn(data, width, n, out)
    return out


@st.composite
def values_of_width(draw, width):
    """uint16 values < 2**width: n in 0..70, biased to 0, 1 and the maximum."""
    top = 2**width - 1
    elem = st.one_of(st.integers(0, top), st.sampled_from([0, 1, top]))
    vals = draw(st.lists(elem, min_size=0, max_size=70))
    return np.array(vals, dtype=np.uint16)


@pytest.mark.parametrize("width", WIDTHS)
@given(data=st.data())
def test_pack_unpack_kernels_match_reference_and_round_trip(width, data):
    values = data.draw(values_of_width(width))
    got = _pack(kernels.pack_bits, values, width)
    want = _pack(reference.pack_bits, values, width)
    assert got.dtype == np.uint8 and got.shape == (_nbytes(values.size, width),)
    np.testing.assert_array_equal(got, want)
    back = _unpack(kernels.unpack_bits, got, width, values.size)
    assert back.dtype == np.uint16 and back.shape == values.shape
    np.testing.assert_array_equal(back, values)
    np.testing.assert_array_equal(back, _unpack(reference.unpack_bits, got, width, values.size))


@pytest.mark.parametrize("width", WIDTHS)
def test_padding_bits_are_zero_and_all_ones_round_trip(width):
    for n in range(0, 17):
        values = np.full(n, 2**width - 1, dtype=np.uint16)
        out = _pack(kernels.pack_bits, values, width)
        pad = out.size * 8 - n * width
        if pad:
            assert int(out[-1]) >> (8 - pad) == 0
        np.testing.assert_array_equal(_unpack(kernels.unpack_bits, out, width, n), values)


@pytest.mark.parametrize("fn", [kernels.unpack_bits, reference.unpack_bits])
def test_unpack_reads_only_the_needed_bytes(fn, rng):
    data = rng.integers(0, 256, size=40, dtype=np.uint8)
    for width in (3, 7, 12):
        n = 9
        want = _unpack(fn, data[:_nbytes(n, width)].copy(), width, n)
        np.testing.assert_array_equal(_unpack(fn, data, width, n), want)


@pytest.mark.parametrize("fn", [kernels.pack_bits, reference.pack_bits])
def test_known_bytes_lsb_first(fn):
    def packed(vals, width):
        return _pack(fn, np.array(vals, dtype=np.uint16), width).tobytes()

    assert packed([1, 2], 4) == b"\x21"
    assert packed([0xABC, 0x123], 12) == bytes([0xBC, 0x3A, 0x12])
    assert packed([1, 0, 1, 1, 0, 0, 0, 0, 1], 1) == b"\x0d\x01"
    assert packed([5, 3, 7], 3) == bytes([0b11011101, 0b1])  # 101 011 111 -> LSB first
    assert packed([0xBEEF], 16) == b"\xef\xbe"
    assert packed([], 5) == b""


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no specialisations without the JIT")
def test_codec_converts_dtypes_so_no_kernel_recompiles():
    """The kernels compile lazily (no eager signatures); the codec converts its input, so other
    integer dtypes and read-only or strided arrays reuse the one compiled specialisation."""
    from dc_engine.codecs import bitpack

    values = np.array([1, 2, 15, 0, 7], dtype=np.uint16)
    packed = bitpack.pack(values, 4)
    np.testing.assert_array_equal(bitpack.unpack(packed, 4, values.size), values)
    seen = (set(kernels.pack_bits.signatures), set(kernels.unpack_bits.signatures))
    ro = packed.copy()
    ro.flags.writeable = False
    assert bitpack.pack(np.repeat(values.astype(np.int64), 2)[::2], 4).tobytes() == \
        packed.tobytes()
    np.testing.assert_array_equal(bitpack.unpack(ro, 4, values.size), values)
    np.testing.assert_array_equal(bitpack.unpack(packed.tobytes(), 4, values.size), values)
    assert (set(kernels.pack_bits.signatures), set(kernels.unpack_bits.signatures)) == seen
