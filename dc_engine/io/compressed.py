"""The compressed model file (kind ``"compressed"``): Stage-3 payloads in a small HDF5 file.

Two containers hold the same content: the per-layer payloads of :mod:`dc_engine.codecs.payload`
back to back, in layer order (each with its own header and CRC32), and the architecture JSON
that says how to cut and rebuild them. The layout is specified in ``docs/FORMAT.md``.

The classic container (versions 1 and 2, the default) holds four root attributes and ONE
uint8 dataset, ``payload``; in short:

- ``format`` = ``"dc-engine"``, ``kind`` = ``"compressed"``, ``version`` = 1 for a chain, 2
  for a graph (u8);
- ``architecture``: compact JSON ``{"name": str, "input_shape": [int, ...], "layers":
  [[name, type, hyperparameters, payload_bytes], ...]}``; ``payload_bytes`` is 0 for a layer
  without weights; version 2 adds a fifth element, the layer's ``inputs`` (the tensors it
  reads), to the layers of a graph, and an ``"output"`` key when the output is not the last
  layer's;
- ``payload``: the concatenation, ``sum(payload_bytes)`` bytes, COMPACT layout (raw data
  inside the dataset's object header) up to :data:`COMPACT_LIMIT` bytes, contiguous above.

The compact container (version 3, ``write(..., compact=True)``) keeps ``format``, ``kind`` and
``version`` and puts everything else in ONE uint8 root attribute, ``model``: a u32 length, the
raw-deflated architecture JSON (the same document), then the payloads; a file whose ``model``
would exceed :data:`COMPACT_LIMIT` keeps the payloads in a contiguous ``payload`` dataset
instead. It saves the dataset's object header and most of the JSON: about 450-600 B of the
0.9-1.1 KB a classic container costs the LeNets.

Why so: a 25 KB model cannot afford HDF5's usual 2-4 KB of metadata. With HDF5 1.10 object
headers (``libver="v110"``, which also checksum all metadata), no timestamps, no chunking and
one dataset, the whole container costs about 0.65-1.1 KB over the payloads (most of it the
architecture attribute). The file size on disk
is the number ``dc-engine inspect`` reports.

Writes are atomic (:func:`dc_engine.io._h5.atomic_write`); reads check every attribute and size
before reading bytes, and raise :class:`~dc_engine.errors.DCFormatError` naming the file and the
problem. This module moves bytes; :mod:`dc_engine.runtime` decodes them into a model.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .._validate import is_int
from ..core.layers import LAYER_TYPES, RESERVED_HYPERPARAMETERS
from ..limits import MAX_ARCHITECTURE_BYTES, MAX_LAYERS
from ._h5 import (
    COMPRESSED_KIND,
    CORRUPT,
    DENSE_KIND,
    FORMAT_NAME,
    UPGRADE,
    PathLike,
    atomic_write,
    attr,
    existing_file,
    fail,
    file_kind,
    json_attr,
    reading,
    set_attr,
)

__all__ = ["COMPRESSED_VERSION", "COMPACT_VERSION", "COMPACT_LIMIT", "LayerRecord", "Container",
           "write", "read"]

#: Newest version of the compressed kind this module writes and reads.
COMPRESSED_VERSION = 3
#: First version whose layers may be wired as a graph (a fifth row element, ``inputs``, and an
#: ``output`` key); a chain is still written as version 1, which older readers read.
_GRAPH_VERSION = 2
#: Version of the compact container (root attribute ``model``), written only on request
#: (``write(..., compact=True)``); chains and graphs alike.
COMPACT_VERSION = 3
#: Largest payload kept in COMPACT layout, and largest ``model`` attribute of a compact file
#: (HDF5 caps a header message below 64 KiB).
COMPACT_LIMIT = 60_000

_LIBVER = ("v110", "v110")  # superblock v3, v2 object headers: checksummed, compact
_DATASET = "payload"
_MODEL = "model"  # the compact container's attribute
_MODEL_HEAD = struct.Struct("<I")  # length of the deflated architecture JSON
_COMPACT_ATTRS = frozenset({"format", "kind", "version", _MODEL})
_FIX = ("Pass a compressed model file written by `dc-engine compress` or `dc-engine encode`, "
        "or re-create it.")


@dataclass
class LayerRecord:
    """One layer of a compressed file: what rebuilds it, and its payload (None: no weights)."""

    name: str
    type: str
    hyperparameters: dict
    payload: bytes | None = None
    inputs: list | None = None
    """The tensors the layer reads (None: the previous layer's output)."""


@dataclass
class Container:
    """A compressed file's content, validated (payloads not yet decoded)."""

    architecture: str
    input_shape: tuple
    layers: list
    file_bytes: int
    version: int = COMPRESSED_VERSION
    """The container version read: 1 (chain), 2 (graph) or 3 (compact container)."""
    output: str | None = None
    """The tensor the model returns (None: the last layer's)."""

    @property
    def compact(self) -> bool:
        """Whether the file uses the compact container (version 3)."""
        return self.version >= COMPACT_VERSION


# --------------------------------------------------------------------------------------------
# Write
# --------------------------------------------------------------------------------------------


def _architecture_json(architecture: str, input_shape, layers: list[LayerRecord],
                       output: str | None = None) -> str:
    if not isinstance(architecture, str) or "\x00" in architecture:
        raise ValueError(f"architecture must be a str without NUL, got {architecture!r}")
    shape = [int(d) for d in input_shape]
    if not 1 <= len(shape) <= 8 or any(not 1 <= d <= 2**31 for d in shape):
        raise ValueError(f"input_shape must be 1 to 8 positive integers (at most 2**31), got "
                         f"{input_shape!r}")
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"a compressed file holds 1 to {MAX_LAYERS} layers, got {len(layers)}")
    names = [r.name for r in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be distinct, got {names}")
    rows = []
    for r in layers:
        if not isinstance(r.name, str) or "\x00" in r.name:
            raise ValueError(f"layer name must be a str without NUL, got {r.name!r}")
        if r.type not in LAYER_TYPES:
            raise ValueError(f"layer {r.name!r}: unknown type {r.type!r}; known: "
                             f"{sorted(LAYER_TYPES)}")
        if (not isinstance(r.hyperparameters, dict)
                or set(r.hyperparameters) & set(RESERVED_HYPERPARAMETERS)):
            raise ValueError(f"layer {r.name!r}: hyperparameters must be a dict without the keys "
                             f"{list(RESERVED_HYPERPARAMETERS)}, got {r.hyperparameters!r}")
        if r.payload is not None and not isinstance(r.payload, (bytes, bytearray)):
            raise TypeError(f"layer {r.name!r}: payload must be bytes or None, got "
                            f"{type(r.payload).__name__}")
        row = [r.name, r.type, dict(r.hyperparameters),
               0 if r.payload is None else len(r.payload)]
        if r.inputs is not None:
            if (isinstance(r.inputs, str) or not r.inputs
                    or not all(isinstance(n, str) and "\x00" not in n for n in r.inputs)):
                raise ValueError(f"layer {r.name!r}: inputs must be a non-empty list of tensor "
                                 f"names, got {r.inputs!r}")
            row.append(list(r.inputs))
        rows.append(row)
    doc = {"name": architecture, "input_shape": shape, "layers": rows}
    if output is not None:
        if not isinstance(output, str) or "\x00" in output:
            raise ValueError(f"output must be a tensor name, got {output!r}")
        doc["output"] = output
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _write(tmp: str, arch: str, blob: bytes, version: int) -> None:
    # meta_block_size: HDF5 otherwise reserves 2 KiB for metadata next to contiguous data
    with h5py.File(tmp, "w", libver=_LIBVER, meta_block_size=512) as f:
        set_attr(f, "format", FORMAT_NAME)
        set_attr(f, "kind", COMPRESSED_KIND)
        f.attrs.create("version", np.uint8(version))
        set_attr(f, "architecture", arch)
        if not blob:
            return
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)  # no timestamps: same input, same bytes
        if len(blob) <= COMPACT_LIMIT:
            dcpl.set_layout(h5py.h5d.COMPACT)
        else:
            dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        space = h5py.h5s.create_simple((len(blob),))
        ds = h5py.h5d.create(f.id, _DATASET.encode(), h5py.h5t.STD_U8LE, space, dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.frombuffer(blob, dtype=np.uint8))


