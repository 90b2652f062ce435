"""Sparse-quantized matrix products straight from the packed (gap, code) entries.

A pruned, weight-shared layer ``W`` (out, in) is a code per weight, ``idx2d[r, j]`` in
``[0, 2**wb)``, into a float32 codebook with ``codebook[0] == 0.0`` (pruned). As in EIE (Han et
al. 2016, Sec. III) the kernels never expand ``W``: they walk the packed entries, decode gap and
code on the fly and look the weight up in the codebook.

Layout (chosen by measurement, docs/KERNELS.md):

* **Entries per row, CSR order.** Row ``r`` is encoded on its own with the relative index of
  Deep Compression (Fig. 2; :mod:`kernels.sparse_index`): each non-zero code becomes an entry
  ``(gap, code)`` where ``gap`` counts the zeros since the previous entry of the row (for the
  first entry: since column 0). With ``index_bits = ib`` a gap is at most ``M = 2**ib - 1``; a
  longer zero run first emits filler entries ``(M, 0)``, each standing for the zero weight
  ``M + 1`` columns on. Fillers need no special case in the products: code 0 reads
  ``codebook[0] == 0.0``. Trailing zeros of a row cost nothing.
* **One fixed-width word per entry**: ``word = code << ib | gap``, stored as uint8 when
  ``wb + ib <= 8``, uint16 when ``<= 16``, else uint32.
* **Row pointers** ``rowptr`` (out + 1,), int64: row ``r`` owns ``words[rowptr[r]:rowptr[r+1]]``.
* **Row blocks** ``blocks`` (n_blocks + 1,), int64: row boundaries chosen so that the blocks hold
  about the same number of entries (:func:`sq_row_blocks`); parallel kernels hand whole blocks to
  threads, so each thread writes only its own rows.
* **Column split** (batch kernel only): for column tiles of ``tile_cols`` columns,
  ``split_k[r, t]`` is the first entry of row ``r`` at or right of column ``t * tile_cols`` and
  ``split_col[r, t]`` the column right after the entry before it (the decoder's state there),
  so the batch kernel can walk one tile of every row while that tile of ``Xt`` stays in cache.

Integer kernels (count, encode, decode, split) are exact, no fastmath. The two
products use ``kernels._config.FASTMATH`` for their float sums; their index arithmetic is done in
uint64, which spares Numba's negative-index wrap-around code on every load (docs/KERNELS.md,
"Measurements behind the code").
"""

import numba
import numpy as np
from numba import prange

from ._config import FASTMATH, jit

_U = numba.uint64


# --------------------------------------------------------------------------- layout


@jit()
def sq_count(idx2d, index_bits, rowptr):
    """Row pointers of the per-row relative-index entries (non-zeros plus fillers).

    Parameters
    ----------
    idx2d : ndarray, shape (out, in), uint8 or uint16, C-contiguous. IN: codes, 0 = pruned.
    index_bits : int, 1..16. IN: width of the gap field (not checked).
    rowptr : ndarray, shape (out + 1,), int64. OUT: ``rowptr[0] = 0`` and ``rowptr[r + 1] -
        rowptr[r]`` = entries of row ``r``.
    """
    span = numba.int64(1) << index_bits
    rowptr[0] = 0
    for r in range(idx2d.shape[0]):
        run = 0
        count = 0
        for j in range(idx2d.shape[1]):
            if idx2d[r, j] == 0:
                run += 1
            else:
                count += run // span + 1
                run = 0
        rowptr[r + 1] = rowptr[r] + count


@jit()
def sq_encode(idx2d, index_bits, rowptr, words):
    """Pack every row's relative-index entries into one word each: ``code << ib | gap``.

    Parameters
    ----------
    idx2d : ndarray, shape (out, in), uint8 or uint16, C-contiguous. IN: codes, 0 = pruned,
        each ``< 2**(word bits - index_bits)`` (not checked).
    index_bits : int, 1..16. IN: width of the gap field (not checked).
    rowptr : ndarray, shape (out + 1,), int64. IN: from :func:`sq_count`.
    words : ndarray, shape (rowptr[-1],), uint8, uint16 or uint32. OUT: the entries.
    """
    span = numba.int64(1) << index_bits
    filler = span - 1  # gap M, code 0
    for r in range(idx2d.shape[0]):
        run = 0
        e = rowptr[r]
        for j in range(idx2d.shape[1]):
            c = numba.int64(idx2d[r, j])
            if c == 0:
                run += 1
                continue
            while run >= span:
                words[e] = filler
                e += 1
                run -= span
            words[e] = (c << index_bits) | run
            e += 1
            run = 0


