"""The transformations of MNIST that ``bench/max_preset.py transfer`` runs the presets on:
shifted and rotated digits, checked on small random images."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
max_preset = pytest.importorskip("max_preset")


class _Fixed:
    """A stand-in generator that draws the given values (angles or offsets)."""

    def __init__(self, values):
        self.values = np.asarray(values)

    def uniform(self, lo, hi, size):
        return np.broadcast_to(self.values, size).astype(float)

    def integers(self, lo, hi, size):
        return np.broadcast_to(self.values, size).astype(int)


def _images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28)).astype(np.uint8)


def test_rotate_by_zero_is_identity():
    x = _images()
    assert np.array_equal(max_preset._rotate(x, _Fixed(0.0), 20.0), x)


@pytest.mark.parametrize("degrees, turns", [(90.0, -1), (-90.0, 1), (180.0, 2)])
def test_rotate_by_right_angles_moves_pixels_exactly(degrees, turns):
    """A right angle maps pixel centres onto pixel centres: no interpolation, every pixel kept.
    Positive angles turn the digit clockwise as displayed (row 0 at the top)."""
    x = _images()
    got = max_preset._rotate(x, _Fixed(degrees), 180.0)
    assert np.array_equal(got, np.rot90(x, turns, axes=(1, 2)))


def test_rotate_is_seeded_and_keeps_the_ink_of_centred_digits():
    x = np.zeros((50, 28, 28), np.uint8)
    x[:, 10:18, 12:16] = 200                      # a centred bar, well inside the frame
    a = max_preset._rotate(x, np.random.default_rng(3), 20.0)
    b = max_preset._rotate(x, np.random.default_rng(3), 20.0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, x)
    ink = a.reshape(50, -1).sum(1) / x.reshape(50, -1).sum(1)
    assert np.all(np.abs(ink - 1) < 0.02)


def test_shift_moves_by_the_drawn_offset_with_zeros_shifted_in():
    x = _images(3)
    got = max_preset._shift(x, _Fixed([[2], [-1]]), 4)    # dy = 2, dx = -1 for every image
    want = np.zeros_like(x)
    want[:, 2:, :27] = x[:, :26, 1:]
    assert np.array_equal(got, want)


def test_thicken_turns_a_pixel_into_a_three_by_three_block_cut_at_the_border():
    x = np.zeros((2, 28, 28), np.uint8)
    x[0, 5, 9] = 200
    x[1, 0, 27] = 90                              # a corner: the block is cut to 2 x 2
    t = max_preset._thicken(x)
    want = np.zeros_like(x)
    want[0, 4:7, 8:11] = 200
    want[1, 0:2, 26:28] = 90
    assert np.array_equal(t, want)


def test_noise_is_seeded_rounded_and_clipped():
    x = np.full((20, 28, 28), 128, np.uint8)
    x[:, :, :2] = 0
    x[:, :, -2:] = 255
    a = max_preset._add_noise(x, np.random.default_rng(5), 50.0)
    assert a.dtype == np.uint8
    assert np.array_equal(a, max_preset._add_noise(x, np.random.default_rng(5), 50.0))
    mid = a[:, :, 2:-2].astype(float)
    assert abs(mid.mean() - 128) < 2 and 45 < mid.std() < 55
    assert a[:, :, :2].min() == 0 and a[:, :, -2:].max() == 255   # clipped, not wrapped
