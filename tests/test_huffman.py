"""Canonical length-limited Huffman coding (dc_engine.codecs.huffman): round trips,
optimality, limits, canonical codes, entropy bound and corrupt input."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine.codecs.huffman import canonical_codes, code_lengths, decode, decode_table, encode
from dc_engine.errors import DCFormatError


def _kraft(lengths) -> float:
    used = np.asarray(lengths, dtype=np.int64)
    used = used[used > 0]
    return float(np.sum(2.0 ** -used))


def _huffman_cost(counts) -> int:
    """Total coded bits of a plain (unlimited) Huffman tree: the sum of the merged weights."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def _roundtrip(symbols, n_symbols, max_len=15):
    symbols = np.asarray(symbols)
    data, lengths, n_bits = encode(symbols, n_symbols, max_len)
    assert data.dtype == np.uint8 and data.shape == ((n_bits + 7) // 8,)
    assert lengths.dtype == np.uint8 and lengths.shape == (n_symbols,)
    assert isinstance(n_bits, int)
    assert n_bits == int(lengths[symbols].astype(np.int64).sum())
    assert lengths.max(initial=0) <= max_len and _kraft(lengths) <= 1.0
    got = decode(data, lengths, symbols.shape[0], n_bits)
    assert got.dtype == np.uint16 and got.shape == symbols.shape
    np.testing.assert_array_equal(got, symbols)
    return data, lengths, n_bits


# --------------------------------------------------------------------------- round trips


@st.composite
def streams(draw):
    n_symbols = draw(st.sampled_from([1, 2, 3, 7, 16, 64, 300, 4096, 65536]))
    n = draw(st.integers(0, 2000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["uniform", "skewed", "geometric", "constant"]))
    if kind == "uniform":
        symbols = rng.integers(0, n_symbols, size=n)
    elif kind == "skewed":
        p = rng.dirichlet(np.full(min(n_symbols, 512), 0.2))
        symbols = rng.choice(min(n_symbols, 512), size=n, p=p)
    elif kind == "geometric":
        symbols = np.minimum(rng.geometric(draw(st.sampled_from([0.05, 0.3, 0.9])), size=n) - 1,
                             n_symbols - 1)
    else:
        symbols = np.full(n, rng.integers(0, n_symbols))
    max_len = draw(st.integers(int(np.ceil(np.log2(max(2, np.unique(symbols).size)))), 16))
    return symbols.astype(draw(st.sampled_from([np.uint16, np.int64, np.int32]))), n_symbols, \
        max_len


@given(streams())
def test_roundtrip(case):
    symbols, n_symbols, max_len = case
    _roundtrip(symbols, n_symbols, max_len)


@pytest.mark.parametrize("symbols, n_symbols", [
    ([], 1), ([], 5), ([0], 1), ([3], 5), ([2, 2, 2, 2], 3), ([0, 1], 2), ([65535, 0], 65536),
])
def test_roundtrip_edge_cases(symbols, n_symbols):
    symbols = np.array(symbols, dtype=np.int64)
    data, lengths, n_bits = _roundtrip(symbols, n_symbols)
    used = np.unique(symbols)
    if used.size == 0:
        assert n_bits == 0 and data.size == 0 and not lengths.any()
    elif used.size == 1:  # one used symbol: a 1-bit code, one bit per symbol
        assert lengths[used[0]] == 1 and np.count_nonzero(lengths) == 1
        assert n_bits == symbols.size and not data.any()


def test_decode_accepts_bytes_and_readonly():
    symbols = np.array([0, 1, 1, 2, 2, 2, 2], dtype=np.uint16)
    data, lengths, n_bits = encode(symbols, 3)
    np.testing.assert_array_equal(decode(data.tobytes(), lengths, 7, n_bits), symbols)
    data.flags.writeable = False
    np.testing.assert_array_equal(decode(data, lengths, 7, n_bits), symbols)


# --------------------------------------------------------------------------- length limit


@given(k=st.integers(3, 24), max_len=st.integers(2, 7), seed=st.integers(0, 2**32 - 1))
def test_length_limit_binds_on_fibonacci_counts(k, max_len, seed):
    k = min(k, 2**max_len)
    fib = [1, 1]
    while len(fib) < k:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib[:k], dtype=np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(k)
    lengths = code_lengths(counts[perm], max_len)
    assert lengths.dtype == np.uint8
    assert lengths.min() >= 1 and lengths.max() <= max_len
    assert _kraft(lengths) == 1.0  # complete: no wasted code space
    if k - 1 > max_len:  # an unlimited Huffman tree would be k - 1 deep
        assert lengths.max() == max_len
    symbols = rng.permutation(np.repeat(perm, counts))  # symbol perm[i] occurs counts[i] times
    _roundtrip(symbols, k, max_len)


def _brute_force_cost(counts, max_len):
    used = [int(c) for c in counts if c > 0]
    best = None
    for ls in itertools.product(range(1, max_len + 1), repeat=len(used)):
        if sum(2.0 ** -x for x in ls) <= 1.0:
            cost = sum(c * x for c, x in zip(used, ls))
            best = cost if best is None else min(best, cost)
    return best


@given(counts=st.lists(st.integers(0, 60), min_size=2, max_size=6), max_len=st.integers(2, 5))
def test_limited_lengths_are_optimal(counts, max_len):
    counts = np.array(counts, dtype=np.int64)
    used = np.count_nonzero(counts)
    if used < 2 or used > 2**max_len:
        return
    lengths = code_lengths(counts, max_len)
    assert np.array_equal(lengths == 0, counts == 0)
    assert lengths.max() <= max_len and _kraft(lengths) <= 1.0
    assert int(counts @ lengths) == _brute_force_cost(counts, max_len)


@given(counts=st.lists(st.integers(0, 1000), min_size=1, max_size=40))
def test_unlimited_lengths_match_plain_huffman(counts):
    counts = np.array(counts, dtype=np.int64)
    lengths = code_lengths(counts, 16)  # <= 40 symbols of count <= 1000: never binds
    if not counts.any():
        assert not lengths.any()
        return
    assert int(counts @ lengths) == _huffman_cost(counts)
    assert _kraft(lengths) <= 1.0


def test_code_lengths_argument_errors():
    with pytest.raises(ValueError, match="raise max_len"):
        code_lengths(np.ones(9, dtype=np.int64), 3)
    assert code_lengths(np.ones(8, dtype=np.int64), 3).tolist() == [3] * 8
    with pytest.raises(ValueError, match="max_len"):
        code_lengths(np.ones(2, dtype=np.int64), 17)
    with pytest.raises(ValueError, match="max_len"):
        code_lengths(np.ones(2, dtype=np.int64), 0)
    with pytest.raises(ValueError, match=">= 0"):
        code_lengths(np.array([1, -1]), 15)
    with pytest.raises(TypeError):
        code_lengths(np.array([1.0, 2.0]), 15)
    with pytest.raises(TypeError):
        code_lengths(np.array([1, 2]), 4.0)
    assert code_lengths(np.array([0, 0, 7]), 1).tolist() == [0, 0, 1]


# --------------------------------------------------------------------------- canonical codes


@given(counts=st.lists(st.integers(0, 500), min_size=1, max_size=50), max_len=st.integers(6, 16))
def test_codes_are_canonical(counts, max_len):
    lengths = code_lengths(np.array(counts, dtype=np.int64), max_len)
    codes = canonical_codes(lengths)
    assert codes.dtype == np.uint32 and codes.shape == lengths.shape
    syms = sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s))
    # consecutive in (length, symbol) order, left-aligned: prefix-free and increasing
    prev_code, prev_len = -1, 0
    for s in syms:
        ln, code = int(lengths[s]), int(codes[s])
        assert code < 2**ln
        assert code == (prev_code + 1) << (ln - prev_len) if prev_len else code == 0
        prev_code, prev_len = code, ln
    strings = [format(int(codes[s]), "b").zfill(int(lengths[s])) for s in syms]
    for a, b in itertools.combinations(strings, 2):
        assert not b.startswith(a) and not a.startswith(b)
    assert not codes[lengths == 0].any()


