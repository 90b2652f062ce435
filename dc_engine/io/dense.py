"""Dense model files in HDF5: save and load a model (HDF5 plumbing in :mod:`dc_engine.io._h5`).

The layout, attributes, checksums, versioning policy and errors are specified in
``docs/FORMAT.md``. In short: root attributes name the format, its kind and version, the
architecture, the input shape and the training metadata (JSON); one group per layer,
``layers/<index>_<name>``, holds the layer's type, name and hyperparameters (JSON) as attributes
and one contiguous, unfiltered dataset per parameter (``W``, ``b``) and per mask (``mask_W``),
each with a CRC32 attribute. A parameter tied to a :class:`~dc_engine.core.ties.WeightShare`
(stage 2, trained quantization) is stored as its codebook and index (``codebook_W``,
``index_W``) instead of the float array (version 2; version-1 files still load). Strings are
fixed-length UTF-8: nothing lives in HDF5's global heap, which has no checksum.

Writes are atomic (temporary file in the target's folder, fsync, ``os.replace``). Reads check
every attribute, shape and dtype before reading any array, so a crafted file cannot make the
loader allocate more than the file holds, and they close the file before returning.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import h5py
import numpy as np

from .._validate import is_int
from .._version import __version__
from ..codecs.codebook import index_dtype
from ..core.layers import LAYER_TYPES, Layer, build_layer, layer_param_shapes
from ..core.model import Model
from ..core.ties import WeightShare
from ..limits import MAX_BITS, MAX_LAYERS
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
    str_attr,
)

__all__ = ["FORMAT_NAME", "DENSE_VERSION", "DENSE_KIND", "save", "load", "read_metadata"]

logger = logging.getLogger(__name__)

#: Newest version of the dense kind this module writes and reads (2 = 1 + shared weights).
DENSE_VERSION = 3
#: First dense version that may wire layers as a graph (layer attribute ``inputs``, root
#: attribute ``output``); a chain is still written as version 2, which older readers read.
_GRAPH_VERSION = 3
#: First dense version that may hold shared weights (``codebook_<param>``, ``index_<param>``).
_SHARED_VERSION = 2

_LIBVER = ("v108", "v108")  # readable by HDF5 >= 1.8; allows attributes larger than 64 KiB
_MASK_PREFIX = "mask_"
_CODEBOOK_PREFIX = "codebook_"
_INDEX_PREFIX = "index_"
_PREFIXES = (_MASK_PREFIX, _CODEBOOK_PREFIX, _INDEX_PREFIX)  # no parameter name starts so
_MAX_CODES = 2**MAX_BITS
_PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FIX = ("Pass a model file written by dc_engine.save, or re-create it "
        "(e.g. re-run `dc-engine train`).")


def _fail(path: Path, problem: str, expected: str, found: str, layer: str | None = None,
          fix: str = _FIX) -> NoReturn:
    """:func:`dc_engine.io._h5.fail` with the dense kind's advice as the default fix."""
    fail(path, problem, expected, found, layer, fix)


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _crc32(a: np.ndarray) -> int:
    """CRC32 (``zlib.crc32``) of the little-endian, C-order bytes of ``a``."""
    le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return zlib.crc32(le.reshape(-1).view(np.uint8)) & 0xFFFFFFFF


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _to_json(value: Any, what: str) -> str:
    """``json.dumps`` with NumPy scalars and arrays converted; clear error otherwise."""
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        cls = TypeError if isinstance(exc, TypeError) else ValueError
        raise cls(f"{what} must be JSON-serialisable (dict, list, str, int, float, bool, None; "
                  f"NumPy scalars and arrays are converted), found: {exc}. Convert the "
                  f"offending value (e.g. with str()) or leave it out.") from exc


def _group_key(index: int, count: int, name: str) -> str:
    """HDF5 name of layer ``index`` of ``count``: zero-padded index, ``_``, the layer name."""
    width = max(2, len(str(count - 1)))
    return f"{index:0{width}d}_{name.replace('/', '_')}"


