"""One call for a whole chain of layers at batch 1: the runtime's fused path.

At batch 1 a LeNet-sized layer takes a few microseconds, about what Python spends calling it
(argument checks, one Numba dispatch per kernel, one array per output). :func:`chain_forward`
runs a whole sequence of layers in one call from a small table of operations, on one thread:
no Python between the layers and no thread pool (so nothing to wake, nothing spinning next to
the app's own work, nothing shared between Python threads calling at once).

Dense layers run the per-layer kernel itself (:func:`kernels.sqmm._matvec_rows`); convolutions
read the input in place instead of building the im2col matrix, with the products' sums formed
exactly as :func:`kernels.sqmm._matmul_t_task` forms them; max pooling keeps no argmax. So a
fused run computes what the serial per-layer run with the scalar kernels computes, bit for bit
(a test checks it on random chains; it rests on LLVM forming the same fast-math sums in both).

Layout. Everything a chain needs is in a few flat arrays, so one compiled function serves
every model:

* ``ops`` (n_ops, :data:`N_FIELDS`) int64: one row per operation, fields below;
* ``words`` uint16: the packed entries of every compressed layer (one-byte words widened; one
  word type keeps this a single compiled function: each word type compiled the kernels again,
  and the first call took several times longer);
* ``ip`` int64: row pointers and column splits; ``fp`` float32: codebooks and biases;
* ``buf`` float32: activations and a zero-padded copy of a padded convolution's input
  (scratch, one per calling thread);
  ``ibuf`` int32: the pooling kernels' argmax output (scratch, never read).

Operation rows (offsets index the arrays above; unused fields are 0):

* :data:`OP_SQ_DENSE`: ``src, dst, n_in, n_out, (unused), words offset, words length, rowptr
  offset, index_bits, codebook offset, codebook length, bias offset (-1: none), relu``;
* :data:`OP_SQ_CONV`: ``src, dst, C, H, W, OC, K, stride, top, left, OH, OW, groups,
  (unused), words offset, words length, split_k offset, split_col offset, n_tiles + 1, block_n,
  index_bits, codebook offset, codebook length, bias offset (-1: none), relu, padded-input
  offset, valid (no padding: the input is read in place), column-offset table offset (in
  ``ip``: where each patch column of a group starts in the (padded) input), wide-row offset
  (scratch for one output row at the input's row pitch)``;
* :data:`OP_MAXPOOL`: ``src, dst, C, H, W, size, stride, top, left, OH, OW, padded``;
* :data:`OP_RELU`: ``src, dst, n``.

The NumPy twin is :func:`kernels.reference.chain_forward`.

:func:`chain_forward_parallel` runs the same program with each large operation split over
Numba's threads (for a big network whose convolutions take milliseconds each, where one
thread leaves the other cores idle): a convolution's output channels and a dense layer's rows
in blocks of about equal entry counts, pooling, the zero-padded copy and ReLU by channels or
ranges, each block writing only its own part of the output (a convolution block with its own
``wide`` row). Every output value is the same sum in the same order as in
:func:`chain_forward` (the same row kernels on the same rows), so the results are the serial
ones bit for bit. An operation with less work than ``min_work`` (and every operation when
``n_blocks`` is 1) runs exactly as :func:`chain_forward` runs it, on the calling thread.
"""

import numba
import numpy as np
from numba import prange

from ._config import FASTMATH, jit
from .pool import maxpool2d_padded_forward
from .sqmm import _matvec_rows, add_bias_relu

_U = numba.uint64

OP_SQ_DENSE = 1
OP_SQ_CONV = 2
OP_MAXPOOL = 3
OP_RELU = 4
N_FIELDS = 30
"""Fields per operation row (the longest, :data:`OP_SQ_CONV`, uses all 30)."""


