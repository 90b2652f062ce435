"""Softmax cross-entropy, the one loss the LeNets need."""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient.

    Parameters
    ----------
    logits : ndarray, shape (N, K), float32 or float64.
    labels : ndarray, shape (N,), integer class indices in [0, K).

    Returns
    -------
    loss : float. Mean over the batch of -log softmax(logits)[label].
    dlogits : ndarray, shape (N, K), dtype of ``logits``. (softmax - onehot) / N.

    Raises
    ------
    ValueError
        Shapes disagree, the batch is empty, or a label is out of range.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape} and "
                         f"{labels.shape}")
    n, k = logits.shape
    if n == 0:
        raise ValueError("softmax_cross_entropy got an empty batch")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}), got [{labels.min()}, {labels.max()}]")
    if logits.dtype.type not in (np.float32, np.float64):
        logits = logits.astype(np.float32)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(s[:, 0]) - z[rows, labels]))
    d = e / s
    d[rows, labels] -= 1.0
    d /= n
    return loss, d.astype(logits.dtype, copy=False)


__all__ = ["softmax_cross_entropy"]
