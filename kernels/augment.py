"""Data augmentation: integer translations of NCHW images with zero fill."""

from ._config import jit


@jit()
def shift_images(x, shift_y, shift_x, out):
    """Translate image n by (shift_y[n], shift_x[n]) pixels, filling with zeros.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64. IN.
    shift_y, shift_x : ndarray, shape (N,), int32. IN. Positive moves content down / right.
    out : ndarray, shape (N, C, H, W), dtype of ``x``. OUT, fully written.
    """
    n_img, n_ch, h, w = x.shape
    for n in range(n_img):
        sy = shift_y[n]
        sx = shift_x[n]
        for c in range(n_ch):
            for i in range(h):
                src_i = i - sy
                for j in range(w):
                    src_j = j - sx
                    if 0 <= src_i < h and 0 <= src_j < w:
                        out[n, c, i, j] = x[n, c, src_i, src_j]
                    else:
                        out[n, c, i, j] = 0.0