@jit()
def _dense(words, op, ip, fp, buf):
    n_in, n_out = op[3], op[4]
    wo, wl, rp, ib = op[6], op[7], op[8], op[9]
    x = buf[op[1]:op[1] + n_in]
    y = buf[op[2]:op[2] + n_out]
    _matvec_rows(words[wo:wo + wl], ip[rp:rp + n_out + 1], 0, n_out, ib,
                 fp[op[10]:op[10] + op[11]], x, y)
    add_bias_relu(y, fp[op[12]:op[12] + n_out] if op[12] >= 0 else fp[:0], op[13] != 0)


@jit(fastmath=FASTMATH)
def _conv_rows(words, split_k, split_col, r0, r1, ib, codebook, xp, col_off, base, wp,
               stride, oh, ow, wide, bias, relu, yt):
    """``yt[r] = W[r] @ patches`` for rows r0 <= r < r1 of one group, straight from the
    (padded) input ``xp`` (flat): each entry adds ``weight * xp[offset + pixel]`` for every
    output pixel, ``offset = base + col_off[column]`` (the group's first channel, and the patch
    column's channel, kernel row and column, tabulated once: two integer divisions per entry
    took most of the time).

    At stride 1 the output row is accumulated in ``wide`` with the input's row pitch ``wp``,
    so that every entry is one contiguous, vectorised loop over ``(oh - 1) * wp + ow`` values
    (the ``wp - ow`` extra values per row are thrown away) instead of ``oh`` loops of ``ow``
    (LeNet-5's conv2: 8 values each, all loop overhead), then copied into ``yt[r]``. Indices
    are uint64, which spares Numba's negative-index checks (3-6x faster than int64 here).

    Entries go four at a time within each column tile, combined as
    :func:`kernels.sqmm._matmul_t_task` combines them, so every output is the same sum in the
    same order as the im2col product: bit for bit, without building the patch matrix. Then
    ``+ bias[r]`` (``bias`` empty: none) and ReLU when ``relu``, in the pass that writes
    ``yt[r]``, as the layer's bias addition and a ReLU layer after it compute them."""
    mask = (1 << ib) - 1
    owu, su = _U(ow), _U(stride)
    row = _U(stride * wp)  # input elements between two output rows
    span = (oh - 1) * wp + ow if stride == 1 else 0
    with_bias = bias.size > 0
    for r in range(r0, r1):
        o = yt[r]
        if stride == 1:
            wide[:span] = 0.0
        else:
            o[:] = 0.0
        for t in range(split_k.shape[1] - 1):
            col = split_col[r, t]
            kx = split_k[r, t]
            end = split_k[r, t + 1]
            while kx + 4 <= end:
                w = np.int64(words[kx])
                c0 = col + (w & mask)
                v0 = codebook[w >> ib]
                w = np.int64(words[kx + 1])
                c1 = c0 + 1 + (w & mask)
                v1 = codebook[w >> ib]
                w = np.int64(words[kx + 2])
                c2 = c1 + 1 + (w & mask)
                v2 = codebook[w >> ib]
                w = np.int64(words[kx + 3])
                c3 = c2 + 1 + (w & mask)
                v3 = codebook[w >> ib]
                col = c3 + 1
                b0 = _U(base + col_off[c0])
                b1 = _U(base + col_off[c1])
                b2 = _U(base + col_off[c2])
                b3 = _U(base + col_off[c3])
                if stride == 1:  # one contiguous loop: vectorises
                    for p in range(span):
                        pu = _U(p)
                        wide[pu] += ((v0 * xp[b0 + pu] + v1 * xp[b1 + pu])
                                     + (v2 * xp[b2 + pu] + v3 * xp[b3 + pu]))
                else:
                    for i in range(oh):
                        iu = _U(i)
                        y0 = iu * owu
                        for j in range(ow):
                            js = iu * row + _U(j) * su
                            o[y0 + _U(j)] += ((v0 * xp[b0 + js] + v1 * xp[b1 + js])
                                              + (v2 * xp[b2 + js] + v3 * xp[b3 + js]))
                kx += 4
            while kx < end:
                w = np.int64(words[kx])
                c0 = col + (w & mask)
                v0 = codebook[w >> ib]
                col = c0 + 1
                b0 = _U(base + col_off[c0])
                if stride == 1:
                    for p in range(span):
                        pu = _U(p)
                        wide[pu] += v0 * xp[b0 + pu]
                else:
                    for i in range(oh):
                        iu = _U(i)
                        for j in range(ow):
                            o[iu * owu + _U(j)] += v0 * xp[b0 + iu * row + _U(j) * su]
                kx += 1
        b = bias[r] if with_bias else np.float32(0.0)
        for i in range(oh):
            src = wide[_U(i) * _U(wp):] if stride == 1 else o[_U(i) * owu:]
            dst = o[_U(i) * owu:]
            for j in range(ow):
                v = src[j] + b if with_bias else src[j]
                if relu and v <= 0:
                    v = np.float32(0.0)
                dst[j] = v


