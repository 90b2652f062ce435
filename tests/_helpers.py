"""Helpers several test modules share: tiny IDX data sets and tiny stage configs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from dc_engine.io.data import MNIST_FILES

CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}
"""IDX dtype codes by NumPy dtype string."""


def idx_bytes(arr: np.ndarray, code: int | None = None, dims=None, extra: bytes = b"") -> bytes:
    """Raw IDX encoding of ``arr`` (header fields can be overridden to forge bad files)."""
    be = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if code is None:
        code = CODES[be.str.lstrip("|")]
    dims = arr.shape if dims is None else dims
    head = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return head + np.ascontiguousarray(arr, dtype=be).tobytes() + extra


def write_idx(path: Path, arr: np.ndarray, gz: bool = False, **kw) -> Path:
    raw = idx_bytes(arr, **kw)
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def write_dataset(folder: Path, n_train=12, n_test=5, h=5, w=7, gz=True, seed=0, **over):
    """Write a small four-file IDX data set; ``over`` replaces any array by role."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays.update(over)
    folder.mkdir(parents=True, exist_ok=True)
    for role, arr in arrays.items():
        name = MNIST_FILES[role] + (".gz" if gz else "")
        write_idx(folder / name, arr, gz=gz)
    return arrays


#: Kept-fraction per layer in the tiny pruning runs.
TINY_KEPT = {"ip1": 0.1, "ip2": 0.2, "ip3": 0.5}


def prune_toml(rounds: int = 1) -> str:
    """A [prune] table: ``rounds`` rounds of one retraining epoch each, 16 validation images,
    seed 0, the :data:`TINY_KEPT` fractions."""
    layers = "".join(f"\n[prune.layers.{name}]\nkept = {kept}\n"
                     for name, kept in TINY_KEPT.items())
    return (f"[prune]\nrounds = {rounds}\nval_size = 16\nseed = 0\n\n"
            f"[prune.retrain]\nepochs = 1\n{layers}")
