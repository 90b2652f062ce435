"""Plain NumPy twins of every kernel: slow, obvious, and the test oracle.

Each function has the same signature as the kernel it mirrors and fills the same ``out``
arguments.
"""

import numpy as np


def _pads(h, w, kh, kw, stride, pad_top, pad_left, oh, ow):
    """(bottom, right) zero padding that ``oh`` x ``ow`` windows reach past the image."""
    return (max(0, (oh - 1) * stride + kh - h - pad_top),
            max(0, (ow - 1) * stride + kw - w - pad_left))


def im2col(x, kh, kw, stride, pad_top, pad_left, oh, ow, cols):
    n_img, n_ch, h, w = x.shape
    pb, pr = _pads(h, w, kh, kw, stride, pad_top, pad_left, oh, ow)
    xp = np.pad(x, ((0, 0), (0, 0), (pad_top, pb), (pad_left, pr)))
    col = 0
    for n in range(n_img):
        for i in range(oh):
            for j in range(ow):
                patch = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                cols[:, col] = patch.reshape(-1)
                col += 1


def col2im(cols, kh, kw, stride, pad_top, pad_left, oh, ow, dx):
    n_img, n_ch, h, w = dx.shape
    pb, pr = _pads(h, w, kh, kw, stride, pad_top, pad_left, oh, ow)
    dxp = np.zeros((n_img, n_ch, h + pad_top + pb, w + pad_left + pr), dtype=cols.dtype)
    col = 0
    for n in range(n_img):
        for i in range(oh):
            for j in range(ow):
                dxp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += (
                    cols[:, col].reshape(n_ch, kh, kw))
                col += 1
    dx[...] = dxp[:, :, pad_top:pad_top + h, pad_left:pad_left + w]


def im2col_valid(x, kh, kw, oh, ow, cols):
    im2col(x, kh, kw, 1, 0, 0, oh, ow, cols)


def col2im_valid(cols, kh, kw, oh, ow, dx):
    col2im(cols, kh, kw, 1, 0, 0, oh, ow, dx)


def maxpool2d_forward(x, size, stride, oh, ow, y, arg):
    n_img, n_ch, h, w = x.shape
    for n in range(n_img):
        for c in range(n_ch):
            for i in range(oh):
                for j in range(ow):
                    win = x[n, c, i * stride:i * stride + size, j * stride:j * stride + size]
                    a, b = np.unravel_index(np.argmax(win), win.shape)
                    y[n, c, i, j] = win[a, b]
                    arg[n, c, i, j] = (i * stride + a) * w + j * stride + b