@jit()
def _conv(words, op, ip, fp, buf):
    c, h, w, oc, k, stride = op[3], op[4], op[5], op[6], op[7], op[8]
    top, left, oh, ow, groups = op[9], op[10], op[11], op[12], op[13]
    wo, wl, sk, sc, nt = op[15], op[16], op[17], op[18], op[19]
    ib = op[21]
    codebook = fp[op[22]:op[22] + op[23]]
    n = oh * ow
    x = buf[op[1]:op[1] + c * h * w]
    if op[27] != 0:  # no padding: read the input as it is
        hp, wp = h, w
        xp = x
    else:  # zero-padded copy, as wide as the windows reach
        hp = max(h + top, (oh - 1) * stride + k)
        wp = max(w + left, (ow - 1) * stride + k)
        xp = buf[op[26]:op[26] + c * hp * wp]
        xp[:] = 0.0
        for ch in range(c):
            for i in range(h):
                dst = ((ch * hp) + top + i) * wp + left
                src = (ch * h + i) * w
                xp[dst:dst + w] = x[src:src + w]
    yt = buf[op[2]:op[2] + oc * n].reshape((oc, n))
    split_k = ip[sk:sk + oc * nt].reshape((oc, nt))
    split_col = ip[sc:sc + oc * nt].reshape((oc, nt))
    cin = c // groups
    ocg = oc // groups
    wd = words[wo:wo + wl]
    col_off = ip[op[28]:op[28] + cin * k * k]
    wide = buf[op[29]:op[29] + (oh - 1) * wp + ow]
    bias = fp[op[24]:op[24] + oc] if op[24] >= 0 else fp[:0]
    for g in range(groups):
        _conv_rows(wd, split_k, split_col, g * ocg, (g + 1) * ocg, ib, codebook, xp, col_off,
                   g * cin * hp * wp, wp, stride, oh, ow, wide, bias, op[25] != 0, yt)


@jit()
def _maxpool_values(x, size, stride, oh, ow, y):
    """Max over ``size`` x ``size`` windows (no padding) without the argmax the training
    kernel keeps: the same maxima (ties and NaN as in :func:`kernels.pool.maxpool2d_forward`),
    the 2x2 stride-2 case branch-free as there."""
    n_ch = x.shape[0]
    for c in range(n_ch):
        src = x[c]
        dst = y[c]
        for i in range(oh):
            if size == 2 and stride == 2:
                r0 = src[2 * i]
                r1 = src[2 * i + 1]
                for j in range(ow):
                    v0 = r0[2 * j]
                    v1 = r0[2 * j + 1]
                    v2 = r1[2 * j]
                    v3 = r1[2 * j + 1]
                    top = v1 if v1 > v0 else v0
                    bot = v3 if v3 > v2 else v2
                    dst[i, j] = bot if bot > top else top
                continue
            y0 = i * stride
            for j in range(ow):
                x0 = j * stride
                best = src[y0, x0]
                for a in range(size):
                    for b in range(size):
                        v = src[y0 + a, x0 + b]
                        if v > best:
                            best = v
                dst[i, j] = best