def _le(a: np.ndarray) -> np.ndarray:
    """``a`` as a contiguous little-endian array (what is written and checksummed)."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


def _is_pow2_codes(m: int) -> bool:
    """A valid codebook length: ``2**bits`` with bits in 1..MAX_BITS."""
    return 2 <= m <= _MAX_CODES and not m & (m - 1)


def _plan_share(layer: Layer, pname: str, w: np.ndarray, tie: Any) -> list[tuple]:
    """The ``codebook_<pname>`` and ``index_<pname>`` arrays of a shared parameter, checked.

    The tie's arrays are public and mutable, so everything the loader checks is checked again
    here, and the parameter must hold exactly ``codebook[idx]``: the float array is not stored.
    """
    where = f"layer {layer.name!r}: shared parameter {pname!r}"
    codebook, idx = np.asarray(tie.codebook), np.asarray(tie.idx)
    m = codebook.size
    if codebook.dtype not in _PARAM_DTYPES or codebook.ndim != 1 or not _is_pow2_codes(m):
        raise TypeError(f"{where}: codebook must be 1-D float32 or float64 with 2**bits "
                        f"entries, bits in 1..{MAX_BITS}; got {codebook.dtype} with shape "
                        f"{codebook.shape}")
    if not np.all(np.isfinite(codebook)):
        raise ValueError(f"{where}: codebook has NaN or inf values: expected finite "
                         f"centroids. Re-run weight sharing (stages.quantize.share_layer).")
    if codebook[0] != 0:
        raise ValueError(f"{where}: codebook[0] must be 0.0 (the pruned weights' slot), got "
                         f"{codebook[0]}. Re-run weight sharing (stages.quantize.share_layer).")
    bits = m.bit_length() - 1
    want = index_dtype(bits)
    if idx.dtype != want or idx.shape != w.shape:
        raise TypeError(f"{where}: index must be {want} with shape {w.shape} for a {bits}-bit "
                        f"codebook, got {idx.dtype} with shape {idx.shape}")
    if idx.size and int(idx.max()) >= m:
        raise ValueError(f"{where}: index values must be < {m} (the codebook length), got "
                         f"{int(idx.max())}")
    if not np.array_equal(codebook[idx].astype(w.dtype), w):
        raise ValueError(f"{where}: the parameter differs from codebook[index], and only the "
                         f"codebook and index are stored. Call "
                         f"layer.ties[{pname!r}].apply(layer.params[{pname!r}]) after changing "
                         f"the codebook, or remove the tie to store the float weights.")
    cb, ix = _le(codebook), _le(idx)
    return [(_CODEBOOK_PREFIX + pname, cb, _crc32(cb)), (_INDEX_PREFIX + pname, ix, _crc32(ix))]


def _plan_layer(layer: Layer) -> dict:
    """Everything one layer group holds, validated and converted (no disk access)."""
    name = layer.name
    if layer.compressed:
        raise TypeError(f"layer {name!r} holds a compressed weight: a dense file stores float "
                        f"arrays. Save the model as a compressed file (dc_engine.save(model, "
                        f"'MODEL.dc.h5')), or decode it first (model.to_dense()).")
    arrays = []
    dtypes = set()
    shared = {k: t for k, t in layer.ties.items() if isinstance(t, WeightShare)}
    for pname in shared:
        if pname not in layer.params:
            raise ValueError(f"layer {name!r}: weight sharing tie for {pname!r} has no "
                             f"parameter of that name: expected one of {sorted(layer.params)}")
    for pname, w in layer.params.items():
        if (not isinstance(pname, str) or "/" in pname
                or any(pname.startswith(p) for p in _PREFIXES)):
            raise ValueError(f"layer {name!r}: parameter name {pname!r} cannot be stored: "
                             f"expected a str without '/' not starting with any of "
                             f"{list(_PREFIXES)}")
        w = np.asarray(w)
        if w.dtype not in _PARAM_DTYPES:
            raise TypeError(f"layer {name!r}: parameter {pname!r} must be float32 or float64, "
                            f"got {w.dtype}. Convert the model with model.astype(np.float32).")
        bad = int(w.size - np.count_nonzero(np.isfinite(w)))
        if bad:
            raise ValueError(f"layer {name!r}: parameter {pname!r} has {bad} NaN or inf "
                             f"value(s): expected finite weights (a trained model never has "
                             f"them, and the loader rejects them). Lower the learning rate and "
                             f"retrain, or save an earlier checkpoint.")
        dtypes.add(w.dtype)
        if pname in shared:
            arrays.extend(_plan_share(layer, pname, w, shared[pname]))
        else:
            le = _le(w)
            arrays.append((pname, le, _crc32(le)))
    if len(dtypes) > 1:
        raise TypeError(f"layer {name!r}: parameters mix dtypes {sorted(map(str, dtypes))}: "
                        f"expected one dtype per layer. Call layer.astype(dtype) first.")
    if dtypes and set(layer.params) <= set(shared):
        # No float array is stored: the codebooks carry the layer dtype, so they must have it.
        dtype = next(iter(dtypes))
        other = sorted(k for k, t in shared.items() if np.asarray(t.codebook).dtype != dtype)
        if other:
            raise TypeError(f"layer {name!r}: every parameter is shared, so the codebooks must "
                            f"have the layer dtype {dtype}; the codebooks of {other} do not. "
                            f"Re-run weight sharing (stages.quantize.share_layer) after "
                            f"astype().")
    for pname, mask in layer.masks.items():
        if pname not in layer.params:
            raise ValueError(f"layer {name!r}: mask for {pname!r} has no parameter of that "
                             f"name: expected one of {sorted(layer.params)}")
        mask = np.asarray(mask)
        shape = layer.params[pname].shape
        if mask.shape != shape:
            raise ValueError(f"layer {name!r}: mask for {pname!r} must have shape {shape}, "
                             f"got {mask.shape}")
        if mask.dtype != np.bool_ and not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"layer {name!r}: mask for {pname!r} must hold only 0/1 "
                             f"(boolean) values, got dtype {mask.dtype} with other values")
        data = np.ascontiguousarray(mask != 0, dtype=np.uint8)
        arrays.append((_MASK_PREFIX + pname, data, _crc32(data)))
    attrs = {"type": layer.type_name, "name": name,
             "hyperparameters": _to_json(layer.hyperparameters,
                                         f"layer {name!r} hyperparameters")}
    if layer.inputs is not None:
        attrs["inputs"] = _to_json(list(layer.inputs), f"layer {name!r} inputs")
    return {"attrs": attrs, "arrays": arrays}


def _plan_dense(model: Model, metadata: dict | None) -> tuple[dict, list[dict]]:
    """Root attributes and layer plans of a dense file; validates everything up front."""
    if not isinstance(model, Model):
        raise TypeError(f"save() takes a dc_engine Model, got {type(model).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    meta_json = _to_json({} if metadata is None else metadata, "metadata")
    if len(model.layers) > MAX_LAYERS:
        raise ValueError(f"a model file holds at most {MAX_LAYERS:,} layers "
                         f"(dc_engine.limits.MAX_LAYERS), this model has {len(model.layers):,}")
    names = [layer.name for layer in model.layers]
    for what, name in [("model.name", model.name)] + [("layer name", n) for n in names]:
        if not isinstance(name, str):
            raise TypeError(f"{what} must be a str, got {type(name).__name__} {name!r}")
        if "\x00" in name:  # HDF5 strings end at NUL
            raise ValueError(f"{what} {name!r} cannot be stored: expected no NUL characters. "
                             f"Rename it.")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a bad decode
            raise ValueError(f"{what} {name!r} cannot be stored: expected text that UTF-8 can "
                             f"encode, found {exc.reason} at position {exc.start}. "
                             f"Rename it.") from None
    model.wiring()  # a model whose inputs name no tensor is not stored
    graph = model.output is not None or any(l.inputs is not None for l in model.layers)
    root = {
        "format": FORMAT_NAME,
        "version": np.int64(_GRAPH_VERSION if graph else 2),
        "kind": DENSE_KIND,
        "architecture": model.name,
        "input_shape": np.asarray(model.input_shape, dtype=np.int64),
        "dc_engine_version": str(__version__),
        "metadata": meta_json,
        # Large attributes live outside the checksummed object header: guard the one that grows.
        "metadata_crc32": np.uint32(zlib.crc32(meta_json.encode("utf-8"))),
        "layer_order": json.dumps(names),
    }
    if model.output is not None:
        root["output"] = model.output
    return root, [_plan_layer(layer) for layer in model.layers]


def _write_layer(group: h5py.Group, key: str, plan: dict) -> None:
    g = group.create_group(key)
    for k, v in plan["attrs"].items():
        set_attr(g, k, v)
    for dsname, data, crc in plan["arrays"]:
        ds = g.create_dataset(dsname, data=data)  # contiguous: no chunks, no filters
        set_attr(ds, "crc32", np.uint32(crc))


def _write_dense(tmp: str, root: dict, layers: list[dict]) -> None:
    with h5py.File(tmp, "w", libver=_LIBVER) as f:
        for k, v in root.items():
            set_attr(f, k, v)
        group = f.create_group("layers")
        for i, plan in enumerate(layers):
            _write_layer(group, _group_key(i, len(layers), plan["attrs"]["name"]), plan)
        f.flush()


def save(model: Model, path: PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` to a dense dc-engine HDF5 file, atomically.

    Parameters
    ----------
    model : Model
        The model; parameters float32 or float64 (one dtype per layer), all finite. Masks
        (``layer.masks``) are stored too. A parameter tied to a
        :class:`~dc_engine.core.ties.WeightShare` (``layer.ties[name]``) is stored as its
        codebook and index instead of the float array, and must equal ``codebook[idx]``; other
        ties are not stored (their parameter is stored as it is).
    path : str or os.PathLike
        Target file. Its folder must exist. An existing file is replaced only once the new
        one is complete on disk.
    metadata : dict, optional
        JSON-serialisable data stored with the model (e.g. training config and history).
        NumPy scalars and arrays are converted to Python numbers and lists.

    Returns
    -------
    pathlib.Path
        The resolved path of the written file.

    Raises
    ------
    TypeError
        If ``model`` is not a Model, ``metadata`` is not a dict or holds values JSON cannot
        represent, a parameter is not float32/float64, or a shared parameter's codebook or
        index has the wrong dtype or shape.
    ValueError
        If the model has more than ``MAX_LAYERS`` layers, a parameter has NaN or inf values,
        a mask does not match its parameter, a name contains NUL, or a shared parameter has
        a non-finite codebook, ``codebook[0] != 0``, an index value out of range, or values
        other than ``codebook[idx]``.
    FileNotFoundError
        If the target's folder does not exist.
    IsADirectoryError
        If ``path`` is a directory.

    Notes
    -----
    Everything is validated and serialised in memory before the disk is touched. The file is
    written to a temporary file in the target's folder, flushed, fsync'ed and renamed over the
    target with ``os.replace``; on any error the temporary file is removed and an existing
    target is left as it was. The layout is specified in ``docs/FORMAT.md``.
    """
    root, layers = _plan_dense(model, metadata)
    target = atomic_write(path, lambda tmp: _write_dense(tmp, root, layers))
    logger.debug("saved %s (%d layers) to %s", model.name, len(layers), target)
    return target


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def _read_root(f: h5py.File, path: Path) -> dict:
    """Validate the root attributes (format, kind, version first) and return them parsed."""
    kind = file_kind(f, path)
    if kind != DENSE_KIND:
        hint = (" This is a compressed model file: load it with dc_engine.load."
                if kind == COMPRESSED_KIND else "")
        _fail(path, "unsupported file kind", f"kind = {DENSE_KIND!r}", f"kind = {kind!r:.80}",
              fix=(hint.strip() or f"This dc-engine reads dense and compressed model files. "
                                   f"{UPGRADE}"))
    version = attr(f, "version", path)
    if not is_int(version):
        _fail(path, "bad attribute 'version'", "an integer",
              f"{type(version).__name__} {version!r:.80}")
    if version > DENSE_VERSION:
        _fail(path, "file format version too new",
              f"version <= {DENSE_VERSION} (the newest dense version dc-engine {__version__} "
              f"reads)", f"version {int(version)}", fix=UPGRADE)
    if version < 1:
        _fail(path, "unsupported file format version", f"version 1 to {DENSE_VERSION}",
              f"version {int(version)}")
    shape = attr(f, "input_shape", path)
    shape = np.asarray(shape)
    if (shape.ndim != 1 or shape.size == 0 or shape.dtype.kind not in "iu"
            or not np.all(shape >= 1)):
        _fail(path, "bad attribute 'input_shape'", "a 1-D array of positive integers",
              f"{shape!r:.80}")
    meta_crc = attr(f, "metadata_crc32", path)
    got = zlib.crc32(str_attr(f, "metadata", path).encode("utf-8"))
    if not is_int(meta_crc) or int(meta_crc) != got:
        want = f"0x{int(meta_crc):08x}" if is_int(meta_crc) else f"{meta_crc!r:.40}"
        _fail(path, "CRC32 mismatch in attribute 'metadata' (corrupt data)", want,
              f"0x{got:08x}", fix=CORRUPT)
    order = json_attr(f, "layer_order", list, path)
    if not all(isinstance(n, str) for n in order) or len(set(order)) != len(order):
        _fail(path, "bad attribute 'layer_order'", "a JSON list of distinct layer names",
              f"{order!r:.80}")
    if len(order) > MAX_LAYERS:
        _fail(path, "too many layers", f"at most {MAX_LAYERS:,} (dc_engine.limits.MAX_LAYERS)",
              f"{len(order):,} in 'layer_order'")
    output = None
    if "output" in f.attrs:
        if version < _GRAPH_VERSION:
            _fail(path, f"root attribute 'output' in a version-{int(version)} file",
                  f"no wiring before version {_GRAPH_VERSION}", "an 'output' attribute")
        output = str_attr(f, "output", path)
    return {
        "format": FORMAT_NAME, "kind": kind, "version": int(version),
        "architecture": str_attr(f, "architecture", path),
        "input_shape": tuple(int(d) for d in shape),
        "dc_engine_version": str_attr(f, "dc_engine_version", path),
        "metadata": json_attr(f, "metadata", dict, path),
        "layer_order": order,
        "output": output,
    }


