"""Dataset loading: IDX files (MNIST and look-alikes) and a held-out validation split.

The default data set is MNIST, the database of handwritten digits by Yann LeCun, Corinna Cortes
and Christopher J. C. Burges, distributed under the Creative Commons Attribution-Share Alike 3.0
licence (CC BY-SA 3.0). The four IDX files ship gzip'd in the source repository's ``data/mnist/``
(not in the installed package); ``data/mnist/SOURCE.md`` records where they came from and the
SHA-256 of each raw (decompressed) file.

Any folder holding the same four-file IDX layout (for example Fashion-MNIST or KMNIST, or a
dataset with images of another height x width) can be loaded with :func:`load_mnist`.

IDX format (big-endian): two zero bytes, one dtype code byte, one ``ndim`` byte, ``ndim``
unsigned 32-bit dimension sizes, then the C-order payload of ``prod(dims) * itemsize`` bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import operator
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np

from .._files import regular_file
from ..errors import DatasetError
from ..limits import how_to_raise, limit

__all__ = [
    "DEFAULT_DATA_DIR",
    "MNIST_FILES",
    "MNIST_SHA256",
    "Dataset",
    "find_idx_file",
    "load_dataset",
    "load_mnist",
    "load_npz",
    "read_idx",
    "train_val_split",
]

PathLike = str | os.PathLike

#: Folder of the MNIST IDX files shipped in a source checkout (``<repository>/data/mnist``); an
#: installed wheel does not contain it, and :func:`load_mnist` then asks for a folder.
DEFAULT_DATA_DIR: Path = Path(__file__).resolve().parents[2] / "data" / "mnist"

#: File stems of the four IDX files, keyed by role.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: SHA-256 of the raw (decompressed) MNIST files, as listed in data/mnist/SOURCE.md.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# IDX dtype code -> on-disk (big-endian) numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # read granularity; bounds any allocation by data actually present
_FIX_HINT = (
    "Restore the file (data/mnist/SOURCE.md says where the MNIST files come from) "
    "or pass --data PATH pointing to a folder holding valid IDX files."
)


# --------------------------------------------------------------------------------------------
# IDX reading
# --------------------------------------------------------------------------------------------


def _read_upto(stream: BinaryIO, n: int) -> bytearray:
    """Read at most ``n`` bytes, in bounded chunks, stopping early at end of stream.

    Never allocates more than the bytes actually delivered by the stream (plus one chunk), so a
    header declaring an absurd size cannot trigger a huge allocation.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _parse_and_read(
    stream: BinaryIO, path: Path, raw_size: int | None
) -> tuple[bytes, np.dtype, tuple[int, ...], bytearray]:
    """Parse the IDX header from ``stream`` and read the payload.

    Parameters
    ----------
    stream : binary file object
        Positioned at the start of the raw (decompressed) IDX bytes.
    path : Path
        File name, for error messages.
    raw_size : int or None
        Total raw size in bytes when known up front (uncompressed file), else None.

    Returns
    -------
    header : bytes
        The raw header bytes (magic + dims).
    dtype : numpy.dtype
        On-disk dtype.
    dims : tuple of int
        Declared dimension sizes.
    payload : bytearray
        Exactly ``prod(dims) * dtype.itemsize`` bytes.
    """
    magic = bytes(_read_upto(stream, 4))
    if len(magic) < 4:
        raise DatasetError(
            f"{path}: truncated IDX header: expected at least 4 bytes (the magic number), "
            f"found {len(magic)}. {_FIX_HINT}"
        )
    if magic[:2] != b"\x00\x00":
        raise DatasetError(
            f"{path}: bad IDX magic number: expected the first two bytes to be 00 00, "
            f"found {magic[:2].hex(' ')} (whole magic {magic.hex(' ')}); this is not an IDX file. "
            f"{_FIX_HINT}"
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DatasetError(
            f"{path}: unknown IDX dtype code 0x{code:02X}: expected one of {known}. {_FIX_HINT}"
        )
    if not 1 <= ndim <= 4:
        raise DatasetError(
            f"{path}: unsupported IDX ndim {ndim}: expected 1 to 4 dimensions. {_FIX_HINT}"
        )
    dims_raw = bytes(_read_upto(stream, 4 * ndim))
    if len(dims_raw) < 4 * ndim:
        raise DatasetError(
            f"{path}: truncated IDX header: expected {4 * ndim} bytes of dimension sizes for "
            f"ndim={ndim}, found {len(dims_raw)}. {_FIX_HINT}"
        )
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = _IDX_DTYPES[code]
    expected = dtype.itemsize
    for d in dims:  # Python ints: no overflow however absurd the header
        expected *= d
    header = magic + dims_raw
    cap = limit("dataset_bytes")
    if expected > cap:  # checked before reading: a small .gz can declare (and hold) gigabytes
        shape = " x ".join(str(d) for d in dims)
        raise DatasetError(
            f"{path}: the header declares {shape} items of {dtype.itemsize} byte(s), "
            f"{expected:,} bytes, above the limit of {cap:,} bytes per dataset file; "
            f"{how_to_raise('dataset_bytes')}; otherwise the header is corrupt. {_FIX_HINT}"
        )

    if raw_size is not None:  # uncompressed: check the length before reading anything
        found = raw_size - len(header)
        if found != expected:
            _raise_length(path, dims, dtype, expected, found, exact=True)
    payload = _read_upto(stream, expected + 1)
    if len(payload) != expected:
        _raise_length(path, dims, dtype, expected, len(payload), exact=len(payload) < expected)
    return header, dtype, dims, payload


def _raise_length(
    path: Path, dims: tuple[int, ...], dtype: np.dtype, expected: int, found: int, exact: bool
) -> NoReturn:
    shape = " x ".join(str(d) for d in dims)
    what = "truncated payload" if found < expected else "trailing data after payload"
    found_txt = f"{found}" if exact else f"at least {found}"
    raise DatasetError(
        f"{path}: {what}: header declares {shape} items of {dtype.itemsize} byte(s), i.e. "
        f"{expected} payload bytes, but found {found_txt}. {_FIX_HINT}"
    )


def read_idx(path: PathLike, expected_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed.

    Compression is detected from the gzip magic bytes (``1f 8b``), not from the file name.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file.
    expected_sha256 : str, optional
        Hex SHA-256 of the raw (decompressed) file. If given, a mismatch raises
        :class:`DatasetError`.

    Returns
    -------
    numpy.ndarray
        Array of shape ``dims`` (1 to 4 axes, as declared in the header), in native byte order,
        writable, with dtype uint8 (code 0x08), int8 (0x09), int16 (0x0B), int32 (0x0C),
        float32 (0x0D) or float64 (0x0E).

    Raises
    ------
    DatasetError
        If the file is missing or unreadable, the gzip stream is corrupt, the magic number,
        dtype code or ndim is invalid, the payload is not exactly ``prod(dims) * itemsize``
        bytes, or the SHA-256 does not match.
    """
    path = regular_file(path, "IDX file", _FIX_HINT, error=DatasetError, missing=DatasetError,
                        directory=DatasetError)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DatasetError(f"cannot open IDX file {path}: {exc}. {_FIX_HINT}") from exc

    is_gzip = False
    with fh:
        try:
            is_gzip = fh.read(2) == _GZIP_MAGIC
            fh.seek(0)
            if is_gzip:
                with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                    header, dtype, dims, payload = _parse_and_read(gz, path, None)
            else:
                size = os.fstat(fh.fileno()).st_size
                header, dtype, dims, payload = _parse_and_read(fh, path, size)
        except DatasetError:
            raise
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            kind = "corrupt or truncated gzip stream" if is_gzip else "read error"
            what = "gzip-compressed IDX file" if is_gzip else "IDX file"
            raise DatasetError(
                f"{path}: {kind}: expected a complete, valid {what}, "
                f"found: {str(exc).rstrip('.')}. {_FIX_HINT}"
            ) from exc

    if expected_sha256 is not None:
        want = expected_sha256.strip().lower()
        h = hashlib.sha256(header)
        h.update(payload)
        got = h.hexdigest()
        if got != want:
            raise DatasetError(
                f"{path}: SHA-256 mismatch of the raw (decompressed) data: expected {want}, "
                f"found {got}. The file is corrupt or is not the expected file. {_FIX_HINT}"
            )

    arr = np.frombuffer(payload, dtype=dtype)
    if dtype.byteorder not in ("=", "|") and dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    try:
        return arr.reshape(dims)
    except ValueError as exc:  # e.g. a zero-sized axis next to absurd ones
        raise DatasetError(
            f"{path}: header dims {dims} cannot be represented as an array: "
            f"{str(exc).rstrip('.')}. {_FIX_HINT}"
        ) from exc


def _alt_names(stem: str) -> list[str]:
    """Both spellings of an IDX stem: ``a-idx3-ubyte`` and ``a.idx3-ubyte``."""
    names = [stem]
    for pat, rep in ((r"-(idx\d-ubyte)$", r".\1"), (r"\.(idx\d-ubyte)$", r"-\1")):
        alt = re.sub(pat, rep, stem)
        if alt != stem:
            names.append(alt)
    return names


def find_idx_file(folder: PathLike, stem: str) -> Path:
    """Locate an IDX file in ``folder`` by its stem.

    Tries, in order, ``stem``, ``stem.gz``, then the alternative spelling with a dot before
    ``idxN-ubyte`` (``t10k-images.idx3-ubyte``, or the dash form when ``stem`` has the dot) and
    its ``.gz``.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder to search.
    stem : str
        File name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.

    Returns
    -------
    Path
        The first existing candidate.

    Raises
    ------
    DatasetError
        If ``folder`` is not a directory or no candidate exists; the message lists the names
        looked for.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(
            f"data folder not found: expected a directory at {folder} holding the IDX files "
            f"(e.g. {stem}.gz), found {'a file' if folder.exists() else 'nothing'}. "
            f"Pass --data PATH pointing to such a folder."
        )
    candidates = [n + ext for n in _alt_names(stem) for ext in ("", ".gz")]
    for name in candidates:
        p = folder / name
        if p.exists():  # read_idx refuses what is not a regular file, naming it
            return p
    raise DatasetError(
        f"IDX file not found in {folder}: looked for {', '.join(candidates)}; found none. "
        f"Pass --data PATH pointing to a folder holding the four IDX files."
    )


# --------------------------------------------------------------------------------------------
# MNIST-layout data sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test splits of an image classification data set.

    Attributes
    ----------
    x_train : numpy.ndarray
        float32, shape (N_train, C, H, W): values in [0, 1] for MNIST and uint8 images, as
        given for float ones (C is 1 for IDX folders).
    y_train : numpy.ndarray
        int64, shape (N_train,), values in 0..255.
    x_test : numpy.ndarray
        float32, shape (N_test, C, H, W), as ``x_train``.
    y_test : numpy.ndarray
        int64, shape (N_test,), values in 0..255.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def for_input(self, sample_shape: tuple, what: str = "the model") -> Dataset:
        """The same data with each image shaped as one sample of ``sample_shape``: (N, 1, H, W)
        images become (N, H*W) vectors for a model that takes ``(H*W,)`` (an MLP exported
        from PyTorch), views without a copy; the dataset itself when it already fits.

        Raises
        ------
        DatasetError
            The images hold a different number of values than ``sample_shape``.
        """
        sample_shape = tuple(int(d) for d in sample_shape)
        have = tuple(self.x_train.shape[1:])
        if have == sample_shape:
            return self
        if math.prod(have) != math.prod(sample_shape):
            raise DatasetError(f"{what} takes inputs of shape {sample_shape}, the dataset's "
                               f"images have shape {have}; pass --data with images of that "
                               f"size")
        return Dataset(self.x_train.reshape(len(self.x_train), *sample_shape), self.y_train,
                       self.x_test.reshape(len(self.x_test), *sample_shape), self.y_test)


def _is_default_dir(folder: Path) -> bool:
    try:
        return folder.resolve() == Path(DEFAULT_DATA_DIR).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def _load_split(folder: Path, split: str, check_hash: bool) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lab_stem = MNIST_FILES[f"{split}_images"], MNIST_FILES[f"{split}_labels"]
    img_path = find_idx_file(folder, img_stem)
    lab_path = find_idx_file(folder, lab_stem)
    images = read_idx(img_path, MNIST_SHA256[img_stem] if check_hash else None)
    labels = read_idx(lab_path, MNIST_SHA256[lab_stem] if check_hash else None)

    if images.ndim != 3:
        raise DatasetError(
            f"{img_path}: expected 3-D images (N, H, W), found {images.ndim}-D shape "
            f"{images.shape}. Pass --data PATH pointing to a folder in the MNIST IDX layout."
        )
    if images.dtype != np.uint8:
        raise DatasetError(
            f"{img_path}: expected uint8 pixels (IDX code 0x08), found {images.dtype}. "
            f"Pass --data PATH pointing to a folder in the MNIST IDX layout."
        )
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DatasetError(
            f"{img_path}: expected a non-empty image set, found shape {images.shape}. {_FIX_HINT}"
        )
    if labels.ndim != 1:
        raise DatasetError(
            f"{lab_path}: expected 1-D labels (N,), found {labels.ndim}-D shape {labels.shape}. "
            f"Pass --data PATH pointing to a folder in the MNIST IDX layout."
        )
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{split} split: number of images != number of labels: expected equal counts, "
            f"found {images.shape[0]} images in {img_path.name} and {labels.shape[0]} labels in "
            f"{lab_path.name}. {_FIX_HINT}"
        )
    if labels.dtype.kind not in "iu":
        raise DatasetError(
            f"{lab_path}: expected integer labels, found dtype {labels.dtype}. {_FIX_HINT}"
        )
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > 255:
        raise DatasetError(
            f"{lab_path}: expected labels within 0..255, found range {lo}..{hi}. {_FIX_HINT}"
        )

    n, h, w = images.shape
    x = images.astype(np.float32).reshape(n, 1, h, w)
    x /= np.float32(255.0)
    y = labels.astype(np.int64)
    return x, y


def load_mnist(path: PathLike | None = None) -> Dataset:
    """Load MNIST, or any data set in the same four-file IDX layout.

    ``path`` must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or ``.gz`` (see
    :func:`find_idx_file` for accepted spellings). The SHA-256 of each raw file is verified only
    when loading from :data:`DEFAULT_DATA_DIR` (the shipped MNIST); other folders have no known
    hashes, so only their structure is checked.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder of the IDX files. Defaults to :data:`DEFAULT_DATA_DIR`.

    Returns
    -------
    Dataset
        ``x_train`` float32 (N_train, 1, H, W) in [0, 1] (pixels / 255), ``y_train`` int64
        (N_train,), ``x_test`` float32 (N_test, 1, H, W), ``y_test`` int64 (N_test,).
        All arrays are fresh and writable; nothing is cached.

    Raises
    ------
    DatasetError
        If a file is missing or corrupt, a checksum fails, images are not 3-D uint8, image and
        label counts differ, labels fall outside 0..255, or train and test image sizes differ.
    """
    if path is None and not Path(DEFAULT_DATA_DIR).is_dir():
        raise DatasetError(
            "no dataset given, and this installation has no default one: MNIST ships in the "
            "data/mnist folder of a dc-engine source checkout, not in the installed package. "
            "Pass the folder of a dataset in MNIST's IDX layout: --data PATH on the command "
            "line (e.g. the data/mnist folder of a checkout), or load_mnist(PATH) in Python."
        )
    folder = Path(DEFAULT_DATA_DIR if path is None else path)
    check_hash = _is_default_dir(folder)
    x_train, y_train = _load_split(folder, "train", check_hash)
    x_test, y_test = _load_split(folder, "test", check_hash)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"{folder}: train and test images differ in size: expected equal H x W, found "
            f"{x_train.shape[2]}x{x_train.shape[3]} (train) and "
            f"{x_test.shape[2]}x{x_test.shape[3]} (test). {_FIX_HINT}"
        )
    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