@jit()
def _maxpool(op, buf, ibuf):
    c, h, w, size, stride = op[3], op[4], op[5], op[6], op[7]
    top, left, oh, ow = op[8], op[9], op[10], op[11]
    if op[12] != 0:
        x = buf[op[1]:op[1] + c * h * w].reshape((1, c, h, w))
        y = buf[op[2]:op[2] + c * oh * ow].reshape((1, c, oh, ow))
        arg = ibuf[:c * oh * ow].reshape((1, c, oh, ow))
        maxpool2d_padded_forward(x, size, size, stride, top, left, oh, ow, y, arg)
    else:
        _maxpool_values(buf[op[1]:op[1] + c * h * w].reshape((c, h, w)), size, stride, oh, ow,
                        buf[op[2]:op[2] + c * oh * ow].reshape((c, oh, ow)))


@jit()
def _relu_range(buf, src, dst, a, b):
    """Elements ``a <= i < b`` of :data:`OP_RELU` (``buf[dst + i] = max(buf[src + i], 0)``)."""
    out = buf[dst + a:dst + b]
    if src != dst:
        out[:] = buf[src + a:src + b]
    add_bias_relu(out, buf[:0], True)


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
        activations, padded inputs; the result at the last operation's ``dst``.
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
            _relu_range(buf, op[1], op[2], 0, op[3])


# --------------------------------------------------------------------------- threads

@jit()
def _row_bounds(starts, end, n_blocks, bounds):
    """``bounds[0..n_blocks]``: boundaries of ``n_blocks`` blocks of about equal entry counts
    of the rows whose first entries are ``starts`` (the last row ends at ``end``): a boundary
    goes to the first row at or past its share, as :func:`kernels.sqmm.sq_row_blocks` puts it
    (empty blocks allowed)."""
    n = starts.shape[0]
    first = starts[0] if n > 0 else end
    bounds[0] = 0
    r = 0
    for b in range(1, n_blocks):
        target = first + ((end - first) * b) // n_blocks
        while r < n and starts[r] < target:
            r += 1
        bounds[b] = r
    bounds[n_blocks] = n


@jit()
def _conv_block(words, split_k, split_col, r0, r1, ocg, cin_plane, ib, codebook, xp, col_off,
                wp, stride, oh, ow, wide, bias, relu, yt):
    """Rows ``r0 <= r < r1`` of a convolution (any groups they span), as :func:`_conv` runs
    each group's rows."""
    r = r0
    while r < r1:
        g = r // ocg
        e = min(r1, (g + 1) * ocg)
        _conv_rows(words, split_k, split_col, r, e, ib, codebook, xp, col_off, g * cin_plane,
                   wp, stride, oh, ow, wide, bias, relu, yt)
        r = e


@jit()
def _pad_channels(x, xp, c0, c1, h, w, hp, wp, top, left):
    """Channels ``c0 <= ch < c1`` of :func:`_conv`'s zero-padded copy: the same values."""
    for ch in range(c0, c1):
        xp[ch * hp * wp:(ch + 1) * hp * wp] = 0.0
        for i in range(h):
            dst = ((ch * hp) + top + i) * wp + left
            src = (ch * h + i) * w
            xp[dst:dst + w] = x[src:src + w]


@jit(parallel=True)
def _blocks_pad(x, xp, c, h, w, hp, wp, top, left, n_blocks):
    for b in prange(n_blocks):
        _pad_channels(x, xp, c * b // n_blocks, c * (b + 1) // n_blocks, h, w, hp, wp, top,
                      left)


