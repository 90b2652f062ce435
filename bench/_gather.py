"""The x-gather floor of a batch-1 product (bench/bench_kernels.py, "where the time goes").

A kernel that reads ``x`` by a gather at the column of each entry of this encoding (fillers
included, as ``sq_matvec_avx512`` does) pays at least those gathers: :class:`GatherFloor` does
as many 16-column ``vgatherdps`` as the matrix has groups of 16 entries, one FMA each, the work
split evenly over the threads the product uses (one for a matrix small enough to run serially),
and nothing else: no decoding, no rows, no codebook. The columns are the matrix's own (its first
:data:`WINDOW` entries, read round and round, so the column list stays in L1 and costs less than
any encoding of it). Its time, against dense BLAS's time on the same layer, bounds the batch-1
ratio such a kernel can reach on this machine. It does not bound a kernel that reads ``x``
some other way, or an encoding with fewer entries (fewer fillers).

Needs AVX-512F (``kernels.SQMM_AVX512``); a benchmark helper, not part of the engine.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from dc_engine.kernels.sqmm_avx512 import (
    _I8P,
    _I32,
    _I64,
    _VB,
    _VF,
    _VI,
    _arrays,
    _declare,
    _hsum,
    _loop,
)

#: Entries whose columns the floor gathers, round and round (16 KB of int32: in L1).
WINDOW = 4096


@intrinsic
def _gather_sum(typingctx, cols, x, k0, k1):
    """sum(x[cols[k % WINDOW]] for k in range(k0, k1)) in float32 lanes, 16 per gather
    (``k0``, ``k1`` multiples of 16, ``cols`` of WINDOW entries)."""
    if not (isinstance(cols, types.Array) and cols.dtype == types.int32 and cols.layout == "C"
            and isinstance(x, types.Array) and x.dtype == types.float32 and x.layout == "C"):
        return None
    sig = types.float32(cols, x, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        cols_a, x_a = _arrays(context, builder, signature, args, 0, 1)
        k0, k1 = args[2], args[3]
        gather = _declare(builder.module, "llvm.x86.avx512.mask.gather.dps.512", _VF,
                          [_VF, _I8P, _VI, _VB, _I32])
        fma = _declare(builder.module, "llvm.fma.v16f32", _VF, [_VF, _VF, _VF])
        xptr = builder.bitcast(x_a.data, _I8P)
        zero = ir.Constant(_VF, [0.0] * 16)

        def body(k, values):
            at = builder.bitcast(builder.gep(cols_a.data, [
                builder.and_(k, ir.Constant(_I64, WINDOW - 1))]), _VI.as_pointer())
            xs = builder.call(gather, [zero, xptr, builder.load(at, align=4),
                                       ir.Constant(_VB, [1] * 16), ir.Constant(_I32, 4)])
            return [builder.call(fma, [xs, ir.Constant(_VF, [1.0] * 16), values[0]])]

        acc, = _loop(builder, "g", k0, k1, 16, [zero], body)
        return _hsum(builder, acc)

    return sig, codegen


@numba.njit(nogil=True, parallel=True)
def _floor(cols, x, parts, sums):
    for p in prange(parts.size - 1):
        sums[p] = _gather_sum(cols, x, parts[p], parts[p + 1])


@numba.njit(nogil=True)
def _floor_serial(cols, x, parts, sums):
    sums[0] = _gather_sum(cols, x, parts[0], parts[-1])


def entry_columns(words, rowptr, index_bits) -> np.ndarray:
    """The column of every packed entry (fillers included), int32."""
    steps = (words.astype(np.int64) & ((1 << index_bits) - 1)) + 1
    ends = np.cumsum(steps)
    row_start = np.repeat(np.concatenate([[0], ends])[rowptr[:-1]], np.diff(rowptr))
    return (ends - row_start - 1).astype(np.int32)


class GatherFloor:
    """Calling it gathers ``x`` once per entry of the matrix ``m`` (rounded up to 16), at the
    columns of its first :data:`WINDOW` entries, on as many threads as ``m.matmul(x)`` uses
    (one when the matrix is small enough to run serially: a parallel launch costs more than
    such a product)."""

    def __init__(self, m, x, threads: int):
        cols = entry_columns(m.words, m.rowptr, m.index_bits)[:WINDOW]
        self.cols = np.resize(cols if cols.size else np.zeros(1, np.int32), WINDOW)
        self.x = x
        groups = -(-m.n_entries // 16)
        self.serial = m.serial()  # the product runs on the calling thread
        parts = 1 if self.serial else threads
        self.parts = (np.arange(parts + 1) * groups // parts * 16).astype(np.int64)
        self.sums = np.zeros(parts, dtype=np.float32)
        self._fn = _floor_serial if self.serial else _floor

    def __call__(self) -> None:
        self._fn(self.cols, self.x, self.parts, self.sums)

    def check(self) -> None:
        """The gathered sum equals NumPy's over the same columns (float32 rounding)."""
        k = np.arange(self.parts[-1]) % WINDOW
        terms = self.x[self.cols[k]].astype(np.float64)
        self()
        got = float(self.sums.sum())
        assert abs(got - terms.sum()) <= 1e-5 * np.abs(terms).sum() + 1e-6, (got, terms.sum())
