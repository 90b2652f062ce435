"""Pooling forward and backward over NCHW arrays: max pooling (unpadded, and padded or ceil
mode) and average pooling (zero padding, ONNX AveragePool semantics)."""


from ._config import jit


@jit()
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


@jit()
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


@jit()
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


@jit()
def maxpool2d_padded_forward(x, kh, kw, stride, pad_top, pad_left, oh, ow, y, arg):
    """Max over ``kh`` x ``kw`` windows at ``stride`` with padding that never wins (it acts as
    -inf, as in ONNX MaxPool and PyTorch): each window is clipped to the image.

    Window ``(i, j)`` covers rows ``i * stride - pad_top`` + [0, kh) and columns
    ``j * stride - pad_left`` + [0, kw); the bottom and right padding (also the partial windows
    of ceil mode) are what lies past the image, so they need no argument.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64. IN.
    kh, kw : int >= 1. Window height and width.
    stride : int >= 1. Window step along both axes.
    pad_top, pad_left : int, 0 <= pad_top < kh, 0 <= pad_left < kw. Padding before the image.
    oh, ow : int. Output height and width; every window must overlap the image (true when
        each pad is smaller than the window and the last window starts inside the image or
        its top/left padding, as ``conv_output_hw`` counts).
    y : ndarray, shape (N, C, oh, ow), dtype of ``x``. OUT: the maxima.
    arg : ndarray, shape (N, C, oh, ow), int32. OUT: flat index ``row * W + col`` in the
        (H, W) plane of the first maximum in row-major window order (never a padded position);
        :func:`maxpool2d_backward` takes it.
    """
    n_img, n_ch, h, w = x.shape
    for n in range(n_img):
        for c in range(n_ch):
            src = x[n, c]
            dst = y[n, c]
            idx = arg[n, c]
            for i in range(oh):
                r0 = i * stride - pad_top
                r_lo = max(r0, 0)
                r_hi = min(r0 + kh, h)
                for j in range(ow):
                    c0 = j * stride - pad_left
                    c_lo = max(c0, 0)
                    c_hi = min(c0 + kw, w)
                    best = src[r_lo, c_lo]
                    best_k = r_lo * w + c_lo
                    for r in range(r_lo, r_hi):
                        srow = src[r]
                        for col in range(c_lo, c_hi):
                            v = srow[col]
                            if v > best:
                                best = v
                                best_k = r * w + col
                    dst[i, j] = best
                    idx[i, j] = best_k


@jit()
def _avg_divisor(r0, c0, kh, kw, h, w, pad_bottom, pad_right, count_include_pad):
    """How many positions the average of the window at (r0, c0) divides by (see
    :func:`avgpool2d_forward`)."""
    if count_include_pad:
        return (min(r0 + kh, h + pad_bottom) - r0) * (min(c0 + kw, w + pad_right) - c0)
    return (min(r0 + kh, h) - max(r0, 0)) * (min(c0 + kw, w) - max(c0, 0))


@jit()
def avgpool2d_forward(x, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right,
                      count_include_pad, oh, ow, y):
    """Average over ``kh`` x ``kw`` windows at ``stride`` with zero padding (ONNX AveragePool,
    PyTorch ``avg_pool2d``).

    Window ``(i, j)`` covers rows ``r0 = i * stride - pad_top`` + [0, kh) and columns
    ``c0 = j * stride - pad_left`` + [0, kw). Its sum over the image positions it covers
    (padding adds 0; sums run in float64) is divided by

    - ``count_include_pad`` false: the number of image positions in the window;
    - ``count_include_pad`` true: the number of positions of the window inside the padded
      image, rows [-pad_top, H + pad_bottom) and columns [-pad_left, W + pad_right); a
      partial window of ceil mode that reaches past it does not count what lies beyond.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64. IN.
    kh, kw : int >= 1. Window height and width.
    stride : int >= 1. Window step along both axes.
    pad_top, pad_left, pad_bottom, pad_right : int, each smaller than the window side along
        its axis. Zero padding around the image.
    count_include_pad : bool. Whether padded positions count in the divisor (see above).
    oh, ow : int. Output height and width; every window must overlap the image (see
        :func:`maxpool2d_padded_forward`).
    y : ndarray, shape (N, C, oh, ow), dtype of ``x``. OUT: the averages.
    """
    n_img, n_ch, h, w = x.shape
    for n in range(n_img):
        for c in range(n_ch):
            src = x[n, c]
            dst = y[n, c]
            for i in range(oh):
                r0 = i * stride - pad_top
                r_lo = max(r0, 0)
                r_hi = min(r0 + kh, h)
                for j in range(ow):
                    c0 = j * stride - pad_left
                    c_lo = max(c0, 0)
                    c_hi = min(c0 + kw, w)
                    acc = 0.0
                    for r in range(r_lo, r_hi):
                        srow = src[r]
                        for col in range(c_lo, c_hi):
                            acc += srow[col]
                    dst[i, j] = acc / _avg_divisor(r0, c0, kh, kw, h, w, pad_bottom, pad_right,
                                                   count_include_pad)


@jit()
def avgpool2d_backward(dy, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right,
                       count_include_pad, dx):
    """Spread each output gradient evenly over the image positions of its window, divided by
    the divisor of :func:`avgpool2d_forward` (padded positions get nothing).

    Parameters
    ----------
    dy : ndarray, shape (N, C, oh, ow), float32 or float64. IN.
    kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right, count_include_pad : as given to
        :func:`avgpool2d_forward`.
    dx : ndarray, shape (N, C, H, W), dtype of ``dy``. OUT, fully written (zeroed first).
    """
    n_img, n_ch, oh, ow = dy.shape
    h, w = dx.shape[2], dx.shape[3]
    for n in range(n_img):
        for c in range(n_ch):
            g = dy[n, c]
            plane = dx[n, c]
            plane[:, :] = 0.0
            for i in range(oh):
                r0 = i * stride - pad_top
                r_lo = max(r0, 0)
                r_hi = min(r0 + kh, h)
                for j in range(ow):
                    c0 = j * stride - pad_left
                    c_lo = max(c0, 0)
                    c_hi = min(c0 + kw, w)
                    share = g[i, j] / _avg_divisor(r0, c0, kh, kw, h, w, pad_bottom, pad_right,
                                                   count_include_pad)
                    for r in range(r_lo, r_hi):
                        for col in range(c_lo, c_hi):
                            plane[r, col] += share