@jit(parallel=True)
def _blocks_conv(words, split_k, split_col, bounds, ocg, cin_plane, ib, codebook, xp, col_off,
                 wp, stride, oh, ow, wides, bias, relu, yt):
    for b in prange(bounds.shape[0] - 1):
        _conv_block(words, split_k, split_col, bounds[b], bounds[b + 1], ocg, cin_plane, ib,
                    codebook, xp, col_off, wp, stride, oh, ow, wides[b], bias, relu, yt)


@jit()
def _conv_parallel(words, op, ip, fp, buf, n_blocks, wides, min_work):
    """:func:`_conv` with the padded copy split by channels and the output channels in blocks
    of about equal entry counts (:func:`_row_bounds`), ``wides[b]`` the ``wide`` row of block
    ``b``."""
    c, h, w, oc, k, stride = op[3], op[4], op[5], op[6], op[7], op[8]
    top, left, oh, ow, groups = op[9], op[10], op[11], op[12], op[13]
    wo, wl, sk, sc, nt = op[15], op[16], op[17], op[18], op[19]
    if wl * oh * ow < min_work:
        _conv(words, op, ip, fp, buf)
        return
    ib = op[21]
    codebook = fp[op[22]:op[22] + op[23]]
    n = oh * ow
    x = buf[op[1]:op[1] + c * h * w]
    if op[27] != 0:
        hp, wp = h, w
        xp = x
    else:
        hp = max(h + top, (oh - 1) * stride + k)
        wp = max(w + left, (ow - 1) * stride + k)
        xp = buf[op[26]:op[26] + c * hp * wp]
        if c * hp * wp < min_work:
            _pad_channels(x, xp, 0, c, h, w, hp, wp, top, left)
        else:
            _blocks_pad(x, xp, c, h, w, hp, wp, top, left, min(n_blocks, c))
    yt = buf[op[2]:op[2] + oc * n].reshape((oc, n))
    split_k = ip[sk:sk + oc * nt].reshape((oc, nt))
    split_col = ip[sc:sc + oc * nt].reshape((oc, nt))
    cin = c // groups
    bounds = np.empty(n_blocks + 1, np.int64)
    _row_bounds(split_k[:, 0], split_k[oc - 1, nt - 1] if oc > 0 else 0, n_blocks, bounds)
    _blocks_conv(words[wo:wo + wl], split_k, split_col, bounds, oc // groups, cin * hp * wp, ib,
                 codebook, xp, ip[op[28]:op[28] + cin * k * k], wp, stride, oh, ow, wides,
                 fp[op[24]:op[24] + oc] if op[24] >= 0 else fp[:0], op[25] != 0, yt)


@jit()
def _dense_block(words, rowptr, r0, r1, ib, codebook, x, y, bias, relu):
    _matvec_rows(words, rowptr, r0, r1, ib, codebook, x, y)
    add_bias_relu(y[r0:r1], bias[r0:r1] if bias.size > 0 else bias, relu)


@jit(parallel=True)
def _blocks_dense(words, rowptr, bounds, ib, codebook, x, y, bias, relu):
    for b in prange(bounds.shape[0] - 1):
        _dense_block(words, rowptr, bounds[b], bounds[b + 1], ib, codebook, x, y, bias, relu)


@jit()
def _dense_parallel(words, op, ip, fp, buf, n_blocks, min_work):
    """:func:`_dense` with the rows in blocks of about equal entry counts."""
    n_in, n_out = op[3], op[4]
    wo, wl, rp, ib = op[6], op[7], op[8], op[9]
    if wl < min_work:
        _dense(words, op, ip, fp, buf)
        return
    rowptr = ip[rp:rp + n_out + 1]
    bounds = np.empty(n_blocks + 1, np.int64)
    _row_bounds(rowptr[:n_out], rowptr[n_out], n_blocks, bounds)
    _blocks_dense(words[wo:wo + wl], rowptr, bounds, ib, fp[op[10]:op[10] + op[11]],
                  buf[op[1]:op[1] + n_in], buf[op[2]:op[2] + n_out],
                  fp[op[12]:op[12] + n_out] if op[12] >= 0 else fp[:0], op[13] != 0)