def _layer_groups(f: h5py.File, order: list[str], path: Path) -> Iterator[tuple[str, h5py.Group]]:
    """Yield ``(name, group)`` in ``layer_order``; the ``layers`` group must match it exactly."""
    layers = f.get("layers")
    if not isinstance(layers, h5py.Group):
        _fail(path, "missing group", "a group 'layers'",
              "nothing" if layers is None else type(layers).__name__)
    keys = [_group_key(i, len(order), name) for i, name in enumerate(order)]
    found = set(layers.keys())
    if found != set(keys):
        missing = sorted(set(keys) - found)
        extra = sorted(found - set(keys))
        _fail(path, "layer groups do not match layer_order", f"groups {keys}",
              f"missing {missing}, unexpected {extra}")
    for key, name in zip(keys, order):
        if not isinstance(layers.get(key, getlink=True), h5py.HardLink):
            _fail(path, f"bad layer group {key!r}", "a group stored in this file",
                  "a soft or external link", name)
        group = layers[key]
        if not isinstance(group, h5py.Group):
            _fail(path, f"bad layer group {key!r}", "an HDF5 group", type(group).__name__, name)
        stored = str_attr(group, "name", path, name)
        if stored != name:
            _fail(path, f"layer group {key!r} has the wrong name", repr(name), repr(stored), name)
        yield name, group