@jit()
def sq_decode(words, rowptr, index_bits, out):
    """Scatter the packed entries back to a dense code array (the inverse of :func:`sq_encode`).

    Parameters
    ----------
    words : ndarray, shape (m,), uint8, uint16 or uint32. IN: packed entries.
    rowptr : ndarray, shape (out + 1,), int64. IN: row pointers.
    index_bits : int, 1..16. IN: width of the gap field.
    out : ndarray, shape (out, in), uint16, C-contiguous. OUT: zeroed, then every entry's code
        written at its column. The caller guarantees that every column is ``< in``.
    """
    mask = (numba.int64(1) << index_bits) - 1
    for r in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[r, j] = 0
        col = 0
        for k in range(rowptr[r], rowptr[r + 1]):
            w = numba.int64(words[k])
            col += w & mask
            out[r, col] = w >> index_bits
            col += 1


def sq_row_blocks(rowptr, n_blocks):
    """Row boundaries of ``n_blocks`` blocks holding about equal numbers of entries.

    Plain NumPy (run once per matrix). Empty blocks are dropped, so the result may hold fewer
    blocks; a matrix with no rows gives ``[0, 0]`` (one empty block).

    Parameters
    ----------
    rowptr : ndarray, shape (out + 1,), int64. IN: row pointers.
    n_blocks : int >= 1. IN: wanted number of blocks.

    Returns
    -------
    ndarray, shape (k + 1,), int64, 1 <= k <= n_blocks: ``0 = b[0] < b[1] < ... < b[k] = out``
    (``[0, 0]`` when out == 0).
    """
    out = rowptr.shape[0] - 1
    total = int(rowptr[-1])
    if out <= 0:
        return np.zeros(2, dtype=np.int64)
    targets = np.linspace(0, total, n_blocks + 1)[1:-1]
    inner = np.clip(np.searchsorted(rowptr, targets, side="left"), 1, out)
    return np.unique(np.concatenate(([0], inner, [out]))).astype(np.int64)


@jit()
def sq_col_split(words, rowptr, index_bits, tile_cols, split_k, split_col):
    """Where each row's entries cross the column-tile boundaries (for :func:`sq_matmul_t`).

    Parameters
    ----------
    words : ndarray, shape (m,), uint8, uint16 or uint32. IN: packed entries.
    rowptr : ndarray, shape (out + 1,), int64. IN: row pointers.
    index_bits : int, 1..16. IN: width of the gap field.
    tile_cols : int >= 1. IN: columns per tile; ``n_tiles = split_k.shape[1] - 1`` tiles.
    split_k : ndarray, shape (out, n_tiles + 1), int64. OUT: ``split_k[r, t]`` = first entry of
        row ``r`` whose column is ``>= t * tile_cols``; ``split_k[r, 0] = rowptr[r]`` and
        ``split_k[r, n_tiles] = rowptr[r + 1]``.
    split_col : ndarray, shape (out, n_tiles + 1), int64. OUT: the decoder state (column of the
        previous entry + 1, 0 at the row start) just before entry ``split_k[r, t]``.
    """
    mask = (numba.int64(1) << index_bits) - 1
    n_tiles = split_k.shape[1] - 1
    for r in range(rowptr.shape[0] - 1):
        t = 0
        split_k[r, 0] = rowptr[r]
        split_col[r, 0] = 0
        col = 0
        for k in range(rowptr[r], rowptr[r + 1]):
            pos = col + (numba.int64(words[k]) & mask)
            while t + 1 < n_tiles and pos >= (t + 1) * tile_cols:
                t += 1
                split_k[r, t] = k
                split_col[r, t] = col
            col = pos + 1
        while t + 1 <= n_tiles:
            t += 1
            split_k[r, t] = rowptr[r + 1]
            split_col[r, t] = col


# --------------------------------------------------------------------------- products


