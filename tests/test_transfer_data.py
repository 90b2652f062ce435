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
