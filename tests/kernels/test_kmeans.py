"""1-D k-means kernels (assign_sorted, segment_sum) against their twins in kernels.reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.kernels import reference


def _assign(fn, x, centroids):
    labels = np.full(x.shape[0], -1, dtype=np.int32)
    fn(x, centroids, labels)
    return labels


def _segment(fn, values, labels, k):
    sums = np.full(k, np.nan, dtype=np.float64)
    counts = np.full(k, -1, dtype=np.int64)
    fn(values, labels, sums, counts)
    return sums, counts


def _check_assign(x, centroids):
    x = np.ascontiguousarray(x, dtype=np.float64)
    centroids = np.ascontiguousarray(centroids, dtype=np.float64)
    got = _assign(kernels.assign_sorted, x, centroids)
    want = _assign(reference.assign_sorted, x, centroids)
    assert got.dtype == np.int32 and got.shape == x.shape
    np.testing.assert_array_equal(got, want)
    return got


@st.composite
def assign_cases(draw):
    """(x, sorted centroids): half-integers on a small grid (many ties and duplicates) or
    continuous values; n may be 0 or 1, k may be 1."""
    n = draw(st.integers(0, 40))
    k = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    grid = draw(st.booleans())
    rng = np.random.default_rng(seed)
    if grid:  # x on quarter steps, centroids on half steps: midpoints and exact hits
        x = rng.integers(-12, 13, size=n) / 4.0
        centroids = np.sort(rng.integers(-5, 6, size=k) / 2.0)
    else:
        x = rng.uniform(-3, 3, size=n)
        centroids = np.sort(rng.choice(rng.uniform(-3, 3, size=k), size=k))  # duplicates
    return x, centroids


@given(assign_cases())
def test_assign_sorted_equals_reference(case):
    x, centroids = case
    _check_assign(x, centroids)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=8),
       st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=20))
def test_assign_sorted_equals_reference_on_arbitrary_floats(centroids, x):
    # Hypothesis likes adjacent and extreme floats: rounded distances that tie.
    _check_assign(np.array(x), np.sort(np.array(centroids)))


def test_assign_sorted_ties_go_to_lowest_index():
    centroids = np.array([-1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 3.0])
    x = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, 2.5, 4.0, -9.0, 0.25, 0.75])
    labels = _check_assign(x, centroids)
    np.testing.assert_array_equal(labels, [0, 1, 1, 4, 4, 6, 6, 0, 1, 4])


@pytest.mark.parametrize("n", [0, 1, 5])
def test_assign_sorted_single_centroid(n):
    labels = _check_assign(np.linspace(-2, 2, n), np.array([0.3]))
    np.testing.assert_array_equal(labels, np.zeros(n, dtype=np.int32))


def test_assign_sorted_all_duplicates():
    labels = _check_assign(np.array([-1.0, 0.5, 2.0, 9.0]), np.full(5, 0.5))
    np.testing.assert_array_equal(labels, np.zeros(4, dtype=np.int32))


def test_assign_sorted_rounded_distance_tie():
    # 1e20 - 0 and 1e20 - 1 round to the same float64: both the reference and the kernel take
    # the lowest index, not the nearer-in-exact-arithmetic neighbour.
    labels = _check_assign(np.array([1e20, -1e20]), np.array([0.0, 1.0]))
    np.testing.assert_array_equal(labels, [0, 0])


def test_assign_sorted_non_finite_values_match_reference():
    _check_assign(np.array([np.nan, np.inf, -np.inf, 0.7]), np.array([-1.0, 0.5, 1.0]))


@st.composite
def segment_cases(draw):
    n = draw(st.integers(0, 60))
    k = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    used = draw(st.integers(1, k))  # labels use only the first `used`: later clusters empty
    values = rng.standard_normal(n)
    labels = rng.integers(0, used, size=n).astype(np.int32)
    return values, labels, k


@given(segment_cases())
def test_segment_sum_equals_reference(case):
    values, labels, k = case
    sums, counts = _segment(kernels.segment_sum, values, labels, k)
    sums_ref, counts_ref = _segment(reference.segment_sum, values, labels, k)
    assert sums.dtype == np.float64 and sums.shape == (k,)
    assert counts.dtype == np.int64 and counts.shape == (k,)
    np.testing.assert_array_equal(counts, counts_ref)
    np.testing.assert_allclose(sums, sums_ref, rtol=1e-13, atol=1e-13)


def test_segment_sum_empty_input_zeroes_outputs():
    values = np.empty(0)
    labels = np.empty(0, dtype=np.int32)
    for fn in (kernels.segment_sum, reference.segment_sum):
        sums, counts = _segment(fn, values, labels, 4)
        np.testing.assert_array_equal(sums, np.zeros(4))
        np.testing.assert_array_equal(counts, np.zeros(4, dtype=np.int64))


def test_segment_sum_small_example():
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    labels = np.array([2, 0, 2, 2, 0], dtype=np.int32)
    sums, counts = _segment(kernels.segment_sum, values, labels, 4)
    np.testing.assert_array_equal(sums, [18.0, 0.0, 13.0, 0.0])
    np.testing.assert_array_equal(counts, [2, 0, 3, 0])
