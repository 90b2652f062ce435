"""Fixed-width bit packing of unsigned values, LSB first (Deep Compression Sec. 2 and 4).

:func:`pack` / :func:`unpack` are validating wrappers around the Numba kernels
:func:`dc_engine.kernels.pack_bits` / :func:`~dc_engine.kernels.unpack_bits`. Stream bit ``k`` is
bit ``k % 8`` of byte ``k // 8``; value ``i`` occupies stream bits ``[i*width, (i+1)*width)``,
least significant bit first; the padding bits of the last byte are 0. Example: width 4,
``[1, 2]`` -> ``b"\\x21"``; width 12, ``[0xABC, 0x123]`` -> ``bc 3a 12``.

Unpacking treats its input as untrusted: a truncated or over-long stream, or non-zero padding,
raises :class:`~dc_engine.errors.DCFormatError`.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._validate import check_int, int_array, kernel_input
from ..errors import DCFormatError
from ..limits import MAX_BITS


def packed_size(n: int, width: int) -> int:
    """Bytes that :func:`pack` writes for ``n`` values of ``width`` bits: ``ceil(n*width/8)``."""
    n = check_int(n, "n", 0)
    width = check_int(width, "width", 1, MAX_BITS)
    return -(-n * width // 8)


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
    width = check_int(width, "width", 1, MAX_BITS)
    values = int_array(values, "values")
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}; flatten with "
                         f".ravel() first")
    if values.size and (values.min() < 0 or values.max() >= 2**width):
        raise ValueError(f"values must lie in [0, {2**width}) for width {width}, got values in "
                         f"[{values.min()}, {values.max()}]; use a wider field")
    values = kernel_input(values, np.uint16)
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
    width = check_int(width, "width", 1, MAX_BITS)
    n = check_int(n, "n", 0)
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
    data = kernel_input(data, np.uint8)
    out = np.empty(n, dtype=np.uint16)
    kernels.unpack_bits(data, width, n, out)
    return out


class FixedCoder:
    """Stream coder (:mod:`dc_engine.codecs.coders`) with no entropy coding: every symbol in
    ``ceil(log2(alphabet))`` bits (at least 1), packed by :func:`pack`; no table.

    A payload written with it has the size the paper counts for pruning + quantization
    (DC Table 2's "P+Q" columns), up to the header; it is the baseline the entropy coders beat.
    """

    id = 0
    name = "fixed"

    def options(self) -> dict:
        """The options that rebuild this coder (none)."""
        return {}

    @staticmethod
    def _width(alphabet: int) -> int:
        return max(1, (int(alphabet) - 1).bit_length())

    def encode(self, symbols: np.ndarray, alphabet: int) -> tuple[bytes, bytes, int, np.ndarray]:
        """``(table, data, n_bits, present)`` for ``symbols`` (uint16, each < ``alphabet``)."""
        width = self._width(alphabet)
        data = pack(symbols, width)
        return b"", data.tobytes(), int(symbols.size) * width, np.ones(alphabet, dtype=bool)

    def read_table(self, buf: memoryview, alphabet: int) -> tuple[None, int]:
        """No table: ``(None, 0)``."""
        return None, 0

    def present(self, table: None, alphabet: int) -> np.ndarray:
        """Every symbol may occur (bool, shape (alphabet,))."""
        return np.ones(alphabet, dtype=bool)

    def decode(self, table: None, data: memoryview, n_bits: int, n: int,
               alphabet: int) -> np.ndarray:
        """``n`` symbols (uint16) from ``data`` (untrusted); DCFormatError when corrupt."""
        width = self._width(alphabet)
        if n_bits != n * width:
            raise DCFormatError(f"fixed-width stream of {n} symbols of {width} bits must hold "
                                f"{n * width} bits, the header says {n_bits}")
        out = unpack(data, width, n)
        if out.size and int(out.max()) >= alphabet:
            raise DCFormatError(f"fixed-width stream holds symbol {int(out.max())}, outside "
                                f"the alphabet of {alphabet}")
        return out


__all__ = ["packed_size", "pack", "unpack", "FixedCoder"]