@jit(fastmath=FASTMATH)
def _matvec_rows(words, rowptr, r0, r1, index_bits, codebook, x, y):
    """y[r] for rows r0 <= r < r1 (see sq_matvec). Four accumulators: the FMA latency chain of
    one accumulator was the bottleneck."""
    mask = _U((1 << index_bits) - 1)
    shift = _U(index_bits)
    one = _U(1)
    four = _U(4)
    for r in range(r0, r1):
        col = _U(0)  # column of the previous entry + 1
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        k = _U(rowptr[r])
        end = _U(rowptr[r + 1])
        while k + four <= end:
            w = _U(words[k])
            c = col + (w & mask)
            a0 += codebook[w >> shift] * x[c]
            w = _U(words[k + one])
            c = c + one + (w & mask)
            a1 += codebook[w >> shift] * x[c]
            w = _U(words[k + _U(2)])
            c = c + one + (w & mask)
            a2 += codebook[w >> shift] * x[c]
            w = _U(words[k + _U(3)])
            c = c + one + (w & mask)
            a3 += codebook[w >> shift] * x[c]
            col = c + one
            k += four
        while k < end:
            w = _U(words[k])
            c = col + (w & mask)
            a0 += codebook[w >> shift] * x[c]
            col = c + one
            k += one
        y[r] = (a0 + a1) + (a2 + a3)


@jit()
def add_bias_relu(y, bias, relu):
    """``y += bias``, then ``y = max(y, 0)`` when ``relu``, in place: a Dense layer's epilogue
    after a batch-1 product (one call instead of two NumPy ones).

    Parameters
    ----------
    y : ndarray, shape (n,), float32. IN/OUT.
    bias : ndarray, shape (n,) or (0,) for none, float32. IN.
    relu : bool. IN. As ``np.maximum(y, 0)``: NaN stays NaN, -0.0 becomes 0.0.

    Raises
    ------
    ValueError
        ``bias`` has neither ``n`` nor 0 elements (it would be read past its end).
    """
    with_bias = bias.size > 0
    if with_bias and bias.size != y.size:
        raise ValueError("add_bias_relu: bias must have as many elements as y, or none")
    for i in range(y.size):
        v = y[i] + bias[i] if with_bias else y[i]
        if relu and v <= 0:
            v = np.float32(0.0)
        y[i] = v


# parallel=True: blocks of rows go to threads; each block writes only its own rows of y.
@jit(parallel=True, fastmath=FASTMATH)
def sq_matvec(words, rowptr, blocks, index_bits, codebook, x, y):
    """``y = W @ x`` for a sparse-quantized ``W``, batch 1 (EIE's operation, on the CPU).

    Parameters
    ----------
    words : ndarray, shape (m,), uint8, uint16 or uint32, contiguous. IN: packed entries
        (module docstring); every column ``< in`` and code ``< codebook.size`` (not checked).
    rowptr : ndarray, shape (out + 1,), int64. IN: row pointers.
    blocks : ndarray, shape (n_blocks + 1,), int64. IN: row-block boundaries from
        :func:`sq_row_blocks`; one block runs on the calling thread without a parallel launch.
    index_bits : int, 1..16. IN: width of the gap field.
    codebook : ndarray, shape (2**wb,), float32. IN: shared weights, ``codebook[0] == 0``.
    x : ndarray, shape (in,), float32, contiguous. IN.
    y : ndarray, shape (out,), float32. OUT: every element written.

    Notes
    -----
    Sums in float32 with four interleaved accumulators per row (fastmath reassociation allowed),
    so results differ from a float64 product by float32 rounding.
    """
    n_blocks = blocks.shape[0] - 1
    if n_blocks == 1:
        _matvec_rows(words, rowptr, blocks[0], blocks[1], index_bits, codebook, x, y)
        return
    for b in prange(n_blocks):
        _matvec_rows(words, rowptr, blocks[b], blocks[b + 1], index_bits, codebook, x, y)