def _datasets(group: h5py.Group, path: Path, layer: str) -> dict[str, h5py.Dataset]:
    """The group's datasets, each checked to be a plain contiguous array stored in the file.

    The declared size must equal the allocated storage and fit in the file, so the arrays (and
    the layer built to match them) never need more memory than the file's size.
    """
    out = {}
    for key in group.keys():
        obj = group.get(key) if isinstance(group.get(key, getlink=True), h5py.HardLink) else None
        if not isinstance(obj, h5py.Dataset):
            _fail(path, f"bad member {key!r}", "only datasets stored in this file",
                  "a link or group", layer)
        plist = obj.id.get_create_plist()
        if (plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT)
                or plist.get_external_count() or plist.get_nfilters()):
            _fail(path, f"unsupported storage for array {key!r}",
                  "a contiguous dataset without filters or external storage",
                  "chunked, filtered or external storage", layer)
        nbytes = obj.size * obj.dtype.itemsize
        stored = obj.id.get_storage_size()
        if stored != nbytes or nbytes > obj.file.id.get_filesize():
            _fail(path, f"array {key!r} is truncated or unallocated",
                  f"{nbytes} stored bytes (shape {obj.shape}, {obj.dtype}) within the file",
                  f"{stored} stored bytes in a {obj.file.id.get_filesize()}-byte file", layer,
                  fix=CORRUPT)
        out[key] = obj
    return out


