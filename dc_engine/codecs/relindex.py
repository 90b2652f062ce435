"""The relative sparse index with filler entries (Deep Compression Sec. 2, Fig. 2).

:func:`encode_sparse` / :func:`decode_sparse` are validating wrappers around the Numba kernels
:func:`dc_engine.kernels.encode_relative` / :func:`~dc_engine.kernels.decode_relative`. The codes
are walked in row-major (C) order of the flattened weight (for a Dense ``W`` of shape (out, in):
row by row, CSR order). Each non-zero code gives an entry ``(gap, code)`` where ``gap`` is the
number of zeros since the previous entry (for the first: since position 0). With
``index_bits = b`` a gap is at most ``M = 2**b - 1``, so one entry jumps at most ``M + 1``
positions; a longer zero run first emits filler entries ``(M, 0)``, each standing for the zero
weight ``M + 1`` positions on (code 0 is codebook slot 0, weight 0.0, see
:mod:`dc_engine.codecs.codebook`). A run of ``r`` zeros costs ``r // (M + 1)`` fillers. Trailing
zeros cost nothing. Positions decode as ``cumsum(gap + 1) - 1``.

Decoding treats its input as untrusted: every inconsistency raises
:class:`~dc_engine.errors.DCFormatError`, and nothing larger than the output (``n`` values) or
the input itself is allocated.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._validate import check_int, int_array, kernel_input
from ..errors import DCFormatError
from ..limits import MAX_BITS


def encode_sparse(idx_flat, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative-index encoding of per-weight codes, with filler entries (DC Fig. 2).

    Parameters
    ----------
    idx_flat : array_like, integer, values in [0, 65535]. The layer's codes (0 = pruned); any
        shape, walked in row-major (C) order (flattened first).
    index_bits : int, 1..16. Width of the gap field.

    Returns
    -------
    gaps : ndarray, shape (m,), uint16. Zeros skipped before each entry, ``<= 2**index_bits-1``.
    codes : ndarray, shape (m,), uint16. The entries' codes; 0 for fillers.

    Raises
    ------
    TypeError
        ``idx_flat`` is not an integer array or ``index_bits`` not an integer.
    ValueError
        ``index_bits`` is outside 1..16 or a code is outside [0, 65535].

    Notes
    -----
    Gap semantics and filler rule in the module docstring. ``m`` = non-zeros + fillers.
    """
    index_bits = check_int(index_bits, "index_bits", 1, MAX_BITS)
    idx = int_array(idx_flat, "idx_flat").reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"idx_flat must lie in [0, 65535] (uint16 codes), got values in "
                         f"[{idx.min()}, {idx.max()}]")
    idx = kernel_input(idx, np.uint16)
    m = kernels.count_entries(idx, index_bits)
    gaps = np.empty(m, dtype=np.uint16)
    codes = np.empty(m, dtype=np.uint16)
    kernels.encode_relative(idx, index_bits, gaps, codes)
    return gaps, codes


def _stream(x, what: str) -> np.ndarray:
    x = int_array(x, what)
    if x.ndim != 1:
        raise DCFormatError(f"{what} must be 1-D, got shape {x.shape}")
    return x


def decode_sparse(gaps, codes, n: int, index_bits: int) -> np.ndarray:
    """Decode a relative index back to the flattened per-weight codes.

    Parameters
    ----------
    gaps : array_like, shape (m,), integer. Zeros before each entry (untrusted).
    codes : array_like, shape (m,), integer. The entries' codes (untrusted).
    n : int >= 0. Number of weights of the layer.
    index_bits : int, 1..16. Width of the gap field.

    Returns
    -------
    ndarray, shape (n,), uint16. Row-major flattened codes; reshape to the weight's shape.

    Raises
    ------
    TypeError
        ``gaps`` / ``codes`` are not integer arrays, or ``n`` / ``index_bits`` not integers.
    ValueError
        ``n < 0`` or ``index_bits`` outside 1..16.
    DCFormatError
        The streams are not 1-D, differ in length, hold more entries than ``n``, a gap is
        ``>= 2**index_bits`` or negative, a code is outside [0, 65535], or the positions run
        past ``n``.

    Notes
    -----
    Entries with code 0 are accepted anywhere (they decode to weight 0.0), so a stream need not
    be the canonical one :func:`encode_sparse` writes to decode.
    """
    index_bits = check_int(index_bits, "index_bits", 1, MAX_BITS)
    n = check_int(n, "n", 0)
    gaps = _stream(gaps, "gaps")
    codes = _stream(codes, "codes")
    if gaps.size != codes.size:
        raise DCFormatError(f"relative index: {gaps.size} gaps but {codes.size} codes; the two "
                            f"streams must have one entry each per stored weight")
    if gaps.size > n:
        raise DCFormatError(f"relative index has {gaps.size} entries for {n} weights; each "
                            f"entry takes one position, so at most {n} fit")
    if gaps.size:
        lo, hi = int(gaps.min()), int(gaps.max())
        if lo < 0 or hi >= 2**index_bits:
            raise DCFormatError(f"relative index gaps must lie in [0, {2**index_bits - 1}] for "
                                f"{index_bits}-bit indices, got values in [{lo}, {hi}]")
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi > np.iinfo(np.uint16).max:
            raise DCFormatError(f"relative index codes must lie in [0, 65535], got values in "
                                f"[{lo}, {hi}]")
        last = int(gaps.sum(dtype=np.int64)) + gaps.size - 1
        if last >= n:
            raise DCFormatError(f"relative index runs past the layer: last position {last}, "
                                f"but the layer has {n} weights; the stream is corrupt or n is "
                                f"wrong")
    gaps = kernel_input(gaps, np.uint16)
    codes = kernel_input(codes, np.uint16)
    out = np.empty(n, dtype=np.uint16)
    kernels.decode_relative(gaps, codes, n, out)
    return out


__all__ = ["encode_sparse", "decode_sparse"]
