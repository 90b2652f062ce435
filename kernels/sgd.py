"""Fused SGD-with-momentum updates (Caffe's rule), one pass over memory, no temporaries."""


from ._config import jit


@jit()
def sgd_momentum(w, g, v, lr, momentum, decay):
    """v <- momentum * v - lr * (g + decay * w);  w <- w + v.

    Parameters
    ----------
    w : ndarray, shape (n,), float32 or float64, contiguous. INOUT: the parameter.
    g : ndarray, shape (n,), dtype of ``w``. IN: its gradient.
    v : ndarray, shape (n,), dtype of ``w``. INOUT: the momentum buffer.
    lr, momentum, decay : float. Learning rate, momentum, L2 weight decay.
    """
    for i in range(w.shape[0]):
        vi = momentum * v[i] - lr * (g[i] + decay * w[i])
        v[i] = vi
        w[i] += v[i]  # the stored (rounded) momentum, as the reference


@jit()
def sgd_momentum_masked(w, g, v, mask, lr, momentum, decay):
    """As :func:`sgd_momentum` where ``mask`` is true; elsewhere ``w`` and ``v`` become exactly
    +0.0 (pruned connections stay pruned: gradient and momentum are masked).

    Parameters
    ----------
    w, g, v : as in :func:`sgd_momentum`.
    mask : ndarray, shape (n,), bool. IN: true for the kept entries.
    lr, momentum, decay : float.
    """
    for i in range(w.shape[0]):
        if mask[i]:
            vi = momentum * v[i] - lr * (g[i] + decay * w[i])
            v[i] = vi
            w[i] += v[i]
        else:
            v[i] = 0.0
            w[i] = 0.0
