"""Canonical, length-limited Huffman coding of a symbol stream (Deep Compression Sec. 4).

Stage 3 codes two skewed streams with it: the weight codes and the relative-index gaps.

* :func:`code_lengths` -- optimal code lengths under a length limit (package-merge);
* :func:`canonical_codes` -- canonical code values, assigned in (length, symbol) order;
* :func:`decode_table` -- the ``2**max_len`` lookup table of the decoder;
* :func:`encode` / :func:`decode` -- the stream API over the kernels
  :func:`dc_engine.kernels.huffman_encode` and :func:`~dc_engine.kernels.huffman_decode`;
* :class:`HuffmanCoder` -- the same as a stream coder of a layer payload
  (:mod:`dc_engine.codecs.coders`).

Only the code lengths need to be stored next to the data: the codes follow from them.

Bit convention (as JPEG): bits are packed MSB-first into bytes (stream bit ``k`` is bit
``7 - k % 8`` of byte ``k // 8``), each code is written MSB first, and the padding bits of the
last byte are 0. ``n_bits`` is the exact number of coded bits and ``len(data) ==
ceil(n_bits / 8)``.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._validate import check_int
from ..errors import DCFormatError
from ..kernels.huffman import DECODE_EXHAUSTED, DECODE_INVALID, DECODE_OK, DECODE_TRAILING
from ..limits import MAX_BITS, MAX_CODE_LENGTH
from .bitpack import pack, packed_size, unpack

MAX_SYMBOLS = 2**MAX_BITS
"""Largest alphabet (symbols are uint16)."""
MAX_CODE_LEN = 16
"""Longest code this module builds and decodes (a layer payload records at most
:data:`dc_engine.limits.MAX_CODE_LENGTH`)."""


def _int_arg(value, name: str) -> int:
    return check_int(value, name)


def _check_max_len(max_len) -> int:
    return check_int(max_len, "max_len", 1, MAX_CODE_LEN)


def _int_vector(x, name: str, exc: type[Exception] = ValueError) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
    if x.ndim != 1:
        raise exc(f"{name} must be 1-D, got shape {x.shape}")
    return x


def _kraft_numerator(lengths: np.ndarray) -> int:
    """Kraft sum of the nonzero lengths (each <= 16) times 2**16, exactly."""
    used = lengths[lengths > 0].astype(np.int64)
    return int(np.sum(np.left_shift(1, MAX_CODE_LEN - used)))


def code_lengths(counts: np.ndarray, max_len: int = 15) -> np.ndarray:
    """Optimal prefix-code lengths under a length limit (package-merge).

    Parameters
    ----------
    counts : ndarray, shape (n_symbols,), integer dtype
        How often each symbol occurs, >= 0; n_symbols <= 65536.
    max_len : int
        The longest code allowed, in 1..16.

    Returns
    -------
    lengths : ndarray, shape (n_symbols,), uint8
        0 for every symbol of count 0; 1 for the symbol when exactly one is used; otherwise
        lengths in 1..max_len with Kraft sum exactly 1 that minimise ``sum(counts * lengths)``
        among all prefix codes of at most max_len bits (plain Huffman when the limit is not
        binding). Ties break deterministically by (count, symbol).

    Raises
    ------
    TypeError
        ``counts`` is not of integer dtype, or ``max_len`` is not an integer.
    ValueError
        ``counts`` is not 1-D, is negative or too long, ``max_len`` is outside 1..16, or
        ``2**max_len`` is smaller than the number of used symbols.

    Notes
    -----
    Package-merge (Larmore and Hirschberg 1990) as the coin collector's problem: level
    ``max_len`` lists the used symbols by weight; each level above merges them with the pairwise
    sums ("packages") of the level below. The first ``2k - 2`` items of the top level are
    selected, which selects the first ``2p`` items of the level below for the ``p`` packages
    among them, and so on; a symbol's length is the number of levels where it is selected.
    Within a level the selected leaves are always the lightest ones, so only their count per
    level is kept. O(max_len * k log k) in NumPy.
    """
    counts = _int_vector(counts, "counts")
    max_len = _check_max_len(max_len)
    n_symbols = counts.shape[0]
    if n_symbols > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols are supported, got {n_symbols}")
    if n_symbols and counts.min() < 0:
        raise ValueError(f"counts must be >= 0, found {counts.min()}")
    lengths = np.zeros(n_symbols, dtype=np.uint8)
    used = np.flatnonzero(counts)
    k = used.shape[0]
    if k > (1 << max_len):
        raise ValueError(
            f"{k} used symbols need codes longer than max_len={max_len} bits "
            f"(2**max_len < {k}); raise max_len")
    if k == 0:
        return lengths
    if k == 1:
        lengths[used] = 1
        return lengths
    order = used[np.argsort(counts[used], kind="stable")]
    leaves = counts[order].astype(np.int64)
    leaf_flags = np.ones(k, dtype=bool)
    items = leaves
    flags_per_level = [leaf_flags]  # deepest level (max_len) first
    for _ in range(max_len - 1):
        half = items.shape[0] // 2
        packages = items[0:2 * half:2] + items[1:2 * half:2]
        merged = np.concatenate([leaves, packages])
        flags = np.concatenate([leaf_flags, np.zeros(half, dtype=bool)])
        idx = np.argsort(merged, kind="stable")  # ties: leaves first
        items = merged[idx]
        flags_per_level.append(flags[idx])
    depth = np.zeros(k, dtype=np.int64)
    take = 2 * k - 2
    for flags in reversed(flags_per_level):  # top level (length 1) first
        n_leaves = int(np.count_nonzero(flags[:take]))
        depth[:n_leaves] += 1
        take = 2 * (take - n_leaves)
    assert take == 0, "package-merge: selection did not end at the deepest level"
    lengths[order] = depth
    return lengths


def _check_lengths(lengths, exc: type[Exception]) -> np.ndarray:
    """lengths as int64 after the checks of a valid prefix code; ``exc`` for bad values."""
    lengths = _int_vector(lengths, "lengths", exc)
    if lengths.shape[0] > MAX_SYMBOLS:
        raise exc(f"at most {MAX_SYMBOLS} code lengths are supported, got {lengths.shape[0]}")
    lengths = lengths.astype(np.int64)
    if lengths.shape[0] and (lengths.min() < 0 or lengths.max() > MAX_CODE_LEN):
        raise exc(f"code lengths must be in 0..{MAX_CODE_LEN}, found "
                  f"{lengths.min()}..{lengths.max()}; the lengths array is corrupt")
    kraft = _kraft_numerator(lengths)
    if kraft > 1 << MAX_CODE_LEN:
        raise exc(f"code lengths violate the Kraft inequality (sum of 2**-length is "
                  f"{kraft / (1 << MAX_CODE_LEN):.6g}, expected <= 1): not a prefix code; "
                  "the lengths array is corrupt")
    return lengths


def _canonical_order(lengths: np.ndarray):
    """Used symbols sorted by (length, symbol), their lengths, and their canonical codes."""
    syms = np.flatnonzero(lengths)
    syms = syms[np.argsort(lengths[syms], kind="stable")]
    ls = lengths[syms]
    bl_count = np.bincount(ls, minlength=MAX_CODE_LEN + 1)
    next_code = np.zeros(MAX_CODE_LEN + 1, dtype=np.int64)
    code = 0
    for ln in range(1, MAX_CODE_LEN + 1):  # DEFLATE's (RFC 1951 3.2.2) first code per length
        code = (code + int(bl_count[ln - 1] if ln > 1 else 0)) << 1
        next_code[ln] = code
    rank = np.arange(syms.shape[0]) - np.searchsorted(ls, ls, side="left")
    return syms, ls, next_code[ls] + rank


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman codes: consecutive values in (length, symbol) order.

    Parameters
    ----------
    lengths : ndarray, shape (n_symbols,), integer dtype
        Code lengths in 0..16 (0: unused) satisfying the Kraft inequality.

    Returns
    -------
    codes : ndarray, shape (n_symbols,), uint32
        ``codes[s]`` fits in ``lengths[s]`` bits; 0 for unused symbols. The first code is all
        zeros; each next one is the previous plus one, shifted left to the next length.

    Raises
    ------
    TypeError
        ``lengths`` is not of integer dtype.
    ValueError
        ``lengths`` is not 1-D, out of range, or violates the Kraft inequality.
    """
    lengths = _check_lengths(lengths, ValueError)
    codes = np.zeros(lengths.shape[0], dtype=np.uint32)
    syms, _, sym_codes = _canonical_order(lengths)
    codes[syms] = sym_codes
    return codes


