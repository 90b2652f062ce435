"""Sparse-quantized kernels (kernels.sqmm) against their twins in kernels.reference."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.kernels import reference


def _word_dtype(bits):
    return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32


def _layout(mod, idx2d, index_bits, weight_bits):
    rowptr = np.full(idx2d.shape[0] + 1, -7, dtype=np.int64)
    mod.sq_count(idx2d, index_bits, rowptr)
    words = np.full(rowptr[-1], 99, dtype=_word_dtype(weight_bits + index_bits))
    mod.sq_encode(idx2d, index_bits, rowptr, words)
    return rowptr, words


def _split(mod, words, rowptr, index_bits, tile, n_cols):
    n_tiles = max(1, -(-n_cols // tile))
    split_k = np.full((rowptr.size - 1, n_tiles + 1), -7, dtype=np.int64)
    split_col = np.full_like(split_k, -7)
    mod.sq_col_split(words, rowptr, index_bits, tile, split_k, split_col)
    return split_k, split_col


@st.composite
def cases(draw):
    """(idx2d, codebook, index_bits): random shape, density, bit widths; rows of long zero runs
    (fillers with small index_bits), empty rows and all-zero matrices come up often."""
    weight_bits = draw(st.integers(1, 8))
    index_bits = draw(st.integers(1, 8))
    out = draw(st.integers(1, 12))
    n_in = draw(st.one_of(st.integers(1, 90), st.integers(150, 400)))  # long: 64-entry blocks
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(1, 2**weight_bits, size=(out, n_in))
    idx[rng.random((out, n_in)) >= density] = 0
    if draw(st.booleans()):
        idx[rng.random(out) < 0.3] = 0  # empty rows
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    codebook = np.zeros(2**weight_bits, dtype=np.float32)
    codebook[1:] = rng.standard_normal(2**weight_bits - 1)
    return np.ascontiguousarray(idx, dtype=dtype), codebook, index_bits, weight_bits


def _tolerance(idx, codebook, x):
    """float32 rounding of a sum of |w x| terms (the kernels sum in float32)."""
    scale = np.abs(codebook.astype(np.float64)[idx]) @ np.abs(x.astype(np.float64))
    return 1e-5 * scale + 1e-30


def _check(idx, codebook, index_bits, weight_bits, rng):
    rowptr, words = _layout(kernels, idx, index_bits, weight_bits)
    want_rowptr, want_words = _layout(reference, idx, index_bits, weight_bits)
    np.testing.assert_array_equal(rowptr, want_rowptr)
    np.testing.assert_array_equal(words, want_words)
    assert words.dtype == _word_dtype(weight_bits + index_bits)
    # every entry is a non-zero or a filler (gap 2**ib - 1, code 0)
    gaps, codes = words.astype(np.int64) & (2**index_bits - 1), words.astype(np.int64) >> index_bits
    assert np.all(gaps[codes == 0] == 2**index_bits - 1)
    assert np.count_nonzero(codes) == np.count_nonzero(idx)

    back = np.full(idx.shape, 77, dtype=np.uint16)
    kernels.sq_decode(words, rowptr, index_bits, back)
    want_back = np.full(idx.shape, 77, dtype=np.uint16)
    reference.sq_decode(words, rowptr, index_bits, want_back)
    np.testing.assert_array_equal(back, want_back)
    np.testing.assert_array_equal(back, idx)

    n_blocks = int(rng.integers(1, 6))
    blocks = kernels.sq_row_blocks(rowptr, n_blocks)
    np.testing.assert_array_equal(blocks, reference.sq_row_blocks(rowptr, n_blocks))
    assert blocks[0] == 0 and blocks[-1] == idx.shape[0] and np.all(np.diff(blocks) > 0)

    x = rng.standard_normal(idx.shape[1]).astype(np.float32)
    y = np.full(idx.shape[0], np.nan, dtype=np.float32)
    kernels.sq_matvec(words, rowptr, blocks, index_bits, codebook, x, y)
    want = np.empty(idx.shape[0], dtype=np.float64)
    reference.sq_matvec(words, rowptr, blocks, index_bits, codebook, x, want)
    np.testing.assert_allclose(want, codebook.astype(np.float64)[idx] @ x, rtol=1e-12,
                               atol=1e-12)
    assert y.dtype == np.float32
    assert np.all(np.abs(y - want) <= _tolerance(idx, codebook, x))
    if kernels.SQMM_AVX512:
        y16 = np.full(idx.shape[0], np.nan, dtype=np.float32)
        cbv = kernels.sqmm_avx512.padded_codebook(codebook)
        kernels.sq_matvec_avx512(words, rowptr, blocks, index_bits, cbv, x, y16)
        assert np.all(np.abs(y16 - want) <= _tolerance(idx, codebook, x))

    tile = int(rng.integers(1, idx.shape[1] + 5))
    split_k, split_col = _split(kernels, words, rowptr, index_bits, tile, idx.shape[1])
    want_k, want_col = _split(reference, words, rowptr, index_bits, tile, idx.shape[1])
    np.testing.assert_array_equal(split_k, want_k)
    np.testing.assert_array_equal(split_col, want_col)

    n = int(rng.integers(1, 40))
    xt = rng.standard_normal((idx.shape[1], n)).astype(np.float32)
    block_n = int(rng.integers(1, 50))
    yt = np.full((idx.shape[0], n), np.nan, dtype=np.float32)
    kernels.sq_matmul_t(words, split_k, split_col, blocks, index_bits, codebook, xt, block_n, yt)
    want_t = np.empty((idx.shape[0], n), dtype=np.float64)
    reference.sq_matmul_t(words, split_k, split_col, blocks, index_bits, codebook, xt, block_n,
                          want_t)
    tol = np.abs(codebook.astype(np.float64)[idx]) @ np.abs(xt.astype(np.float64)) * 1e-5
    assert yt.dtype == np.float32
    assert np.all(np.abs(yt - want_t) <= tol + 1e-30)
    if kernels.SQMM_AVX512:
        yt = np.full((idx.shape[0], n), np.nan, dtype=np.float32)
        kernels.sq_matmul_t_avx512(words, split_k, split_col, blocks, index_bits, codebook, xt,
                                   block_n, yt)
        assert np.all(np.abs(yt - want_t) <= tol + 1e-30)


@settings(max_examples=60)
@given(cases(), st.integers(0, 2**32 - 1))
def test_kernels_match_reference(case, seed):
    _check(*case, np.random.default_rng(seed))


@pytest.mark.parametrize("weight_bits, index_bits", [(1, 1), (4, 4), (5, 5), (8, 8), (5, 11),
                                                     (16, 16)])
def test_edge_cases(weight_bits, index_bits, rng):
    codebook = np.zeros(2**weight_bits, dtype=np.float32)
    codebook[1:] = rng.standard_normal(2**weight_bits - 1)
    top = 2**weight_bits - 1
    dtype = np.uint8 if weight_bits <= 8 else np.uint16
    shapes = [np.zeros((1, 1)), np.full((1, 1), top), np.zeros((7, 40)),  # 1x1, all-zero
              np.eye(5, 300, k=290) * top,  # long zero runs: fillers
              np.ones((3, 17)) * top]  # dense
    for idx in shapes:
        _check(np.ascontiguousarray(idx, dtype=dtype), codebook, index_bits, weight_bits, rng)


def test_fillers_of_a_long_run():
    """Row [0]*20 + [3] with 2-bit gaps (span 4): five fillers (3, 0), then (0, 3)."""
    idx = np.zeros((2, 21), dtype=np.uint8)
    idx[0, 20] = 3
    rowptr, words = _layout(kernels, idx, 2, 2)
    np.testing.assert_array_equal(rowptr, [0, 6, 6])
    np.testing.assert_array_equal(words, [3, 3, 3, 3, 3, 3 << 2])
    codebook = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
    x = np.arange(21, dtype=np.float32)
    y = np.empty(2, dtype=np.float32)
    kernels.sq_matvec(words, rowptr, np.array([0, 2]), 2, codebook, x, y)
    np.testing.assert_array_equal(y, [60.0, 0.0])
    if kernels.SQMM_AVX512:
        y = np.full(2, np.nan, dtype=np.float32)
        kernels.sq_matvec_avx512(words, rowptr, np.array([0, 2]), 2,
                                 kernels.sqmm_avx512.padded_codebook(codebook), x, y)
        np.testing.assert_array_equal(y, [60.0, 0.0])


@pytest.mark.avx512
@pytest.mark.parametrize("weight_bits", [5, 6, 7, 8])
def test_avx512_groups_tails_and_codebook_lookups(weight_bits, rng):
    """Rows of 0..70 entries (whole groups of 16 and every tail length), the codes' top bits
    set (the in-register lookup's upper half at 6 bits, the gathered codebook at 7-8 bits),
    row blocks over threads; uint8, uint16 and uint32 words."""
    top = 2**weight_bits - 1
    widths = set()
    for index_bits in sorted({max(1, 8 - weight_bits), 3, 16 - weight_bits, 12}):
        idx = np.zeros((71, 200), dtype=np.uint16)
        for r in range(71):  # row r: r non-zeros at random columns, codes near the top
            cols = rng.choice(200, size=r, replace=False)
            idx[r, cols] = rng.integers(max(1, top - 40), top + 1, size=r)
        idx = np.ascontiguousarray(idx, dtype=np.uint8 if weight_bits <= 8 else np.uint16)
        rowptr, words = _layout(kernels, idx, index_bits, weight_bits)
        codebook = np.zeros(2**weight_bits, dtype=np.float32)
        codebook[1:] = rng.standard_normal(top)
        x = rng.standard_normal(200).astype(np.float32)
        want = codebook.astype(np.float64)[idx] @ x
        for n_blocks in (1, 3):
            y = np.full(71, np.nan, dtype=np.float32)
            kernels.sq_matvec_avx512(words, rowptr, kernels.sq_row_blocks(rowptr, n_blocks),
                                     index_bits, kernels.sqmm_avx512.padded_codebook(codebook),
                                     x, y)
            assert np.all(np.abs(y - want) <= _tolerance(idx, codebook, x)), (
                weight_bits, index_bits, words.dtype)
        widths.add(words.itemsize)
    assert widths == ({1, 2, 4} if weight_bits < 8 else {2, 4})


@pytest.mark.avx512
@pytest.mark.parametrize("weight_bits", [1, 2, 3, 4, 5, 6, 7])
def test_avx512_byte_blocks(weight_bits, rng):
    """uint8 words: rows of 0..300 entries (64-entry blocks, then groups of 16 and a tail) for
    every gap width; rows of fillers only (every gap 2**ib - 1: at ib = 5 the in-lane column
    offsets reach 255, a byte's top); gap widths above 5 (groups only); the 32-entry, 64-entry
    and gathered codebooks (5, 6 and 7 bits)."""
    top = 2**weight_bits - 1
    codebook = np.zeros(2**weight_bits, dtype=np.float32)
    codebook[1:] = rng.standard_normal(top)
    cbv = kernels.sqmm_avx512.padded_codebook(codebook)
    for index_bits in range(1, 9 - weight_bits):
        n_in = 4000
        idx = np.zeros((40, n_in), dtype=np.uint8)
        for r in range(34):  # k non-zeros at density d in the first k / d columns
            k = int(rng.integers(0, 301))
            span = min(n_in, max(k, int(k / rng.choice([0.01, 0.05, 0.2, 0.6, 1.0]))))
            cols = rng.choice(span, size=k, replace=False)
            idx[r, cols] = rng.integers(1, top + 1, size=k)
        span = 2**index_bits
        for r, last in zip(range(34, 40), (63, 64 * span - 1, 64 * span, 130 * span, n_in, 0)):
            idx[r, min(last, n_in - 1)] = top  # fillers only before the one non-zero
        rowptr, words = _layout(kernels, idx, index_bits, weight_bits)
        assert words.dtype == np.uint8
        lengths = np.diff(rowptr)
        assert lengths.max() >= 192
        x = rng.standard_normal(n_in).astype(np.float32)
        want = codebook.astype(np.float64)[idx] @ x
        for n_blocks in (1, 4):
            y = np.full(40, np.nan, dtype=np.float32)
            kernels.sq_matvec_avx512(words, rowptr, kernels.sq_row_blocks(rowptr, n_blocks),
                                     index_bits, cbv, x, y)
            assert np.all(np.abs(y - want) <= _tolerance(idx, codebook, x)), (
                weight_bits, index_bits)


@pytest.mark.avx512
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AVX-512 on Linux (mprotect)")
@pytest.mark.parametrize("index_bits", [1, 2, 3, 4, 5])
def test_avx512_byte_blocks_on_raw_words(index_bits, rng):
    """Hand-made uint8 rows, not from the encoder: every gap at its maximum with non-zero codes
    (the in-lane column offsets reach 8 * (2**ib - 1) + 7, 255 at ib = 5, and every entry's
    column matters, unlike a filler's), and random gaps; rows of 64 k + t entries; the
    32-entry, 64-entry and gathered codebooks (code widths 8 - ib); x exactly as long as the
    last column + 1 and every array right before a guard page."""
    weight_bits = 8 - index_bits
    keep = []
    rows, want_terms = [], []
    for length in (64, 128, 197, 200, 0, 63):
        for maximal in (True, False):
            gaps = (np.full(length, 2**index_bits - 1) if maximal
                    else rng.integers(0, 2**index_bits, size=length))
            codes = rng.integers(1, 2**weight_bits, size=length)
            rows.append((gaps, codes))
    n_in = max(int(np.sum(g + 1)) for g, _ in rows)
    codebook = np.zeros(2**weight_bits, dtype=np.float32)
    codebook[1:] = rng.standard_normal(2**weight_bits - 1)
    x = rng.standard_normal(n_in).astype(np.float32)
    words = np.concatenate([(c << index_bits | g) for g, c in rows]).astype(np.uint8)
    rowptr = np.concatenate([[0], np.cumsum([g.size for g, _ in rows])]).astype(np.int64)
    for gaps, codes in rows:
        cols = np.cumsum(gaps + 1) - 1
        want_terms.append(codebook.astype(np.float64)[codes] * x[cols])
    want = np.array([t.sum() for t in want_terms])
    scale = np.array([np.abs(t).sum() for t in want_terms])
    y = _at_page_end(np.full(len(rows), np.nan, np.float32), keep)
    kernels.sq_matvec_avx512(_at_page_end(words, keep), rowptr, np.array([0, len(rows)]),
                             index_bits,
                             _at_page_end(kernels.sqmm_avx512.padded_codebook(codebook), keep),
                             _at_page_end(x, keep), y)
    assert np.all(np.abs(y - want) <= 1e-5 * scale + 1e-30)


def test_col_split_on_a_known_row():
    """Entries at columns 1, 4, 12 (filler), 15 with 3-bit gaps (DC Fig. 2), tiles of 5."""
    idx = np.zeros((1, 16), dtype=np.uint8)
    idx[0, [1, 4, 15]] = [3, 1, 2]
    rowptr, words = _layout(kernels, idx, 3, 2)
    split_k, split_col = _split(kernels, words, rowptr, 3, 5, 16)
    np.testing.assert_array_equal(split_k, [[0, 2, 2, 3, 4]])  # tiles [0,5) [5,10) [10,15) [15,)
    np.testing.assert_array_equal(split_col, [[0, 5, 5, 13, 16]])


@pytest.mark.avx512
@pytest.mark.parametrize("n", [1, 15, 16, 17, 63, 64, 65, 130, 700])
def test_avx512_batch_register_blocks(n, rng):
    """Column counts around the 16-lane quarters and the 64-column register blocks, column
    tiles, row blocks (and column chunks when Xt is wide), uint8/uint16/uint32 words and an
    8-bit codebook."""
    for weight_bits, index_bits in ((5, 3), (5, 11), (8, 12)):
        idx = rng.integers(1, 2**weight_bits, size=(37, 150))
        idx[rng.random(idx.shape) < 0.8] = 0
        idx[5] = 0  # an empty row
        idx = np.ascontiguousarray(idx, dtype=np.uint8)
        rowptr, words = _layout(kernels, idx, index_bits, weight_bits)
        codebook = np.zeros(2**weight_bits, dtype=np.float32)
        codebook[1:] = rng.standard_normal(2**weight_bits - 1)
        xt = rng.standard_normal((150, n)).astype(np.float32)
        want = codebook.astype(np.float64)[idx] @ xt
        tol = np.abs(codebook.astype(np.float64)[idx]) @ np.abs(xt.astype(np.float64)) * 1e-5
        for tile, n_blocks, block_n in ((150, 1, 64), (40, 3, 64), (7, 2, 512), (40, 4, 50)):
            split_k, split_col = _split(kernels, words, rowptr, index_bits, tile, 150)
            blocks = kernels.sq_row_blocks(rowptr, n_blocks)
            yt = np.full((37, n), np.nan, dtype=np.float32)
            kernels.sq_matmul_t_avx512(words, split_k, split_col, blocks, index_bits, codebook,
                                       xt, block_n, yt)
            assert np.all(np.abs(yt - want) <= tol + 1e-30), (weight_bits, index_bits, tile)


def _tiny_layer():
    """(idx, rowptr, words, codebook, blocks) of a one-row layer with 3-bit gaps."""
    idx = np.ascontiguousarray([[0, 3, 1, 0, 2]], dtype=np.uint8)
    rowptr, words = _layout(kernels, idx, 3, 2)
    return idx, rowptr, words, np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32), np.array([0, 1])


@pytest.mark.avx512
def test_avx512_kernels_refuse_non_contiguous_arrays():
    """The IR reads 16 consecutive floats from the data pointer: a strided x or an F-order Xt
    must fail to compile, not give wrong numbers."""
    import numba

    _, rowptr, words, codebook, blocks = _tiny_layer()
    x = np.arange(10, dtype=np.float32)
    with pytest.raises(numba.core.errors.TypingError):
        kernels.sq_matvec_avx512(words, rowptr, blocks, 3,
                                 kernels.sqmm_avx512.padded_codebook(codebook), x[::2],
                                 np.empty(1, np.float32))
    split_k, split_col = _split(kernels, words, rowptr, 3, 5, 5)
    with pytest.raises(numba.core.errors.TypingError):
        kernels.sq_matmul_t_avx512(words, split_k, split_col, blocks, 3, codebook,
                                   np.asfortranarray(np.ones((5, 4), np.float32)), 64,
                                   np.empty((1, 4), np.float32))


@pytest.mark.avx512
def test_avx512_kernels_refuse_wrong_dtypes():
    """float64 x / Xt / Yt would be read and written as float32 lanes: they must not compile
    (the scalar kernels accept them)."""
    import numba

    idx, rowptr, words, codebook, blocks = _tiny_layer()
    cbv = kernels.sqmm_avx512.padded_codebook(codebook)
    with pytest.raises(numba.core.errors.TypingError):
        kernels.sq_matvec_avx512(words, rowptr, blocks, 3, cbv, np.ones(5),
                                 np.empty(1, np.float32))
    split_k, split_col = _split(kernels, words, rowptr, 3, 5, 5)
    with pytest.raises(numba.core.errors.TypingError):
        kernels.sq_matmul_t_avx512(words, split_k, split_col, blocks, 3, codebook,
                                   np.ones((5, 4), np.float32), 64, np.empty((1, 4)))
    # other integer types for the scalars and row pointers are cast, not rejected
    y = np.full(1, np.nan, dtype=np.float32)
    kernels.sq_matvec_avx512(words, rowptr.astype(np.int32), blocks, np.uint8(3), cbv,
                             np.arange(5, dtype=np.float32), y)
    np.testing.assert_allclose(y, codebook[idx] @ np.arange(5, dtype=np.float32))


_PAGE = mmap.PAGESIZE


def _at_page_end(a, keep):
    """A copy of ``a`` whose last byte is the last byte before a PROT_NONE page: a read or
    write past the array faults (the masked tails must never touch it)."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    a = np.ascontiguousarray(a)
    pages = -(-a.nbytes // _PAGE) + 1
    m = mmap.mmap(-1, (pages + 1) * _PAGE)
    keep.append(m)
    buf = np.frombuffer(m, np.uint8)
    assert libc.mprotect(buf.ctypes.data + pages * _PAGE, _PAGE, 0) == 0
    start = pages * _PAGE - a.nbytes
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.avx512
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AVX-512 on Linux (mprotect)")
@pytest.mark.parametrize("weight_bits, index_bits", [(5, 3), (3, 5), (6, 10), (8, 8), (5, 11),
                                                     (12, 16)])
def test_avx512_kernels_stay_inside_their_arrays(weight_bits, index_bits, rng):
    """Every array the kernels read or write ends right before a guard page: one byte past
    the end (a tail read or store the masks should have stopped) faults."""
    keep = []
    n_in = 300  # rows of ~150 entries: 64-entry blocks of uint8 words, then groups of 16
    idx = rng.integers(1, 2**weight_bits, size=(9, n_in))
    idx[rng.random(idx.shape) < 0.5] = 0
    idx[:4][rng.random((4, n_in)) < 0.95] = 0  # sparse rows: fillers inside the blocks
    idx[:, -1] = 1  # the last column is used: x[-1] is read
    idx = np.ascontiguousarray(idx, dtype=np.uint16)
    if weight_bits + index_bits <= 8:
        # last row: m non-zeros in the last m columns after a zero run of fillers, with m
        # chosen for a multiple of 64 entries: its last block ends at the row's (and the
        # words') last byte and gathers x[n_in - 1]
        m = next(m for m in range(1, n_in) if (m + (n_in - m) // 2**index_bits) % 64 == 0)
        idx[-1] = 0
        idx[-1, n_in - m:] = 1
    rowptr, words = _layout(kernels, idx, index_bits, weight_bits)
    if weight_bits + index_bits <= 8:
        assert (rowptr[-1] - rowptr[-2]) % 64 == 0
    codebook = np.zeros(2**weight_bits, dtype=np.float32)
    codebook[1:] = rng.standard_normal(2**weight_bits - 1)
    x = rng.standard_normal(n_in).astype(np.float32)
    guarded_words = _at_page_end(words, keep)
    y = _at_page_end(np.zeros(9, np.float32), keep)
    kernels.sq_matvec_avx512(guarded_words, rowptr, np.array([0, 9]), index_bits,
                             _at_page_end(kernels.sqmm_avx512.padded_codebook(codebook), keep),
                             _at_page_end(x, keep), y)
    np.testing.assert_allclose(y, codebook[idx] @ x, rtol=1e-4, atol=1e-4)
    split_k, split_col = _split(kernels, words, rowptr, index_bits, 30, n_in)
    for n in (1, 17, 64, 70):
        xt = rng.standard_normal((n_in, n)).astype(np.float32)
        yt = _at_page_end(np.zeros((9, n), np.float32), keep)
        kernels.sq_matmul_t_avx512(guarded_words, split_k, split_col, np.array([0, 9]),
                                   index_bits, _at_page_end(codebook, keep),
                                   _at_page_end(xt, keep), 64, yt)
        np.testing.assert_allclose(yt, codebook[idx] @ xt, rtol=1e-4, atol=1e-4)


@given(st.integers(0, 40), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_add_bias_relu_matches_reference(n, with_bias, relu, seed):
    """The batch-1 epilogue: y + bias, then max(y, 0), in place; NaN and inf as NumPy does."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n).astype(np.float32)
    special = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    y[rng.random(n) < 0.2] = rng.choice(special)
    bias = (rng.standard_normal(n).astype(np.float32) if with_bias
            else np.zeros(0, np.float32))
    got, want = y.copy(), y.copy()
    kernels.add_bias_relu(got, bias, relu)
    reference.add_bias_relu(want, bias, relu)
    np.testing.assert_array_equal(got, want)  # NaN == NaN here
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # -0.0 vs 0.0
    if relu:
        assert not np.any(got < 0)


def test_add_bias_relu_refuses_a_bias_of_the_wrong_size():
    y = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="as many elements as y"):
        kernels.add_bias_relu(y, np.ones(3, np.float32), True)
    assert not y.any()
