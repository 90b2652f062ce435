"""Max-pooling forward and backward over NCHW arrays (no padding)."""

import numba


@numba.njit(cache=True, nogil=True)
def maxpool2d_forward(x, size, stride, oh, ow, y, arg):
    """Max over ``size`` x ``size`` windows at ``stride``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64. IN.
    size, stride : int. Window side and step.
    oh, ow : int. Output height and width, ``(H - size) // stride + 1``.
    y : ndarray, shape (N, C, oh, ow), dtype of ``x``. OUT: the maxima.
    arg : ndarray, shape (N, C, oh, ow), int32. OUT: flat index ``row * W + col`` in the
        (H, W) plane of the first maximum in row-major window order (ties go to the first).
    """
    n_img, n_ch, h, w = x.shape
    for nc in range(n_img * n_ch):
        n = nc // n_ch
        c = nc % n_ch
        for i in range(oh):
            for j in range(ow):
                y0 = i * stride
                x0 = j * stride
                best = x[n, c, y0, x0]
                best_k = y0 * w + x0
                for a in range(size):
                    for b in range(size):
                        v = x[n, c, y0 + a, x0 + b]
                        if v > best:
                            best = v
                            best_k = (y0 + a) * w + x0 + b
                y[n, c, i, j] = best
                arg[n, c, i, j] = best_k


@numba.njit(cache=True, nogil=True)
def maxpool2d_backward(dy, arg, dx):
    """Route each output gradient to the input position that won the max.

    Parameters
    ----------
    dy : ndarray, shape (N, C, oh, ow), float32 or float64. IN.
    arg : ndarray, shape (N, C, oh, ow), int32. IN, from :func:`maxpool2d_forward`.
    dx : ndarray, shape (N, C, H, W), dtype of ``dy``. OUT, fully written (zeroed first).
    """
    n_img, n_ch, oh, ow = dy.shape
    w = dx.shape[3]
    for nc in range(n_img * n_ch):
        n = nc // n_ch
        c = nc % n_ch
        dx[n, c] = 0.0
        for i in range(oh):
            for j in range(ow):
                k = arg[n, c, i, j]
                dx[n, c, k // w, k % w] += dy[n, c, i, j]