@jit(fastmath=FASTMATH)
def _matmul_t_task(words, split_k, split_col, r0, r1, n0, n1, index_bits, codebook, xt, yt):
    """yt[r0:r1, n0:n1] (see sq_matmul_t): column tile by column tile, four entries per update
    of a yt row (a quarter of the yt loads and stores of one entry per update)."""
    mask = _U((1 << index_bits) - 1)
    shift = _U(index_bits)
    one = _U(1)
    four = _U(4)
    for r in range(r0, r1):
        for n in range(n0, n1):
            yt[r, n] = 0.0
    nn = n1 - n0
    for t in range(split_k.shape[1] - 1):
        for r in range(r0, r1):
            o = yt[r, n0:n1]  # 1-D views indexed from 0: the loops over them vectorise
            col = _U(split_col[r, t])
            k = _U(split_k[r, t])
            end = _U(split_k[r, t + 1])
            while k + four <= end:
                w = _U(words[k])
                c0 = col + (w & mask)
                v0 = codebook[w >> shift]
                w = _U(words[k + one])
                c1 = c0 + one + (w & mask)
                v1 = codebook[w >> shift]
                w = _U(words[k + _U(2)])
                c2 = c1 + one + (w & mask)
                v2 = codebook[w >> shift]
                w = _U(words[k + _U(3)])
                c3 = c2 + one + (w & mask)
                v3 = codebook[w >> shift]
                col = c3 + one
                x0 = xt[c0, n0:n1]
                x1 = xt[c1, n0:n1]
                x2 = xt[c2, n0:n1]
                x3 = xt[c3, n0:n1]
                for i in range(nn):
                    o[i] += (v0 * x0[i] + v1 * x1[i]) + (v2 * x2[i] + v3 * x3[i])
                k += four
            while k < end:
                w = _U(words[k])
                c0 = col + (w & mask)
                v0 = codebook[w >> shift]
                col = c0 + one
                x0 = xt[c0, n0:n1]
                for i in range(nn):
                    o[i] += v0 * x0[i]
                k += one


# parallel=True: row blocks go to threads; each writes its own rows of Yt.
@jit(parallel=True, fastmath=FASTMATH)
def sq_matmul_t(words, split_k, split_col, blocks, index_bits, codebook, xt, block_n, yt):
    """``Yt = W @ Xt`` for a sparse-quantized ``W``: a Dense layer at batch N (``Xt = X.T``) or a
    convolution (``Xt`` = im2col matrix, ``W`` = conv weight reshaped to (out, C*kh*kw)).

    For each entry of row ``r``: ``Yt[r, :] += codebook[code] * Xt[col, :]``, over column tiles
    (:func:`sq_col_split`) so that a tile of ``Xt`` stays in cache while all rows of a block use
    it, and over blocks of ``block_n`` columns of ``Xt``. Threads take row blocks, or, when
    ``Xt`` has at least as many chunks of ``block_n`` columns as there are row blocks
    (convolutions), chunks of columns with all rows; ``blocks`` of one block means serial.

    Parameters
    ----------
    words : ndarray, shape (m,), uint8, uint16 or uint32, contiguous. IN: packed entries.
    split_k, split_col : ndarray, shape (out, n_tiles + 1), int64. IN: from :func:`sq_col_split`.
    blocks : ndarray, shape (n_blocks + 1,), int64. IN: row-block boundaries; the product
        covers rows ``blocks[0]`` to ``blocks[-1] - 1`` (all rows, or a range of them, e.g. one
        group of a grouped convolution).
    index_bits : int, 1..16. IN: width of the gap field.
    codebook : ndarray, shape (2**wb,), float32. IN: shared weights, ``codebook[0] == 0``.
    xt : ndarray, shape (in, N), float32, C-contiguous. IN.
    block_n : int >= 1. IN: columns of ``Xt`` per task.
    yt : ndarray, shape (out, N), float32, C-contiguous. OUT: every element of the rows
        ``blocks[0]`` to ``blocks[-1] - 1`` written, the other rows untouched.

    Notes
    -----
    Float32 sums in entry order, four entries combined per update (fastmath allowed).
    """
    n = xt.shape[1]
    n_blocks = blocks.shape[0] - 1
    if n_blocks == 1:
        for n0 in range(0, n, block_n):
            _matmul_t_task(words, split_k, split_col, blocks[0], blocks[1], n0,
                           min(n, n0 + block_n), index_bits, codebook, xt, yt)
        return
    n_chunks = (n + block_n - 1) // block_n
    if n_chunks >= n_blocks:
        # Wide Xt (a convolution's im2col columns): threads take chunks of columns, all rows,
        # so Xt is read once (by row blocks, every block would stream all of Xt again).
        for j in prange(n_chunks):
            _matmul_t_task(words, split_k, split_col, blocks[0], blocks[n_blocks], j * block_n,
                           min(n, (j + 1) * block_n), index_bits, codebook, xt, yt)
        return
    for b in prange(n_blocks):
        for n0 in range(0, n, block_n):
            _matmul_t_task(words, split_k, split_col, blocks[b], blocks[b + 1], n0,
                           min(n, n0 + block_n), index_bits, codebook, xt, yt)
