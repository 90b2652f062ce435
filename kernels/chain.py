"""One call for a whole chain of layers at batch 1: the runtime's fused path.

At batch 1 a LeNet-sized layer takes a few microseconds, about what Python spends calling it
(argument checks, one Numba dispatch per kernel, one array per output). :func:`chain_forward`
runs a whole sequence of layers in one call from a small table of operations, on one thread:
no Python between the layers and no thread pool (so nothing to wake, nothing spinning next to
the app's own work, nothing shared between Python threads calling at once).

The operations reuse the per-layer kernels themselves (:func:`kernels.sqmm._matvec_rows`,
:func:`kernels.sqmm._matmul_t_task`, :func:`kernels.conv.im2col`, the max-pooling kernels), so
a fused run computes what the serial per-layer run computes, in the same order.

Layout. Everything a chain needs is in a few flat arrays, so one compiled function serves
every model:

* ``ops`` (n_ops, :data:`N_FIELDS`) int64: one row per operation, fields below;
* ``words`` uint16: the packed entries of every compressed layer (one-byte words widened; one
  word type keeps this a single compiled function: each word type compiled the kernels again,
  and the first call took several times longer);
* ``ip`` int64: row pointers and column splits; ``fp`` float32: codebooks and biases;
* ``buf`` float32: activations and the im2col matrix (scratch, one per calling thread);
  ``ibuf`` int32: the pooling kernels' argmax output (scratch, never read).

Operation rows (offsets index the arrays above; unused fields are 0):

* :data:`OP_SQ_DENSE`: ``src, dst, n_in, n_out, (unused), words offset, words length, rowptr
  offset, index_bits, codebook offset, codebook length, bias offset (-1: none), relu``;
* :data:`OP_SQ_CONV`: ``src, dst, C, H, W, OC, K, stride, top, left, OH, OW, groups,
  (unused), words offset, words length, split_k offset, split_col offset, n_tiles + 1, block_n,
  index_bits, codebook offset, codebook length, bias offset (-1: none), relu, cols offset,
  valid (stride 1 and no padding: :func:`kernels.conv.im2col_valid`)``;
* :data:`OP_MAXPOOL`: ``src, dst, C, H, W, size, stride, top, left, OH, OW, padded``;
* :data:`OP_RELU`: ``src, dst, n``.

The NumPy twin is :func:`kernels.reference.chain_forward`.
"""

import numpy as np

from ._config import jit
from .conv import im2col, im2col_valid
from .pool import maxpool2d_forward, maxpool2d_padded_forward
from .sqmm import _matmul_t_task, _matvec_rows

OP_SQ_DENSE = 1
OP_SQ_CONV = 2
OP_MAXPOOL = 3
OP_RELU = 4
N_FIELDS = 30
"""Fields per operation row (the longest, :data:`OP_SQ_CONV`, uses 28)."""


@jit()
def _bias_relu(y, fp, b_off, relu):
    """``y += fp[b_off:b_off + y.size]`` (unless ``b_off < 0``), then ReLU when ``relu``: as
    :func:`kernels.sqmm.add_bias_relu`."""
    for i in range(y.size):
        v = y[i] + fp[b_off + i] if b_off >= 0 else y[i]
        if relu and v <= 0:
            v = np.float32(0.0)
        y[i] = v


@jit()
def _dense(words, op, ip, fp, buf):
    n_in, n_out = op[3], op[4]
    wo, wl, rp, ib = op[6], op[7], op[8], op[9]
    x = buf[op[1]:op[1] + n_in]
    y = buf[op[2]:op[2] + n_out]
    _matvec_rows(words[wo:wo + wl], ip[rp:rp + n_out + 1], 0, n_out, ib,
                 fp[op[10]:op[10] + op[11]], x, y)
    _bias_relu(y, fp, op[12], op[13] != 0)


