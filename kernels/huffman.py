"""Canonical Huffman encoder and table-driven decoder (Deep Compression Sec. 4).

Bit convention (the JPEG one): the stream is a sequence of bits packed MSB-first into bytes, so
stream bit ``k`` is bit ``7 - k % 8`` of byte ``k // 8``. Each code is written most significant
bit first: the code of length ``l`` and value ``c`` contributes the bits
``(c >> (l - 1)) & 1, ..., c & 1`` in that order. The unused low bits of the last byte are 0.

Exact integer code (no fastmath). Compiled at first use, like every kernel (no eager
signature: importing compiles nothing); the callers (:mod:`dc_engine.codecs.huffman`) convert
their arrays to the dtypes stated below, so one specialisation is compiled and cached.
"""

import numpy as np

from ._config import jit

# Status codes returned by huffman_decode (the reference twin uses the same literal values).
DECODE_OK = 0
DECODE_EXHAUSTED = -1  # the stream ended before n symbols were decoded
DECODE_INVALID = -2  # max_len real bits that start no code (a hole in the table)
DECODE_TRAILING = -3  # n symbols decoded but bits are left over before n_bits


@jit()
def huffman_encode(symbols, codes, lengths, out):
    """Write the code of every symbol into a bit stream (MSB-first bytes, MSB-first codes).

    Parameters
    ----------
    symbols : ndarray, shape (n,), uint16. IN: each in [0, n_symbols) with a nonzero length
        (not checked; a symbol of length 0 writes nothing).
    codes : ndarray, shape (n_symbols,), uint32. IN: canonical code values, ``codes[s]`` fits in
        ``lengths[s]`` bits.
    lengths : ndarray, shape (n_symbols,), uint8. IN: code lengths, each in 0..32.
    out : ndarray, shape (>= ceil(n_bits / 8),), uint8. OUT: the packed stream; every byte up to
        ``ceil(n_bits / 8)`` is assigned (the padding bits of the last byte are 0), later bytes
        are left untouched.

    Returns
    -------
    n_bits : int64
        The number of bits written, ``sum(lengths[symbols])``.
    """
    acc = 0  # pending bits, right-aligned; fewer than 8 between symbols
    nacc = 0
    pos = 0
    n_bits = 0
    for i in range(symbols.shape[0]):
        s = symbols[i]
        ln = np.int64(lengths[s])
        acc = (acc << ln) | np.int64(codes[s])
        nacc += ln
        n_bits += ln
        while nacc >= 8:
            nacc -= 8
            out[pos] = (acc >> nacc) & 0xFF
            pos += 1
        acc &= (1 << nacc) - 1
    if nacc > 0:
        out[pos] = (acc << (8 - nacc)) & 0xFF
    return n_bits


@jit()
def huffman_decode(data, n_bits, n, table_sym, table_len, max_len, out):
    """Decode ``n`` symbols with one table lookup each (peek max_len bits, consume the length).

    Never reads past ``data`` (bytes beyond it and bits at or beyond ``n_bits`` read as 0) and
    runs at most ``n`` iterations.

    Parameters
    ----------
    data : ndarray, shape (m,), uint8. IN: the stream, in the convention of the module
        docstring.
    n_bits : int64. IN: the number of valid bits, 0 <= n_bits <= 8 * m (not checked).
    n : int64. IN: the number of symbols to decode, >= 0.
    table_sym : ndarray, shape (2**max_len,), uint16. IN: the symbol whose code prefixes the
        max_len-bit window ``w`` (any value where ``table_len[w] == 0``).
    table_len : ndarray, shape (2**max_len,), uint8. IN: the length of that code, 0 for a hole
        (no code prefixes ``w``).
    max_len : int64. IN: the window width, in 1..16.
    out : ndarray, shape (>= n,), uint16. OUT: the decoded symbols; on failure the first ones.

    Returns
    -------
    status : int64
        0 (``DECODE_OK``: all n symbols decoded and exactly n_bits consumed), -1
        (``DECODE_EXHAUSTED``: the bits left are fewer than max_len and no code is a prefix of
        them), -2 (``DECODE_INVALID``: max_len real bits start no code) or -3
        (``DECODE_TRAILING``: n symbols decoded, bits left before n_bits).
    """
    m = data.shape[0]
    mask = (1 << max_len) - 1
    pos = 0
    for i in range(n):
        if pos >= n_bits:
            return DECODE_EXHAUSTED
        b = pos >> 3
        v = 0
        if b < m:  # always, when n_bits <= 8 * m
            v = np.int64(data[b]) << 16
        if b + 1 < m:
            v |= np.int64(data[b + 1]) << 8
        if b + 2 < m:
            v |= np.int64(data[b + 2])
        w = (v >> (24 - (pos & 7) - max_len)) & mask
        extra = pos + max_len - n_bits
        if extra > 0:  # zero the window bits at or beyond n_bits
            w = (w >> extra) << extra
        ln = np.int64(table_len[w])
        if ln == 0:
            if extra > 0:
                return DECODE_EXHAUSTED
            return DECODE_INVALID
        if pos + ln > n_bits:
            return DECODE_EXHAUSTED
        out[i] = table_sym[w]
        pos += ln
    if pos != n_bits:
        return DECODE_TRAILING
    return DECODE_OK
