"""Byte codec of one layer's compressed payload (Deep Compression Stage 3, DC Sec. 2 and 4).

:func:`encode_layer` turns a pruned, weight-shared layer (per-weight codes, codebook, bias) into
one self-checking ``bytes`` payload; :func:`decode_layer` reverses it, treating its input as
untrusted; :func:`payload_stats` reports the size of each part. No h5py here: the compressed
file (:mod:`dc_engine.io.compressed`) stores one payload per layer.

Pipeline: ``(gaps, codes) = encode_sparse(idx.ravel(), index_bits)`` (relative index with
filler entries, :mod:`dc_engine.codecs.relindex`), then the code stream (alphabet
``2**weight_bits``) and the gap stream (alphabet ``2**index_bits``) are each written by a stream
coder (:mod:`dc_engine.codecs.coders`; Huffman by default) whose id the payload records.

Layout (version 2; docs/FORMAT.md has both versions)
----------------------------------------------------
All integers are unsigned little-endian; ``wb`` = weight_bits, ``ib`` = index_bits.

==========  ====================  ==========================================================
offset      size (bytes)          field
==========  ====================  ==========================================================
0           3                     magic ``b"DCL"``
3           1                     payload version, ``2`` (``1``: see below)
4           1                     ``wb``, 1..16 (codebook has ``2**wb`` entries)
5           1                     ``ib``, 1..16 (gap field width)
6           1                     ``ndim``, 1..4
7           4 * ndim              shape, one u32 per dimension (C order)
H - 22      4                     ``n_entries`` u32: entries of the relative index,
                                  non-zeros plus fillers
H - 18      4                     ``nnz`` u32: non-zero codes
H - 14      4                     ``n_bias`` u32: bias values (0: no bias)
H - 10      4                     ``code_nbits`` u32: bits of the coded code stream
H - 6       4                     ``gap_nbits`` u32: bits of the coded gap stream
H - 2       1                     code-stream coder id (:data:`~dc_engine.codecs.coders.CODERS`)
H - 1       1                     gap-stream coder id
H           (coder)               code-stream table (Huffman: ``2**wb`` code lengths, 4 bits
                                  each, LSB first; fixed: none)
...         (coder)               gap-stream table (the same for the ``2**ib`` gaps)
...         4 * n_used            codebook values of the slots the code coder says may occur:
                                  float32, one per slot ``s`` in 1..2**wb-1, in increasing
                                  ``s`` (slot 0 is implied +0.0, the pruned weight; any other
                                  slot decodes as +0.0)
...         4 * n_bias            bias, float32
...         ceil(code_nbits / 8)  code stream: ``n_entries`` symbols
...         ceil(gap_nbits / 8)   gap stream: ``n_entries`` symbols
end - 4     4                     CRC-32 (``zlib.crc32``) of every byte before it
==========  ====================  ==========================================================

``H = 29 + 4 * ndim``. Version 1 (files written before the coder interface) is the same without
the two coder-id bytes (``H = 27 + 4 * ndim``), and both streams are Huffman-coded.

Version 3 (written only when an option below is used; docs/FORMAT.md) appends to the version-2
header a flags byte (bit 0: the codes are scanned column by column, ``order="cols"``; bit 1:
shared bias; other bits 0) and, with a shared bias, ``bias_bits`` (u8, 1..16), the bias-stream
coder id (u8) and ``bias_nbits`` (u32). A shared bias puts its stream's table after the gap
table, its distinct values (float32, one per slot the bias coder says may occur, in increasing
slot order; the values increase with the slot) in place of the raw bias, and its stream of
``n_bias`` codes after the gap stream. With ``order="cols"`` the relative index runs over the
weight viewed as a ``(shape[0], rest)`` matrix, column by column.
Decoding: decode ``n_entries`` codes and ``n_entries`` gaps, then positions are
``cumsum(gap + 1) - 1`` in the flattened (row-major) weight; all other positions are code 0.
The payload length is exactly the sum of the parts; anything else is corrupt.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from .._validate import check_bits
from ..errors import DCFormatError
from ..limits import MAX_BITS
from .codebook import index_dtype
from .coders import CODERS, DEFAULT_CODER, StreamCoder, coder_by_id, coder_by_name
from .huffman import HuffmanCoder
from .relindex import decode_sparse, encode_sparse

MAGIC = b"DCL"
VERSION = 3
"""The newest payload version: :func:`encode_layer` writes it only for the options that need
it (``order="cols"``, ``bias_coding="shared"``), else version 2; :func:`decode_layer` reads 1,
2 and 3."""
ORDERS = ("rows", "cols")
"""Scan orders of the weight codes: ``"rows"`` (C order of the weight, versions 1-3) or
``"cols"`` (version 3: the weight as a (shape[0], rest) matrix read column by column, so an
input no output uses is one run of zeros instead of a gap in every row)."""
BIAS_CODINGS = ("float32", "shared")
"""How a bias is stored: ``"float32"`` (raw, versions 1-3) or ``"shared"`` (version 3: its
distinct values as a float32 table, and per unit a code into the table, entropy coded)."""
MAX_NDIM = 4
MAX_WEIGHTS = 2**28
"""Largest layer (product of the shape) that :func:`decode_layer` accepts (VGG-16 fc6 has
103M weights). Trailing zeros cost no payload bytes, so the shape cannot be bounded by the
payload length; this cap bounds the decoder's allocation instead."""
MAX_U32 = 2**32 - 1
SMALL_LAYER = 2**20
"""Weights any payload may declare, however short it is."""
MAX_WEIGHTS_PER_BYTE = 2**16
"""Above :data:`SMALL_LAYER` weights, a payload must have at least one byte per this many
weights. The relative index makes long zero runs cheap but not free (a filler per
``2**index_bits`` zeros), so only a layer that is all or nearly all zeros could need more;
the decoder allocates a code per weight, so this bounds the allocation by the file size (at
most ~64K-fold) rather than by :data:`MAX_WEIGHTS` alone. The encoder refuses such layers."""

