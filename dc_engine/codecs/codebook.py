"""Weight-sharing arithmetic on plain arrays: 1-D k-means, codebooks, indices (DC Sec. 3.1, 3.3).

Codebook convention (the compressed format relies on it): a b-bit layer has a codebook of
``2**b`` entries in which **slot 0 holds 0.0** for the pruned weights, as in the authors'
release, and slots ``1 .. 2**b - 1`` hold the ``k = 2**b - 1`` centroids of the non-zero
weights, sorted ascending. The index array has the weight's shape, dtype uint8 for b <= 8 and
uint16 above; pruned (zero) weights have index 0.

No training code here: the runtime (:mod:`dc_engine.runtime`), the payload codec and the files
use it, and :mod:`dc_engine.stages.quantize` builds the trained quantization stage on it (the
trainable tie is :class:`dc_engine.core.ties.WeightShare`).
"""

from __future__ import annotations

import logging

import numpy as np

from .. import kernels
from .._validate import check_bits, check_int, check_number

log = logging.getLogger(__name__)

INIT_METHODS = ("linear", "density", "random")


# --------------------------------------------------------------------------- validation


def check_method(method) -> str:
    """``method`` if it is one of :data:`INIT_METHODS`; ValueError otherwise."""
    if method not in INIT_METHODS:
        raise ValueError(f"unknown centroid initialisation {method!r}; use one of "
                         f"{', '.join(repr(m) for m in INIT_METHODS)}")
    return method


def _float_values(values, what: str) -> np.ndarray:
    """``values`` flattened to a contiguous float64 array; non-empty, finite."""
    a = np.asarray(values)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a real numeric array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{what} is empty; k-means needs at least one value")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} holds NaN or inf; quantize finite weights only")
    return a


