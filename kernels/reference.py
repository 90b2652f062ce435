"""Plain NumPy twins of every kernel: slow, obvious, and the test oracle.

Each function has the same signature as the kernel it mirrors and fills the same ``out``
arguments.
"""

import numpy as np


def im2col(x, kh, kw, stride, padding, oh, ow, cols):
    n_img, n_ch, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    col = 0
    for n in range(n_img):
        for i in range(oh):
            for j in range(ow):
                patch = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                cols[:, col] = patch.reshape(-1)
                col += 1


def col2im(cols, kh, kw, stride, padding, oh, ow, dx):
    n_img, n_ch, h, w = dx.shape
    dxp = np.zeros((n_img, n_ch, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    col = 0
    for n in range(n_img):
        for i in range(oh):
            for j in range(ow):
                dxp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += (
                    cols[:, col].reshape(n_ch, kh, kw))
                col += 1
    dx[...] = dxp[:, :, padding:padding + h, padding:padding + w]


def im2col_valid(x, kh, kw, oh, ow, cols):
    im2col(x, kh, kw, 1, 0, oh, ow, cols)


def col2im_valid(cols, kh, kw, oh, ow, dx):
    col2im(cols, kh, kw, 1, 0, oh, ow, dx)


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