_PREFIX = struct.Struct("<3sBBBB")
_COUNTS = struct.Struct("<IIIII")
_CODERS = struct.Struct("<BB")
_FLAGS = struct.Struct("<B")
_BIAS = struct.Struct("<BBI")  # bias_bits, bias coder id, bias_nbits
_CRC = struct.Struct("<I")
_FLAG_COLS = 1
_FLAG_SHARED_BIAS = 2
_FLAGS_KNOWN = _FLAG_COLS | _FLAG_SHARED_BIAS


def header_size(ndim: int, version: int = 2, shared_bias: bool = False) -> int:
    """Bytes of the fixed header of a layer with ``ndim`` dimensions: ``29 + 4 * ndim``
    (version 1: ``27 + 4 * ndim``; version 3: one flags byte more, and six more with a shared
    bias)."""
    size = _PREFIX.size + 4 * ndim + _COUNTS.size + (_CODERS.size if version >= 2 else 0)
    if version >= 3:
        size += _FLAGS.size + (_BIAS.size if shared_bias else 0)
    return size


def scan(idx: np.ndarray, order: str) -> np.ndarray:
    """The codes of ``idx`` flattened in the scan ``order`` (:data:`ORDERS`)."""
    if order == "rows" or idx.ndim == 1:
        return idx.ravel()
    return idx.reshape(idx.shape[0], -1).T.ravel()


def unscan(flat: np.ndarray, shape: tuple, order: str) -> np.ndarray:
    """Inverse of :func:`scan`: the codes of ``shape`` from their scan ``order``."""
    if order == "rows" or len(shape) == 1:
        return flat.reshape(shape)
    return np.ascontiguousarray(flat.reshape(-1, shape[0]).T).reshape(shape)