def _check_shapes(expected: dict, stored: dict, hp: dict, path: Path, layer: str) -> None:
    """``stored`` maps each parameter to its dataset: the float array, or ``index_<param>``."""
    if set(expected) != set(stored):
        _fail(path, "arrays do not match the layer type", f"arrays {sorted(expected)}",
              f"{sorted(stored) or 'none'}", layer)
    for pname, shape in expected.items():
        if tuple(stored[pname].shape) != tuple(shape):
            key = stored[pname].name.rsplit("/", 1)[-1]
            _fail(path, f"array {key!r} has the wrong shape",
                  f"shape {tuple(shape)} (from hyperparameters {hp})",
                  f"shape {stored[pname].shape}", layer)


def _split_members(members: dict[str, h5py.Dataset], version: int, path: Path,
                   layer: str) -> tuple[dict, dict, dict]:
    """``(params, shared, masks)`` of a layer group, each keyed by parameter name.

    ``params`` maps a parameter to its float dataset, or, for a shared parameter, to its index
    dataset (which has the parameter's shape); ``shared`` maps a shared parameter to its
    ``(codebook, index)`` datasets.
    """
    by_prefix: dict[str, dict[str, h5py.Dataset]] = {p: {} for p in _PREFIXES}
    plain = {}
    for key, ds in members.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None:
            plain[key] = ds
        else:
            by_prefix[prefix][key[len(prefix):]] = ds
    codebooks, indices = by_prefix[_CODEBOOK_PREFIX], by_prefix[_INDEX_PREFIX]
    if (codebooks or indices) and version < _SHARED_VERSION:
        found = sorted(_CODEBOOK_PREFIX + k for k in codebooks)
        found += sorted(_INDEX_PREFIX + k for k in indices)
        _fail(path, f"shared-weight arrays in a version-{version} file",
              f"no codebook_/index_ arrays before version {_SHARED_VERSION}", f"{found}", layer)
    if set(codebooks) != set(indices):
        odd = sorted(set(codebooks) ^ set(indices))
        _fail(path, "incomplete shared weights",
              "a codebook_<param> and an index_<param> array for each shared parameter",
              f"only one of the two for {odd}", layer)
    both = sorted(set(plain) & set(indices))
    if both:
        _fail(path, "parameter stored twice",
              "each parameter either as a float array or as codebook and index",
              f"both for {both}", layer)
    params = {**plain, **indices}
    shared = {k: (codebooks[k], indices[k]) for k in indices}
    return params, shared, by_prefix[_MASK_PREFIX]


