"""Aligned scratch arrays for the products (no heavy imports).

The sparse-quantized products read their inputs fastest from buffers that start on a cache
line (docs/KERNELS.md, "Alignment"); NumPy only guarantees 16 bytes.
"""

from __future__ import annotations

import math
import threading

import numpy as np

ALIGN = 64
"""Byte alignment of the inputs the products build: a cache line, so the AVX-512 batch kernel's
64-byte loads of an ``Xt`` row never straddle two lines."""


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data (if any) starts on an :data:`ALIGN`-byte
    boundary.

    Parameters
    ----------
    shape : int or tuple of int.
    dtype : NumPy dtype, default float32.

    Returns
    -------
    ndarray of ``shape`` and ``dtype``, C-contiguous, aligned.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -buf.ctypes.data % ALIGN
    return buf[start:start + nbytes].view(dtype).reshape(shape)


class Scratch:
    """A reusable aligned float32 buffer, one per thread (a fresh multi-MB array per call costs
    more in page faults than the product that fills it)."""

    def __init__(self):
        self._local = threading.local()

    def get(self, shape: tuple[int, int]) -> np.ndarray:
        """An aligned float32 array of ``shape`` (contents undefined), reused across calls."""
        size = shape[0] * shape[1]
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < size:
            buf = aligned_empty(size)
            self._local.buf = buf
        return buf[:size].reshape(shape)

    def __deepcopy__(self, memo) -> Scratch:  # a copy of a layer gets its own buffers
        return Scratch()

    def __reduce__(self):  # thread-locals do not pickle; the buffers are only a cache
        return (Scratch, ())


__all__ = ["ALIGN", "aligned_empty", "Scratch"]