def _generator(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def index_dtype(bits: int) -> np.dtype:
    """The dtype of a ``bits``-bit index array: uint8 for bits <= 8, else uint16."""
    return np.dtype(np.uint8 if check_bits(bits) <= 8 else np.uint16)


# --------------------------------------------------------------------------- array functions


def init_centroids(values: np.ndarray, k: int, method: str = "linear",
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Initial centroids for 1-D k-means (DC Sec. 3.2, Fig. 4).

    Parameters
    ----------
    values : ndarray, any shape, real. The values to cluster (flattened), finite, non-empty.
    k : int >= 1. Number of centroids.
    method : {"linear", "density", "random"}.
        - "linear": ``np.linspace(min, max, k)``, equal steps over the range (the paper's best:
          it keeps centroids for the rare large weights);
        - "density": the quantiles at levels ``(i + 0.5) / k``, i = 0..k-1 (equal steps of the
          CDF);
        - "random" (Forgy): k values drawn without replacement (with replacement if k > n).
    rng : numpy.random.Generator, optional. Used by "random" only; None means
        ``np.random.default_rng(0)``.

    Returns
    -------
    ndarray, shape (k,), float64, sorted ascending, within [min(values), max(values)].

    Raises
    ------
    ValueError
        Unknown method, empty or non-finite values, k < 1.
    TypeError
        Non-numeric values, or rng not a Generator.
    """
    method = check_method(method)
    k = check_int(k, "k", 1)
    x = _float_values(values, "values")
    if method == "linear":
        c = np.linspace(x.min(), x.max(), k)
    elif method == "density":
        c = np.quantile(x, (np.arange(k) + 0.5) / k)
    else:
        c = _generator(rng).choice(x, size=k, replace=k > x.size)
    return np.sort(np.asarray(c, dtype=np.float64))


def kmeans_1d(values: np.ndarray, k: int, init: str = "linear",
              rng: np.random.Generator | None = None, max_iter: int = 100,
              tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars, minimising the within-cluster squared error (DC Sec. 3.1).

    Parameters
    ----------
    values : ndarray, any shape, real. The values to cluster (flattened), finite, non-empty.
    k : int >= 1. Number of centroids.
    init : {"linear", "density", "random"}. See :func:`init_centroids`.
    rng : numpy.random.Generator, optional. For ``init="random"``.
    max_iter : int >= 0. Most Lloyd iterations (0: the initial centroids, assigned).
    tol : float >= 0. Also stop when no centroid moves by more than ``tol``.

    Returns
    -------
    centroids : ndarray, shape (k,), float64, sorted ascending (duplicates possible).
    labels : ndarray, shape (n,), int32. Index of each value's nearest centroid, ties to the
        lowest index (:func:`kernels.assign_sorted`), always consistent with ``centroids``.

    Raises
    ------
    ValueError, TypeError
        As :func:`init_centroids`; bad ``max_iter`` or ``tol``.

    Notes
    -----
    Each iteration assigns every value to its nearest centroid, moves each non-empty cluster's
    centroid to the mean of its members (an empty cluster keeps its centroid), and re-sorts the
    centroids; labels always come from a fresh assignment to the sorted centroids. It stops
    when the labels no longer change (then each non-empty centroid is the mean of its members
    and each label the nearest centroid: a fixed point), when no centroid moves by more than
    ``tol``, or after ``max_iter`` iterations.

    If the values hold at most k distinct numbers, the result is exact instead: the centroids
    are the distinct values, ascending, and the remaining slots repeat the largest one, so every
    value equals its centroid (the repeats get no members; ties go to the first copy).
    """
    method = check_method(init)
    k = check_int(k, "k", 1)
    max_iter = check_int(max_iter, "max_iter", 0)
    check_number(tol, "tol", 0.0)
    x = _float_values(values, "values")
    labels = np.empty(x.size, dtype=np.int32)

    distinct = np.unique(x)
    if distinct.size <= k:
        c = np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])])
        kernels.assign_sorted(x, c, labels)
        return c, labels

    c = init_centroids(x, k, method, rng)
    kernels.assign_sorted(x, c, labels)
    new_labels = np.empty_like(labels)
    sums = np.empty(k, dtype=np.float64)
    counts = np.empty(k, dtype=np.int64)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is logged after the loop)
        kernels.segment_sum(x, labels, sums, counts)
        filled = counts > 0
        new = c.copy()
        new[filled] = sums[filled] / counts[filled]
        sorted_already = bool(np.all(new[:-1] <= new[1:]))
        if not sorted_already:
            new.sort()
        kernels.assign_sorted(x, new, new_labels)
        shift = float(np.max(np.abs(new - c)))
        c = new
        done = (sorted_already and np.array_equal(new_labels, labels)) or shift <= tol
        labels, new_labels = new_labels, labels
        if done:
            break
    log.debug("kmeans_1d: n=%d k=%d init=%s, %d iterations", x.size, k, method, it)
    return c, labels


