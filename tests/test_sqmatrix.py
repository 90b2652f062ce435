"""CompressedMatrix: products equal the dense product of to_dense(); invariants; bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dc_engine.runtime.sqmatrix import ALIGN, CompressedMatrix, aligned_empty, best_index_bits


@st.composite
def sparse_weights(draw):
    out = draw(st.integers(1, 10))
    n_in = draw(st.integers(1, 70))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = rng.standard_normal((out, n_in)).astype(np.float32)
    w[rng.random((out, n_in)) >= density] = 0.0
    return w, draw(st.integers(1, 8)), draw(st.sampled_from([1, 3, 5, 8, 12, "auto"]))


def _close(got, want_f64, w_abs, x_abs):
    assert got.dtype == np.float32 and got.shape == want_f64.shape
    assert np.all(np.abs(got - want_f64) <= 1e-5 * (w_abs @ x_abs) + 1e-30)


@settings(max_examples=40)
@given(sparse_weights(), st.integers(0, 4), st.integers(0, 2**32 - 1))
def test_matmul_equals_dense_product(case, batch, seed):
    w, weight_bits, index_bits = case
    m = CompressedMatrix.from_dense(w, weight_bits, index_bits)
    dense = m.to_dense()
    assert dense.dtype == np.float32 and dense.shape == w.shape
    assert m.shape == w.shape and m.nnz == np.count_nonzero(w)
    d64, d_abs = dense.astype(np.float64), np.abs(dense.astype(np.float64))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(w.shape[1]).astype(np.float32)
    xb = rng.standard_normal((batch, w.shape[1])).astype(np.float32)
    xt = rng.standard_normal((w.shape[1], batch + 1)).astype(np.float32)
    for simd in sorted({m.simd, False}):  # the AVX-512 kernels where they run, and the scalar
        m.simd = simd
        _close(m.matmul(x), d64 @ x, d_abs, np.abs(x))
        got = m.matmul(xb)
        assert got.shape == (batch, w.shape[0]) and got.dtype == np.float32
        assert np.all(np.abs(got - xb.astype(np.float64) @ d64.T)
                      <= 1e-5 * (np.abs(xb) @ d_abs.T) + 1e-30)
        _close(m.matmul_t(xt), d64 @ xt, d_abs, np.abs(xt))


@settings(max_examples=25)
@given(sparse_weights())
def test_from_dense_keeps_zeros_and_shares_weights(case):
    w, weight_bits, index_bits = case
    m = CompressedMatrix.from_dense(w, weight_bits, index_bits)
    dense = m.to_dense()
    assert np.all(dense[w == 0] == 0)
    assert np.unique(dense[dense != 0]).size <= 2**weight_bits - 1
    assert m.nnz == np.count_nonzero(w)
    assert m.weight_bits == weight_bits and m.codebook.size == 2**weight_bits
    assert m.nbytes == m.words.nbytes + m.rowptr.nbytes + m.codebook.nbytes
    if index_bits == "auto":
        assert m.index_bits == best_index_bits(w != 0, weight_bits)


def test_from_codes_round_trip_and_word_width(rng):
    idx = rng.integers(0, 16, size=(30, 200)).astype(np.uint8)
    idx[rng.random(idx.shape) < 0.9] = 0
    codebook = np.concatenate([[0.0], np.linspace(-1, 1, 15)]).astype(np.float32)
    for index_bits, dtype in [(4, np.uint8), (5, np.uint16), (12, np.uint16), (13, np.uint32)]:
        m = CompressedMatrix.from_codes(idx, codebook, index_bits)
        assert m.words.dtype == dtype and m.shape == (30, 200)
        np.testing.assert_array_equal(m.to_dense(), codebook[idx])
    # a short codebook is padded to a power of two; weights are unchanged
    m = CompressedMatrix.from_codes(np.array([[0, 2], [1, 0]], dtype=np.uint16),
                                    np.array([0, 1.5, -2], dtype=np.float32))
    assert m.weight_bits == 2 and m.codebook.size == 4
    np.testing.assert_array_equal(m.to_dense(), [[0, -2], [1.5, 0]])


def test_best_index_bits_fills_the_word():
    """At 4% density, uint16 words with up to 11 gap bits need no fillers and beat 5 + 5."""
    rng = np.random.default_rng(0)
    mask = rng.random((64, 4000)) < 0.04
    assert 5 < best_index_bits(mask, 5) <= 11
    codebook = np.arange(32, dtype=np.float32)  # 5-bit codes
    m5 = CompressedMatrix.from_codes(mask.astype(np.uint8), codebook, 5)
    mauto = CompressedMatrix.from_codes(mask.astype(np.uint8), codebook, "auto")
    assert mauto.words.dtype == np.uint16 and mauto.words.nbytes < m5.words.nbytes
    # at 30% density one byte per entry (5 + 3 bits) wins: few fillers, half the bytes
    dense_mask = rng.random((64, 4000)) < 0.3
    assert best_index_bits(dense_mask, 5) == 3
    assert mauto.n_entries == mask.sum() < m5.n_entries


def test_bad_inputs_raise_clear_errors():
    w = np.eye(3, 4, dtype=np.float32)
    m = CompressedMatrix.from_dense(w, 2, 2)
    with pytest.raises(TypeError, match="float32"):
        CompressedMatrix.from_dense(w.astype(np.float64))
    with pytest.raises(ValueError, match="2-D"):
        CompressedMatrix.from_dense(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        CompressedMatrix.from_dense(np.full((2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="weight_bits"):
        CompressedMatrix.from_dense(w, 0)
    with pytest.raises(ValueError, match="index_bits"):
        CompressedMatrix.from_dense(w, 2, 17)
    with pytest.raises(ValueError, match="index_bits"):
        CompressedMatrix.from_dense(w, 2, "wide")
    with pytest.raises(TypeError, match="uint8 or uint16"):
        CompressedMatrix.from_codes(np.zeros((2, 2), np.int64), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"codebook\[0\]"):
        CompressedMatrix.from_codes(np.zeros((2, 2), np.uint8), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="< 2"):
        CompressedMatrix.from_codes(np.full((2, 2), 2, np.uint8), np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="float32"):
        m.matmul(np.zeros(4))
    with pytest.raises(ValueError, match=r"\(4,\) or \(batch, 4\)"):
        m.matmul(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"\(4,\) or \(batch, 4\)"):
        m.matmul(np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(4, N\)"):
        m.matmul_t(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(4, N\)"):
        m.matmul_t(np.zeros(4, np.float32))


def test_empty_batch_and_strided_inputs():
    m = CompressedMatrix.from_dense(np.eye(3, 5, dtype=np.float32), 2, 2)
    assert m.matmul(np.zeros((0, 5), np.float32)).shape == (0, 3)
    x = np.arange(10, dtype=np.float32)[::2]  # not contiguous
    np.testing.assert_array_equal(m.matmul(x), m.to_dense() @ x)
    xt = np.asfortranarray(np.ones((5, 3), np.float32))
    np.testing.assert_array_equal(m.matmul_t(xt), m.to_dense() @ xt)


def test_does_not_import_training_code():
    code = ("import dc_engine.runtime.sqmatrix, sys; "
            "bad = [m for m in ('dc_engine.core.train', 'dc_engine.core.optim', "
            "'dc_engine.stages.quantize', 'dc_engine.stages.prune', 'dc_engine.app.jobs') "
            "if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_simd_switch(monkeypatch):
    """simd defaults to matrix.SIMD and cannot be switched on where it would not run (an
    illegal instruction would kill the interpreter); both kernels give the product."""
    import dc_engine.runtime.sqmatrix as matrix
    from dc_engine import kernels

    w = np.random.default_rng(3).standard_normal((40, 300)).astype(np.float32)
    w[np.abs(w) < 1.0] = 0.0
    m = CompressedMatrix.from_dense(w, 5, "auto")
    assert m.simd is matrix.SIMD
    if "DC_ENGINE_SIMD" not in os.environ:
        assert matrix.SIMD == kernels.SQMM_AVX512
    x = np.linspace(-1, 1, 300, dtype=np.float32)
    want = m.to_dense().astype(np.float64) @ x
    m.simd = False
    np.testing.assert_allclose(m.matmul(x), want, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(kernels, "SQMM_AVX512", False)
    with pytest.raises(ValueError, match="AVX-512"):
        m.simd = True
    monkeypatch.setattr(matrix, "SIMD", False)
    assert not CompressedMatrix.from_dense(w, 5, 5).simd
    monkeypatch.setattr(kernels, "SQMM_AVX512", True)
    assert not matrix._simd_possible(2**31)


@pytest.mark.parametrize("value", ["0", "false", "Off"])
def test_simd_off_by_environment(value):
    code = ("import numpy as np; from dc_engine.runtime import sqmatrix as matrix; "
            "assert matrix.SIMD is False; "
            "assert not matrix.CompressedMatrix.from_dense(np.eye(3, dtype=np.float32)).simd")
    env = {**os.environ, "DC_ENGINE_SIMD": value}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("shape, dtype", [((3, 5), np.float32), (7, np.float64),
                                          ((0, 4), np.uint8), ((100, 64), np.float32)])
def test_aligned_empty(shape, dtype):
    a = aligned_empty(shape, dtype)
    assert a.flags.c_contiguous and a.dtype == dtype
    assert a.size == 0 or a.ctypes.data % ALIGN == 0  # (an empty array has no data to align)
    assert a.shape == (shape if isinstance(shape, tuple) else (shape,))
    a[...] = 1  # writable, and its own memory
    assert a.base is not None and a.base.nbytes >= a.nbytes


def test_simd_off_for_a_generic_numba_target():
    """NUMBA_CPU_NAME=generic (a portable cache) compiles for no AVX-512: the scalar kernels."""
    code = "from dc_engine import kernels; assert kernels.SQMM_AVX512 is False"
    env = {**os.environ, "NUMBA_CPU_NAME": "generic"}
    env.pop("NUMBA_CPU_FEATURES", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("weight_bits", [9, 12, 16])
def test_wide_codebooks(weight_bits, rng):
    """Codes of 9-16 bits (a gathered codebook, uint32 words for wide gaps) on both kernels."""
    w = rng.standard_normal((23, 90)).astype(np.float32)
    w[rng.random(w.shape) < 0.6] = 0.0
    for index_bits in (1, 7, 16):
        m = CompressedMatrix.from_codes(*_codes(w, weight_bits), index_bits)
        d64 = m.to_dense().astype(np.float64)
        x = rng.standard_normal(90).astype(np.float32)
        xb = rng.standard_normal((37, 90)).astype(np.float32)
        for simd in sorted({m.simd, False}):
            m.simd = simd
            _close(m.matmul(x), d64 @ x, np.abs(d64), np.abs(x))
            got = m.matmul(xb)
            assert np.all(np.abs(got - xb.astype(np.float64) @ d64.T)
                          <= 1e-5 * (np.abs(xb) @ np.abs(d64).T) + 1e-30)


def _codes(w, weight_bits):
    """Codes 1, 2, ... over the non-zeros (wrapping at 2**bits - 1) and a codebook; the
    reference is the matrix's own to_dense()."""
    nz = np.flatnonzero(w)
    codebook = np.zeros(2**weight_bits, dtype=np.float32)
    idx = np.zeros(w.shape, dtype=np.uint16)
    codes = 1 + np.arange(nz.size) % (2**weight_bits - 1)
    idx.flat[nz] = codes
    codebook[codes] = w.flat[nz]
    return idx, codebook


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 30), st.integers(1, 70),
       st.integers(1, 4))