@jit()
def _pool_channels(op, buf, ibuf, c0, c1):
    """Channels ``c0 <= ch < c1`` of :func:`_maxpool`."""
    c, h, w, size, stride = op[3], op[4], op[5], op[6], op[7]
    top, left, oh, ow = op[8], op[9], op[10], op[11]
    x = buf[op[1]:op[1] + c * h * w].reshape((c, h, w))[c0:c1]
    y = buf[op[2]:op[2] + c * oh * ow].reshape((c, oh, ow))[c0:c1]
    if op[12] != 0:
        arg = ibuf[:c * oh * ow].reshape((c, oh, ow))[c0:c1]
        maxpool2d_padded_forward(x.reshape((1, c1 - c0, h, w)), size, size, stride, top, left,
                                 oh, ow, y.reshape((1, c1 - c0, oh, ow)),
                                 arg.reshape((1, c1 - c0, oh, ow)))
    else:
        _maxpool_values(x, size, stride, oh, ow, y)


@jit(parallel=True)
def _blocks_pool(op, buf, ibuf, n_blocks):
    c = op[3]
    for b in prange(n_blocks):
        _pool_channels(op, buf, ibuf, c * b // n_blocks, c * (b + 1) // n_blocks)


@jit(parallel=True)
def _blocks_relu(buf, src, dst, n, n_blocks):
    for b in prange(n_blocks):
        _relu_range(buf, src, dst, n * b // n_blocks, n * (b + 1) // n_blocks)


@jit()
def chain_forward_parallel(ops, words, ip, fp, buf, ibuf, n_blocks, wides, min_work):
    """:func:`chain_forward` with every operation of at least ``min_work`` work split into
    ``n_blocks`` blocks over Numba's threads (module docstring): the same results bit for bit.

    Parameters
    ----------
    ops, words, ip, fp, buf, ibuf : as :func:`chain_forward` (``buf`` IN/OUT, ``ibuf``
        scratch).
    n_blocks : int >= 1. IN: blocks per split operation (the Numba thread count: ``prange``
        gives each thread an equal share of the blocks); 1 runs :func:`chain_forward`'s code.
    wides : ndarray, shape (n_blocks, wide_len), float32. Scratch: one ``wide`` row per block,
        ``wide_len`` at least the longest ``(oh - 1) * wp + ow`` of the program's
        convolutions.
    min_work : int. IN: operations with less work (entries x output pixels for a product,
        elements for the rest) run on the calling thread.

    Notes
    -----
    Nothing is checked, as in :func:`chain_forward`. A call that splits anything launches
    parallel regions: under Numba's ``workqueue`` threading layer the caller must not let two
    threads do that at once (:func:`dc_engine.core.fused.launch`).
    """
    if n_blocks <= 1:
        chain_forward(ops, words, ip, fp, buf, ibuf)
        return
    for i in range(ops.shape[0]):
        op = ops[i]
        kind = op[0]
        if kind == OP_SQ_DENSE:
            _dense_parallel(words, op, ip, fp, buf, n_blocks, min_work)
        elif kind == OP_SQ_CONV:
            _conv_parallel(words, op, ip, fp, buf, n_blocks, wides, min_work)
        elif kind == OP_MAXPOOL:
            c = op[3]
            if c * op[10] * op[11] * op[6] * op[6] < min_work:
                _maxpool(op, buf, ibuf)
            else:
                _blocks_pool(op, buf, ibuf, min(n_blocks, c))
        elif kind == OP_RELU:
            if op[3] < min_work:
                _relu_range(buf, op[1], op[2], 0, op[3])
            else:
                _blocks_relu(buf, op[1], op[2], op[3], n_blocks)