def maxpool2d_backward(dy, arg, dx):
    n_img, n_ch, oh, ow = dy.shape
    w = dx.shape[3]
    dx[...] = 0
    for n in range(n_img):
        for c in range(n_ch):
            for i in range(oh):
                for j in range(ow):
                    k = arg[n, c, i, j]
                    dx[n, c, k // w, k % w] += dy[n, c, i, j]


def _window(i, j, kh, kw, stride, pad_top, pad_left, h, w):
    """Window (i, j) clipped to the image: (r0, c0, rows slice, columns slice)."""
    r0, c0 = i * stride - pad_top, j * stride - pad_left
    return (r0, c0, slice(max(r0, 0), min(r0 + kh, h)), slice(max(c0, 0), min(c0 + kw, w)))


def maxpool2d_padded_forward(x, kh, kw, stride, pad_top, pad_left, oh, ow, y, arg):
    n_img, n_ch, h, w = x.shape
    for i in range(oh):
        for j in range(ow):
            _, _, rows, cols = _window(i, j, kh, kw, stride, pad_top, pad_left, h, w)
            for n in range(n_img):
                for c in range(n_ch):
                    win = x[n, c, rows, cols]
                    a, b = np.unravel_index(np.argmax(win), win.shape)
                    y[n, c, i, j] = win[a, b]
                    arg[n, c, i, j] = (rows.start + a) * w + cols.start + b


def _avg_divisor(r0, c0, kh, kw, h, w, pad_bottom, pad_right, count_include_pad):
    if count_include_pad:  # the window clipped to the padded image
        return (min(r0 + kh, h + pad_bottom) - r0) * (min(c0 + kw, w + pad_right) - c0)
    return (min(r0 + kh, h) - max(r0, 0)) * (min(c0 + kw, w) - max(c0, 0))


def avgpool2d_forward(x, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right,
                      count_include_pad, oh, ow, y):
    h, w = x.shape[2], x.shape[3]
    for i in range(oh):
        for j in range(ow):
            r0, c0, rows, cols = _window(i, j, kh, kw, stride, pad_top, pad_left, h, w)
            div = _avg_divisor(r0, c0, kh, kw, h, w, pad_bottom, pad_right, count_include_pad)
            y[:, :, i, j] = x[:, :, rows, cols].sum(axis=(2, 3), dtype=np.float64) / div


def avgpool2d_backward(dy, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right,
                       count_include_pad, dx):
    h, w = dx.shape[2], dx.shape[3]
    acc = np.zeros(dx.shape, dtype=np.float64)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            r0, c0, rows, cols = _window(i, j, kh, kw, stride, pad_top, pad_left, h, w)
            div = _avg_divisor(r0, c0, kh, kw, h, w, pad_bottom, pad_right, count_include_pad)
            acc[:, :, rows, cols] += dy[:, :, i, j, None, None] / div
    dx[...] = acc


def shift_images(x, shift_y, shift_x, out):
    n_img, n_ch, h, w = x.shape
    out[...] = 0
    for n in range(n_img):
        sy, sx = int(shift_y[n]), int(shift_x[n])
        if abs(sy) >= h or abs(sx) >= w:
            continue
        dst_i = slice(max(sy, 0), min(h, h + sy))
        src_i = slice(max(-sy, 0), min(h, h - sy))
        dst_j = slice(max(sx, 0), min(w, w + sx))
        src_j = slice(max(-sx, 0), min(w, w - sx))
        out[n, :, dst_i, dst_j] = x[n, :, src_i, src_j]


def sgd_momentum(w, g, v, lr, momentum, decay):
    vi = (momentum * v.astype(np.float64)
          - lr * (g.astype(np.float64) + decay * w.astype(np.float64))).astype(w.dtype)
    v[...] = vi
    w += vi


def sgd_momentum_masked(w, g, v, mask, lr, momentum, decay):
    wk, gk, vk = w[mask], g[mask], v[mask]
    sgd_momentum(wk, gk, vk, lr, momentum, decay)
    w[...] = 0.0
    v[...] = 0.0
    w[mask] = wk
    v[mask] = vk


def assign_sorted(x, centroids, labels):
    # argmin returns the first minimum: ties go to the lowest index.
    labels[...] = np.argmin(np.abs(x[:, None] - centroids[None, :]), axis=1)


def segment_sum(values, labels, sums, counts):
    k = sums.shape[0]
    sums[...] = np.bincount(labels, weights=values, minlength=k)
    counts[...] = np.bincount(labels, minlength=k)


def pack_bits(values, width, out):
    bits = (values.astype(np.int64)[:, None] >> np.arange(width)) & 1  # LSB of each value first
    out[:] = np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_bits(data, width, n, out):
    nbytes = -(-n * width // 8)
    bits = np.unpackbits(data[:nbytes], bitorder="little")[:n * width].reshape(n, width)
    out[:] = (bits.astype(np.int64) << np.arange(width)).sum(axis=1)


def _relative_entries(codes, index_bits):
    span = 2**index_bits
    entries = []
    prev = -1
    for pos in np.flatnonzero(codes):
        while pos - prev - 1 >= span:  # too many zeros for one gap field: a filler
            entries.append((span - 1, 0))
            prev += span
        entries.append((pos - prev - 1, codes[pos]))
        prev = pos
    return entries


def count_entries(codes, index_bits):
    return len(_relative_entries(codes, index_bits))


def encode_relative(codes, index_bits, gaps, out_codes):
    entries = _relative_entries(codes, index_bits)
    gaps[:] = [g for g, _ in entries]
    out_codes[:] = [c for _, c in entries]


def decode_relative(gaps, codes, n, out):
    out[:] = 0
    out[np.cumsum(gaps.astype(np.int64) + 1) - 1] = codes


def huffman_encode(symbols, codes, lengths, out):
    # One string of '0'/'1' characters, each code MSB first, then cut into MSB-first bytes.
    bits = "".join(format(int(codes[s]), "b").zfill(int(lengths[s])) if lengths[s] else ""
                   for s in symbols)
    for k in range(0, len(bits), 8):
        out[k // 8] = int(bits[k:k + 8].ljust(8, "0"), 2)
    return len(bits)


def huffman_decode(data, n_bits, n, table_sym, table_len, max_len, out):
    # A dict from code string to symbol, read back from the table; then decode bit by bit.
    code_to_sym = {}
    for w in range(1 << max_len):
        ln = int(table_len[w])
        if ln:
            code_to_sym[format(w >> (max_len - ln), "b").zfill(ln)] = int(table_sym[w])
    bits = "".join(format(int(byte), "08b") for byte in data)[:n_bits]
    pos = 0
    for i in range(n):
        prefix = ""
        while prefix not in code_to_sym:
            if len(prefix) == max_len:
                return -2  # invalid code
            if pos == len(bits):
                return -1  # exhausted
            prefix += bits[pos]
            pos += 1
        out[i] = code_to_sym[prefix]
    return 0 if pos == len(bits) else -3  # -3: bits left over


def sq_count(idx2d, index_bits, rowptr):
    rowptr[0] = 0
    rowptr[1:] = np.cumsum([count_entries(row, index_bits) for row in idx2d])


def sq_encode(idx2d, index_bits, rowptr, words):
    for r, row in enumerate(idx2d):
        entries = _relative_entries(row, index_bits)
        words[rowptr[r]:rowptr[r + 1]] = [(int(c) << index_bits) | int(g) for g, c in entries]


def sq_decode(words, rowptr, index_bits, out):
    w = words.astype(np.int64)
    gaps, codes = w & ((1 << index_bits) - 1), w >> index_bits
    for r in range(out.shape[0]):
        s = slice(rowptr[r], rowptr[r + 1])
        decode_relative(gaps[s], codes[s], out.shape[1], out[r])


def sq_row_blocks(rowptr, n_blocks):
    out = len(rowptr) - 1
    if out <= 0:
        return np.zeros(2, dtype=np.int64)
    cuts = {0, out}
    for i in range(1, n_blocks):  # first row whose start reaches i/n_blocks of the entries
        target = rowptr[-1] * i / n_blocks
        cuts.add(min(max(int(np.argmax(np.append(rowptr >= target, True))), 1), out))
    return np.array(sorted(cuts), dtype=np.int64)


def _positions(words, rowptr, index_bits, r):
    gaps = words[rowptr[r]:rowptr[r + 1]].astype(np.int64) & ((1 << index_bits) - 1)
    return np.cumsum(gaps + 1) - 1


def sq_col_split(words, rowptr, index_bits, tile_cols, split_k, split_col):
    n_tiles = split_k.shape[1] - 1
    for r in range(len(rowptr) - 1):
        pos = _positions(words, rowptr, index_bits, r)
        for t in range(n_tiles + 1):
            # entries left of the tile start; the last tile boundary is the end of the row
            first = len(pos) if t == n_tiles else int(np.sum(pos < t * tile_cols))
            split_k[r, t] = rowptr[r] + first
            split_col[r, t] = pos[first - 1] + 1 if first else 0


def _dense_weights(words, rowptr, index_bits, codebook, n_cols):
    codes = np.zeros((len(rowptr) - 1, n_cols), dtype=np.uint16)
    sq_decode(words, rowptr, index_bits, codes)
    return codebook.astype(np.float64)[codes]


def sq_matvec(words, rowptr, blocks, index_bits, codebook, x, y):
    y[:] = _dense_weights(words, rowptr, index_bits, codebook, x.shape[0]) @ x.astype(np.float64)


def sq_matvec_avx512(words, rowptr, blocks, index_bits, cbv, x, y):
    # cbv is the codebook, zero-padded to 32 or 64 entries when shorter: the extra slots are unused
    sq_matvec(words, rowptr, blocks, index_bits, cbv, x, y)


def sq_matmul_t(words, split_k, split_col, blocks, index_bits, codebook, xt, block_n, yt):
    rowptr = np.append(split_k[:, 0], split_k[-1, -1]) if split_k.shape[0] else np.zeros(1, int)
    w = _dense_weights(words, rowptr, index_bits, codebook, xt.shape[0])
    r0, r1 = blocks[0], blocks[-1]
    yt[r0:r1] = (w @ xt.astype(np.float64))[r0:r1]


def sq_matmul_t_avx512(words, split_k, split_col, blocks, index_bits, codebook, xt, block_n,
                       yt):
    sq_matmul_t(words, split_k, split_col, blocks, index_bits, codebook, xt, block_n, yt)


def add_bias_relu(y, bias, relu):
    if bias.size:
        y += bias
    if relu:
        np.maximum(y, 0, out=y)


def chain_forward(ops, words, ip, fp, buf, ibuf):
    # The operation table of kernels.chain, each operation done by the twins above (float64
    # products, stored as float32).
    for op in ops:
        kind = op[0]
        if kind == 1:  # OP_SQ_DENSE
            n_in, n_out = op[3], op[4]
            wd = words[op[6]:op[6] + op[7]]
            rowptr = ip[op[8]:op[8] + n_out + 1]
            y = np.empty(n_out, dtype=np.float32)
            sq_matvec(wd, rowptr, None, op[9], fp[op[10]:op[10] + op[11]],
                      buf[op[1]:op[1] + n_in], y)
            add_bias_relu(y, fp[op[12]:op[12] + n_out] if op[12] >= 0 else fp[:0], op[13])
            buf[op[2]:op[2] + n_out] = y
        elif kind == 2:  # OP_SQ_CONV
            c, h, w, oc, k, stride, top, left, oh, ow, groups = op[3:14]
            n = oh * ow
            x = buf[op[1]:op[1] + c * h * w].reshape(1, c, h, w)
            cols = np.empty((c * k * k, n), dtype=np.float32)
            im2col(x, k, k, stride, top, left, oh, ow, cols)
            nt = op[19]
            split_k = ip[op[17]:op[17] + oc * nt].reshape(oc, nt)
            rowptr = np.append(split_k[:, 0], split_k[-1, -1])
            wts = _dense_weights(words[op[15]:op[15] + op[16]], rowptr, op[21],
                                 fp[op[22]:op[22] + op[23]], c * k * k // groups)
            rows, ocg = c * k * k // groups, oc // groups
            y = np.concatenate([wts[g * ocg:(g + 1) * ocg] @ cols[g * rows:(g + 1) * rows]
                                for g in range(groups)]).astype(np.float32)
            if op[24] >= 0:
                y += fp[op[24]:op[24] + oc][:, None]
            if op[25]:
                np.maximum(y, 0, out=y)
            buf[op[2]:op[2] + oc * n] = y.reshape(-1)
        elif kind == 3:  # OP_MAXPOOL
            c, h, w, size, stride, top, left, oh, ow = op[3:12]
            x = buf[op[1]:op[1] + c * h * w].reshape(1, c, h, w)
            y = np.empty((1, c, oh, ow), dtype=np.float32)
            maxpool2d_padded_forward(x, size, size, stride, top, left, oh, ow, y,
                                     np.empty(y.shape, dtype=np.int32))
            buf[op[2]:op[2] + y.size] = y.reshape(-1)
        elif kind == 4:  # OP_RELU
            buf[op[2]:op[2] + op[3]] = np.maximum(buf[op[1]:op[1] + op[3]], 0)


def chain_forward_parallel(ops, words, ip, fp, buf, ibuf, n_blocks, wides, min_work):
    # The twin of kernels.chain_forward_parallel: the same program, the same results
    # (the split over threads changes no value).
    chain_forward(ops, words, ip, fp, buf, ibuf)
