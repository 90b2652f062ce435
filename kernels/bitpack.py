"""Fixed-width bit packing of uint16 codes into a byte stream (Deep Compression Sec. 2 and 4).

Bit order (LSB first, little-endian bit stream): stream bit ``k`` is bit ``k % 8`` (bit 0 = least
significant) of byte ``k // 8``. Value ``i`` occupies stream bits ``[i*width, (i+1)*width)``,
its least significant bit first: bit ``j`` of value ``i`` is stream bit ``i*width + j``. The
last byte's unused high bits (the padding) are 0. This is ``np.packbits(..., bitorder="little")``
applied to each value's bits, least significant first. Example: width 4, values ``[1, 2]`` give
the byte ``0x21``; width 12, values ``[0xABC, 0x123]`` give ``bc 3a 12``.

Codecs are exact: no fastmath (docs/CONTRIBUTING.md, "Numba"). Compiled at first use (no
eager signature: importing compiles nothing); the caller (:mod:`dc_engine.codecs.bitpack`)
converts to the dtypes below, so one specialisation is compiled and cached.
"""

import numba

from ._config import jit


@jit()
def pack_bits(values, width, out):
    """Pack ``n`` values of ``width`` bits each into ``ceil(n * width / 8)`` bytes, LSB first.

    Parameters
    ----------
    values : ndarray, shape (n,), uint16, contiguous. IN: each ``< 2**width`` (not checked;
        higher bits would corrupt the neighbours).
    width : int, 1..16. IN: bits per value (not checked).
    out : ndarray, shape (ceil(n * width / 8),), uint8, contiguous. OUT: the packed stream,
        padding bits 0 (see the module docstring for the bit order).
    """
    acc = 0  # int64 bit buffer: at most 7 + 16 bits are ever pending
    nbits = 0
    o = 0
    for i in range(values.shape[0]):
        acc |= numba.int64(values[i]) << nbits
        nbits += width
        while nbits >= 8:
            out[o] = acc & 0xFF
            acc >>= 8
            nbits -= 8
            o += 1
    if nbits > 0:
        out[o] = acc & 0xFF


@jit()
def unpack_bits(data, width, n, out):
    """Unpack ``n`` values of ``width`` bits each from a stream written by :func:`pack_bits`.

    Parameters
    ----------
    data : ndarray, shape (m,), uint8, contiguous. IN: the packed stream; the caller checks
        ``m >= ceil(n * width / 8)``. Only those first bytes are read; padding is ignored.
    width : int, 1..16. IN: bits per value (not checked).
    n : int >= 0. IN: number of values.
    out : ndarray, shape (n,), uint16, contiguous. OUT: the values.
    """
    mask = (1 << width) - 1
    acc = 0
    nbits = 0
    b = 0
    for i in range(n):
        while nbits < width:
            acc |= numba.int64(data[b]) << nbits
            b += 1
            nbits += 8
        out[i] = acc & mask
        acc >>= width
        nbits -= width