def share_bias(bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(levels, codes, bits)``: the distinct values of ``bias`` in increasing order (float32,
    ``-0.0`` kept apart from ``+0.0``), each unit's code into them (uint16), and the code width
    (at least 1). ``levels[codes]`` is ``bias`` bit for bit."""
    keys = bias.view(np.uint32)
    ukeys, codes = np.unique(keys, return_inverse=True)
    levels = ukeys.view(np.float32)
    order = np.argsort(levels, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    bits = max(1, int(levels.size - 1).bit_length())
    return levels[order], rank[codes.ravel()].astype(np.uint16), bits


def _nbytes(nbits: int) -> int:
    return -(-nbits // 8)


def _coder(coder, what: str) -> StreamCoder:
    if coder is None:
        return coder_by_name(DEFAULT_CODER)
    if isinstance(coder, str):
        return coder_by_name(coder)
    if all(hasattr(coder, a) for a in ("id", "name", "options", "encode", "read_table",
                                       "present", "decode")):
        return coder
    raise TypeError(f"{what} must be a coder name or a stream coder, got {coder!r}")


# --------------------------------------------------------------------------- encoder


def _float32_vector(x, what: str, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"layer {name!r}: {what} must be float32, got {x.dtype}; convert with "
                        f".astype(np.float32)")
    if x.ndim != 1:
        raise ValueError(f"layer {name!r}: {what} must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"layer {name!r}: {what} holds non-finite values (NaN or inf)")
    return x


def encode_layer(idx, codebook, bias=None, index_bits: int = 5, coder=None, gap_coder=None,
                 name: str = "layer", order: str = "rows", bias_coding: str = "float32"
                 ) -> bytes:
    """Encode one layer's codes, codebook and bias into a payload (layout in the module doc).

    Parameters
    ----------
    idx : ndarray, 1..4 dims (the weight's shape), uint8 or uint16. Per-weight codebook slots,
        each in [0, 2**weight_bits); 0 = pruned.
    codebook : ndarray, shape (2**weight_bits,), float32, weight_bits in 1..16, finite,
        ``codebook[0] == 0.0``. Only the slots the code stream may hold are stored.
    bias : ndarray, shape (n,), float32, finite; or None (stored as ``n_bias = 0``).
    index_bits : int, 1..16. Width of the relative-index gap field (DC: 5 for the LeNets).
    coder : str or stream coder, default "huffman". Writes the code stream (and the gap stream
        unless ``gap_coder`` is given); a name takes the coder's default options.
    gap_coder : str or stream coder, optional. Writes the gap stream.
    name : str. The layer's name, used in error messages.
    order : "rows" (default) or "cols" (:data:`ORDERS`). The scan order of the codes.
    bias_coding : "float32" (default) or "shared" (:data:`BIAS_CODINGS`). A shared bias stores
        its distinct values once and a code per unit, written by ``coder``; lossless for any
        bias, small for one with few distinct values (stage 2's ``bias_bits``).

    Returns
    -------
    bytes. The payload (version 3 with ``order="cols"`` or ``bias_coding="shared"``, else
    version 2); ``decode_layer(payload)`` gives the inputs
    back exactly (``idx`` as ``index_dtype(weight_bits)``, ``codebook[0]`` and every slot the
    code stream cannot hold as +0.0), so ``codebook[idx]`` is reproduced bit for bit.

    Raises
    ------
    TypeError
        ``idx`` is not uint8/uint16, ``codebook`` / ``bias`` not float32, ``index_bits`` not
        an integer, or a coder is neither a name nor a coder.
    ValueError
        A shape, size or range is invalid, a value is not finite, a count exceeds u32, a coder
        name is unknown, or the coder cannot code the stream.
    """
    idx = np.asarray(idx)
    if idx.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"layer {name!r}: idx must be uint8 or uint16, got {idx.dtype}")
    if not 1 <= idx.ndim <= MAX_NDIM:
        raise ValueError(f"layer {name!r}: idx must have 1..{MAX_NDIM} dims, got shape "
                         f"{idx.shape}")
    if any(d > MAX_U32 for d in idx.shape) or idx.size > MAX_WEIGHTS:
        raise ValueError(f"layer {name!r}: idx of shape {idx.shape} is larger than "
                         f"{MAX_WEIGHTS} weights")
    codebook = _float32_vector(codebook, "codebook", name)
    k = codebook.size
    if k < 2 or k > 2**MAX_BITS or k & (k - 1):
        raise ValueError(f"layer {name!r}: codebook must have 2**bits entries, bits in "
                         f"1..{MAX_BITS}, got {k}")
    if codebook[0] != 0:
        raise ValueError(f"layer {name!r}: codebook[0] must be 0.0 (the pruned weight), got "
                         f"{codebook[0]}")
    wb = k.bit_length() - 1
    if idx.size and int(idx.max()) >= k:
        raise ValueError(f"layer {name!r}: idx holds code {int(idx.max())}, but the codebook "
                         f"has only {k} entries")
    bias = np.zeros(0, np.float32) if bias is None else _float32_vector(bias, "bias", name)
    if bias.size > MAX_U32:
        raise ValueError(f"layer {name!r}: {bias.size} bias values exceed the u32 count")
    ib = check_bits(index_bits, "index_bits")
    code_coder = _coder(coder, "coder")
    gap_coder = code_coder if gap_coder is None else _coder(gap_coder, "gap_coder")

    if order not in ORDERS:
        raise ValueError(f"layer {name!r}: order must be one of {ORDERS}, got {order!r}")
    if bias_coding not in BIAS_CODINGS:
        raise ValueError(f"layer {name!r}: bias_coding must be one of {BIAS_CODINGS}, got "
                         f"{bias_coding!r}")
    shared = bias_coding == "shared" and bias.size > 0
    version = 3 if order != "rows" or shared else 2

    gaps, codes = encode_sparse(scan(idx, order), ib)
    code_table, code_data, code_nbits, present = code_coder.encode(codes, 2**wb)
    gap_table, gap_data, gap_nbits, _ = gap_coder.encode(gaps, 2**ib)
    bias_table = bias_data = b""
    if shared:
        levels, bias_codes, bb = share_bias(bias)
        if bb > MAX_BITS:
            raise ValueError(f"layer {name!r}: the bias has {levels.size} distinct values, a "
                             f"shared bias holds at most 2**{MAX_BITS}; store it as float32")
        bias_table, bias_data, bias_nbits, bias_present = code_coder.encode(bias_codes, 2**bb)
        bias_values = np.zeros(2**bb, np.float32)
        bias_values[:levels.size] = levels
        bias_values = bias_values[bias_present]
    else:
        bias_nbits, bias_values = 0, bias
    if max(code_nbits, gap_nbits, bias_nbits) > MAX_U32:
        raise ValueError(f"layer {name!r}: a coded stream of more than 2**32 bits does not "
                         f"fit the u32 bit count")
    nnz = int(np.count_nonzero(idx))
    header = (_PREFIX.pack(MAGIC, version, wb, ib, idx.ndim)
              + struct.pack(f"<{idx.ndim}I", *idx.shape)
              + _COUNTS.pack(codes.size, nnz, bias.size, code_nbits, gap_nbits)
              + _CODERS.pack(code_coder.id, gap_coder.id))
    if version >= 3:
        header += _FLAGS.pack((_FLAG_COLS if order == "cols" else 0)
                              | (_FLAG_SHARED_BIAS if shared else 0))
        if shared:
            header += _BIAS.pack(bb, code_coder.id, bias_nbits)
    body = b"".join([
        header,
        code_table,
        gap_table,
        bias_table,
        codebook[1:][present[1:]].astype("<f4").tobytes(),
        bias_values.astype("<f4").tobytes(),
        code_data,
        gap_data,
        bias_data,
    ])
    size = len(body) + _CRC.size
    if idx.size > max(SMALL_LAYER, MAX_WEIGHTS_PER_BYTE * size):
        raise ValueError(f"layer {name!r}: {idx.size} weights, {nnz} of them non-zero, encode to "
                         f"{size} bytes, more than {MAX_WEIGHTS_PER_BYTE} weights per byte, "
                         f"which decoders refuse (see MAX_WEIGHTS_PER_BYTE); a layer this empty "
                         f"should be removed from the model")
    return body + _CRC.pack(zlib.crc32(body))


# --------------------------------------------------------------------------- decoder


def _parse(payload, name: str) -> tuple[memoryview, dict]:
    """Validate everything that does not need decoding the streams; return the view and the
    header fields, the parsed tables, the coders and the byte offsets of every part.

    Cheap: reads the fixed-size fields and the tables and checks the CRC; allocates nothing
    payload-sized beyond the CRC pass.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"layer {name!r}: payload must be bytes, got {type(payload).__name__}")
    buf = memoryview(payload).cast("B")
    size = len(buf)
    pre = f"layer {name!r}:"
    minimum = header_size(1, 1) + _CRC.size
    if size < minimum:
        raise DCFormatError(f"{pre} payload truncated: {size} bytes, a layer payload has at "
                            f"least {minimum}")
    magic, version, wb, ib, ndim = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise DCFormatError(f"{pre} bad magic {bytes(magic)!r}, expected {MAGIC!r}: not a "
                            f"dc-engine layer payload")
    if version not in (1, 2, 3):
        fix = " (written by a newer dc-engine: upgrade to read it)" if version > VERSION else ""
        raise DCFormatError(f"{pre} unsupported payload version {version}, this reader knows "
                            f"1 to {VERSION}{fix}")
    (stored,) = _CRC.unpack_from(buf, size - _CRC.size)
    actual = zlib.crc32(buf[:size - _CRC.size])
    if stored != actual:
        raise DCFormatError(f"{pre} CRC mismatch (stored {stored:#010x}, computed "
                            f"{actual:#010x}): the payload is corrupt or truncated")
    if not 1 <= wb <= MAX_BITS:
        raise DCFormatError(f"{pre} weight_bits must be in 1..{MAX_BITS}, got {wb}")
    if not 1 <= ib <= MAX_BITS:
        raise DCFormatError(f"{pre} index_bits must be in 1..{MAX_BITS}, got {ib}")
    if not 1 <= ndim <= MAX_NDIM:
        raise DCFormatError(f"{pre} ndim must be in 1..{MAX_NDIM}, got {ndim}")
    head = header_size(ndim, version)
    if size < head + _CRC.size:
        raise DCFormatError(f"{pre} payload truncated: {size} bytes cannot hold a {ndim}-D "
                            f"header")
    flags = 0
    if version >= 3:
        (flags,) = _FLAGS.unpack_from(buf, head - _FLAGS.size)
        if flags & ~_FLAGS_KNOWN:
            raise DCFormatError(f"{pre} unknown flags {flags:#04x} (known: {_FLAGS_KNOWN:#04x}):"
                                f" the payload is corrupt or was written by a newer dc-engine")
        head = header_size(ndim, version, bool(flags & _FLAG_SHARED_BIAS))
    if size < head + _CRC.size:
        raise DCFormatError(f"{pre} payload truncated: {size} bytes cannot hold a {ndim}-D "
                            f"header")
    shape = struct.unpack_from(f"<{ndim}I", buf, _PREFIX.size)
    n_weights = math.prod(shape)
    if n_weights > MAX_WEIGHTS:
        raise DCFormatError(f"{pre} declared shape {shape} has {n_weights} weights, more than "
                            f"the cap of {MAX_WEIGHTS}: the header is corrupt")
    if n_weights > max(SMALL_LAYER, MAX_WEIGHTS_PER_BYTE * size):
        raise DCFormatError(f"{pre} declared shape {shape} has {n_weights} weights in a "
                            f"{size}-byte payload, more than {MAX_WEIGHTS_PER_BYTE} weights per "
                            f"byte: the header is corrupt")
    pos = _PREFIX.size + 4 * ndim
    n_entries, nnz, n_bias, code_nbits, gap_nbits = _COUNTS.unpack_from(buf, pos)
    if n_entries > n_weights:
        raise DCFormatError(f"{pre} n_entries={n_entries} exceeds the {n_weights} weights of "
                            f"shape {shape}")
    if nnz > n_entries:
        raise DCFormatError(f"{pre} nnz={nnz} exceeds n_entries={n_entries}")
    if version >= 2:
        ids = _CODERS.unpack_from(buf, pos + _COUNTS.size)
        coders = []
        for stream, cid in zip(("code", "gap"), ids):
            c = coder_by_id(cid)
            if c is None:
                known = ", ".join(f"{i} {CODERS[i].name}" for i in sorted(CODERS))
                raise DCFormatError(f"{pre} unknown {stream}-stream coder id {cid} (known: "
                                    f"{known}): the payload is corrupt or was written by a "
                                    f"newer dc-engine; upgrade to read it")
            coders.append(c)
        code_coder, gap_coder = coders
    else:  # version 1: both streams Huffman-coded
        code_coder = gap_coder = HuffmanCoder()
    bias_coder, bb, bias_nbits = None, 0, 0
    if flags & _FLAG_SHARED_BIAS:
        bb, bias_id, bias_nbits = _BIAS.unpack_from(buf, head - _BIAS.size)
        if not 1 <= bb <= MAX_BITS:
            raise DCFormatError(f"{pre} bias_bits must be in 1..{MAX_BITS}, got {bb}")
        if n_bias == 0:
            raise DCFormatError(f"{pre} a shared bias with n_bias = 0: the header is corrupt")
        bias_coder = coder_by_id(bias_id)
        if bias_coder is None:
            raise DCFormatError(f"{pre} unknown bias-stream coder id {bias_id}: the payload is "
                                f"corrupt or was written by a newer dc-engine; upgrade to read "
                                f"it")
    body = buf[:size - _CRC.size]
    try:
        code_table, code_table_bytes = code_coder.read_table(body[head:], 2**wb)
        pos = head + code_table_bytes
        gap_table, gap_table_bytes = gap_coder.read_table(body[pos:], 2**ib)
        pos += gap_table_bytes
        bias_table, bias_table_bytes = (bias_coder.read_table(body[pos:], 2**bb)
                                        if bias_coder is not None else (None, 0))
    except DCFormatError as exc:
        raise DCFormatError(f"{pre} {exc}") from exc
    n_used = int(np.count_nonzero(code_coder.present(code_table, 2**wb)[1:]))
    n_bias_values = (int(np.count_nonzero(bias_coder.present(bias_table, 2**bb)))
                     if bias_coder is not None else n_bias)
    parts = {
        "header": head,
        "code_table": code_table_bytes,
        "gap_table": gap_table_bytes,
        "bias_table": bias_table_bytes,
        "codebook": 4 * n_used,
        "bias": 4 * n_bias_values,
        "code_stream": _nbytes(code_nbits),
        "gap_stream": _nbytes(gap_nbits),
        "bias_stream": _nbytes(bias_nbits),
        "crc": _CRC.size,
    }
    expected = sum(parts.values())
    if expected != size:
        raise DCFormatError(f"{pre} payload length mismatch: the header declares "
                            f"{expected} bytes, got {size}; the counts are corrupt")
    fields = dict(version=version, weight_bits=wb, index_bits=ib, ndim=ndim, shape=shape,
                  n_entries=n_entries, nnz=nnz, n_bias=n_bias, code_nbits=code_nbits,
                  gap_nbits=gap_nbits, n_used=n_used, code_coder=code_coder.name,
                  gap_coder=gap_coder.name, order="cols" if flags & _FLAG_COLS else "rows",
                  bias_coding="float32" if bias_coder is None else "shared",
                  bias_bits=bb, bias_nbits=bias_nbits)
    return buf, dict(fields, parts=parts, coders=(code_coder, gap_coder, bias_coder),
                     tables=(code_table, gap_table, bias_table))


def decode_layer(payload, name: str = "layer") -> dict:
    """Decode a payload written by :func:`encode_layer` (version 1, 2 or 3), validating it as
    untrusted input.

    Parameters
    ----------
    payload : bytes, bytearray or memoryview.
    name : str. The layer's name, used in error messages.

    Returns
    -------
    dict with
        ``idx`` : ndarray of the stored shape, ``index_dtype(weight_bits)`` (uint8/uint16);
        ``codebook`` : ndarray, shape (2**weight_bits,), float32, ``codebook[0] == +0.0``;
        ``bias`` : ndarray, shape (n_bias,), float32 (empty when the layer had none);
        ``weight_bits``, ``index_bits``, ``nnz``, ``n_entries``, ``version`` : int;
        ``code_coder``, ``gap_coder`` : str, the coders' names;
        ``order`` (:data:`ORDERS`), ``bias_coding`` (:data:`BIAS_CODINGS`) : str.

    Raises
    ------
    TypeError
        ``payload`` is not bytes-like.
    DCFormatError
        Anything wrong with the payload: truncated, bad magic or version, CRC mismatch, bits
        or ndim out of range, an unknown coder, a shape above :data:`MAX_WEIGHTS`, counts
        inconsistent with each other or with the payload length, a non-finite codebook or
        bias value, a corrupt coded stream or relative index, or ``nnz`` not matching the
        decoded codes. Messages name the layer. Sizes are checked before any allocation.
    """
    buf, h = _parse(payload, name)
    pre = f"layer {name!r}:"
    wb, ib, n = h["weight_bits"], h["index_bits"], h["n_entries"]
    offsets = {}
    pos = 0
    for part, nbytes in h["parts"].items():
        offsets[part] = (pos, pos + nbytes)
        pos += nbytes

    def raw(part: str) -> memoryview:
        a, b = offsets[part]
        return buf[a:b]

    code_coder, gap_coder, bias_coder = h["coders"]
    code_table, gap_table, bias_table = h["tables"]
    try:
        codebook = np.zeros(2**wb, dtype=np.float32)
        slots = np.flatnonzero(code_coder.present(code_table, 2**wb)[1:]) + 1
        codebook[slots] = np.frombuffer(raw("codebook"), dtype="<f4")
        bias = np.frombuffer(raw("bias"), dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(codebook)):
            raise DCFormatError("the codebook holds non-finite values (NaN or inf)")
        if not np.all(np.isfinite(bias)):
            raise DCFormatError("the bias holds non-finite values (NaN or inf)")
        if bias_coder is not None:
            bb = h["bias_bits"]
            levels = np.zeros(2**bb, dtype=np.float32)
            levels[bias_coder.present(bias_table, 2**bb)] = bias
            bias_codes = bias_coder.decode(bias_table, raw("bias_stream"), h["bias_nbits"],
                                           h["n_bias"], 2**bb)
            bias = levels[bias_codes]
        codes = code_coder.decode(code_table, raw("code_stream"), h["code_nbits"], n, 2**wb)
        gaps = gap_coder.decode(gap_table, raw("gap_stream"), h["gap_nbits"], n, 2**ib)
        flat = decode_sparse(gaps, codes, math.prod(h["shape"]), ib)
    except DCFormatError as exc:
        raise DCFormatError(f"{pre} {exc}") from exc
    except (ValueError, TypeError) as exc:  # defensive: helpers must not leak other types
        raise DCFormatError(f"{pre} corrupt payload: {exc}") from exc
    found = int(np.count_nonzero(flat))
    if found != h["nnz"]:
        raise DCFormatError(f"{pre} header declares nnz={h['nnz']}, but the streams decode to "
                            f"{found} non-zero codes")
    idx = unscan(flat.astype(index_dtype(wb)), h["shape"], h["order"])
    return dict(idx=idx, codebook=codebook, bias=bias, weight_bits=wb, index_bits=ib,
                nnz=h["nnz"], n_entries=n, version=h["version"], code_coder=code_coder.name,
                gap_coder=gap_coder.name, order=h["order"], bias_coding=h["bias_coding"])


def payload_stats(payload, name: str = "layer") -> dict:
    """Header fields and the size of each part of a payload (validated like the decoder's
    header pass, without decoding the streams).

    Parameters
    ----------
    payload : bytes, bytearray or memoryview. Written by :func:`encode_layer`.
    name : str. The layer's name, used in error messages.

    Returns
    -------
    dict with the header fields (``version``, ``weight_bits``, ``index_bits``, ``ndim``,
    ``shape``, ``n_entries``, ``nnz``, ``n_bias``, ``code_nbits``, ``gap_nbits``,
    ``code_coder``, ``gap_coder``), ``n_used`` (codebook slots stored); the byte counts
    ``header_bytes``, ``code_table_bytes``, ``gap_table_bytes``, ``codebook_bytes``,
    ``bias_bytes``, ``code_stream_bytes``, ``gap_stream_bytes``, ``crc_bytes``,
    ``total_bytes``; and the average coded bits per entry ``code_bits_per_entry``,
    ``gap_bits_per_entry`` (DC Table 2's "after Huffman" columns; 0.0 when there are no
    entries) and the fixed-width P+Q size ``fixed_pq_bits`` = ``n_entries * (wb + ib)``.

    Raises
    ------
    TypeError, DCFormatError
        As :func:`decode_layer`'s header checks.
    """
    _, h = _parse(payload, name)
    parts = h.pop("parts")
    for key in ("coders", "tables"):
        del h[key]
    out = dict(h)
    out.update({f"{k}_bytes": v for k, v in parts.items()})
    out["total_bytes"] = sum(parts.values())
    n = h["n_entries"]
    out["code_bits_per_entry"] = h["code_nbits"] / n if n else 0.0
    out["gap_bits_per_entry"] = h["gap_nbits"] / n if n else 0.0
    out["fixed_pq_bits"] = n * (h["weight_bits"] + h["index_bits"])
    return out


__all__ = ["MAGIC", "VERSION", "ORDERS", "BIAS_CODINGS", "scan", "unscan", "share_bias",
           "MAX_WEIGHTS", "MAX_WEIGHTS_PER_BYTE", "SMALL_LAYER",
           "header_size", "encode_layer", "decode_layer", "payload_stats"]
