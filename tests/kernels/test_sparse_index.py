"""Relative sparse-index kernels (count_entries, encode_relative, decode_relative) against their
twins in kernels.reference."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.kernels import reference


def _encode(mod, codes, index_bits):
    m = mod.count_entries(codes, index_bits)
    gaps = np.full(m, 0xBEEF, dtype=np.uint16)
    out_codes = np.full(m, 0xBEEF, dtype=np.uint16)
    mod.encode_relative(codes, index_bits, gaps, out_codes)
    return gaps, out_codes


def _decode(fn, gaps, codes, n):
    out = np.full(n, 0xBEEF, dtype=np.uint16)
    fn(gaps, codes, n, out)
    return out


@st.composite
def sparse_codes(draw):
    """(codes, index_bits): runs of zeros (often longer than the index span) and non-zeros."""
    index_bits = draw(st.integers(1, 5))
    runs = draw(st.lists(st.tuples(st.integers(0, 80), st.integers(0, 4)), max_size=12))
    top = draw(st.sampled_from([1, 15, 255, 65535]))
    parts = []
    for zeros, nonzeros in runs:
        parts.append(np.zeros(zeros, dtype=np.uint16))
        parts.append(np.array(draw(st.lists(st.integers(1, top), min_size=nonzeros,
                                            max_size=nonzeros)), dtype=np.uint16))
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
    return np.ascontiguousarray(codes, dtype=np.uint16), index_bits


def _check(codes, index_bits):
    m = kernels.count_entries(codes, index_bits)
    assert m == reference.count_entries(codes, index_bits)
    gaps, out_codes = _encode(kernels, codes, index_bits)
    want_gaps, want_codes = _encode(reference, codes, index_bits)
    np.testing.assert_array_equal(gaps, want_gaps)
    np.testing.assert_array_equal(out_codes, want_codes)
    assert gaps.shape == (m,) and gaps.dtype == np.uint16 and out_codes.dtype == np.uint16
    assert np.all(gaps <= 2**index_bits - 1)
    # non-zeros appear once each, in order; every other entry is a filler (max gap, code 0)
    np.testing.assert_array_equal(out_codes[out_codes != 0], codes[codes != 0])
    assert np.all(gaps[out_codes == 0] == 2**index_bits - 1)
    back = _decode(kernels.decode_relative, gaps, out_codes, codes.size)
    np.testing.assert_array_equal(back, _decode(reference.decode_relative, gaps, out_codes,
                                                codes.size))
    assert back.dtype == np.uint16 and back.shape == codes.shape
    np.testing.assert_array_equal(back, codes)
    return gaps, out_codes


@given(sparse_codes())
def test_kernels_match_reference_and_round_trip(case):
    _check(*case)


@pytest.mark.parametrize("index_bits", [1, 2, 3, 4, 8, 16])
def test_edge_cases(index_bits, rng):
    for codes in ([], [0], [7], [0] * 50, [3] * 50, [0] * 49 + [1], [1] + [0] * 49):
        _check(np.array(codes, dtype=np.uint16), index_bits)
    codes = rng.integers(0, 4, size=300).astype(np.uint16)
    codes[rng.random(300) < 0.8] = 0
    _check(codes, index_bits)


@pytest.mark.parametrize("index_bits", [1, 2, 3])
def test_filler_count_for_long_runs(index_bits):
    span = 2**index_bits
    for run in range(0, 5 * span + 2):
        codes = np.zeros(run + 1, dtype=np.uint16)
        codes[-1] = 9
        gaps, out_codes = _check(codes, index_bits)
        assert gaps.size == run // span + 1
        np.testing.assert_array_equal(gaps[:-1], span - 1)
        np.testing.assert_array_equal(out_codes[:-1], 0)
        assert gaps[-1] == run % span and out_codes[-1] == 9


def test_dc_fig2_example():
    """DC Fig. 2: 3-bit index, non-zeros at 1, 4, 15; the jump 4 -> 15 needs a filler at 12."""
    codes = np.zeros(16, dtype=np.uint16)
    codes[[1, 4, 15]] = [3, 1, 2]
    gaps, out_codes = _check(codes, 3)
    np.testing.assert_array_equal(gaps, [1, 2, 7, 2])
    np.testing.assert_array_equal(out_codes, [3, 1, 0, 2])
    positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
    np.testing.assert_array_equal(positions, [1, 4, 12, 15])
    np.testing.assert_array_equal(np.diff(positions), [3, 8, 3])  # the paper's diff row


def test_eie_example():
    """EIE Sec. III: [0,0,1,2, 18 zeros, 3] with 4-bit indices -> v=[1,2,0,3], z=[2,0,15,2]."""
    codes = np.array([0, 0, 1, 2] + [0] * 18 + [3], dtype=np.uint16)
    gaps, out_codes = _check(codes, 4)
    np.testing.assert_array_equal(gaps, [2, 0, 15, 2])
    np.testing.assert_array_equal(out_codes, [1, 2, 0, 3])


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no specialisations without the JIT")
def test_codec_converts_dtypes_so_no_kernel_recompiles():
    """The kernels compile lazily (no eager signatures); the codec converts its input, so other
    integer dtypes and read-only or strided arrays reuse the one compiled specialisation."""
    from dc_engine.codecs.relindex import decode_sparse, encode_sparse

    codes = np.array([0, 0, 1, 2] + [0] * 18 + [3], dtype=np.uint16)
    gaps, out_codes = encode_sparse(codes, 4)
    np.testing.assert_array_equal(decode_sparse(gaps, out_codes, codes.size, 4), codes)
    kernels_ = (kernels.count_entries, kernels.encode_relative, kernels.decode_relative)
    seen = [set(k.signatures) for k in kernels_]
    ro = gaps.astype(np.int64)
    ro.flags.writeable = False
    got = encode_sparse(np.repeat(codes.astype(np.uint8), 2)[::2], 4)
    np.testing.assert_array_equal(got[0], gaps)
    np.testing.assert_array_equal(decode_sparse(ro, out_codes.astype(np.int32), codes.size, 4),
                                  codes)
    assert [set(k.signatures) for k in kernels_] == seen
