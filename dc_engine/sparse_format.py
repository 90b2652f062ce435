"""Relative sparse index and bit packing: the array codecs of Stage 3 (Deep Compression Sec. 2, 4).

Two codecs over plain arrays, each a validating wrapper around a Numba kernel:

* :func:`pack` / :func:`unpack`: fixed-width bit packing of uint16 values, LSB first. Stream bit
  ``k`` is bit ``k % 8`` of byte ``k // 8``; value ``i`` occupies stream bits
  ``[i*width, (i+1)*width)``, least significant bit first; the padding bits of the last byte are
  0. Example: width 4, ``[1, 2]`` -> ``b"\\x21"``; width 12, ``[0xABC, 0x123]`` ->
  ``bc 3a 12``.
* :func:`encode_sparse` / :func:`decode_sparse`: the relative index of DC Fig. 2. The codes are
  walked in row-major (C) order of the flattened weight (for a Dense ``W`` of shape (out, in):
  row by row, CSR order). Each non-zero code gives an entry ``(gap, code)`` where ``gap`` is the
  number of zeros since the previous entry (for the first: since position 0). With
  ``index_bits = b`` a gap is at most ``M = 2**b - 1``, so one entry jumps at most ``M + 1``
  positions; a longer zero run first emits filler entries ``(M, 0)``, each standing for the
  zero weight ``M + 1`` positions on (code 0 is codebook slot 0, weight 0.0, see
  :mod:`dc_engine.quantize`). A run of ``r`` zeros costs ``r // (M + 1)`` fillers. Trailing
  zeros cost nothing. Positions decode as ``cumsum(gap + 1) - 1``.

Decoding treats its input as untrusted: every inconsistency raises
:class:`~dc_engine.errors.DCFormatError`, and nothing larger than the output (``n`` values) or
the input itself is allocated.
"""

from __future__ import annotations

import numpy as np

import kernels

from .errors import DCFormatError

MAX_WIDTH = 16
"""Widest bit field (codes and gaps are uint16)."""


# --------------------------------------------------------------------------- validation


def _check_int(value, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{what} must be {span}, got {value}")
    return value


def _int_array(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array, got dtype {x.dtype}; cast with "
                        f".astype(np.uint16)")
    return x


def _kernel_input(x: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous, writeable ``dtype`` array (the kernels' eager signatures take mutable
    arrays; a read-only buffer such as ``np.frombuffer(bytes)`` is copied)."""
    return np.require(x, dtype=dtype, requirements=["C", "W"])


def packed_size(n: int, width: int) -> int:
    """Bytes that :func:`pack` writes for ``n`` values of ``width`` bits: ``ceil(n*width/8)``."""
    n = _check_int(n, "n", 0)
    width = _check_int(width, "width", 1, MAX_WIDTH)
    return -(-n * width // 8)


# --------------------------------------------------------------------------- bit packing


def pack(values, width: int) -> np.ndarray:
    """Pack unsigned values of ``width`` bits each into a byte stream, LSB first.

    Parameters
    ----------
    values : array_like, shape (n,), integer (any integer dtype). Each in ``[0, 2**width)``.
    width : int, 1..16. Bits per value.

    Returns
    -------
    ndarray, shape (ceil(n * width / 8),), uint8. The stream (bit order in the module
    docstring); the padding bits of the last byte are 0. ``.tobytes()`` gives ``bytes``.

    Raises
    ------
    TypeError
        ``values`` is not an integer array, or ``width`` is not an integer.
    ValueError
        ``width`` is outside 1..16, ``values`` is not 1-D, or a value does not fit.

    Notes
    -----
    DC Sec. 2 and 4: codes and relative indices are stored in ``b``-bit fields.
    """
    width = _check_int(width, "width", 1, MAX_WIDTH)
    values = _int_array(values, "values")
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}; flatten with "
                         f".ravel() first")
    if values.size and (values.min() < 0 or values.max() >= 2**width):
        raise ValueError(f"values must lie in [0, {2**width}) for width {width}, got values in "
                         f"[{values.min()}, {values.max()}]; use a wider field")
    values = _kernel_input(values, np.uint16)
    out = np.empty(packed_size(values.size, width), dtype=np.uint8)
    kernels.pack_bits(values, width, out)
    return out


def unpack(data, width: int, n: int) -> np.ndarray:
    """Unpack ``n`` values of ``width`` bits from a stream written by :func:`pack`.

    Parameters
    ----------
    data : bytes, bytearray, memoryview or ndarray of uint8, shape (m,). The stream; ``m`` must
        be exactly ``ceil(n * width / 8)``.
    width : int, 1..16. Bits per value.
    n : int >= 0. Number of values.

    Returns
    -------
    ndarray, shape (n,), uint16.

    Raises
    ------
    TypeError
        ``data`` is not bytes-like / uint8, or ``width`` / ``n`` is not an integer.
    ValueError
        ``width`` is outside 1..16 or ``n < 0``.
    DCFormatError
        ``data`` is truncated or has trailing bytes, or its padding bits are not 0.
    """
    width = _check_int(width, "width", 1, MAX_WIDTH)
    n = _check_int(n, "n", 0)
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"data must be bytes or a 1-D uint8 array, got dtype {data.dtype} with "
                        f"shape {data.shape}")
    need = packed_size(n, width)
    if data.size < need:
        raise DCFormatError(f"bit-packed stream truncated: {n} values of {width} bits need "
                            f"{need} bytes, got {data.size}; the file is damaged or cut short")
    if data.size > need:
        raise DCFormatError(f"bit-packed stream too long: {n} values of {width} bits need "
                            f"{need} bytes, got {data.size}; check n and width")
    pad = need * 8 - n * width
    if pad and int(data[-1]) >> (8 - pad):
        raise DCFormatError(f"bit-packed stream has non-zero padding: the top {pad} bits of "
                            f"the last byte are {int(data[-1]) >> (8 - pad):#x}, expected 0; "
                            f"the stream is corrupt or n/width are wrong")
    data = _kernel_input(data, np.uint8)
    out = np.empty(n, dtype=np.uint16)
    kernels.unpack_bits(data, width, n, out)
    return out


# --------------------------------------------------------------------------- relative index


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
    index_bits = _check_int(index_bits, "index_bits", 1, MAX_WIDTH)
    idx = _int_array(idx_flat, "idx_flat").reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"idx_flat must lie in [0, 65535] (uint16 codes), got values in "
                         f"[{idx.min()}, {idx.max()}]")
    idx = _kernel_input(idx, np.uint16)
    m = kernels.count_entries(idx, index_bits)
    gaps = np.empty(m, dtype=np.uint16)
    codes = np.empty(m, dtype=np.uint16)
    kernels.encode_relative(idx, index_bits, gaps, codes)
    return gaps, codes


def _stream(x, what: str) -> np.ndarray:
    x = _int_array(x, what)
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
    index_bits = _check_int(index_bits, "index_bits", 1, MAX_WIDTH)
    n = _check_int(n, "n", 0)
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
    gaps = _kernel_input(gaps, np.uint16)
    codes = _kernel_input(codes, np.uint16)
    out = np.empty(n, dtype=np.uint16)
    kernels.decode_relative(gaps, codes, n, out)
    return out


__all__ = ["MAX_WIDTH", "packed_size", "pack", "unpack", "encode_sparse", "decode_sparse"]
