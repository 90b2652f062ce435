"""HDF5 plumbing shared by the two file kinds: atomic writes, checked attribute reads, errors.

:mod:`dc_engine.io.dense` (dense files) and :mod:`dc_engine.io.compressed` (compressed
files) build on these; with them they are the only modules that import h5py. Every read helper
treats the file as untrusted and raises :class:`~dc_engine.errors.DCFormatError` naming the file,
the problem, what was expected and what was found, and how to fix it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import h5py
import numpy as np

from .._files import atomic_write, regular_file
from ..errors import DCFormatError

PathLike = str | os.PathLike

#: Value of the root attribute ``format`` of every dc-engine file.
FORMAT_NAME = "dc-engine"
#: Root attribute ``kind`` of a dense (uncompressed) model file.
DENSE_KIND = "dense"
#: Root attribute ``kind`` of a compressed model file (:mod:`dc_engine.io.compressed`).
COMPRESSED_KIND = "compressed"

FIX = ("Pass a model file written by dc-engine (dc_engine.save, `dc-engine train`, `compress` "
       "or `encode`), or re-create it.")
UPGRADE = "Upgrade dc-engine (pip install -U dc-engine) to read it."
CORRUPT = ("The file is damaged (interrupted copy, disk error or edit): restore it from a "
            "good copy or re-create it (e.g. re-run `dc-engine train`).")


def fail(path: Path, problem: str, expected: str, found: str, layer: str | None = None,
         fix: str = FIX) -> NoReturn:
    """Raise DCFormatError: ``<path>[, layer <l>]: <problem>: expected ..., found ... <fix>``."""
    where = f"{path}" if layer is None else f"{path}, layer {layer!r}"  # DCFormatError escapes
    raise DCFormatError(f"{where}: {problem}: expected {expected}, found {found}. {fix}")


def set_attr(obj: h5py.HLObject, key: str, value: Any) -> None:
    """Set an attribute; a str becomes a fixed-length UTF-8 string (never variable-length)."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
        value = np.array(raw, dtype=h5py.string_dtype("utf-8", max(1, len(raw))))
    obj.attrs.create(key, value)


def existing_file(path: PathLike) -> Path:
    """``path`` after checking it names a regular file (not a directory, FIFO, socket or
    device: HDF5's open of a FIFO blocks forever)."""
    return regular_file(path, "model file", "Check the path, or create the file with "
                        "`dc-engine train`.", error=DCFormatError)


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        fail(path, "not an HDF5 file or truncated",
              "a complete dc-engine model file (HDF5)", f"a file HDF5 cannot open ({exc})",
              fix=f"If it is a copy, copy it again; otherwise {FIX[0].lower()}{FIX[1:]}")


@contextlib.contextmanager
def reading(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` read-only; turn low-level read errors into DCFormatError; always close."""
    f = _open(path)
    try:
        with f:
            yield f
    except DCFormatError:
        raise
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        fail(path, "corrupt or truncated file", "readable dc-engine HDF5 structures",
              f"an error while reading ({type(exc).__name__}: {exc})", fix=CORRUPT)


def attr(obj: h5py.HLObject, key: str, path: Path, layer: str | None = None) -> Any:
    """Read attribute ``key`` after checking its type and size (variable-length values live in
    HDF5's global heap, which has no checksum: a damaged one can make HDF5 loop forever, so
    they are refused unread)."""
    if key not in obj.attrs:
        fail(path, f"missing attribute {key!r} on {obj.name}", f"attribute {key!r}",
              "none", layer)
    aid = obj.attrs.get_id(key)
    if aid.dtype.hasobject or aid.get_storage_size() > obj.file.id.get_filesize():
        fail(path, f"bad attribute {key!r} on {obj.name}",
              "a fixed-size value (dc-engine writes no variable-length attributes)",
              f"type {aid.dtype} of {aid.get_storage_size()} bytes", layer)
    return obj.attrs[key]


def str_attr(obj: h5py.HLObject, key: str, path: Path, layer: str | None = None) -> str:
    value = attr(obj, key, path, layer)
    if isinstance(value, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            value = value.decode("utf-8")
    if not isinstance(value, str):
        fail(path, f"bad attribute {key!r} on {obj.name}", "a string",
              f"{type(value).__name__} {value!r:.80}", layer)
    return str(value)


def json_attr(obj: h5py.HLObject, key: str, kind: type, path: Path,
               layer: str | None = None) -> Any:
    raw = str_attr(obj, key, path, layer)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        fail(path, f"broken JSON in attribute {key!r} on {obj.name}",
              f"a JSON {kind.__name__}", f"{raw!r:.80} ({exc})", layer)
    if not isinstance(value, kind):
        fail(path, f"bad attribute {key!r} on {obj.name}", f"a JSON {kind.__name__}",
              f"{type(value).__name__} {raw!r:.80}", layer)
    return value


def file_kind(f: h5py.File, path: Path) -> str:
    """The root attribute ``kind`` of an open dc-engine file (``"dense"`` or
    ``"compressed"``), after checking ``format``; DCFormatError for a foreign file."""
    found = "no 'format' attribute"
    if "format" in f.attrs:
        if f.attrs.get_id("format").dtype.hasobject:  # never read: see _attr
            found = "a variable-length 'format' attribute, which dc-engine never writes"
        else:
            fmt = attr(f, "format", path)
            fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt
            ok = isinstance(fmt, str) and fmt == FORMAT_NAME
            found = None if ok else f"format = {fmt!r:.80}"
    if found is not None:
        fail(path, "foreign file", f"root attribute format = {FORMAT_NAME!r}", found,
              fix="This HDF5 file was not written by dc-engine; pass a file written by "
                  "dc_engine.save.")
    return str_attr(f, "kind", path)


__all__ = ["PathLike", "FORMAT_NAME", "DENSE_KIND", "COMPRESSED_KIND", "FIX", "UPGRADE", "CORRUPT",
           "fail", "set_attr", "atomic_write", "existing_file", "reading", "attr",
           "str_attr", "json_attr", "file_kind"]
