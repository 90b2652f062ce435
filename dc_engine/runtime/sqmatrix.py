"""A pruned, weight-shared matrix that multiplies straight from its packed entries.

:class:`CompressedMatrix` holds a layer ``W`` (out, in) as Deep Compression stores it -- a code
per weight into a small float32 codebook (slot 0 = 0.0 = pruned), the non-zeros as relative-index
entries ``(gap, code)`` with filler entries -- in the kernel layout of
:mod:`dc_engine.kernels.sqmm`: per-row entries packed one per uint8/uint16/uint32 word, row
pointers, and row blocks of equal entry counts for the threads. ``matmul`` / ``matmul_t`` run
the EIE-style kernels (Han et al. 2016): decode gaps and codes on the fly, look the weights up in
the codebook, never expand ``W``.

It is the compressed weight back end of :class:`dc_engine.core.layers.Dense` and ``Conv2D``
(see :class:`dc_engine.core.layers.WeightBackend`). No training code is imported here (tests
check it), so a runtime can use it on its own. The measurements behind the constants below are
in docs/KERNELS.md.
"""

from __future__ import annotations

import os

import numba
import numpy as np

from .. import kernels
from .._validate import check_bits
from ..buffers import ALIGN, aligned_empty
from ..codecs.codebook import quantize_weights
from ..core.fused import launch
from ..limits import MAX_BITS

SIMD = kernels.SQMM_AVX512 and os.environ.get("DC_ENGINE_SIMD", "1").strip().lower() not in (
    "0", "false", "no", "off")
"""Whether the products run the AVX-512 kernels (:mod:`kernels.sqmm_avx512`) by default: where
Numba compiles for a CPU with AVX-512F, unless ``DC_ENGINE_SIMD`` is ``0`` (or ``false``,
``no``, ``off``) in the environment."""
SERIAL_ENTRIES = 16_384
"""Below this much work (entries x input columns) the products run on the calling thread: a
parallel launch costs more than a LeNet-sized product."""
BLOCKS_PER_THREAD = 4
"""Row blocks per Numba thread (balanced by entry count)."""
TILE_BYTES = 1 << 20
"""Bytes of ``Xt`` per column tile in :meth:`CompressedMatrix.matmul_t` with the scalar kernel
(fits the 2 MB L2)."""
SIMD_TILE_BYTES = 1 << 18
"""The same for the AVX-512 kernel, which reads ``Xt`` faster, so smaller tiles win."""
BLOCK_N = 64
"""Columns of ``Xt`` per task in :meth:`CompressedMatrix.matmul_t`."""
WIDE_BLOCK_N = 512
"""Most columns of ``Xt`` per task when ``Xt`` is wide enough to split by columns (conv
layers: amortises the per-row work of a chunk)."""


def _launch(kernel, n_blocks: int, *args) -> None:
    """Run ``kernel(*args)``; a parallel launch (``n_blocks > 1``) holds the process-wide lock
    of :func:`dc_engine.core.fused.launch` under Numba's ``workqueue`` threading layer, which
    aborts the process when two threads launch parallel regions at once (the fused path's
    parallel kernel takes the same lock)."""
    launch(kernel, n_blocks > 1, *args)


def _simd_possible(n_in: int) -> bool:
    """The AVX-512 matrix-vector kernel runs here and its int32 column lanes hold ``n_in``."""
    return kernels.SQMM_AVX512 and n_in < 2**31


def _word_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)


def _zero_runs(idx2d: np.ndarray) -> np.ndarray:
    """Zeros before each non-zero within its row (the gaps before fillers), int64."""
    rows, cols = np.nonzero(idx2d)
    prev = np.empty_like(cols)
    prev[:1] = -1
    prev[1:] = np.where(rows[1:] == rows[:-1], cols[:-1], -1)
    return (cols - prev - 1).astype(np.int64)


DECODE_COST_BYTES = 4
"""Decoding one entry costs about as much time as reading this many bytes from memory."""


