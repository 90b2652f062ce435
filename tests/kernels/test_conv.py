"""im2col / col2im kernels against their NumPy twins in kernels.reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.kernels import reference

DTYPES = [np.float32, np.float64]


@st.composite
def conv_cases(draw):
    """A valid (x shape, kh, kw, stride, padding, dtype, seed) for a convolution window;
    ``padding`` is an int (every side) or (top, left, bottom, right)."""
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    if draw(st.booleans()):
        padding = draw(st.integers(0, 2))
        pads = (padding,) * 4
    else:
        padding = pads = tuple(draw(st.lists(st.integers(0, 3), min_size=4, max_size=4)))
    stride = draw(st.integers(1, 3))
    kh = draw(st.integers(1, min(4, h + pads[0] + pads[2])))
    kw = draw(st.integers(1, min(4, w + pads[1] + pads[3])))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    return (n, c, h, w), kh, kw, stride, padding, dtype, seed


def _pads(padding):
    return (padding,) * 4 if isinstance(padding, int) else tuple(padding)


def _out_hw(shape, kh, kw, stride, padding):
    _, _, h, w = shape
    top, left, bottom, right = _pads(padding)
    return (h + top + bottom - kh) // stride + 1, (w + left + right - kw) // stride + 1


def _im2col(fn, x, kh, kw, stride, padding):
    oh, ow = _out_hw(x.shape, kh, kw, stride, padding)
    n, c = x.shape[:2]
    top, left = _pads(padding)[:2]
    # NaN-filled so that an entry the function forgets to write shows up.
    cols = np.full((c * kh * kw, n * oh * ow), np.nan, dtype=x.dtype)
    fn(x, kh, kw, stride, top, left, oh, ow, cols)
    return cols


def _col2im(fn, cols, shape, kh, kw, stride, padding):
    oh, ow = _out_hw(shape, kh, kw, stride, padding)
    top, left = _pads(padding)[:2]
    dx = np.full(shape, np.nan, dtype=cols.dtype)
    fn(cols, kh, kw, stride, top, left, oh, ow, dx)
    return dx


@given(conv_cases())
def test_im2col_equals_reference(case):
    shape, kh, kw, stride, padding, dtype, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    got = _im2col(kernels.im2col, x, kh, kw, stride, padding)
    want = _im2col(reference.im2col, x, kh, kw, stride, padding)
    oh, ow = _out_hw(shape, kh, kw, stride, padding)
    assert got.shape == (shape[1] * kh * kw, shape[0] * oh * ow)
    assert got.dtype == dtype
    # Pure copying: bit-identical, and every entry written (no NaN left).
    np.testing.assert_array_equal(got, want)
    assert not np.isnan(got).any()


@given(conv_cases())
def test_col2im_equals_reference(case):
    shape, kh, kw, stride, padding, dtype, seed = case
    n, c = shape[:2]
    oh, ow = _out_hw(shape, kh, kw, stride, padding)
    rng = np.random.default_rng(seed)
    cols = rng.standard_normal((c * kh * kw, n * oh * ow)).astype(dtype)
    got = _col2im(kernels.col2im, cols, shape, kh, kw, stride, padding)
    want = _col2im(reference.col2im, cols, shape, kh, kw, stride, padding)
    assert got.shape == shape
    assert got.dtype == dtype
    assert not np.isnan(got).any()
    # Sums of at most kh*kw terms, added in a different order: allow a few ulps per term.
    eps = np.finfo(dtype).eps
    scale = float(np.abs(cols).max()) if cols.size else 0.0
    np.testing.assert_allclose(got, want, rtol=4 * eps, atol=4 * eps * kh * kw * scale)


@given(conv_cases())
def test_col2im_is_adjoint_of_im2col(case):
    shape, kh, kw, stride, padding, _, seed = case
    n, c = shape[:2]
    oh, ow = _out_hw(shape, kh, kw, stride, padding)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    cols = rng.standard_normal((c * kh * kw, n * oh * ow))
    lhs = float(np.sum(_im2col(kernels.im2col, x, kh, kw, stride, padding) * cols))
    rhs = float(np.sum(x * _col2im(kernels.col2im, cols, shape, kh, kw, stride, padding)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * cols.size)


def test_im2col_known_layout():
    # One 3x3 image, 2x2 kernel, stride 1, padding 0: column j is the j-th window, row-major.
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    cols = _im2col(kernels.im2col, x, 2, 2, 1, 0)
    want = np.array([[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]], dtype=np.float64)
    np.testing.assert_array_equal(cols, want)


def test_im2col_asymmetric_padding_known_layout():
    # 2x2 image, 2x2 kernel, one row of zeros above and one column to the right only.
    x = np.arange(1, 5, dtype=np.float64).reshape(1, 1, 2, 2)
    cols = _im2col(kernels.im2col, x, 2, 2, 1, (1, 0, 0, 1))
    want = np.array([[0, 0, 1, 2], [0, 0, 2, 0], [1, 2, 3, 4], [2, 0, 4, 0]], dtype=np.float64)
    np.testing.assert_array_equal(cols, want)


def test_im2col_padding_is_zero():
    # 1x1 image, 3x3 kernel, padding 1: only the centre of the single window sees the pixel.
    x = np.full((1, 1, 1, 1), 7.0, dtype=np.float32)
    cols = _im2col(kernels.im2col, x, 3, 3, 1, 1)
    want = np.zeros((9, 1), dtype=np.float32)
    want[4, 0] = 7.0
    np.testing.assert_array_equal(cols, want)


@pytest.mark.parametrize("size", [1, 2, 5, 9])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_conv_output_size_counts_window_positions(size, k, stride, padding):
    if size + 2 * padding < k:
        return
    positions = len(range(0, size + 2 * padding - k + 1, stride))
    assert kernels.conv_output_size(size, k, stride, padding) == positions


@st.composite
def valid_cases(draw):
    """Stride 1, no padding: the cases the fast ``*_valid`` kernels serve."""
    shape, kh, kw, _, _, dtype, seed = draw(conv_cases())
    kh, kw = min(kh, shape[2]), min(kw, shape[3])
    return shape, kh, kw, dtype, seed


@given(valid_cases())
def test_im2col_valid_equals_reference(case):
    shape, kh, kw, dtype, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    oh, ow = _out_hw(shape, kh, kw, 1, 0)
    n, c = shape[:2]
    got = np.full((c * kh * kw, n * oh * ow), np.nan, dtype=dtype)
    want = np.full_like(got, np.nan)
    kernels.im2col_valid(x, kh, kw, oh, ow, got)
    reference.im2col_valid(x, kh, kw, oh, ow, want)
    np.testing.assert_array_equal(got, want)
    assert not np.isnan(got).any()


@given(valid_cases())
def test_col2im_valid_equals_reference(case):
    shape, kh, kw, dtype, seed = case
    oh, ow = _out_hw(shape, kh, kw, 1, 0)
    n, c = shape[:2]
    cols = np.random.default_rng(seed).standard_normal((c * kh * kw, n * oh * ow)).astype(dtype)
    got = np.full(shape, np.nan, dtype=dtype)
    want = np.full(shape, np.nan, dtype=dtype)
    kernels.col2im_valid(cols, kh, kw, oh, ow, got)
    reference.col2im_valid(cols, kh, kw, oh, ow, want)
    assert not np.isnan(got).any()
    eps = np.finfo(dtype).eps
    scale = float(np.abs(cols).max()) if cols.size else 0.0
    np.testing.assert_allclose(got, want, rtol=4 * eps, atol=4 * eps * kh * kw * scale)
