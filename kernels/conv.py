"""im2col / col2im for NCHW convolution through one BLAS matmul per batch.

Layout (Caffe's, batch-wide): for an input ``x`` of shape (N, C, H, W) and a (KH, KW) kernel at
``stride`` with zero padding ``pad_top`` above and ``pad_left`` left of the image (below and
right: as far as the OH x OW windows reach), the column matrix ``cols`` has shape
(C * KH * KW, N * OH * OW). Row ``(c * KH + a) * KW + b`` holds input pixel
(c, i*stride - pad_top + a, j*stride - pad_left + b) for every output position, column
``(n * OH + i) * OW + j``; so
``w.reshape(OC, -1) @ cols`` is the convolution output in (OC, N, OH, OW) order.

The kernels are serial on purpose: on a 2-core machine, Numba worker threads running next to
OpenBLAS's spinning threads made a LeNet-5 step several times slower (docs/KERNELS.md); BLAS
gets the cores, these memory-bound loops run in between.
"""


from ._config import jit


@jit()
def _valid_cols(b, stride, pad_left, ow, w):
    """First and one-past-last output column j whose input column j*stride-pad_left+b is inside
    [0, w)."""
    j_lo = 0
    while j_lo < ow and j_lo * stride - pad_left + b < 0:
        j_lo += 1
    j_hi = ow
    while j_hi > j_lo and (j_hi - 1) * stride - pad_left + b >= w:
        j_hi -= 1
    return j_lo, j_hi


@jit()
def im2col(x, kh, kw, stride, pad_top, pad_left, oh, ow, cols):
    """Unfold receptive fields into columns (Caffe's layout, one batch-wide matrix).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64, C-contiguous. IN.
    kh, kw : int. Kernel height and width.
    stride : int. Step.
    pad_top, pad_left : int. Zero padding above and left of the image; the padding below and
        right is whatever ``oh`` and ``ow`` reach (window positions past the image read 0).
    oh, ow : int. Output height and width, e.g.
        ``(H + pad_top + pad_bottom - kh) // stride + 1``.
    cols : ndarray, shape (C * kh * kw, N * oh * ow), dtype of ``x``. OUT, fully written.
    """
    n_img, n_ch, h, w = x.shape
    p = oh * ow
    for c in range(n_ch):
        for a in range(kh):
            for b in range(kw):
                k = (c * kh + a) * kw + b
                j_lo, j_hi = _valid_cols(b, stride, pad_left, ow, w)
                for n in range(n_img):
                    for i in range(oh):
                        base = n * p + i * ow
                        y = i * stride - pad_top + a
                        if y < 0 or y >= h:
                            for j in range(ow):
                                cols[k, base + j] = 0.0
                            continue
                        for j in range(j_lo):
                            cols[k, base + j] = 0.0
                        x0 = b - pad_left
                        for j in range(j_lo, j_hi):
                            cols[k, base + j] = x[n, c, y, j * stride + x0]
                        for j in range(j_hi, ow):
                            cols[k, base + j] = 0.0

@jit()
def col2im(cols, kh, kw, stride, pad_top, pad_left, oh, ow, dx):
    """Fold columns back, adding overlapping receptive fields (the adjoint of :func:`im2col`).

    Parameters
    ----------
    cols : ndarray, shape (C * kh * kw, N * oh * ow), float32 or float64. IN.
    kh, kw, stride, pad_top, pad_left, oh, ow : int. As in :func:`im2col`.
    dx : ndarray, shape (N, C, H, W), dtype of ``cols``. OUT, fully written (zeroed first).
    """
    n_img, n_ch, h, w = dx.shape
    p = oh * ow
    dx[:] = 0.0
    for c in range(n_ch):
        for a in range(kh):
            for b in range(kw):
                k = (c * kh + a) * kw + b
                j_lo, j_hi = _valid_cols(b, stride, pad_left, ow, w)
                x0 = b - pad_left
                for n in range(n_img):
                    for i in range(oh):
                        y = i * stride - pad_top + a
                        if y < 0 or y >= h:
                            continue
                        base = n * p + i * ow
                        for j in range(j_lo, j_hi):
                            dx[n, c, y, j * stride + x0] += cols[k, base + j]


@jit()
def im2col_valid(x, kh, kw, oh, ow, cols):
    """:func:`im2col` for stride 1 and no padding (LeNet's convolutions), several times faster:
    every inner loop is a contiguous, bounds-free copy that vectorises.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64, C-contiguous. IN.
    kh, kw : int. Kernel height and width.
    oh, ow : int. ``H - kh + 1`` and ``W - kw + 1``.
    cols : ndarray, shape (C * kh * kw, N * oh * ow), dtype of ``x``. OUT, fully written.
    """
    n_img, n_ch, h, w = x.shape
    p = oh * ow
    for c in range(n_ch):
        for a in range(kh):
            for b in range(kw):
                row = cols[(c * kh + a) * kw + b]
                for n in range(n_img):
                    src = x[n, c]
                    o = n * p
                    for i in range(oh):
                        srow = src[i + a]
                        for j in range(ow):
                            row[o + j] = srow[j + b]
                        o += ow


@jit()
def col2im_valid(cols, kh, kw, oh, ow, dx):
    """:func:`col2im` for stride 1 and no padding (the adjoint of :func:`im2col_valid`).

    Parameters
    ----------
    cols : ndarray, shape (C * kh * kw, N * oh * ow), float32 or float64. IN.
    kh, kw, oh, ow : int. As in :func:`im2col_valid`.
    dx : ndarray, shape (N, C, H, W), dtype of ``cols``. OUT, fully written (zeroed first).
    """
    n_img, n_ch, h, w = dx.shape
    p = oh * ow
    dx[:] = 0.0
    for n in range(n_img):
        for c in range(n_ch):
            dst = dx[n, c]
            for a in range(kh):
                for b in range(kw):
                    row = cols[(c * kh + a) * kw + b]
                    o = n * p
                    for i in range(oh):
                        drow = dst[i + a]
                        for j in range(ow):
                            drow[j + b] += row[o + j]
                        o += ow


def conv_output_size(size: int, k: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling window along one axis."""
    return (size + 2 * padding - k) // stride + 1


__all__ = ["im2col", "col2im", "im2col_valid", "col2im_valid", "conv_output_size"]