def best_index_bits(idx2d: np.ndarray, weight_bits: int) -> int:
    """The gap width with the cheapest products: ``entries * (DECODE_COST_BYTES + word bytes)``.

    Parameters
    ----------
    idx2d : ndarray, shape (out, in), integer codes, 0 = pruned.
    weight_bits : int in 1..16. Bits of a code.

    Returns
    -------
    int in 1..16, the smallest among equal costs. ``entries(ib) = nnz + sum(run >> ib)`` over
    the zero runs before the non-zeros; the word holds ``weight_bits + ib`` bits (1, 2 or 4
    bytes). Fewer entries mean less decoding, smaller words fewer bytes: at 4% density and
    5-bit codes this picks a uint16 word with a gap field wide enough for no fillers.
    """
    weight_bits = check_bits(weight_bits, "weight_bits")
    runs = _zero_runs(np.asarray(idx2d))
    best = None
    for ib in range(1, MAX_BITS + 1):
        entries = runs.size + int(np.sum(runs >> ib))
        key = entries * (DECODE_COST_BYTES + _word_dtype(weight_bits + ib).itemsize)
        if best is None or key < best[0]:  # strict: the smallest ib among equal costs
            best = (key, ib)
    return best[1]


class CompressedMatrix:
    """A sparse, weight-shared float32 matrix ``W`` (out, in) in the packed kernel layout.

    Build it with :meth:`from_dense` or :meth:`from_codes`, not the constructor.

    Attributes
    ----------
    shape : (int, int). ``(out, in)``.
    nnz : int. Weights with a non-zero code.
    weight_bits, index_bits : int. Code and gap field widths; a word holds both.
    codebook : ndarray, shape (2**weight_bits,), float32, ``codebook[0] == 0``.
    words : ndarray, shape (entries,), uint8/uint16/uint32. ``code << index_bits | gap``.
    rowptr : ndarray, shape (out + 1,), int64. Row ``r`` owns ``words[rowptr[r]:rowptr[r+1]]``.
    simd : bool. Whether the products run the AVX-512 kernels (:func:`kernels.sq_matvec_avx512`,
        16 entries per step, and :func:`kernels.sq_matmul_t_avx512`, 64 output columns in
        registers) rather than the scalar ones (:func:`kernels.sq_matvec`,
        :func:`kernels.sq_matmul_t`). Default :data:`SIMD`; settable to False, and to True only
        where the kernels can run.
    """

    def __init__(self, idx2d: np.ndarray, codebook: np.ndarray, weight_bits: int,
                 index_bits: int):
        out, n_in = idx2d.shape
        self.shape = (int(out), int(n_in))
        self.weight_bits = weight_bits
        self.index_bits = index_bits
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        self.nnz = int(np.count_nonzero(idx2d))
        self.rowptr = np.zeros(out + 1, dtype=np.int64)
        kernels.sq_count(idx2d, index_bits, self.rowptr)
        self.words = np.empty(int(self.rowptr[-1]), dtype=_word_dtype(weight_bits + index_bits))
        kernels.sq_encode(idx2d, index_bits, self.rowptr, self.words)
        self._blocks: dict[int, np.ndarray] = {}
        self._split: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cbv = kernels.sqmm_avx512.padded_codebook(self.codebook)  # (AVX-512 batch 1)
        self._simd = SIMD and _simd_possible(self.shape[1])

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_dense(cls, w, weight_bits: int = 5, index_bits: int | str = 5,
                   init: str = "linear") -> CompressedMatrix:
        """Weight-share a (pruned) dense matrix and pack it.

        Parameters
        ----------
        w : ndarray, shape (out, in), float32. Exact zeros are the pruned weights.
        weight_bits : int in 1..16. The non-zeros share ``2**weight_bits - 1`` centroids
            (k-means, :func:`dc_engine.codecs.codebook.quantize_weights`); zeros stay zero.
        index_bits : int in 1..16, or "auto" (:func:`best_index_bits`). Gap field width.
        init : {"linear", "density", "random"}. Centroid initialisation.

        Returns
        -------
        CompressedMatrix

        Raises
        ------
        TypeError
            ``w`` not float32, bits not integers.
        ValueError
            ``w`` not 2-D or not finite, bits out of range, bad init.
        """
        weight_bits = check_bits(weight_bits, "weight_bits")
        w = np.asarray(w)
        if w.dtype != np.float32:
            raise TypeError(f"w must be float32, got {w.dtype}; convert with "
                            f".astype(np.float32)")
        if w.ndim != 2:
            raise ValueError(f"w must be 2-D (out, in), got shape {w.shape}; reshape a conv "
                             f"weight with w.reshape(w.shape[0], -1)")
        if not np.isfinite(w).all():
            raise ValueError("w holds NaN or inf; compress finite weights only")
        codebook, idx = quantize_weights(w, weight_bits, init=init)
        return cls.from_codes(idx, codebook, index_bits)

    @classmethod
    def from_codes(cls, idx2d, codebook, index_bits: int | str = 5) -> CompressedMatrix:
        """Pack already-quantized codes (e.g. a layer decoded from a compressed model file).

        Parameters
        ----------
        idx2d : ndarray, shape (out, in), uint8 or uint16. Codes, 0 = pruned.
        codebook : ndarray, shape (m,), float32, 1 <= m <= 2**16, ``codebook[0] == 0.0``.
            ``weight_bits`` is ``ceil(log2(m))`` (at least 1).
        index_bits : int in 1..16, or "auto" (:func:`best_index_bits`). Gap field width.

        Returns
        -------
        CompressedMatrix

        Raises
        ------
        TypeError
            Wrong dtypes.
        ValueError
            Wrong shapes, codes outside the codebook, ``codebook[0] != 0``, bad index_bits.
        """
        idx2d = np.asarray(idx2d)
        if idx2d.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"idx2d must be uint8 or uint16 codes, got {idx2d.dtype}")
        if idx2d.ndim != 2:
            raise ValueError(f"idx2d must be 2-D (out, in), got shape {idx2d.shape}")
        codebook = np.asarray(codebook)
        if codebook.dtype != np.float32:
            raise TypeError(f"codebook must be float32, got {codebook.dtype}")
        if codebook.ndim != 1 or not 1 <= codebook.size <= 2**MAX_BITS:
            raise ValueError(f"codebook must be 1-D with 1..{2**MAX_BITS} entries, got shape "
                             f"{codebook.shape}")
        if codebook[0] != 0.0:
            raise ValueError(f"codebook[0] must be 0.0 (the pruned weights' slot), got "
                             f"{codebook[0]!r}")
        if not np.isfinite(codebook).all():
            raise ValueError("codebook holds NaN or inf")
        if idx2d.size and int(idx2d.max()) >= codebook.size:
            raise ValueError(f"codes must be < {codebook.size} (codebook size), got max "
                             f"{int(idx2d.max())}")
        weight_bits = max(1, int(codebook.size - 1).bit_length())
        if isinstance(index_bits, str):
            if index_bits != "auto":
                raise ValueError(f"index_bits must be an integer in 1..{MAX_BITS} or 'auto', "
                                 f"got {index_bits!r}")
            index_bits = best_index_bits(idx2d, weight_bits)
        index_bits = check_bits(index_bits, "index_bits")
        full = np.zeros(2**weight_bits, dtype=np.float32)
        full[:codebook.size] = codebook
        return cls(np.ascontiguousarray(idx2d), full, weight_bits, index_bits)

    # ------------------------------------------------------------------ properties

    @property
    def nbytes(self) -> int:
        """Bytes the batch-1 kernel reads: packed entries + row pointers + codebook."""
        return int(self.words.nbytes + self.rowptr.nbytes + self.codebook.nbytes)

    @property
    def simd(self) -> bool:
        return self._simd

    @simd.setter
    def simd(self, value: bool) -> None:
        value = bool(value)
        if value and not _simd_possible(self.shape[1]):
            raise ValueError("the AVX-512 kernel cannot run here: "
                             + ("the CPU Numba compiles for has no AVX-512F"
                                if not kernels.SQMM_AVX512 else
                                f"{self.shape[1]} input columns exceed its int32 lanes"))
        self._simd = value

    @property
    def n_entries(self) -> int:
        """Packed entries: non-zeros plus fillers."""
        return int(self.words.size)

    def __repr__(self) -> str:
        return (f"CompressedMatrix(shape={self.shape}, nnz={self.nnz}, "
                f"weight_bits={self.weight_bits}, index_bits={self.index_bits}, "
                f"entries={self.n_entries}, nbytes={self.nbytes})")

    def to_codes(self) -> np.ndarray:
        """The per-weight codes ``idx`` (out, in), ``uint8`` for ``weight_bits <= 8``, else
        ``uint16``; 0 = pruned. ``codebook[to_codes()]`` is :meth:`to_dense`."""
        codes = np.empty(self.shape, dtype=np.uint16)
        kernels.sq_decode(self.words, self.rowptr, self.index_bits, codes)
        return codes.astype(np.uint8) if self.weight_bits <= 8 else codes

    def to_dense(self) -> np.ndarray:
        """``codebook[idx]``: the weights as a dense float32 (out, in) array."""
        return self.codebook[self.to_codes()]

    # ------------------------------------------------------------------ products

    def serial(self, n: int = 1) -> bool:
        """Whether a product with ``n`` columns of input runs on the calling thread: its
        work, entries x columns, is below :data:`SERIAL_ENTRIES`."""
        return self.words.size * max(n, 1) < SERIAL_ENTRIES

    def _row_blocks(self, n: int = 1, threads: int | None = None,
                    rows: tuple[int, int] | None = None) -> np.ndarray:
        """Row blocks for ``n`` columns of input: one (the calling thread) when
        :meth:`serial`; else blocks for ``threads``
        threads (default ``numba.get_num_threads()``, a slow call from Python; the model's
        batch-1 path asks once per model call and passes it). ``rows = (r0, r1)``: blocks of
        those rows only."""
        if self.serial(n):
            threads = 1
        elif threads is None:
            threads = numba.get_num_threads()
        key = threads if rows is None else (threads, *rows)
        blocks = self._blocks.get(key)
        if blocks is None:
            n_blocks = BLOCKS_PER_THREAD * threads if threads > 1 else 1
            if rows is None:
                blocks = kernels.sq_row_blocks(self.rowptr, n_blocks)
            else:
                r0, r1 = rows
                sub = self.rowptr[r0:r1 + 1] - self.rowptr[r0]
                blocks = (kernels.sq_row_blocks(sub, n_blocks) + r0 if r1 > r0
                          else np.array([r0, r0], dtype=np.int64))
            self._blocks[key] = blocks
        return blocks

    def _plan(self, n: int, rows: tuple[int, int] | None = None
              ) -> tuple[np.ndarray, int, tuple[np.ndarray, np.ndarray]]:
        """Row blocks, columns per task and column split of :meth:`matmul_t` for ``n``
        columns (of the rows ``rows``, default all). Wide inputs (convolutions) go to threads in
        chunks of columns (:func:`kernels.sq_matmul_t`); there, chunks of up to
        :data:`WIDE_BLOCK_N` columns amortise the per-row work of a chunk."""
        blocks = self._row_blocks(n, rows=rows)
        block_n = min(WIDE_BLOCK_N, max(BLOCK_N, n // max(1, blocks.size - 1)))
        return blocks, block_n, self._col_split(n, block_n)

    def _col_split(self, n: int, block_n: int) -> tuple[np.ndarray, np.ndarray]:
        tile_bytes = SIMD_TILE_BYTES if self._simd else TILE_BYTES
        tile = max(1, min(self.shape[1], tile_bytes // (4 * min(max(n, 1), block_n))))
        split = self._split.get(tile)
        if split is None:
            n_tiles = max(1, -(-self.shape[1] // tile))
            split = (np.empty((self.shape[0], n_tiles + 1), dtype=np.int64),
                     np.empty((self.shape[0], n_tiles + 1), dtype=np.int64))
            kernels.sq_col_split(self.words, self.rowptr, self.index_bits, tile, *split)
            self._split[tile] = split
        return split

    def _input(self, x, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise TypeError(f"{what} must be float32, got {x.dtype}; convert with "
                            f".astype(np.float32)")
        return x

    def matmul(self, x) -> np.ndarray:
        """``x @ W.T``: a Dense layer's forward pass (no bias).

        Parameters
        ----------
        x : ndarray, float32, shape (in,) or (batch, in).

        Returns
        -------
        ndarray, float32, shape (out,) or (batch, out).

        Raises
        ------
        TypeError
            ``x`` is not float32.
        ValueError
            ``x`` is not 1-D or 2-D, or its last axis is not ``in``.
        """
        x = self._input(x, "x")
        out, n_in = self.shape
        if x.ndim not in (1, 2) or x.shape[-1] != n_in:
            raise ValueError(f"x must have shape ({n_in},) or (batch, {n_in}) for a "
                             f"{self.shape} matrix, got {x.shape}")
        if x.ndim == 1 or x.shape[0] == 1:  # one sample: the matrix-vector kernel
            y = np.empty(out, dtype=np.float32)
            self.matvec_into(np.ascontiguousarray(x.reshape(n_in)), y)
            return y if x.ndim == 1 else y[None, :]
        # Xt = x.T in an aligned buffer; for the AVX-512 kernel with the columns padded to a
        # multiple of 16 so that every row of Xt starts on a cache line too (the register
        # blocks load 16 columns at a time whatever the count, so padding costs no loads).
        n = x.shape[0]
        cols = -(-n // 16) * 16 if self._simd else n
        xt = aligned_empty((n_in, cols))
        xt[:, :n] = x.T
        xt[:, n:] = 0.0
        return np.ascontiguousarray(self.matmul_t(xt)[:, :n].T)

    def matvec_into(self, x: np.ndarray, y: np.ndarray, threads: int | None = None) -> None:
        """``y = W @ x`` by the batch-1 kernel, **unchecked**: for callers that checked once.

        Parameters
        ----------
        x : ndarray, shape (in,), float32, C-contiguous. IN.
        y : ndarray, shape (out,), float32. OUT.
        threads : int, optional. Threads to split the rows over (default
            ``numba.get_num_threads()``, which costs about a microsecond from Python: a caller
            running several products asks once and passes it); ignored when :meth:`serial`.

        Notes
        -----
        Nothing is validated: wrong shapes or dtypes read or write out of bounds. Use
        :meth:`matmul` unless the checks were done (the model's batch-1 path checks once per
        call, :meth:`matmul` once per product).
        """
        blocks = self._row_blocks(1, threads)
        if self._simd:
            _launch(kernels.sq_matvec_avx512, blocks.size - 1, self.words, self.rowptr, blocks,
                    self.index_bits, self._cbv, x, y)
        else:
            _launch(kernels.sq_matvec, blocks.size - 1, self.words, self.rowptr, blocks,
                    self.index_bits, self.codebook, x, y)

    def matmul_t(self, xt, rows: tuple[int, int] | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
        """``W @ xt``: the transposed batch form (Dense at batch N with ``xt = x.T``, or a
        convolution with ``xt`` the im2col matrix and ``W`` the reshaped conv weight).

        Parameters
        ----------
        xt : ndarray, float32, shape (in, N). Fastest C-contiguous and, for the AVX-512
            kernel, 64-byte aligned with N a multiple of 16 (:func:`aligned_empty`); other
            inputs are copied to C order, never to an aligned buffer.
        rows : (int, int), optional. Only the rows ``r0 <= r < r1`` of ``W`` (one group of a
            grouped convolution, whose ``xt`` is that group's columns).
        out : ndarray, float32, shape (out, N), C-contiguous, optional. Where to write: with
            ``rows``, only those rows of it are written.

        Returns
        -------
        ndarray, float32, shape (out, N): ``out`` when given. Without ``rows``, every element
        is written; with ``rows``, the others are whatever ``out`` held (uninitialised for a
        new array).

        Raises
        ------
        TypeError
            ``xt`` or ``out`` is not float32.
        ValueError
            ``xt`` is not 2-D or its first axis is not ``in``; ``out`` of the wrong shape or
            not C-contiguous; ``rows`` not within ``0 <= r0 <= r1 <= out``.
        """
        xt = self._input(xt, "xt")
        n_out, n_in = self.shape
        if xt.ndim != 2 or xt.shape[0] != n_in:
            raise ValueError(f"xt must have shape ({n_in}, N) for a {self.shape} matrix, got "
                             f"{xt.shape}; pass x.T for a batch x of shape (N, {n_in})")
        xt = np.ascontiguousarray(xt)
        if out is None:
            yt = np.empty((n_out, xt.shape[1]), dtype=np.float32)
        else:
            yt = self._input(out, "out")
            if yt.shape != (n_out, xt.shape[1]) or not yt.flags.c_contiguous:
                raise ValueError(f"out must be a C-contiguous array of shape "
                                 f"{(n_out, xt.shape[1])}, got {yt.shape}")
        if rows is not None:
            r0, r1 = (int(r) for r in rows)
            if not 0 <= r0 <= r1 <= n_out:
                raise ValueError(f"rows must satisfy 0 <= r0 <= r1 <= {n_out}, got {rows}")
            rows = (r0, r1)
        if xt.shape[1] == 0 or n_out == 0 or (rows is not None and rows[0] == rows[1]):
            return yt
        blocks, block_n, (split_k, split_col) = self._plan(xt.shape[1], rows)
        product = kernels.sq_matmul_t_avx512 if self._simd else kernels.sq_matmul_t
        _launch(product, blocks.size - 1, self.words, split_k, split_col, blocks,
                self.index_bits, self.codebook, xt, block_n, yt)
        return yt


__all__ = ["CompressedMatrix", "best_index_bits", "aligned_empty", "SIMD", "SERIAL_ENTRIES",
           "BLOCK_N", "WIDE_BLOCK_N", "TILE_BYTES", "SIMD_TILE_BYTES", "ALIGN"]