def _float_dtype(ds: h5py.Dataset) -> np.dtype:
    """float32/float64 for a 4/8-byte float dataset (any byte order), else its own dtype."""
    if ds.dtype.kind == "f" and ds.dtype.itemsize in (4, 8):
        return np.dtype(f"f{ds.dtype.itemsize}")
    return ds.dtype


def _check_shared(shared: dict, path: Path, layer: str) -> dict[str, tuple]:
    """Check each shared parameter's codebook and index dtypes and shapes (nothing is read).

    Returns ``{param: (codebook dtype, index dtype)}`` (native byte order).
    """
    out = {}
    for pname, (cb, ix) in shared.items():
        ckey, ikey = _CODEBOOK_PREFIX + pname, _INDEX_PREFIX + pname
        m = cb.shape[0] if len(cb.shape) == 1 else 0
        if len(cb.shape) != 1 or not _is_pow2_codes(m):
            _fail(path, f"bad codebook {ckey!r}",
                  f"a 1-D array of 2**bits entries, bits in 1..{MAX_BITS} (2 to {_MAX_CODES})",
                  f"shape {cb.shape}", layer)
        cdtype = _float_dtype(cb)
        if cdtype not in _PARAM_DTYPES:
            _fail(path, f"bad codebook {ckey!r}", "float32 or float64", str(cb.dtype), layer)
        bits = m.bit_length() - 1
        want = index_dtype(bits)
        if ix.dtype.kind != "u" or ix.dtype.itemsize != want.itemsize:
            _fail(path, f"bad index {ikey!r}",
                  f"{want} for a {bits}-bit codebook of {m} entries", str(ix.dtype), layer)
        out[pname] = (cdtype, want)
    return out


def _read_shared(pname: str, datasets: tuple, dtypes: tuple, path: Path,
                 layer: str) -> WeightShare:
    """Read and check one shared parameter's codebook and index: its tie."""
    ckey, ikey = _CODEBOOK_PREFIX + pname, _INDEX_PREFIX + pname
    codebook = _read_array(datasets[0], dtypes[0], path, layer)
    if not np.all(np.isfinite(codebook)):
        _fail(path, f"non-finite values in array {ckey!r}", "finite centroids",
              f"{int(codebook.size - np.count_nonzero(np.isfinite(codebook)))} NaN or inf "
              f"value(s)", layer)
    if codebook[0] != 0:
        _fail(path, f"bad codebook {ckey!r}", "codebook[0] == 0.0 (the pruned weights' slot)",
              f"codebook[0] = {codebook[0]!r}", layer)
    idx = _read_array(datasets[1], dtypes[1], path, layer)
    if idx.size and int(idx.max()) >= codebook.size:
        _fail(path, f"bad index {ikey!r}", f"values < {codebook.size} (the codebook length)",
              f"a maximum of {int(idx.max())}", layer)
    try:
        return WeightShare(codebook, idx)
    except (TypeError, ValueError) as exc:  # unreachable after the checks above
        _fail(path, f"bad shared weights {pname!r}", "a valid codebook and index", str(exc),
              layer)


