"""Huffman kernels (huffman_encode, huffman_decode) against their twins in kernels.reference."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.codecs.huffman import canonical_codes, code_lengths, decode_table
from dc_engine.kernels import reference


def _code(counts, max_len):
    lengths = code_lengths(np.asarray(counts, dtype=np.int64), max_len)
    return canonical_codes(lengths), lengths


def _encode(fn, symbols, codes, lengths):
    n_bits = int(lengths[symbols].astype(np.int64).sum())
    out = np.zeros((n_bits + 7) // 8 + 2, dtype=np.uint8)  # 2 spare bytes must stay 0
    got = fn(symbols, codes, lengths, out)
    return int(got), out


def _decode(fn, data, n_bits, n, table_sym, table_len, max_len):
    out = np.full(n, 0xBEEF, dtype=np.uint16)
    status = fn(data, n_bits, n, table_sym, table_len, max_len, out)
    return int(status), out


@st.composite
def streams(draw):
    """(symbols, counts-derived codes and lengths): n may be 0 or 1, one or many symbols."""
    n_symbols = draw(st.integers(1, 40))
    n = draw(st.integers(0, 300))
    max_len = draw(st.integers(max(1, int(np.ceil(np.log2(n_symbols)))), 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.dirichlet(np.full(n_symbols, draw(st.sampled_from([0.1, 1.0, 10.0]))))
    symbols = rng.choice(n_symbols, size=n, p=p).astype(np.uint16)
    codes, lengths = _code(np.bincount(symbols, minlength=n_symbols), max_len)
    return symbols, codes, lengths


@given(streams())
def test_encode_equals_reference(case):
    symbols, codes, lengths = case
    got_bits, got = _encode(kernels.huffman_encode, symbols, codes, lengths)
    want_bits, want = _encode(reference.huffman_encode, symbols, codes, lengths)
    assert got_bits == want_bits == int(lengths[symbols].astype(np.int64).sum())
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    assert not got[(got_bits + 7) // 8:].any()


def test_encode_bit_convention():
    # codes (canonical for lengths 1, 2, 3, 3): 0, 10, 110, 111; MSB-first into MSB-first bytes
    lengths = np.array([1, 2, 3, 3], dtype=np.uint8)
    codes = canonical_codes(lengths)
    np.testing.assert_array_equal(codes, [0b0, 0b10, 0b110, 0b111])
    symbols = np.array([3, 1, 0, 2, 3], dtype=np.uint16)  # 111 10 0 110 111 -> 12 bits
    out = np.zeros(2, dtype=np.uint8)
    assert kernels.huffman_encode(symbols, codes, lengths, out) == 12
    np.testing.assert_array_equal(out, [0b11110011, 0b01110000])


def test_encode_empty_and_single():
    codes, lengths = _code([0, 5], 15)
    for symbols in (np.zeros(0, np.uint16), np.array([1], np.uint16)):
        got = _encode(kernels.huffman_encode, symbols, codes, lengths)
        want = _encode(reference.huffman_encode, symbols, codes, lengths)
        assert got[0] == want[0] == symbols.shape[0]
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no specialisations without the JIT")
def test_codec_converts_dtypes_so_no_kernel_recompiles():
    """The kernels compile lazily (no eager signatures); the codec converts its input, so other
    integer dtypes and read-only or strided arrays reuse the one compiled specialisation."""
    from dc_engine.codecs import huffman

    symbols = np.array([0, 1, 1, 2, 1, 0], dtype=np.uint16)
    data, lengths, n_bits = huffman.encode(symbols, 3)
    np.testing.assert_array_equal(huffman.decode(data, lengths, symbols.size, n_bits), symbols)
    seen = (set(kernels.huffman_encode.signatures), set(kernels.huffman_decode.signatures))
    wide = np.repeat(symbols.astype(np.int64), 2)[::2]  # int64, strided
    ro = data.copy()
    ro.flags.writeable = False
    assert np.array_equal(huffman.encode(wide, 3)[0], data)
    np.testing.assert_array_equal(huffman.decode(ro, lengths.astype(np.int32), symbols.size,
                                                 n_bits), symbols)
    assert (set(kernels.huffman_encode.signatures),
            set(kernels.huffman_decode.signatures)) == seen


@st.composite
def decode_cases(draw):
    """A real table and a real stream, then maybe corrupted: bit flips, a cut, wrong n/n_bits,
    or random bytes, so that every status code occurs."""
    n_symbols = draw(st.integers(1, 12))
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    counts = rng.integers(0, 20, size=n_symbols) * (rng.random(n_symbols) < 0.7)
    counts[rng.integers(n_symbols)] += 1
    codes, lengths = _code(counts, 16)
    if draw(st.booleans()) and np.count_nonzero(lengths) > 1:  # incomplete: table holes
        lengths = lengths.copy()
        lengths[np.argmax(lengths)] = 0
        codes = canonical_codes(lengths)
    used = np.flatnonzero(lengths)
    symbols = rng.choice(used, size=n).astype(np.uint16)
    n_bits, data = _encode(kernels.huffman_encode, symbols, codes, lengths)
    data = data[:(n_bits + 7) // 8].copy()
    kind = draw(st.sampled_from(["clean", "flip", "cut", "n", "random"]))
    if kind == "flip" and n_bits:
        for k in rng.integers(0, n_bits, size=draw(st.integers(1, 3))):
            data[k // 8] ^= 0x80 >> (k % 8)
    elif kind == "cut":
        n_bits = int(rng.integers(0, n_bits + 1))
    elif kind == "n":
        n = max(0, n + int(rng.integers(-2, 3)))
    elif kind == "random":
        data = rng.integers(0, 256, size=data.shape[0], dtype=np.uint8)
    max_len = int(lengths.max())
    table_sym, table_len = decode_table(lengths, max_len)
    return data, n_bits, n, table_sym, table_len, max_len, symbols


@given(decode_cases())
def test_decode_equals_reference(case):
    data, n_bits, n, table_sym, table_len, max_len, _ = case
    got_status, got = _decode(kernels.huffman_decode, data, n_bits, n, table_sym, table_len,
                              max_len)
    want_status, want = _decode(reference.huffman_decode, data, n_bits, n, table_sym, table_len,
                                max_len)
    assert got_status == want_status
    assert got_status in (0, -1, -2, -3)
    assert got.dtype == np.uint16 and got.shape == (n,)
    np.testing.assert_array_equal(got, want)


def test_decode_statuses():
    codes, lengths = _code([1, 1, 2], 15)  # codes: sym2 = 0, sym0 = 10, sym1 = 11
    lengths[1] = 0  # now 11 is a hole
    table_sym, table_len = decode_table(lengths, 2)
    data = np.array([0b10000000], dtype=np.uint8)  # 10 0
    for fn in (kernels.huffman_decode, reference.huffman_decode):
        status, out = _decode(fn, data, 3, 2, table_sym, table_len, 2)
        assert status == 0 and out.tolist() == [0, 2]
        assert _decode(fn, data, 3, 3, table_sym, table_len, 2)[0] == -1  # exhausted
        assert _decode(fn, data, 3, 1, table_sym, table_len, 2)[0] == -3  # bits left over
        assert _decode(fn, np.array([0b11000000], np.uint8), 8, 1, table_sym, table_len,
                       2)[0] == -2  # 11: a hole
        assert _decode(fn, np.array([0b10000000], np.uint8), 1, 1, table_sym, table_len,
                       2)[0] == -1  # 1 then the end: truncated, not invalid
        assert _decode(fn, np.zeros(0, np.uint8), 0, 0, table_sym, table_len, 2)[0] == 0


def test_decode_never_reads_past_the_buffer():
    # n_bits beyond the buffer is the caller's error (decode rejects it), but the kernel still
    # stays inside the buffer: missing bytes read as 0.
    _, lengths = _code([1] * 8, 15)  # 8 codes of 3 bits: symbol s has code s
    table_sym, table_len = decode_table(lengths, 3)
    data = np.array([0xFF], dtype=np.uint8)
    status, out = _decode(kernels.huffman_decode, data, 24, 8, table_sym, table_len, 3)
    assert status == 0
    assert out.tolist() == [7, 7, 6, 0, 0, 0, 0, 0]