def quantize_weights(w: np.ndarray, bits: int, init: str = "linear",
                     rng: np.random.Generator | None = None,
                     max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Share the weights of one layer: a ``2**bits`` codebook and a per-weight index.

    Parameters
    ----------
    w : ndarray, any shape, float. The layer's weights; exact zeros are the pruned ones.
    bits : int in 1..16. Index width; the non-zero weights get ``2**bits - 1`` centroids.
    init : {"linear", "density", "random"}. See :func:`init_centroids`.
    rng : numpy.random.Generator, optional. For ``init="random"``.
    max_iter : int >= 0. Most k-means iterations.

    Returns
    -------
    codebook : ndarray, shape (2**bits,), float32. ``codebook[0] == 0.0``; ``codebook[1:]`` are
        the centroids of the non-zero weights, ascending (all zeros if ``w`` has none).
    idx : ndarray, shape of ``w``, uint8 (bits <= 8) or uint16. 0 where ``w == 0``, otherwise
        1 + the weight's cluster, so ``codebook[idx]`` is the shared weight.

    Raises
    ------
    ValueError
        bits not an integer in 1..16, non-finite weights, bad init or max_iter.
    TypeError
        ``w`` not a float array.

    Notes
    -----
    DC Sec. 3.1: only the non-zero weights are clustered, so pruned weights stay exactly 0.0
    (slot 0). A centroid may itself be 0.0 (e.g. the mean of -a and a); its weights then read as
    zero although their index is not 0.
    """
    bits = check_bits(bits)
    check_method(init)
    check_int(max_iter, "max_iter", 0)
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise TypeError(f"weights must be a float array, got dtype {w.dtype}")
    codebook = np.zeros(2**bits, dtype=np.float32)
    idx = np.zeros(w.shape, dtype=index_dtype(bits))
    nonzero = w != 0
    if not nonzero.any():
        return codebook, idx
    centroids, labels = kmeans_1d(w[nonzero], 2**bits - 1, init, rng, max_iter)
    codebook[1:] = centroids
    idx[nonzero] = labels + 1
    return codebook, idx


def check_index(idx, n_codes: int, what: str = "idx") -> np.ndarray:
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array (uint8/uint16 codes), got dtype "
                        f"{idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_codes):
        raise ValueError(f"{what} must lie in [0, {n_codes}) for a codebook of {n_codes} "
                         f"entries, got values in [{idx.min()}, {idx.max()}]")
    return idx


def dequantize(codebook: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The shared weights ``codebook[idx]``.

    Parameters
    ----------
    codebook : ndarray, shape (m,), float (float32 from :func:`quantize_weights`).
    idx : ndarray, any shape, integer, values in [0, m).

    Returns
    -------
    ndarray, shape of ``idx``, dtype of ``codebook``.
    """
    codebook = np.asarray(codebook)
    if codebook.ndim != 1 or codebook.dtype.kind != "f":
        raise TypeError(f"codebook must be a 1-D float array, got {codebook.dtype} with shape "
                        f"{codebook.shape}")
    return codebook[check_index(idx, codebook.size)]


def centroid_grad(grad_w: np.ndarray, idx: np.ndarray, n_codes: int) -> np.ndarray:
    """Gradient of the loss with respect to each codebook entry (DC Eq. 3).

    Parameters
    ----------
    grad_w : ndarray, float32 or float64, shape of ``idx``. dL/dW of the shared weights.
    idx : ndarray, integer, values in [0, n_codes). The weights' codebook indices.
    n_codes : int >= 1. Codebook length.

    Returns
    -------
    ndarray, shape (n_codes,), dtype of ``grad_w``. Entry k is the SUM of dL/dW over the
    weights with index k (accumulated in float64 by :func:`kernels.segment_sum`); entry 0, the
    pruned weights' slot, is 0 so that it never moves.

    Notes
    -----
    DC Eq. 3: dL/dC_k = sum_ij dL/dW_ij 1(I_ij = k). The sum, not the mean: a centroid shared
    by more weights takes a larger step.
    """
    grad_w = np.asarray(grad_w)
    if grad_w.dtype.kind != "f":
        raise TypeError(f"grad_w must be a float array, got dtype {grad_w.dtype}")
    n_codes = check_int(n_codes, "n_codes", 1)
    idx = check_index(idx, n_codes)
    if grad_w.shape != idx.shape:
        raise ValueError(f"grad_w has shape {grad_w.shape} but idx has shape {idx.shape}; they "
                         "must match (one index per weight)")
    sums = np.empty(n_codes, dtype=np.float64)
    counts = np.empty(n_codes, dtype=np.int64)
    kernels.segment_sum(np.ascontiguousarray(grad_w, dtype=np.float64).reshape(-1),
                        np.ascontiguousarray(idx, dtype=np.int32).reshape(-1), sums, counts)
    sums[0] = 0.0
    return sums.astype(grad_w.dtype)


def distinct_nonzero(w: np.ndarray) -> int:
    """Number of distinct non-zero values in ``w`` (at most ``2**b - 1`` for a b-bit layer)."""
    w = np.asarray(w)
    return int(np.unique(w[w != 0]).size)


__all__ = ["INIT_METHODS", "check_method", "check_index", "index_dtype", "init_centroids",
           "kmeans_1d", "quantize_weights", "dequantize", "centroid_grad", "distinct_nonzero"]