def _read_array(ds: h5py.Dataset, dtype: np.dtype, path: Path, layer: str) -> np.ndarray:
    """Read ``ds`` (shape and storage already checked) as ``dtype``; verify its CRC32."""
    key = ds.name.rsplit("/", 1)[-1]
    crc = attr(ds, "crc32", path, layer)
    if not is_int(crc) or not 0 <= crc <= 0xFFFFFFFF:
        _fail(path, f"bad attribute 'crc32' of array {key!r}", "an unsigned 32-bit integer",
              f"{crc!r:.80}", layer)
    data = np.ascontiguousarray(ds[()], dtype=dtype)
    got = _crc32(data)
    if got != int(crc):
        _fail(path, f"CRC32 mismatch in array {key!r} (corrupt data)", f"0x{int(crc):08x}",
              f"0x{got:08x}", layer, fix=CORRUPT)
    return data


def _read_layer(group: h5py.Group, name: str, path: Path, version: int) -> Layer:
    type_name = str_attr(group, "type", path, name)
    if type_name not in LAYER_TYPES:
        _fail(path, "unknown layer type", f"one of {sorted(LAYER_TYPES)}", repr(type_name),
              name, fix=f"The file may come from a newer dc-engine. {UPGRADE}")
    hp = json_attr(group, "hyperparameters", dict, path, name)
    inputs = None
    if "inputs" in group.attrs:
        if version < _GRAPH_VERSION:
            _fail(path, f"layer attribute 'inputs' in a version-{version} file",
                  f"no wiring before version {_GRAPH_VERSION}", "an 'inputs' attribute", name)
        inputs = json_attr(group, "inputs", list, path, name)
        if not inputs or not all(isinstance(n, str) for n in inputs):
            _fail(path, "bad attribute 'inputs'", "a JSON list of tensor names",
                  f"{inputs!r:.80}", name)
    members = _datasets(group, path, name)
    params, shared, masks = _split_members(members, version, path, name)
    shared_dtypes = _check_shared(shared, path, name)
    # Every shape is checked against the layer type's parameter shapes before anything is
    # read or built, so a crafted file declaring Dense(10**6, 10**6) fails here.
    try:
        expected = layer_param_shapes(type_name, hp)
    except (TypeError, ValueError, OverflowError) as exc:
        _fail(path, "bad hyperparameters", f"constructor arguments of {type_name}",
              f"{hp} ({exc})", name)
    _check_shapes(expected, params, hp, path, name)

    # The layer dtype is that of its float arrays; with every parameter shared, the codebooks'.
    floats = {k: ds for k, ds in params.items() if k not in shared}
    if floats:
        dtypes = {_float_dtype(ds) for ds in floats.values()}
        found = sorted(str(ds.dtype) for ds in floats.values())
    else:
        dtypes = {cdtype for cdtype, _ in shared_dtypes.values()}
        found = sorted(str(cb.dtype) for cb, _ in shared.values())
    if len(dtypes) > 1 or not dtypes <= set(_PARAM_DTYPES):
        want = ("float32 or float64 (one dtype per layer)" if floats else
                "float32 or float64 codebooks of one dtype (every parameter is shared, so they "
                "give the layer dtype)")
        _fail(path, "bad parameter dtype", want, f"{found}", name)
    dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
    arrays, ties = {}, {}
    for pname in expected:
        if pname in shared:
            ties[pname] = _read_shared(pname, shared[pname], shared_dtypes[pname], path, name)
            arrays[pname] = ties[pname].codebook[ties[pname].idx].astype(dtype)
            continue
        w = _read_array(params[pname], dtype, path, name)
        if not np.all(np.isfinite(w)):
            _fail(path, f"non-finite values in array {pname!r}", "finite weights",
                  f"{int(w.size - np.count_nonzero(np.isfinite(w)))} NaN or inf value(s)", name)
        arrays[pname] = w
    try:
        layer = build_layer(type_name, hp, name, arrays or None, inputs=inputs)
    except (TypeError, ValueError, OverflowError) as exc:
        _fail(path, "bad hyperparameters", f"constructor arguments of {type_name}",
              f"{hp} ({exc})", name)
    layer.ties.update(ties)
    _read_masks(layer, masks, path)
    return layer