def test_canonical_codes_example():
    # DEFLATE's example (RFC 1951 3.2.2): lengths (3, 3, 3, 3, 3, 2, 4, 4)
    codes = canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert codes.tolist() == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]
    with pytest.raises(ValueError, match="Kraft"):
        canonical_codes(np.array([1, 1, 2]))


def test_decode_table_holes_and_limits():
    table_sym, table_len = decode_table(np.array([1, 0, 2]), 3)  # 0 -> sym0, 10 -> sym2
    assert table_sym.tolist() == [0, 0, 0, 0, 2, 2, 0, 0]
    assert table_len.tolist() == [1, 1, 1, 1, 2, 2, 0, 0]
    with pytest.raises(ValueError, match="exceeds max_len"):
        decode_table(np.array([1, 2, 2]), 1)


# --------------------------------------------------------------------------- compression


def test_bits_per_symbol_within_one_bit_of_entropy(rng):
    n_symbols = 64
    p = rng.dirichlet(np.full(n_symbols, 0.3))
    symbols = rng.choice(n_symbols, size=20000, p=p)
    _, lengths, n_bits = _roundtrip(symbols, n_symbols, 16)
    freq = np.bincount(symbols, minlength=n_symbols) / symbols.size
    freq = freq[freq > 0]
    entropy = float(-(freq * np.log2(freq)).sum())
    bps = n_bits / symbols.size
    assert entropy <= bps < entropy + 1
    assert lengths.max() < 16  # the limit did not bind


