"""Relative sparse index with filler entries (Deep Compression Sec. 2, Fig. 2; EIE Sec. III).

Input is the flattened per-weight code array of one layer, walked in row-major (C) order: for a
Dense weight ``W`` of shape (out, in) that is row by row, i.e. CSR order over the flattened
array. Code 0 means a pruned weight (codebook slot 0 is 0.0).

Every non-zero code becomes one entry ``(gap, code)``: ``gap`` is the number of zero codes
between the previous entry's position and this one (for the first entry: the zeros before it,
i.e. its position). With an ``index_bits``-bit field the largest gap is ``M = 2**index_bits - 1``,
so one entry can jump at most ``M + 1`` positions. When more than ``M`` zeros precede a non-zero,
a filler entry ``(M, 0)`` is inserted that stands for the zero weight at ``M + 1`` positions
after the previous entry; this repeats until the remaining run is ``<= M``. So a run of ``r``
zeros costs ``r // (M + 1)`` fillers and the entry then stores ``r % (M + 1)``. Zeros after the
last non-zero cost nothing (the decoder knows ``n``). Decoding: ``pos_e = cumsum(gap + 1) - 1``.

Example (DC Fig. 2, ``index_bits = 3``, so ``M = 7`` and the largest jump is 8): non-zeros at
positions 1, 4 and 15 of 16 give entries ``(1, a) (2, b) (7, 0) (2, c)``; the filler sits at
position 4 + 8 = 12. (The paper draws the position differences 1, 3, 8, 3, i.e. ``gap + 1``
after the first entry.) EIE's example ``[0,0,1,2, 18 zeros, 3]`` with 4 bits gives
``gaps = [2, 0, 15, 2]``, ``codes = [1, 2, 0, 3]``.

Exact integer kernels, no fastmath (docs/CONTRIBUTING.md, "Numba"). Compiled at first use (no
eager signature: importing compiles nothing); the caller (:mod:`dc_engine.codecs.relindex`)
converts to the dtypes below, so one specialisation is compiled and cached.
"""

import numba

from ._config import jit


@jit()
def count_entries(codes, index_bits):
    """Number of entries (non-zeros plus fillers) that :func:`encode_relative` writes.

    Parameters
    ----------
    codes : ndarray, shape (n,), uint16, contiguous. IN: per-weight codes, 0 = pruned.
    index_bits : int, 1..16. IN: width of the gap field (not checked).

    Returns
    -------
    int
    """
    span = numba.int64(1) << index_bits  # largest jump, M + 1
    run = 0
    count = 0
    for i in range(codes.shape[0]):
        if codes[i] == 0:
            run += 1
        else:
            count += run // span + 1
            run = 0
    return count


@jit()
def encode_relative(codes, index_bits, gaps, out_codes):
    """Relative-index encoding of a flattened code array, with filler entries.

    Parameters
    ----------
    codes : ndarray, shape (n,), uint16, contiguous. IN: per-weight codes, 0 = pruned.
    index_bits : int, 1..16. IN: width of the gap field (not checked).
    gaps : ndarray, shape (count_entries(codes, index_bits),), uint16. OUT: zeros skipped
        before each entry, each ``<= 2**index_bits - 1``.
    out_codes : ndarray, shape of ``gaps``, uint16. OUT: the entries' codes; 0 for fillers.
    """
    span = numba.int64(1) << index_bits
    max_gap = span - 1
    run = 0
    e = 0
    for i in range(codes.shape[0]):
        c = codes[i]
        if c == 0:
            run += 1
            continue
        while run >= span:
            gaps[e] = max_gap
            out_codes[e] = 0
            e += 1
            run -= span
        gaps[e] = run
        out_codes[e] = c
        e += 1
        run = 0


@jit()
def decode_relative(gaps, codes, n, out):
    """Scatter relative-index entries back to a dense per-weight code array.

    Parameters
    ----------
    gaps : ndarray, shape (m,), uint16, contiguous. IN: zeros before each entry. The caller
        checks that every position ``cumsum(gaps + 1) - 1`` is ``< n``.
    codes : ndarray, shape (m,), uint16, contiguous. IN: the entries' codes.
    n : int >= 0. IN: number of weights.
    out : ndarray, shape (n,), uint16, contiguous. OUT: zeroed, then ``out[pos_e] = codes[e]``.
    """
    for i in range(n):
        out[i] = 0
    pos = -1
    for e in range(gaps.shape[0]):
        pos += numba.int64(gaps[e]) + 1
        out[pos] = codes[e]
