"""Max-pooling forward and backward over NCHW arrays (no padding)."""

import numba


@numba.njit(cache=True, nogil=True)
def _maxpool_2x2(x, oh, ow, y, arg):
    """The 2x2, stride-2 case unrolled and branch-free (the generic loop's comparisons
    mispredict; docs/KERNELS.md has the measurement). Ties go to the first maximum in row-major
    order, as in the generic loop."""
    n_img, n_ch, h, w = x.shape
    for n in range(n_img):
        for c in range(n_ch):
            src = x[n, c]
            dst = y[n, c]
            idx = arg[n, c]
            for i in range(oh):
                r0 = src[2 * i]
                r1 = src[2 * i + 1]
                for j in range(ow):
                    v0 = r0[2 * j]
                    v1 = r0[2 * j + 1]
                    v2 = r1[2 * j]
                    v3 = r1[2 * j + 1]
                    k0 = 2 * i * w + 2 * j
                    m1 = v1 > v0
                    top = v1 if m1 else v0
                    k_top = k0 + 1 if m1 else k0
                    m2 = v3 > v2
                    bot = v3 if m2 else v2
                    k_bot = k0 + w + 1 if m2 else k0 + w
                    m3 = bot > top
                    dst[i, j] = bot if m3 else top
                    idx[i, j] = k_bot if m3 else k_top


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
    if size == 2 and stride == 2:
        _maxpool_2x2(x, oh, ow, y, arg)
        return
    n_img, n_ch, h, w = x.shape
    for n in range(n_img):
        for c in range(n_ch):
            src = x[n, c]
            dst = y[n, c]
            idx = arg[n, c]
            for i in range(oh):
                y0 = i * stride
                for j in range(ow):
                    x0 = j * stride
                    best = src[y0, x0]
                    best_k = y0 * w + x0
                    for a in range(size):
                        srow = src[y0 + a]
                        for b in range(size):
                            v = srow[x0 + b]
                            if v > best:
                                best = v
                                best_k = (y0 + a) * w + x0 + b
                    dst[i, j] = best
                    idx[i, j] = best_k


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
    for n in range(n_img):
        for c in range(n_ch):
            plane = dx[n, c].reshape(-1)
            g = dy[n, c]
            idx = arg[n, c]
            plane[:] = 0.0
            for i in range(oh):
                for j in range(ow):
                    plane[idx[i, j]] += g[i, j]