# --------------------------------------------------------------------------------------------
# NumPy archives
# --------------------------------------------------------------------------------------------

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
"""The arrays a dataset ``.npz`` must hold."""

_NPZ_FIX = ("Write it with np.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...): "
            "images (N, H, W), (N, C, H, W) or (N, H, W, C), uint8 or float; labels (N,) "
            "integers in 0..255.")


def _npz_headers(path: Path, zf) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every needed array, from the ``.npy`` headers alone (nothing is
    decompressed but the header bytes), and their total size checked against the limit."""
    names = {name[:-4]: name for name in zf.namelist() if name.endswith(".npy")}
    missing = [k for k in NPZ_KEYS if k not in names]
    if missing:
        raise DatasetError(f"{path}: missing array(s) {', '.join(missing)}; it holds "
                           f"{', '.join(sorted(names)) or 'no arrays'}. {_NPZ_FIX}")
    out, total = {}, 0
    for key in NPZ_KEYS:
        with zf.open(names[key]) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise DatasetError(f"{path}: {key} holds Python objects ({dtype}); dc-engine "
                               f"reads numeric arrays only (no pickles). {_NPZ_FIX}")
        size = dtype.itemsize
        for d in shape:
            size *= d
        total += size
        out[key] = (tuple(shape), dtype)
    cap = limit("dataset_bytes")
    if total > cap:
        raise DatasetError(f"{path}: its arrays declare {total:,} bytes, above the limit of "
                           f"{cap:,} bytes per dataset file; {how_to_raise('dataset_bytes')}")
    return out


def _npz_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """float32 (N, C, H, W): uint8 scaled by 1/255, floats kept; (N, H, W) gets C = 1 and
    (N, H, W, C) is transposed when only the last axis looks like channels (<= 4 of them)."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] <= 4 < x.shape[1]:  # channels last (NHWC)
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"{path}: {key} must be (N, H, W), (N, C, H, W) or (N, H, W, C) "
                           f"images, found shape {x.shape}. {_NPZ_FIX}")
    if 0 in x.shape:
        raise DatasetError(f"{path}: {key} holds no images (shape {x.shape}). {_NPZ_FIX}")
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= np.float32(255.0)
        return np.ascontiguousarray(out)
    if x.dtype.kind != "f":
        raise DatasetError(f"{path}: {key} must be uint8 or floating point, found {x.dtype}. "
                           f"{_NPZ_FIX}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DatasetError(f"{path}: {key} holds NaN or inf (after conversion to float32). "
                           f"{_NPZ_FIX}")
    return out


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {key} must be 1-D integer labels, found {y.dtype} of shape "
                           f"{y.shape}. {_NPZ_FIX}")
    if len(y) != n:
        raise DatasetError(f"{path}: {len(y)} labels in {key} for {n} images. {_NPZ_FIX}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi > 255:
        raise DatasetError(f"{path}: {key} must lie within 0..255, found {lo}..{hi}. "
                           f"{_NPZ_FIX}")
    return y.astype(np.int64)


def load_npz(path: PathLike) -> Dataset:
    """Load a dataset from one NumPy archive (``np.savez`` / ``np.savez_compressed``).

    Parameters
    ----------
    path : str or os.PathLike. An ``.npz`` holding ``x_train, y_train, x_test, y_test``:
        images (N, H, W), (N, C, H, W) or (N, H, W, C) -- channels last is recognised when
        only the last axis has at most 4 entries -- as uint8 (scaled to [0, 1]) or floats
        (kept as they are, in float32); labels (N,) integers in 0..255.

    Returns
    -------
    Dataset
        float32 (N, C, H, W) images and int64 labels, fresh arrays.

    Raises
    ------
    DatasetError
        Not a regular file, not a zip archive, a missing array, object (pickled) arrays,
        arrays declaring more than ``limit("dataset_bytes")`` bytes together (checked from
        the headers, before anything is decompressed), wrong shapes or dtypes, NaN or inf,
        label counts that differ from the images', labels outside 0..255, or train and test
        images of different shapes.
    """
    import zipfile

    p = regular_file(path, "dataset file", _NPZ_FIX, error=DatasetError, missing=DatasetError,
                     directory=DatasetError)
    try:
        with zipfile.ZipFile(p) as zf:
            _npz_headers(p, zf)
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in NPZ_KEYS}
    except DatasetError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as exc:
        raise DatasetError(f"{p}: not a readable .npz archive ({type(exc).__name__}: {exc}). "
                           f"{_NPZ_FIX}") from exc
    x_train = _npz_images(p, "x_train", arrays["x_train"])
    x_test = _npz_images(p, "x_test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{p}: train and test images differ: {x_train.shape[1:]} and "
                           f"{x_test.shape[1:]} (C, H, W). {_NPZ_FIX}")
    return Dataset(x_train=x_train,
                   y_train=_npz_labels(p, "y_train", arrays["y_train"], len(x_train)),
                   x_test=x_test,
                   y_test=_npz_labels(p, "y_test", arrays["y_test"], len(x_test)))


