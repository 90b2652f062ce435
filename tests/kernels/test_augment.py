"""shift_images kernel against its NumPy twin in kernels.reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dc_engine import kernels
from dc_engine.kernels import reference

DTYPES = [np.float32, np.float64]


@st.composite
def shift_cases(draw, far: bool):
    """(x, shift_y, shift_x): shifts within the image side, or (``far``) up to twice it plus one."""
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    my, mx = (2 * h + 1, 2 * w + 1) if far else (h, w)
    sy = draw(st.lists(st.integers(-my, my), min_size=n, max_size=n))
    sx = draw(st.lists(st.integers(-mx, mx), min_size=n, max_size=n))
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)
    return x, np.array(sy, dtype=np.int32), np.array(sx, dtype=np.int32)


def _shift(fn, x, sy, sx):
    out = np.full_like(x, np.nan)
    fn(x, sy, sx, out)
    return out


@given(shift_cases(far=False))
def test_shift_images_equals_reference(case):
    x, sy, sx = case
    got = _shift(kernels.shift_images, x, sy, sx)
    want = _shift(reference.shift_images, x, sy, sx)
    assert got.shape == x.shape
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, want)


@given(shift_cases(far=True))
def test_shift_images_far_shifts_equal_reference(case):
    # Shifts longer than the image: everything moves out and the output is all zeros.
    x, sy, sx = case
    got = _shift(kernels.shift_images, x, sy, sx)
    want = _shift(reference.shift_images, x, sy, sx)
    np.testing.assert_array_equal(got, want)


@given(shift_cases(far=True))
def test_shift_images_beyond_the_image_gives_zeros(case):
    x, sy, sx = case
    got = _shift(kernels.shift_images, x, sy, sx)
    h, w = x.shape[2:]
    gone = (np.abs(sy) >= h) | (np.abs(sx) >= w)
    np.testing.assert_array_equal(got[gone], np.zeros_like(got[gone]))
    assert not np.isnan(got).any()


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernel", "reference"])
def test_shift_images_known_example(impl):
    # Image 0 moves one pixel down and one left; image 1 stays.
    x = np.stack([np.arange(9.0).reshape(1, 3, 3), np.arange(9.0).reshape(1, 3, 3)])
    out = _shift(impl.shift_images, x, np.array([1, 0], np.int32), np.array([-1, 0], np.int32))
    want0 = np.array([[0, 0, 0], [1, 2, 0], [4, 5, 0]], dtype=np.float64)
    np.testing.assert_array_equal(out[0, 0], want0)
    np.testing.assert_array_equal(out[1], x[1])
