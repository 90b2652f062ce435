"""Max-pooling kernels against their NumPy twins in kernels.reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.kernels import reference

DTYPES = [np.float32, np.float64]


@st.composite
def pool_cases(draw):
    """A valid (x shape, size, stride, dtype, seed, with_ties) for max pooling (no padding)."""
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    size = draw(st.integers(1, min(4, h, w)))
    stride = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    with_ties = draw(st.booleans())
    return (n, c, h, w), size, stride, dtype, seed, with_ties


def _input(shape, dtype, seed, with_ties):
    rng = np.random.default_rng(seed)
    if with_ties:  # few distinct values: many windows hold several maxima
        return rng.integers(-2, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _forward(fn, x, size, stride):
    n, c, h, w = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    y = np.full((n, c, oh, ow), np.nan, dtype=x.dtype)
    arg = np.full((n, c, oh, ow), -1, dtype=np.int32)
    fn(x, size, stride, oh, ow, y, arg)
    return y, arg


def _backward(fn, dy, arg, shape):
    dx = np.full(shape, np.nan, dtype=dy.dtype)
    fn(dy, arg, dx)
    return dx


@given(pool_cases())
def test_maxpool_forward_equals_reference(case):
    shape, size, stride, dtype, seed, with_ties = case
    x = _input(shape, dtype, seed, with_ties)
    y, arg = _forward(kernels.maxpool2d_forward, x, size, stride)
    y_ref, arg_ref = _forward(reference.maxpool2d_forward, x, size, stride)
    assert y.dtype == dtype
    assert arg.dtype == np.int32
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    # The recorded position holds the maximum.
    n, c, h, w = shape
    p = y.shape[2] * y.shape[3]
    flat = x.reshape(n, c, h * w)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, arg.reshape(n, c, p).astype(np.int64), axis=2),
        y.reshape(n, c, p))


@given(pool_cases())
def test_maxpool_backward_equals_reference(case):
    shape, size, stride, dtype, seed, with_ties = case
    x = _input(shape, dtype, seed, with_ties)
    _, arg = _forward(reference.maxpool2d_forward, x, size, stride)
    dy = np.random.default_rng(seed + 1).standard_normal(arg.shape).astype(dtype)
    dx = _backward(kernels.maxpool2d_backward, dy, arg, shape)
    dx_ref = _backward(reference.maxpool2d_backward, dy, arg, shape)
    assert dx.dtype == dtype
    assert not np.isnan(dx).any()
    eps = np.finfo(dtype).eps
    scale = float(np.abs(dy).max()) if dy.size else 0.0
    np.testing.assert_allclose(dx, dx_ref, rtol=4 * eps, atol=4 * eps * size * size * scale)
    # Gradient is conserved: every dy lands somewhere in dx.
    np.testing.assert_allclose(dx.sum(), dy.sum(), rtol=1e-5, atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernel", "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_ties_route_to_first_max(impl, dtype):
    # Window [[0, 5], [5, 1]]: two maxima; the first in row-major order is (0, 1).
    # Window [[2, 2], [2, 2]]: all equal; the first is its top-left corner (0, 2).
    x = np.array([[0, 5, 2, 2],
                  [5, 1, 2, 2]], dtype=dtype).reshape(1, 1, 2, 4)
    y, arg = _forward(impl.maxpool2d_forward, x, 2, 2)
    np.testing.assert_array_equal(y.ravel(), np.array([5, 2], dtype=dtype))
    np.testing.assert_array_equal(arg.ravel(), [0 * 4 + 1, 0 * 4 + 2])
    dy = np.array([3.0, 7.0], dtype=dtype).reshape(1, 1, 1, 2)
    dx = _backward(impl.maxpool2d_backward, dy, arg, x.shape)
    want = np.zeros_like(x)
    want[0, 0, 0, 1] = 3.0
    want[0, 0, 0, 2] = 7.0
    np.testing.assert_array_equal(dx, want)


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernel", "reference"])
def test_maxpool_overlapping_windows_with_ties_accumulate(impl):
    # Size 2, stride 1 on a constant 3x3 plane: each window's first max is its top-left corner,
    # so the four output gradients land on four different pixels.
    x = np.ones((1, 1, 3, 3))
    y, arg = _forward(impl.maxpool2d_forward, x, 2, 1)
    np.testing.assert_array_equal(arg.ravel(), [0, 1, 3, 4])
    dy = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    dx = _backward(impl.maxpool2d_backward, dy, arg, x.shape)
    want = np.array([[1, 2, 0], [3, 4, 0], [0, 0, 0]], dtype=np.float64).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(dx, want)


@pytest.mark.parametrize("shape", [(3, 2, 7, 6), (1, 1, 2, 2), (2, 3, 5, 9), (0, 1, 4, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unrolled_2x2_path_equals_reference_with_ties(shape, dtype):
    # size 2 / stride 2 takes the unrolled kernel; small integers force many ties.
    x = np.random.default_rng(7).integers(-1, 2, size=shape).astype(dtype)
    y, arg = _forward(kernels.maxpool2d_forward, x, 2, 2)
    y_ref, arg_ref = _forward(reference.maxpool2d_forward, x, 2, 2)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