def _read_masks(layer: Layer, masks: dict[str, h5py.Dataset], path: Path) -> None:
    """Check and read the ``mask_<param>`` datasets into ``layer.masks`` as bool arrays."""
    for pname, ds in masks.items():
        key = _MASK_PREFIX + pname
        if pname not in layer.params:
            _fail(path, f"mask {key!r} has no parameter",
                  f"masks among {[_MASK_PREFIX + k for k in layer.params]}", "an orphan mask",
                  layer.name)
        shape = layer.params[pname].shape
        if ds.shape != shape or ds.dtype not in (np.uint8, np.int8, np.bool_):
            _fail(path, f"bad mask {key!r}", f"uint8 with shape {shape}",
                  f"{ds.dtype} with shape {ds.shape}", layer.name)
        m = _read_array(ds, np.dtype(ds.dtype), path, layer.name)
        if np.any((m != 0) & (m != 1)):
            _fail(path, f"bad mask {key!r}", "only 0/1 values", "other values", layer.name)
        layer.masks[pname] = m.astype(np.bool_)


def load(path: PathLike) -> Model:
    """Read a dense dc-engine HDF5 file back into a Model (``dc_engine.load`` reads both
    kinds).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.

    Returns
    -------
    Model
        Each layer's parameters in the stored dtype (float32 or float64) and its masks
        restored as bool arrays. A shared parameter (codebook and index in the file) gets its
        :class:`~dc_engine.core.ties.WeightShare` back as ``layer.ties[name]``, and
        ``layer.params[name]`` holds ``codebook[idx]`` in the layer dtype. ``model.metadata``
        holds the stored metadata dict. Version-1 files load as before. The file is closed.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (a missing file is not a format error).
    IsADirectoryError
        If ``path`` is a directory.
    DCFormatError
        If the file is not HDF5 or is truncated, is foreign (``format`` is not
        ``"dc-engine"``), has another kind (a compressed file) or a newer version, names an
        unknown layer type, has broken hyperparameters, a missing, extra or wrongly shaped
        array, a CRC32 mismatch, NaN or inf weights, a bad codebook or index (length not a
        power of two, wrong index dtype, ``codebook[0] != 0``, index value out of range), or
        layers that do not chain.

    Notes
    -----
    Every shape and dtype is checked against the layer type's parameter shapes before the
    array is read. The checks are listed in ``docs/FORMAT.md``.
    """
    path = existing_file(path)
    with reading(path) as f:
        root = _read_root(f, path)
        layers = [_read_layer(g, name, path, root["version"]) for name, g in _layer_groups(
            f, root["layer_order"], path)]
    try:
        model = Model(layers, input_shape=root["input_shape"], name=root["architecture"],
                      output=root["output"])
    except (TypeError, ValueError) as exc:
        _fail(path, "layers do not form a model", "layers whose wiring and shapes fit the "
              f"input shape {root['input_shape']}", str(exc))
    try:
        model.check_sample_work()
    except ValueError as exc:
        _fail(path, "the model implies too much work per sample", "layers within the limits "
              "of dc_engine.limits", str(exc))
    model.metadata = root["metadata"]
    logger.debug("loaded %s (%d layers) from %s", model.name, len(layers), path)
    return model


def read_metadata(path: PathLike) -> dict:
    """Root attributes, metadata and a per-layer summary of a model file, without its arrays.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.

    Returns
    -------
    dict
        JSON-serialisable: ``path`` (resolved, str), ``file_size`` (bytes), ``format``,
        ``kind``, ``version``, ``architecture``, ``input_shape`` (list), ``dc_engine_version``,
        ``layer_order``, ``metadata`` (dict) and ``layers``: a list of ``{"name", "type",
        "hyperparameters", "arrays": {name: {"shape": list, "dtype": str}}}``.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, DCFormatError
        As :func:`load`, for the root attributes and the layer groups (arrays are not read,
        so CRC32 and value checks are not done).
    """
    path = existing_file(path)
    layers = []
    with reading(path) as f:
        root = _read_root(f, path)
        for name, g in _layer_groups(f, root["layer_order"], path):
            arrays = {k: {"shape": list(ds.shape), "dtype": str(ds.dtype)}
                      for k, ds in _datasets(g, path, name).items()}
            layers.append({"name": name, "type": str_attr(g, "type", path, name),
                           "hyperparameters": json_attr(g, "hyperparameters", dict, path, name),
                           "arrays": arrays})
    return {"path": str(path.resolve()), "file_size": os.path.getsize(path), **root,
            "input_shape": list(root["input_shape"]), "layers": layers}