# --------------------------------------------------------------------------- corrupt input


@pytest.fixture
def coded(rng):
    symbols = np.minimum(rng.geometric(0.25, size=500) - 1, 31)
    data, lengths, n_bits = encode(symbols, 32, max_len=8)
    return symbols, data, lengths, n_bits


def test_truncated_data_raises(coded):
    symbols, data, lengths, n_bits = coded
    with pytest.raises(DCFormatError, match="truncated"):
        decode(data[:-1], lengths, symbols.size, n_bits)
    with pytest.raises(DCFormatError):
        decode(data[:-1], lengths, symbols.size, 8 * (data.size - 1))
    with pytest.raises(DCFormatError, match="before n="):
        decode(data, lengths, symbols.size + 1, n_bits)
    with pytest.raises(DCFormatError, match="left over"):
        decode(data, lengths, symbols.size - 1, n_bits)
    with pytest.raises(DCFormatError, match="cannot fit"):
        decode(data, lengths, n_bits + 1, n_bits)
    with pytest.raises(DCFormatError, match="n_bits=0"):
        decode(data, lengths, 0, n_bits)


def test_bad_lengths_raise(coded):
    symbols, data, lengths, n_bits = coded
    bad = lengths.copy()
    bad[np.argmax(bad)] -= 1  # shorter code: Kraft sum > 1
    with pytest.raises(DCFormatError, match="Kraft"):
        decode(data, bad, symbols.size, n_bits)
    bad = lengths.copy()
    bad[0] = 17
    with pytest.raises(DCFormatError, match="0..16"):
        decode(data, bad, symbols.size, n_bits)
    with pytest.raises(DCFormatError, match="all lengths are 0"):
        decode(data, np.zeros_like(lengths), symbols.size, n_bits)
    with pytest.raises(DCFormatError, match=">= 0"):
        decode(data, lengths, -1, n_bits)


def test_invalid_code_raises():
    lengths = np.array([1, 2, 0], dtype=np.uint8)  # codes 0, 10; 11 is no code
    with pytest.raises(DCFormatError, match="no code"):
        decode(np.array([0b11000000], np.uint8), lengths, 1, 2)


def test_bit_flips_decode_or_raise(coded, rng):
    symbols, data, lengths, n_bits = coded
    outcomes = set()
    for _ in range(300):
        flipped = data.copy()
        for k in rng.integers(0, n_bits, size=rng.integers(1, 4)):
            flipped[k // 8] ^= 0x80 >> (k % 8)
        try:
            got = decode(flipped, lengths, symbols.size, n_bits)
        except DCFormatError:
            outcomes.add("error")
        else:
            assert got.shape == symbols.shape and got.dtype == np.uint16
            assert got.max(initial=0) < lengths.size
            outcomes.add("decoded")
    assert "error" in outcomes


def test_encode_argument_errors():
    with pytest.raises(TypeError):
        encode(np.array([0.0, 1.0]), 2)
    with pytest.raises(TypeError):
        encode(np.array([True, False]), 2)
    with pytest.raises(ValueError, match="1-D"):
        encode(np.zeros((2, 2), dtype=np.int64), 2)
    with pytest.raises(ValueError, match="larger n_symbols"):
        encode(np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="larger n_symbols"):
        encode(np.array([-1, 0]), 2)
    with pytest.raises(ValueError, match="n_symbols"):
        encode(np.array([0]), 0)
    with pytest.raises(ValueError, match="n_symbols"):
        encode(np.array([0]), 65537)
    with pytest.raises(TypeError):
        encode(np.array([0]), 2.0)
    with pytest.raises(ValueError, match="raise max_len"):
        encode(np.arange(5), 5, max_len=2)
    with pytest.raises(TypeError):
        decode(np.zeros(1, dtype=np.int64), np.array([1]), 1, 1)
