"""Byte codec of one layer's compressed payload (Deep Compression Stage 3, DC Sec. 2 and 4).

:func:`encode_layer` turns a pruned, weight-shared layer (per-weight codes, codebook, bias) into
one self-checking ``bytes`` payload; :func:`decode_layer` reverses it, treating its input as
untrusted; :func:`payload_stats` reports the size of each part. No h5py here: a later step
stores one payload per layer.

Pipeline: ``(gaps, codes) = encode_sparse(idx.ravel(), index_bits)`` (relative index with
filler entries, :mod:`dc_engine.sparse_format`), then the code stream (alphabet
``2**weight_bits``) and the gap stream (alphabet ``2**index_bits``) are Huffman-coded
separately with canonical codes of at most 15 bits (:mod:`dc_engine.huffman`).

Layout
------
All integers are unsigned little-endian; ``wb`` = weight_bits, ``ib`` = index_bits.

==========  ==========================  ====================================================
offset      size (bytes)                field
==========  ==========================  ====================================================
0           3                           magic ``b"DCL"``
3           1                           format version, ``1``
4           1                           ``wb``, 1..16 (codebook has ``2**wb`` entries)
5           1                           ``ib``, 1..16 (gap field width)
6           1                           ``ndim``, 1..4
7           4 * ndim                    shape, one u32 per dimension (C order)
H - 20      4                           ``n_entries`` u32: entries of the relative index,
                                        non-zeros plus fillers
H - 16      4                           ``nnz`` u32: non-zero codes
H - 12      4                           ``n_bias`` u32: bias values (0: no bias)
H - 8       4                           ``code_nbits`` u32: bits of the Huffman code stream
H - 4       4                           ``gap_nbits`` u32: bits of the Huffman gap stream
H           2**wb / 2                   code-length table: ``2**wb`` Huffman lengths of the
                                        code stream, 4 bits each (0..15, 0 = unused), packed
                                        with :func:`~dc_engine.sparse_format.pack` (LSB
                                        first: symbol 0 is the low nibble of the first byte)
...         2**ib / 2                   gap-length table, the same for the ``2**ib`` gaps
...         4 * n_used                  codebook values of the USED slots: float32, one per
                                        slot ``s`` in 1..2**wb-1 whose code length is
                                        non-zero, in increasing ``s`` (slot 0 is implied
                                        +0.0, the pruned weight; an unused slot stores
                                        nothing and decodes as +0.0)
...         4 * n_bias                  bias, float32
...         ceil(code_nbits / 8)        code stream: ``n_entries`` canonical Huffman codes
...         ceil(gap_nbits / 8)         gap stream: ``n_entries`` canonical Huffman codes
end - 4     4                           CRC-32 (``zlib.crc32``) of every byte before it
==========  ==========================  ====================================================

``H = 27 + 4 * ndim``. ``n_used`` is the number of non-zero lengths among symbols
1..2**wb-1 of the code-length table (a slot no weight uses costs nothing: with 8-bit conv
layers, most of the 255 centroids can be unused). With ``wb = 1`` (or ``ib = 1``) the table
is 2 lengths in one byte.
Huffman bit order (:mod:`dc_engine.huffman`): MSB first, each code MSB first, zero padding;
canonical codes are assigned in (length, symbol) order, so the length tables define them.
Decoding: Huffman-decode ``n_entries`` codes and ``n_entries`` gaps, then positions are
``cumsum(gap + 1) - 1`` in the flattened (row-major) weight; all other positions are code 0.
The payload length is exactly the sum of the parts; anything else is corrupt.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from . import huffman
from .errors import DCFormatError
from .codebook import index_dtype
from .sparse_format import decode_sparse, encode_sparse, pack, unpack

MAGIC = b"DCL"
FORMAT = 1
MAX_BITS = 16
MAX_NDIM = 4
MAX_LEN = 15
"""Longest Huffman code: the length tables store 4 bits per symbol."""
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
_CRC = struct.Struct("<I")


def header_size(ndim: int) -> int:
    """Bytes of the fixed header of a layer with ``ndim`` dimensions: ``27 + 4 * ndim``."""
    return _PREFIX.size + 4 * ndim + _COUNTS.size


def _nbytes(nbits: int) -> int:
    return -(-nbits // 8)


def _parts(wb: int, ib: int, ndim: int, n_used: int, n_bias: int, code_nbits: int,
           gap_nbits: int) -> dict[str, int]:
    """Byte count of each part of a payload (ordered as in the layout)."""
    return {
        "header": header_size(ndim),
        "code_table": (2**wb * 4) // 8,
        "gap_table": (2**ib * 4) // 8,
        "codebook": 4 * n_used,
        "bias": 4 * n_bias,
        "code_stream": _nbytes(code_nbits),
        "gap_stream": _nbytes(gap_nbits),
        "crc": _CRC.size,
    }


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


def encode_layer(idx, codebook, bias=None, index_bits: int = 5, max_len: int = MAX_LEN,
                 name: str = "layer") -> bytes:
    """Encode one layer's codes, codebook and bias into a payload (layout in the module doc).

    Parameters
    ----------
    idx : ndarray, 1..4 dims (the weight's shape), uint8 or uint16. Per-weight codebook slots,
        each in [0, 2**weight_bits); 0 = pruned.
    codebook : ndarray, shape (2**weight_bits,), float32, weight_bits in 1..16, finite,
        ``codebook[0] == 0.0``. Only the slots that ``idx`` uses are stored.
    bias : ndarray, shape (n,), float32, finite; or None (stored as ``n_bias = 0``).
    index_bits : int, 1..16. Width of the relative-index gap field (DC: 5 for the LeNets).
    max_len : int, 1..15. Longest Huffman code.
    name : str. The layer's name, used in error messages.

    Returns
    -------
    bytes. The payload; ``decode_layer(payload)`` gives the inputs back exactly (``idx`` as
    ``index_dtype(weight_bits)``, ``codebook[0]`` and every slot ``idx`` does not use as +0.0),
    so ``codebook[idx]`` is reproduced bit for bit.

    Raises
    ------
    TypeError
        ``idx`` is not uint8/uint16, ``codebook`` / ``bias`` not float32, or an int argument
        is not an integer.
    ValueError
        A shape, size or range is invalid, a value is not finite, a count exceeds u32, or the
        used alphabet does not fit codes of ``max_len`` bits.
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
    if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)):
        raise TypeError(f"index_bits must be an integer, got {index_bits!r}")
    if not 1 <= index_bits <= MAX_BITS:
        raise ValueError(f"index_bits must be in 1..{MAX_BITS}, got {index_bits}")
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)):
        raise TypeError(f"max_len must be an integer, got {max_len!r}")
    if not 1 <= max_len <= MAX_LEN:
        raise ValueError(f"max_len must be in 1..{MAX_LEN} (4-bit length tables), got {max_len}")
    ib = int(index_bits)

    gaps, codes = encode_sparse(idx.ravel(), ib)
    code_data, code_lengths, code_nbits = huffman.encode(codes, 2**wb, int(max_len))
    gap_data, gap_lengths, gap_nbits = huffman.encode(gaps, 2**ib, int(max_len))
    if max(code_nbits, gap_nbits) > MAX_U32:
        raise ValueError(f"layer {name!r}: a Huffman stream of more than 2**32 bits does not "
                         f"fit the u32 bit count")
    nnz = int(np.count_nonzero(idx))
    header = (_PREFIX.pack(MAGIC, FORMAT, wb, ib, idx.ndim)
              + struct.pack(f"<{idx.ndim}I", *idx.shape)
              + _COUNTS.pack(codes.size, nnz, bias.size, code_nbits, gap_nbits))
    body = b"".join([
        header,
        pack(code_lengths, 4).tobytes(),
        pack(gap_lengths, 4).tobytes(),
        codebook[1:][code_lengths[1:] > 0].astype("<f4").tobytes(),
        bias.astype("<f4").tobytes(),
        code_data.tobytes(),
        gap_data.tobytes(),
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
    """Validate everything that does not need decoding; return the view and header fields.

    Cheap: reads the fixed-size fields and checks the CRC, allocates nothing payload-sized
    beyond the CRC pass.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"layer {name!r}: payload must be bytes, got {type(payload).__name__}")
    buf = memoryview(payload).cast("B")
    size = len(buf)
    pre = f"layer {name!r}:"
    minimum = header_size(1) + _CRC.size
    if size < minimum:
        raise DCFormatError(f"{pre} payload truncated: {size} bytes, a layer payload has at "
                            f"least {minimum}")
    magic, fmt, wb, ib, ndim = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise DCFormatError(f"{pre} bad magic {bytes(magic)!r}, expected {MAGIC!r}: not a "
                            f"dc-engine layer payload")
    if fmt != FORMAT:
        raise DCFormatError(f"{pre} unsupported format version {fmt}, this reader knows "
                            f"{FORMAT}")
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
    if size < header_size(ndim) + _CRC.size:
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
    n_entries, nnz, n_bias, code_nbits, gap_nbits = _COUNTS.unpack_from(
        buf, _PREFIX.size + 4 * ndim)
    if n_entries > n_weights:
        raise DCFormatError(f"{pre} n_entries={n_entries} exceeds the {n_weights} weights of "
                            f"shape {shape}")
    if nnz > n_entries:
        raise DCFormatError(f"{pre} nnz={nnz} exceeds n_entries={n_entries}")
    table_end = header_size(ndim) + (2**wb * 4) // 8
    if size < table_end + _CRC.size:
        raise DCFormatError(f"{pre} payload truncated: {size} bytes cannot hold the header and "
                            f"the {2**wb}-symbol code-length table")
    code_lengths = unpack(buf[header_size(ndim):table_end], 4, 2**wb)
    n_used = int(np.count_nonzero(code_lengths[1:]))
    parts = _parts(wb, ib, ndim, n_used, n_bias, code_nbits, gap_nbits)
    expected = sum(parts.values())
    if expected != size:
        raise DCFormatError(f"{pre} payload length mismatch: the header declares "
                            f"{expected} bytes, got {size}; the counts are corrupt")
    fields = dict(weight_bits=wb, index_bits=ib, ndim=ndim, shape=shape,
                  n_entries=n_entries, nnz=nnz, n_bias=n_bias, code_nbits=code_nbits,
                  gap_nbits=gap_nbits, n_used=n_used)
    return buf, dict(fields, parts=parts, code_lengths=code_lengths)


def decode_layer(payload, name: str = "layer") -> dict:
    """Decode a payload written by :func:`encode_layer`, validating it as untrusted input.

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
        ``weight_bits``, ``index_bits``, ``nnz``, ``n_entries`` : int.

    Raises
    ------
    TypeError
        ``payload`` is not bytes-like.
    DCFormatError
        Anything wrong with the payload: truncated, bad magic or version, CRC mismatch, bits
        or ndim out of range, a shape above :data:`MAX_WEIGHTS`, counts inconsistent with each
        other or with the payload length, a non-finite codebook or bias value, a corrupt
        Huffman stream or relative index, or ``nnz`` not matching the decoded codes. Messages
        name the layer. Sizes are checked before any allocation.
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

    try:
        code_lengths = h["code_lengths"]
        gap_lengths = unpack(raw("gap_table"), 4, 2**ib)
        codebook = np.zeros(2**wb, dtype=np.float32)
        codebook[np.flatnonzero(code_lengths[1:]) + 1] = np.frombuffer(raw("codebook"),
                                                                       dtype="<f4")
        bias = np.frombuffer(raw("bias"), dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(codebook)):
            raise DCFormatError("the codebook holds non-finite values (NaN or inf)")
        if not np.all(np.isfinite(bias)):
            raise DCFormatError("the bias holds non-finite values (NaN or inf)")
        codes = huffman.decode(np.frombuffer(raw("code_stream"), dtype=np.uint8), code_lengths,
                               n, h["code_nbits"])
        gaps = huffman.decode(np.frombuffer(raw("gap_stream"), dtype=np.uint8), gap_lengths,
                              n, h["gap_nbits"])
        flat = decode_sparse(gaps, codes, math.prod(h["shape"]), ib)
    except DCFormatError as exc:
        raise DCFormatError(f"{pre} {exc}") from exc
    except (ValueError, TypeError) as exc:  # defensive: helpers must not leak other types
        raise DCFormatError(f"{pre} corrupt payload: {exc}") from exc
    found = int(np.count_nonzero(flat))
    if found != h["nnz"]:
        raise DCFormatError(f"{pre} header declares nnz={h['nnz']}, but the streams decode to "
                            f"{found} non-zero codes")
    idx = flat.astype(index_dtype(wb)).reshape(h["shape"])
    return dict(idx=idx, codebook=codebook, bias=bias, weight_bits=wb, index_bits=ib,
                nnz=h["nnz"], n_entries=n)


def payload_stats(payload, name: str = "layer") -> dict:
    """Header fields and the size of each part of a payload (validated like the decoder's
    header pass, without decoding the streams).

    Parameters
    ----------
    payload : bytes, bytearray or memoryview. Written by :func:`encode_layer`.
    name : str. The layer's name, used in error messages.

    Returns
    -------
    dict with the header fields (``weight_bits``, ``index_bits``, ``ndim``, ``shape``,
    ``n_entries``, ``nnz``, ``n_bias``, ``code_nbits``, ``gap_nbits``), ``n_used`` (codebook
    slots stored); the byte counts
    ``header_bytes``, ``code_table_bytes``, ``gap_table_bytes``, ``codebook_bytes``,
    ``bias_bytes``, ``code_stream_bytes``, ``gap_stream_bytes``, ``crc_bytes``,
    ``total_bytes``; and the average Huffman bits per entry ``code_bits_per_entry``,
    ``gap_bits_per_entry`` (DC Table 2's "after Huffman" columns; 0.0 when there are no
    entries) and the fixed-width P+Q size ``fixed_pq_bits`` = ``n_entries * (wb + ib)``.

    Raises
    ------
    TypeError, DCFormatError
        As :func:`decode_layer`'s header checks.
    """
    _, h = _parse(payload, name)
    parts = h.pop("parts")
    del h["code_lengths"]
    out = dict(h)
    out.update({f"{k}_bytes": v for k, v in parts.items()})
    out["total_bytes"] = sum(parts.values())
    n = h["n_entries"]
    out["code_bits_per_entry"] = h["code_nbits"] / n if n else 0.0
    out["gap_bits_per_entry"] = h["gap_nbits"] / n if n else 0.0
    out["fixed_pq_bits"] = n * (h["weight_bits"] + h["index_bits"])
    return out


__all__ = ["MAGIC", "FORMAT", "MAX_WEIGHTS", "MAX_WEIGHTS_PER_BYTE", "SMALL_LAYER", "header_size",
           "encode_layer", "decode_layer", "payload_stats"]
