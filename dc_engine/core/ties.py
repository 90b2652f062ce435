"""Ties: a parameter computed from other trainable arrays (the layer contract's ``ties``).

:class:`WeightShare` is the tie of trained quantization (Deep Compression Sec. 3): ``W =
codebook[idx]``, and the optimizer trains the codebook with the summed gradients of the weights
that share each entry (DC Eq. 3). It lives here, not with the quantization stage, because the
dense model file stores shared weights as codebook and index and gives the tie back on load.
No training code is imported here.
"""

from __future__ import annotations

import numpy as np

from ..codecs.codebook import centroid_grad, check_index, index_dtype
from ..limits import MAX_BITS


class Tie:
    """A parameter computed from other trainable arrays (subclass for weight sharing).

    The optimizer (:class:`dc_engine.core.optim.SGD`) asks :meth:`backward` to map the
    parameter's gradient onto the trainable arrays, updates those in place, then lets
    :meth:`apply` rewrite the parameter. ``weight_decay`` says whether L2 decay applies to the
    trainable arrays.
    """

    weight_decay = False

    def trainables(self) -> dict[str, np.ndarray]:
        """The arrays SGD updates in place, by name."""
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> dict[str, np.ndarray]:
        """Map the parameter's gradient onto each trainable array's gradient."""
        raise NotImplementedError

    def apply(self, param: np.ndarray) -> None:
        """Rewrite ``param`` in place from the trainable arrays."""
        raise NotImplementedError


class WeightShare(Tie):
    """A weight tensor shared through a codebook: ``W = codebook[idx]`` (DC Sec. 3).

    The optimizer trains ``codebook`` in place with the summed gradient of
    :func:`~dc_engine.codecs.codebook.centroid_grad` (DC Eq. 3, no weight decay) and then
    rewrites the weights with :meth:`apply`.

    Parameters
    ----------
    codebook : ndarray, shape (2**bits,), float32 or float64, bits in 1..16, ``codebook[0]``
        == 0.0. Copied; the copy is the trainable array.
    idx : ndarray, the weight's shape, uint8 (bits <= 8) or uint16, values in
        [0, 2**bits). Copied.

    Attributes
    ----------
    codebook, idx : the arrays above.
    bits : int. The index width.
    """

    weight_decay = False

    def __init__(self, codebook: np.ndarray, idx: np.ndarray):
        codebook = np.asarray(codebook)
        if codebook.dtype not in (np.float32, np.float64):
            raise TypeError(f"codebook must be float32 or float64, got {codebook.dtype}")
        m = codebook.size
        if codebook.ndim != 1 or m < 2 or m > 2**MAX_BITS or m & (m - 1):
            raise ValueError(f"codebook must be 1-D with 2**bits entries, bits in 1..{MAX_BITS}, "
                             f"got shape {codebook.shape}")
        if codebook[0] != 0:
            raise ValueError(f"codebook[0] is reserved for the pruned weights and must be 0.0, "
                             f"got {codebook[0]}")
        self.bits = m.bit_length() - 1
        idx = np.asarray(idx)
        want = index_dtype(self.bits)
        if idx.dtype != want:
            raise TypeError(f"idx of a {self.bits}-bit codebook must be {want}, got {idx.dtype}; "
                            f"convert with idx.astype(np.{want})")
        check_index(idx, m)
        self.codebook = np.array(codebook, copy=True, order="C")
        self.codebook[0] = 0.0  # +0.0, also if given -0.0
        self.idx = np.array(idx, copy=True, order="C")

    def trainables(self) -> dict[str, np.ndarray]:
        """``{"codebook": codebook}``, updated in place by the optimizer."""
        return {"codebook": self.codebook}

    def backward(self, grad: np.ndarray) -> dict[str, np.ndarray]:
        """``{"codebook": dL/dC}`` from ``grad`` = dL/dW (shape of ``idx``); DC Eq. 3."""
        g = centroid_grad(grad, self.idx, self.codebook.size)
        return {"codebook": g.astype(self.codebook.dtype, copy=False)}

    def apply(self, param: np.ndarray) -> None:
        """Write ``codebook[idx]`` into ``param`` (shape of ``idx``) in place."""
        if param.shape != self.idx.shape:
            raise ValueError(f"parameter has shape {param.shape} but the shared index has "
                             f"{self.idx.shape}")
        param[...] = self.codebook[self.idx]

    def __repr__(self) -> str:
        return f"WeightShare(bits={self.bits}, shape={self.idx.shape})"


__all__ = ["Tie", "WeightShare"]