@jit()
def _conv(words, op, ip, fp, buf):
    c, h, w, oc, k, stride = op[3], op[4], op[5], op[6], op[7], op[8]
    top, left, oh, ow, groups = op[9], op[10], op[11], op[12], op[13]
    wo, wl, sk, sc, nt = op[15], op[16], op[17], op[18], op[19]
    block_n, ib = op[20], op[21]
    codebook = fp[op[22]:op[22] + op[23]]
    n = oh * ow
    x = buf[op[1]:op[1] + c * h * w].reshape((1, c, h, w))
    cols = buf[op[26]:op[26] + c * k * k * n].reshape((c * k * k, n))
    if op[27] != 0:
        im2col_valid(x, k, k, oh, ow, cols)
    else:
        im2col(x, k, k, stride, top, left, oh, ow, cols)
    yt = buf[op[2]:op[2] + oc * n].reshape((oc, n))
    split_k = ip[sk:sk + oc * nt].reshape((oc, nt))
    split_col = ip[sc:sc + oc * nt].reshape((oc, nt))
    rows = c * k * k // groups
    ocg = oc // groups
    wd = words[wo:wo + wl]
    for g in range(groups):
        xt = cols[g * rows:(g + 1) * rows]
        for n0 in range(0, n, block_n):
            _matmul_t_task(wd, split_k, split_col, g * ocg, (g + 1) * ocg, n0,
                           min(n, n0 + block_n), ib, codebook, xt, yt)
    relu = op[25] != 0
    b_off = op[24]
    for r in range(oc):
        row = yt[r]
        b = fp[b_off + r] if b_off >= 0 else np.float32(0.0)
        for i in range(n):
            v = row[i] + b if b_off >= 0 else row[i]
            if relu and v <= 0:
                v = np.float32(0.0)
            row[i] = v


@jit()
def _maxpool(op, buf, ibuf):
    c, h, w, size, stride = op[3], op[4], op[5], op[6], op[7]
    top, left, oh, ow = op[8], op[9], op[10], op[11]
    x = buf[op[1]:op[1] + c * h * w].reshape((1, c, h, w))
    y = buf[op[2]:op[2] + c * oh * ow].reshape((1, c, oh, ow))
    arg = ibuf[:c * oh * ow].reshape((1, c, oh, ow))
    if op[12] != 0:
        maxpool2d_padded_forward(x, size, size, stride, top, left, oh, ow, y, arg)
    else:
        maxpool2d_forward(x, size, stride, oh, ow, y, arg)


@jit()
def chain_forward(ops, words, ip, fp, buf, ibuf):
    """Run the operations ``ops`` in order on one thread (module docstring for the layout).

    Parameters
    ----------
    ops : ndarray, shape (n_ops, N_FIELDS), int64. IN: the program.
    words : ndarray, uint16. IN: packed entries.
    ip : ndarray, int64. IN: row pointers and column splits.
    fp : ndarray, float32. IN: codebooks and biases.
    buf : ndarray, float32. IN/OUT: the input at the first operation's ``src``, the
        activations, the im2col matrix; the result at the last operation's ``dst``.
    ibuf : ndarray, int32. Scratch for the pooling kernels (as long as the largest pooling
        output).

    Notes
    -----
    Nothing is checked: the program's builder (:class:`dc_engine.core.fused.FusedChain`)
    checked every offset and shape once.
    """
    for i in range(ops.shape[0]):
        op = ops[i]
        kind = op[0]
        if kind == OP_SQ_DENSE:
            _dense(words, op, ip, fp, buf)
        elif kind == OP_SQ_CONV:
            _conv(words, op, ip, fp, buf)
        elif kind == OP_MAXPOOL:
            _maxpool(op, buf, ibuf)
        elif kind == OP_RELU:
            n = op[3]
            src = buf[op[1]:op[1] + n]
            dst = buf[op[2]:op[2] + n]
            for j in range(n):
                v = src[j]
                dst[j] = np.float32(0.0) if v <= 0 else v
