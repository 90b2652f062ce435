"""Pooling kernels (max, padded max, average) against their NumPy twins in kernels.reference
and against independent sliding-window computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.core.layers.conv import conv_output_hw
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


# ------------------------------------------------------- padded / ceil-mode windows


@st.composite
def window_cases(draw):
    """A valid padded-window case: (x shape, kh, kw, stride, (top, left, bottom, right),
    ceil_mode, dtype, seed, with_ties). Every pad is smaller than the window, as the layers
    require (so that every window overlaps the image)."""
    n = draw(st.integers(0, 2))
    c = draw(st.integers(1, 2))
    h = draw(st.integers(1, 8))
    w = draw(st.integers(1, 8))
    kh = draw(st.integers(1, 5))
    kw = draw(st.integers(1, 5))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)),
            draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    stride = draw(st.integers(1, 6))  # larger than the window too
    ceil_mode = draw(st.booleans())
    oh, ow = conv_output_hw(h, w, kh, kw, stride, pads, ceil_mode)
    assume(oh >= 1 and ow >= 1)
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    with_ties = draw(st.booleans())
    return (n, c, h, w), kh, kw, stride, pads, ceil_mode, dtype, seed, with_ties


# Named edge cases every run tries: the window equals the input; pads as large as allowed
# (size - 1 on every side, on a 1x1 input); ceil mode adding a partial window (cases 4 and 5)
# or dropping one that would start in the bottom padding (case 3); stride larger than the
# window; N = 0 and N = 1.
EDGE_CASES = [
    ((1, 2, 4, 4), 4, 4, 1, (0, 0, 0, 0), False, np.float64, 1, False),
    ((2, 1, 1, 1), 3, 3, 1, (2, 2, 2, 2), False, np.float32, 2, False),
    ((1, 1, 2, 3), 3, 3, 2, (2, 2, 2, 2), True, np.float64, 3, True),
    ((1, 1, 5, 5), 2, 2, 2, (0, 0, 0, 0), True, np.float64, 4, False),
    ((1, 2, 5, 7), 3, 2, 2, (1, 0, 0, 0), True, np.float32, 5, True),
    ((1, 1, 9, 9), 2, 2, 4, (1, 1, 0, 0), False, np.float64, 6, False),
    ((0, 3, 6, 6), 2, 3, 1, (1, 2, 0, 1), True, np.float32, 7, False),
]


def edge_examples(test):
    """Add every edge case as an explicit example."""
    for case in EDGE_CASES:
        test = example(case=case)(test)
    return test


def edge_examples_with_include(test):
    """Add every edge case as an explicit example, with both ``include`` flags."""
    for case in EDGE_CASES:
        for include in (False, True):
            test = example(case=case, include=include)(test)
    return test


def _out_hw(case):
    (_, _, h, w), kh, kw, stride, pads, ceil_mode = case[:6]
    return conv_output_hw(h, w, kh, kw, stride, pads, ceil_mode)


def _padded_windows(x, kh, kw, stride, pads, oh, ow, fill):
    """Every window of ``x`` padded with ``fill``, shape (N, C, oh, ow, kh, kw); the bottom and
    right are padded as far as the last (partial) window reaches."""
    n, c, h, w = x.shape
    top, left = pads[0], pads[1]
    bottom = max(0, (oh - 1) * stride + kh - h - top)
    right = max(0, (ow - 1) * stride + kw - w - left)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return win[:, :, ::stride, ::stride][:, :, :oh, :ow]


def _max_forward(fn, x, kh, kw, stride, pads, oh, ow):
    n, c = x.shape[:2]
    y = np.full((n, c, oh, ow), np.nan, dtype=x.dtype)
    arg = np.full((n, c, oh, ow), -1, dtype=np.int32)
    fn(x, kh, kw, stride, pads[0], pads[1], oh, ow, y, arg)
    return y, arg


@edge_examples
@given(window_cases())
def test_padded_maxpool_forward_equals_reference(case):
    shape, kh, kw, stride, pads, ceil_mode, dtype, seed, with_ties = case
    oh, ow = _out_hw(case)
    x = _input(shape, dtype, seed, with_ties)
    y, arg = _max_forward(kernels.maxpool2d_padded_forward, x, kh, kw, stride, pads, oh, ow)
    y_ref, arg_ref = _max_forward(reference.maxpool2d_padded_forward, x, kh, kw, stride, pads,
                                  oh, ow)
    assert y.dtype == dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    # Independently: padding with -inf never wins.
    want = _padded_windows(x, kh, kw, stride, pads, oh, ow, -np.inf).max(axis=(4, 5))
    np.testing.assert_array_equal(y, want)
    # The recorded position is inside the image and inside its window, and holds the max.
    n, c, h, w = shape
    rows, cols = arg // w, arg % w
    i = np.arange(oh).reshape(1, 1, oh, 1)
    j = np.arange(ow).reshape(1, 1, 1, ow)
    assert ((arg >= 0) & (arg < h * w)).all()
    assert ((rows >= i * stride - pads[0]) & (rows < i * stride - pads[0] + kh)).all()
    assert ((cols >= j * stride - pads[1]) & (cols < j * stride - pads[1] + kw)).all()
    flat = x.reshape(n, c, h * w)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, arg.reshape(n, c, oh * ow).astype(np.int64), axis=2),
        y.reshape(n, c, oh * ow))


@given(pool_cases())
def test_padded_maxpool_without_padding_equals_unpadded_kernel(case):
    shape, size, stride, dtype, seed, with_ties = case
    x = _input(shape, dtype, seed, with_ties)
    y, arg = _forward(kernels.maxpool2d_forward, x, size, stride)
    y2, arg2 = _max_forward(kernels.maxpool2d_padded_forward, x, size, size, stride,
                            (0, 0, 0, 0), y.shape[2], y.shape[3])
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(arg2, arg)


@edge_examples
@given(window_cases())
def test_padded_maxpool_backward_equals_reference(case):
    shape, kh, kw, stride, pads, ceil_mode, dtype, seed, with_ties = case
    oh, ow = _out_hw(case)
    x = _input(shape, dtype, seed, with_ties)
    _, arg = _max_forward(reference.maxpool2d_padded_forward, x, kh, kw, stride, pads, oh, ow)
    dy = np.random.default_rng(seed + 1).standard_normal(arg.shape).astype(dtype)
    dx = _backward(kernels.maxpool2d_backward, dy, arg, shape)
    dx_ref = _backward(reference.maxpool2d_backward, dy, arg, shape)
    eps = np.finfo(dtype).eps
    scale = float(np.abs(dy).max()) if dy.size else 0.0
    np.testing.assert_allclose(dx, dx_ref, rtol=4 * eps, atol=4 * eps * kh * kw * scale)
    np.testing.assert_allclose(dx.sum(), dy.sum(), rtol=1e-5, atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernel", "reference"])
def test_padded_maxpool_padding_never_wins(impl):
    # All inputs negative: a zero-padded max would return 0 on the border windows.
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y, arg = _max_forward(impl.maxpool2d_padded_forward, x, 2, 2, 2, (1, 1, 1, 1), 2, 2)
    np.testing.assert_array_equal(y.ravel(), [-1.0, -2.0, -4.0, -5.0])
    np.testing.assert_array_equal(arg.ravel(), [0, 1, 3, 4])


# ------------------------------------------------------------------- average pooling


def _avg_forward(fn, x, kh, kw, stride, pads, include, oh, ow):
    n, c = x.shape[:2]
    y = np.full((n, c, oh, ow), np.nan, dtype=x.dtype)
    fn(x, kh, kw, stride, *pads, include, oh, ow, y)
    return y


def _avg_backward(fn, dy, kh, kw, stride, pads, include, shape):
    dx = np.full(shape, np.nan, dtype=dy.dtype)
    fn(dy, kh, kw, stride, *pads, include, dx)
    return dx


def _avg_by_masks(x, kh, kw, stride, pads, include, oh, ow):
    """Average pooling by sliding windows: zero-padded sums over the counts of a mask that is
    1 on the image (or, counting padding, on the padded image) and 0 elsewhere."""
    n, c, h, w = x.shape
    top, left, bottom, right = pads
    sums = _padded_windows(x.astype(np.float64), kh, kw, stride, pads, oh, ow, 0.0)
    if include:
        mask = np.ones((1, 1, h + top + bottom, w + left + right))
        mask_pads = (0, 0, 0, 0)
        mh, mw = conv_output_hw(h + top + bottom, w + left + right, kh, kw, stride,
                                (0, 0, 0, 0), True)
        assert (mh, mw) >= (oh, ow)
    else:
        mask = np.ones((1, 1, h, w))
        mask_pads = pads
    counts = _padded_windows(mask, kh, kw, stride, mask_pads, oh, ow, 0.0).sum(axis=(4, 5))
    return sums.sum(axis=(4, 5)) / counts


@edge_examples_with_include
@given(window_cases(), st.booleans())
def test_avgpool_forward_equals_reference(case, include):
    shape, kh, kw, stride, pads, ceil_mode, dtype, seed, with_ties = case
    oh, ow = _out_hw(case)
    x = _input(shape, dtype, seed, with_ties)
    y = _avg_forward(kernels.avgpool2d_forward, x, kh, kw, stride, pads, include, oh, ow)
    y_ref = _avg_forward(reference.avgpool2d_forward, x, kh, kw, stride, pads, include, oh, ow)
    assert y.dtype == dtype
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(y, y_ref, rtol=2 * eps, atol=2 * eps)
    want = _avg_by_masks(x, kh, kw, stride, pads, include, oh, ow)
    np.testing.assert_allclose(y, want, rtol=2 * eps, atol=2 * eps)


@edge_examples_with_include
@given(window_cases(), st.booleans())
def test_avgpool_backward_equals_reference_and_is_the_adjoint(case, include):
    shape, kh, kw, stride, pads, ceil_mode, dtype, seed, with_ties = case
    oh, ow = _out_hw(case)
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal((*shape[:2], oh, ow)).astype(dtype)
    dx = _avg_backward(kernels.avgpool2d_backward, dy, kh, kw, stride, pads, include, shape)
    dx_ref = _avg_backward(reference.avgpool2d_backward, dy, kh, kw, stride, pads, include,
                           shape)
    assert dx.dtype == dtype and not np.isnan(dx).any()
    eps = np.finfo(dtype).eps
    scale = float(np.abs(dy).max()) if dy.size else 0.0
    np.testing.assert_allclose(dx, dx_ref, rtol=8 * eps, atol=8 * eps * kh * kw * scale)
    # Backward is the transpose of the (linear) forward: <A x, dy> == <x, A^T dy>.
    x = rng.standard_normal(shape)
    y = _avg_forward(kernels.avgpool2d_forward, x, kh, kw, stride, pads, include, oh, ow)
    dx64 = _avg_backward(kernels.avgpool2d_backward, dy.astype(np.float64), kh, kw, stride,
                         pads, include, shape)
    np.testing.assert_allclose(np.sum(y * dy), np.sum(x * dx64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernel", "reference"])
def test_avgpool_divisors(impl):
    # A 4x4 image of ones, 2x2 windows at stride 2, padding 1 on top/left only, ceil mode:
    # windows start at rows/cols -1, 1, 3 (oh = ow = 3); the last is a partial window that
    # reaches one row/column past the image, where there is no padding.
    x = np.ones((1, 1, 4, 4))
    pads = (1, 1, 0, 0)
    assert conv_output_hw(4, 4, 2, 2, 2, pads, True) == (3, 3)
    y = _avg_forward(impl.avgpool2d_forward, x, 2, 2, 2, pads, False, 3, 3)
    np.testing.assert_array_equal(y, np.ones((1, 1, 3, 3)))  # the mean of ones, always
    # Counting padding, per axis the windows count 2, 2 and 1 positions (padding: yes; past
    # the padded image: no), and cover 1, 2 and 1 image positions.
    y = _avg_forward(impl.avgpool2d_forward, x, 2, 2, 2, pads, True, 3, 3)
    frac = np.array([0.5, 1.0, 1.0])
    np.testing.assert_array_equal(y[0, 0], np.outer(frac, frac))
    dx = _avg_backward(impl.avgpool2d_backward, np.ones((1, 1, 3, 3)), 2, 2, 2, pads, True,
                       x.shape)
    inv = np.array([0.5, 0.5, 0.5, 1.0])  # 1 / the count of each row's (column's) window
    np.testing.assert_array_equal(dx[0, 0], np.outer(inv, inv))