def test_matmul_t_of_row_ranges(seed, out_rows, n_in, n, groups):
    """Rows r0..r1 of ``W @ xt`` (a grouped convolution's groups) equal those rows of the whole
    product and leave the other rows of ``out`` as they were, on both kernel families."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((out_rows, n_in)) * (rng.random((out_rows, n_in)) < 0.4))
    m = CompressedMatrix.from_dense(w.astype(np.float32), weight_bits=4, index_bits=2)
    xt = rng.standard_normal((n_in, n)).astype(np.float32)
    want = m.to_dense().astype(np.float64) @ xt.astype(np.float64)
    for simd in {False, m.simd}:
        m.simd = simd
        bounds = np.linspace(0, out_rows, groups + 1).astype(int)
        for r0, r1 in zip(bounds[:-1], bounds[1:]):
            out = np.full((out_rows, n), np.nan, dtype=np.float32)
            got = m.matmul_t(xt, rows=(r0, r1), out=out)
            assert got is out
            np.testing.assert_allclose(got[r0:r1], want[r0:r1], rtol=1e-4,
                                       atol=1e-4 * (np.abs(want).max() + 1))
            assert np.isnan(np.delete(got, np.s_[r0:r1], axis=0)).all()
    with pytest.raises(ValueError, match="rows"):
        m.matmul_t(xt, rows=(1, out_rows + 1))
    with pytest.raises(ValueError, match="out must be"):
        m.matmul_t(xt, out=np.zeros((out_rows + 1, n), np.float32))