def load_dataset(path: PathLike | None = None) -> Dataset:
    """The dataset at ``path``: an ``.npz`` file (:func:`load_npz`) or a folder in MNIST's IDX
    layout (:func:`load_mnist`; the default, None, is the shipped MNIST)."""
    if path is not None and not Path(path).is_dir() and Path(path).suffix.lower() == ".npz":
        return load_npz(path)
    return load_mnist(path)


def train_val_split(
    x: np.ndarray, y: np.ndarray, n_val: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out a deterministic, seeded validation subset.

    A permutation from ``np.random.default_rng(seed)`` picks ``n_val`` validation indices; the
    rest is the training subset. Both subsets keep the original relative order of samples.

    Parameters
    ----------
    x : numpy.ndarray
        Samples, shape (N, ...), any dtype.
    y : numpy.ndarray
        Targets, shape (N, ...).
    n_val : int
        Validation size, ``0 <= n_val < N``.
    seed : int
        Seed for ``np.random.default_rng``; the same seed gives the same split.

    Returns
    -------
    x_tr : numpy.ndarray
        shape (N - n_val, ...), dtype of ``x``.
    y_tr : numpy.ndarray
        shape (N - n_val, ...), dtype of ``y``.
    x_val : numpy.ndarray
        shape (n_val, ...), dtype of ``x``.
    y_val : numpy.ndarray
        shape (n_val, ...), dtype of ``y``.

    Raises
    ------
    ValueError
        If ``x`` and ``y`` differ in length or ``n_val`` is out of range.
    TypeError
        If ``n_val`` is not an integer.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("train_val_split: x and y must have at least one axis (N, ...)")
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(
            f"train_val_split: x and y must have the same length, found {n} and {y.shape[0]}"
        )
    if isinstance(n_val, (bool, np.bool_)):
        raise TypeError("train_val_split: n_val must be an integer, found a bool")
    n_val = operator.index(n_val)
    if not 0 <= n_val < n:
        raise ValueError(
            f"train_val_split: expected 0 <= n_val < len(x) = {n}, found n_val = {n_val}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:n_val])
    tr_idx = np.sort(perm[n_val:])
    return x[tr_idx], y[tr_idx], x[val_idx], y[val_idx]