def decode_table(lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's lookup table: for each max_len-bit window, the code that prefixes it.

    Parameters
    ----------
    lengths : ndarray, shape (n_symbols,), integer dtype
        Code lengths in 0..max_len satisfying the Kraft inequality.
    max_len : int
        The window width, in 1..16, >= every length.

    Returns
    -------
    table_sym : ndarray, shape (2**max_len,), uint16
        The symbol whose canonical code prefixes the window (0 in holes).
    table_len : ndarray, shape (2**max_len,), uint8
        Its code length; 0 where no code prefixes the window (only when the Kraft sum is < 1).

    Raises
    ------
    TypeError, ValueError
        As :func:`canonical_codes`; ValueError too when a length exceeds ``max_len``.

    Notes
    -----
    In (length, symbol) order the canonical codes cover consecutive table ranges starting at
    0, ``2**(max_len - length)`` entries each, so the table is one ``np.repeat``.
    """
    max_len = _check_max_len(max_len)
    lengths = _check_lengths(lengths, ValueError)
    if lengths.shape[0] and lengths.max() > max_len:
        raise ValueError(f"a code length of {lengths.max()} exceeds max_len={max_len}")
    syms, ls, sym_codes = _canonical_order(lengths)
    spans = np.left_shift(1, max_len - ls)
    table_sym = np.zeros(1 << max_len, dtype=np.uint16)
    table_len = np.zeros(1 << max_len, dtype=np.uint8)
    total = int(spans.sum())
    table_sym[:total] = np.repeat(syms, spans)
    table_len[:total] = np.repeat(ls, spans)
    assert np.array_equal(np.left_shift(sym_codes, max_len - ls), np.cumsum(spans) - spans)
    return table_sym, table_len


def encode(symbols: np.ndarray, n_symbols: int,
           max_len: int = 15) -> tuple[np.ndarray, np.ndarray, int]:
    """Huffman-code a symbol stream with a canonical code fitted to its own counts.

    Parameters
    ----------
    symbols : ndarray, shape (n,), integer dtype
        The stream, each value in [0, n_symbols); n may be 0.
    n_symbols : int
        The alphabet size, in 1..65536.
    max_len : int
        The longest code allowed, in 1..16 (default 15).

    Returns
    -------
    data : ndarray, shape (ceil(n_bits / 8),), uint8
        The coded stream (bit convention in the module docstring).
    lengths : ndarray, shape (n_symbols,), uint8
        The code lengths (:func:`code_lengths` of the stream's counts): store these with
        ``data``, ``n`` and ``n_bits`` to decode.
    n_bits : int
        The number of coded bits, ``sum(lengths[symbols])``.

    Raises
    ------
    TypeError
        ``symbols`` is not of integer dtype, or an int argument is not an integer.
    ValueError
        ``symbols`` is not 1-D or outside [0, n_symbols), or n_symbols or max_len is out of
        range, or the alphabet in use does not fit in max_len bits.

    Notes
    -----
    Deep Compression Sec. 4 codes the weight indices and the sparse-index gaps this way.
    """
    n_symbols = _int_arg(n_symbols, "n_symbols")
    if not 1 <= n_symbols <= MAX_SYMBOLS:
        raise ValueError(f"n_symbols must be in 1..{MAX_SYMBOLS}, got {n_symbols}")
    max_len = _check_max_len(max_len)
    symbols = _int_vector(symbols, "symbols")
    if symbols.shape[0] and (symbols.min() < 0 or symbols.max() >= n_symbols):
        raise ValueError(f"symbols must be in [0, {n_symbols}), found "
                         f"{symbols.min()}..{symbols.max()}; pass a larger n_symbols")
    symbols = np.ascontiguousarray(symbols, dtype=np.uint16)
    counts = np.bincount(symbols, minlength=n_symbols)
    lengths = code_lengths(counts, max_len)
    codes = canonical_codes(lengths)
    n_bits = int(np.dot(counts.astype(np.int64), lengths.astype(np.int64)))
    data = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
    written = kernels.huffman_encode(symbols, codes, lengths, data)
    assert written == n_bits, (written, n_bits)
    return data, lengths, n_bits


def decode(data: np.ndarray, lengths: np.ndarray, n: int, n_bits: int) -> np.ndarray:
    """Decode ``n`` symbols from a stream written by :func:`encode`.

    Parameters
    ----------
    data : ndarray, shape (m,), uint8 (or bytes)
        The coded stream; only its first ``n_bits`` bits are read.
    lengths : ndarray, shape (n_symbols,), integer dtype
        The code lengths returned by :func:`encode`.
    n : int
        The number of symbols to decode, >= 0.
    n_bits : int
        The number of coded bits, 0 <= n_bits <= 8 * m; all of them must be consumed.

    Returns
    -------
    symbols : ndarray, shape (n,), uint16

    Raises
    ------
    TypeError
        ``data`` is not uint8, ``lengths`` is not of integer dtype, or n / n_bits is not an int.
    DCFormatError
        Corrupt input: lengths out of 0..16 or violating the Kraft inequality, n or n_bits
        negative, n_bits > 8 * len(data), the stream ends before n symbols, a bit pattern
        that is no code, or bits left over after n symbols.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise TypeError(f"data must be uint8, got {data.dtype}")
    data = _int_vector(data, "data", DCFormatError)
    lengths = _check_lengths(lengths, DCFormatError)
    n = _int_arg(n, "n")
    n_bits = _int_arg(n_bits, "n_bits")
    if n < 0 or n_bits < 0:
        raise DCFormatError(f"n and n_bits must be >= 0, got n={n}, n_bits={n_bits}")
    if n_bits > 8 * data.shape[0]:
        raise DCFormatError(
            f"Huffman stream truncated: n_bits={n_bits} but data holds only "
            f"{8 * data.shape[0]} bits ({data.shape[0]} bytes); expected "
            f"{(n_bits + 7) // 8} bytes")
    if n == 0:
        if n_bits:
            raise DCFormatError(f"an empty stream must have n_bits=0, got {n_bits}")
        return np.zeros(0, dtype=np.uint16)
    if n > n_bits:
        raise DCFormatError(f"n={n} symbols cannot fit in n_bits={n_bits} (each takes >= 1 "
                            "bit): n or n_bits is corrupt")
    max_len = int(lengths.max(initial=0))
    if max_len == 0:
        raise DCFormatError(f"n={n} symbols requested but no symbol has a code "
                            "(all lengths are 0)")
    table_sym, table_len = decode_table(lengths, max_len)
    if not data.flags.writeable or not data.flags.c_contiguous:
        data = np.array(data, dtype=np.uint8, order="C")  # the one cached specialisation
    out = np.zeros(n, dtype=np.uint16)
    status = kernels.huffman_decode(data, n_bits, n, table_sym, table_len, max_len, out)
    if status == DECODE_OK:
        return out
    if status == DECODE_EXHAUSTED:
        msg = f"Huffman stream ends (n_bits={n_bits}) before n={n} symbols: truncated data"
    elif status == DECODE_INVALID:
        msg = "Huffman stream holds a bit pattern that is no code of these lengths: corrupt data"
    elif status == DECODE_TRAILING:
        msg = (f"Huffman stream has bits left over after n={n} symbols (n_bits={n_bits}): "
               "n, n_bits or the data is corrupt")
    else:  # pragma: no cover - the kernel returns only the codes above
        msg = f"Huffman decoder returned unknown status {status}"
    raise DCFormatError(msg + "; re-encode or restore the stream")


class HuffmanCoder:
    """Stream coder (:mod:`dc_engine.codecs.coders`): a canonical Huffman code fitted to the
    stream's own counts (Deep Compression Sec. 4).

    The table is the code length of every symbol of the alphabet, 4 bits each, packed by
    :func:`dc_engine.codecs.bitpack.pack` (LSB first: symbol 0 is the low nibble of the first
    byte); 0 means "does not occur". The data is :func:`encode`'s bit stream.

    Parameters
    ----------
    max_code_length : int in 1..15, default 15. Longest code (the 4-bit table's limit).
    """

    id = 1
    name = "huffman"

    def __init__(self, max_code_length: int = MAX_CODE_LENGTH):
        self.max_code_length = check_int(max_code_length, "max_code_length", 1, MAX_CODE_LENGTH)

    def options(self) -> dict:
        """The options that rebuild this coder (``HuffmanCoder(**options)``)."""
        return {"max_code_length": self.max_code_length}

    def encode(self, symbols: np.ndarray, alphabet: int) -> tuple[bytes, bytes, int, np.ndarray]:
        """``(table, data, n_bits, present)`` for ``symbols`` (uint16, each < ``alphabet``)."""
        data, lengths, n_bits = encode(symbols, alphabet, self.max_code_length)
        return pack(lengths, 4).tobytes(), data.tobytes(), n_bits, lengths > 0

    def read_table(self, buf: memoryview, alphabet: int) -> tuple[np.ndarray, int]:
        """The code lengths at the start of ``buf`` and the bytes they take (untrusted)."""
        size = packed_size(alphabet, 4)
        if len(buf) < size:
            raise DCFormatError(f"truncated Huffman table: {alphabet} code lengths need {size} "
                                f"bytes, {len(buf)} are left")
        return unpack(buf[:size], 4, alphabet), size

    def present(self, table: np.ndarray, alphabet: int) -> np.ndarray:
        """Which symbols may occur in the stream (bool, shape (alphabet,))."""
        return table > 0

    def decode(self, table: np.ndarray, data: memoryview, n_bits: int, n: int,
               alphabet: int) -> np.ndarray:
        """``n`` symbols (uint16) from ``data`` (untrusted); DCFormatError when corrupt."""
        return decode(np.frombuffer(data, dtype=np.uint8), table, n, n_bits)


__all__ = ["MAX_SYMBOLS", "MAX_CODE_LEN", "code_lengths", "canonical_codes", "decode_table",
           "encode", "decode", "HuffmanCoder"]