def _deflate(data: bytes) -> bytes:
    """Raw deflate (no zlib header or checksum: HDF5's header checksum covers the bytes)."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush()


def _model_head(arch: str) -> bytes:
    """The compact container's ``model`` attribute up to the payloads: u32 length, deflated
    architecture JSON."""
    raw = arch.encode("utf-8")
    if len(raw) > MAX_ARCHITECTURE_BYTES:
        raise ValueError(f"the architecture JSON takes {len(raw):,} bytes, above the "
                         f"{MAX_ARCHITECTURE_BYTES:,} a compact compressed file may hold; "
                         f"write the classic container (compact=False)")
    packed = _deflate(raw)
    return _MODEL_HEAD.pack(len(packed)) + packed


def _write_compact(tmp: str, head: bytes, blob: bytes) -> None:
    """Version 3: ``model`` = head + payloads, or (above COMPACT_LIMIT) ``model`` = head and
    the payloads in a contiguous dataset."""
    inline = len(head) + len(blob) <= COMPACT_LIMIT
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # no timestamps: same input, same bytes
    if inline:
        fcpl.set_sizes(4, 4)  # a file below 64 KiB: 4-byte offsets and lengths save 40 B
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fapl.set_meta_block_size(512)
    fid = h5py.h5f.create(os.fsencode(tmp), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)
    with h5py.File(fid) as f:
        set_attr(f, "format", FORMAT_NAME)
        set_attr(f, "kind", COMPRESSED_KIND)
        f.attrs.create("version", np.uint8(COMPACT_VERSION))
        data = head + blob if inline else head
        # h5a.create: a 1-D dataspace without the maximum dimension h5py's attrs.create adds
        aid = h5py.h5a.create(f.id, _MODEL.encode(), h5py.h5t.STD_U8LE,
                              h5py.h5s.create_simple((len(data),)))
        aid.write(np.frombuffer(data, dtype=np.uint8))
        aid.close()
        if inline or not blob:
            return
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)
        dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        space = h5py.h5s.create_simple((len(blob),))
        ds = h5py.h5d.create(f.id, _DATASET.encode(), h5py.h5t.STD_U8LE, space, dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.frombuffer(blob, dtype=np.uint8))


def write(path: PathLike, architecture: str, input_shape, layers: list[LayerRecord],
          output: str | None = None, compact: bool = False) -> Path:
    """Write a compressed model file atomically; returns its resolved path.

    Parameters
    ----------
    path : target file; its folder must exist. An existing file is replaced only once the new
        one is complete on disk.
    architecture : the model's name (e.g. ``"lenet-5"``).
    input_shape : shape of one sample.
    layers : every layer of the model in order; a layer with weights carries its payload
        (:func:`dc_engine.codecs.payload.encode_layer`), the others ``payload=None``; a layer
        of a graph names the tensors it reads in ``inputs``.
    output : the tensor the model returns, when it is not the last layer's.
    compact : bool. False (default): the classic container, version 1 for a chain (no
        ``inputs``, no ``output``), else version 2, byte for byte what earlier releases
        wrote. True: the compact container, version 3 (about 450-600 B smaller for the
        LeNets; readable by dc-engine from this release on).

    Raises
    ------
    ValueError, TypeError
        Bad names, types or shapes, or (compact) an architecture JSON above
        :data:`dc_engine.limits.MAX_ARCHITECTURE_BYTES` (checked before the disk is touched).
    FileNotFoundError, IsADirectoryError
        As :func:`dc_engine.io._h5.atomic_write`.
    """
    if not isinstance(compact, bool):
        raise TypeError(f"compact must be a bool, got {type(compact).__name__}")
    arch = _architecture_json(architecture, input_shape, layers, output)
    blob = b"".join(bytes(r.payload) for r in layers if r.payload is not None)
    if compact:
        head = _model_head(arch)
        return atomic_write(path, lambda tmp: _write_compact(tmp, head, blob))
    graph = output is not None or any(r.inputs is not None for r in layers)
    version = _GRAPH_VERSION if graph else 1
    return atomic_write(path, lambda tmp: _write(tmp, arch, blob, version))


# --------------------------------------------------------------------------------------------
# Read
# --------------------------------------------------------------------------------------------


def _check_version(f: h5py.File, path: Path) -> int:
    version = attr(f, "version", path)
    if not is_int(version):
        fail(path, "bad attribute 'version'", "an integer",
              f"{type(version).__name__} {version!r:.80}", fix=_FIX)
    if version > COMPRESSED_VERSION:
        fail(path, "compressed format version too new",
              f"version <= {COMPRESSED_VERSION}", f"version {int(version)}", fix=UPGRADE)
    if version < 1:
        fail(path, "unsupported compressed format version",
              f"version 1 to {COMPRESSED_VERSION}", f"version {int(version)}", fix=_FIX)
    return int(version)


def _parse_architecture(doc: dict, path: Path, version: int, where: str = "attribute "
                        "'architecture'") -> tuple[str, tuple, list[list], str | None]:
    def bad(what: str, found) -> None:
        fail(path, f"bad {where}", what, f"{found!r:.120}", fix=_FIX)

    graph = version >= _GRAPH_VERSION
    keys = {"name", "input_shape", "layers"}
    if not keys <= set(doc) <= keys | ({"output"} if graph else set()):
        bad("keys name, input_shape, layers" + (" (and output)" if graph else ""), sorted(doc))
    name, shape, rows = doc["name"], doc["input_shape"], doc["layers"]
    output = doc.get("output")
    if not isinstance(name, str):
        bad("a str 'name'", name)
    if output is not None and not isinstance(output, str):
        bad("a str 'output'", output)
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
            or not all(is_int(d) and 1 <= d <= 2**31 for d in shape)):
        bad("'input_shape' as 1 to 8 positive integers", shape)
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_LAYERS:
        bad(f"'layers' as a list of 1 to {MAX_LAYERS} layers", type(rows).__name__)
    seen = set()
    for row in rows:
        if (not isinstance(row, list) or len(row) not in ((4, 5) if graph else (4,))
                or not isinstance(row[0], str) or not isinstance(row[1], str)
                or not isinstance(row[2], dict) or not is_int(row[3]) or row[3] < 0
                or (len(row) == 5 and (not isinstance(row[4], list) or not row[4]
                                       or not all(isinstance(n, str) for n in row[4])))):
            bad("each layer as [name, type, {hyperparameters}, payload_bytes >= 0"
                + (", [inputs]]" if graph else "]"), row)
        lname, ltype, hp = row[:3]
        if lname in seen:
            bad("distinct layer names", lname)
        seen.add(lname)
        if ltype not in LAYER_TYPES:
            fail(path, "unknown layer type", f"one of {sorted(LAYER_TYPES)}", repr(ltype),
                  lname, fix=f"The file may come from a newer dc-engine. {UPGRADE}")
        reserved = sorted(set(hp) & set(RESERVED_HYPERPARAMETERS))
        if reserved:
            fail(path, "bad hyperparameters", f"no keys {list(RESERVED_HYPERPARAMETERS)}",
                  f"keys {reserved}", lname, fix=_FIX)
    return name, tuple(int(d) for d in shape), rows, output


def _read_blob(f: h5py.File, path: Path, total: int) -> bytes:
    keys = set(f.keys())
    expected = {_DATASET} if total else set()
    if keys != expected:
        fail(path, "unexpected root members", f"{sorted(expected)}", f"{sorted(keys)}",
              fix=_FIX)
    if not total:
        return b""
    if not isinstance(f.get(_DATASET, getlink=True), h5py.HardLink):
        fail(path, f"bad member {_DATASET!r}", "a dataset stored in this file",
              "a soft or external link", fix=_FIX)
    ds = f[_DATASET]
    if not isinstance(ds, h5py.Dataset) or ds.dtype != np.uint8 or ds.shape != (total,):
        found = (f"{ds.dtype} {ds.shape}" if isinstance(ds, h5py.Dataset)
                 else type(ds).__name__)
        fail(path, f"bad dataset {_DATASET!r}",
              f"uint8 bytes of shape ({total},) (the sum of the layers' payload sizes)", found,
              fix=CORRUPT)
    plist = ds.id.get_create_plist()
    if (plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT)
            or plist.get_external_count() or plist.get_nfilters()):
        fail(path, f"unsupported storage for {_DATASET!r}",
              "a compact or contiguous dataset without filters", "another layout", fix=_FIX)
    stored = ds.id.get_storage_size()
    if stored != total or total > f.id.get_filesize():
        fail(path, f"dataset {_DATASET!r} is truncated or unallocated",
              f"{total} stored bytes within the file",
              f"{stored} stored bytes in a {f.id.get_filesize()}-byte file", fix=CORRUPT)
    return ds[()].tobytes()


def _inflate(packed: bytes, path: Path) -> bytes:
    """The architecture JSON of a compact file, inflated within MAX_ARCHITECTURE_BYTES (a
    deflate bomb stops there); the stream must end exactly at the end of ``packed``."""
    problem = "bad deflated architecture in attribute 'model'"
    expected = (f"one complete raw-deflate stream of {len(packed)} bytes (the declared length) "
                f"inflating to at most {MAX_ARCHITECTURE_BYTES:,} bytes")
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(packed, MAX_ARCHITECTURE_BYTES + 1)
    except zlib.error as exc:
        fail(path, problem, expected, f"invalid deflate data ({exc})", fix=CORRUPT)
    if len(out) > MAX_ARCHITECTURE_BYTES:
        fail(path, problem, expected, f"a stream that inflates beyond "
             f"{MAX_ARCHITECTURE_BYTES:,} bytes (a deflate bomb or a damaged file)", fix=CORRUPT)
    if not d.eof:
        fail(path, problem, expected, "a stream that does not end within them (truncated)",
             fix=CORRUPT)
    if d.unused_data:
        fail(path, problem, expected, f"{len(d.unused_data)} bytes after the end of the stream",
             fix=CORRUPT)
    return out


def _read_model_attr(f: h5py.File, path: Path) -> tuple[dict, bytes]:
    """The compact container's root: exactly the attributes format, kind, version and
    ``model``; returns the architecture document and the bytes after it in ``model`` (the
    payloads, or nothing when they are in the ``payload`` dataset)."""
    found = set(f.attrs)
    if found != _COMPACT_ATTRS:
        fail(path, "unexpected root attributes of a compact (version 3) file",
             f"{sorted(_COMPACT_ATTRS)}", f"{sorted(found)}", fix=_FIX)
    aid = f.attrs.get_id(_MODEL)
    shape = aid.shape  # None for an empty (null) dataspace
    if (aid.dtype != np.uint8 or not isinstance(shape, tuple) or len(shape) != 1
            or shape[0] < _MODEL_HEAD.size + 2):
        fail(path, f"bad attribute {_MODEL!r}",
             f"a 1-D uint8 array of at least {_MODEL_HEAD.size + 2} bytes",
             f"{aid.dtype} of shape {shape}", fix=CORRUPT)
    raw = np.ascontiguousarray(attr(f, _MODEL, path), dtype=np.uint8).tobytes()
    (n,) = _MODEL_HEAD.unpack_from(raw)
    if not 2 <= n <= len(raw) - _MODEL_HEAD.size:
        fail(path, f"bad attribute {_MODEL!r}",
             f"a deflated architecture of 2 to {len(raw) - _MODEL_HEAD.size} bytes (what "
             f"follows the {_MODEL_HEAD.size}-byte length in the {len(raw)}-byte attribute)",
             f"a declared length of {n}", fix=CORRUPT)
    end = _MODEL_HEAD.size + n
    text = _inflate(raw[_MODEL_HEAD.size:end], path)
    try:
        doc = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        fail(path, f"broken JSON in attribute {_MODEL!r}", "a UTF-8 JSON dict (the "
             "architecture)", f"{text[:80]!r} ({exc})", fix=CORRUPT)
    if not isinstance(doc, dict):
        fail(path, f"bad attribute {_MODEL!r}", "a JSON dict (the architecture)",
             f"{type(doc).__name__} {text[:80]!r}", fix=CORRUPT)
    return doc, raw[end:]


def _compact_blob(f: h5py.File, path: Path, tail: bytes, total: int) -> bytes:
    """The payloads of a compact file: the ``model`` attribute's tail, which must then be
    exactly ``total`` bytes with nothing else in the file, or else the ``payload`` dataset."""
    if not tail:
        return _read_blob(f, path, total)
    if len(tail) != total:
        fail(path, f"payloads in attribute {_MODEL!r} do not match the architecture",
             f"{total} bytes after the architecture (the sum of the layers' payload sizes)",
             f"{len(tail)} bytes", fix=CORRUPT)
    keys = set(f.keys())
    if keys:
        fail(path, "unexpected root members",
             f"[] (the payloads are in attribute {_MODEL!r})", f"{sorted(keys)}", fix=_FIX)
    return tail


def read(path: PathLike) -> Container:
    """Read and validate a compressed model file (payloads are returned as bytes, undecoded).

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        No file at ``path``.
    DCFormatError
        Not HDF5, truncated, foreign, a dense file, a newer version, a bad ``architecture``
        attribute (version 3: a bad ``model`` attribute, a deflate stream that is broken,
        truncated, followed by other bytes or inflating beyond
        :data:`~dc_engine.limits.MAX_ARCHITECTURE_BYTES`, other root attributes), or
        payloads that do not match it. Messages name the file and, where it applies, the
        layer.
    """
    path = existing_file(path)
    with reading(path) as f:
        kind = file_kind(f, path)
        if kind != COMPRESSED_KIND:
            hint = (" This is a dense model: load it with dc_engine.load, or compress it with "
                    "`dc-engine encode` (quantized) or `dc-engine compress` (dense)."
                    if kind == DENSE_KIND else "")
            fail(path, "not a compressed model file", f"kind = {COMPRESSED_KIND!r}",
                  f"kind = {kind!r:.80}", fix=(hint.strip() or _FIX))
        version = _check_version(f, path)
        if version >= COMPACT_VERSION:
            doc, tail = _read_model_attr(f, path)
            name, shape, rows, output = _parse_architecture(
                doc, path, version, f"architecture in attribute {_MODEL!r}")
            blob = _compact_blob(f, path, tail, sum(r[3] for r in rows))
        else:
            name, shape, rows, output = _parse_architecture(
                json_attr(f, "architecture", dict, path), path, version)
            blob = _read_blob(f, path, sum(r[3] for r in rows))
        file_bytes = f.id.get_filesize()
    layers, pos = [], 0
    for row in rows:
        lname, ltype, hp, n = row[:4]
        inputs = row[4] if len(row) == 5 else None
        layers.append(LayerRecord(lname, ltype, hp, blob[pos:pos + n] if n else None, inputs))
        pos += n
    return Container(name, shape, layers, int(file_bytes), version, output)
