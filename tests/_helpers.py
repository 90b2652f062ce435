"""Helpers several test modules share: tiny IDX data sets and tiny stage configs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from dc_engine.io.data import MNIST_FILES

EPS = 1e-6
"""Step of the central differences."""
TOL = 1e-6
"""Largest relative error of an analytic gradient against central differences (float64)."""

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


# --------------------------------------------------------------- gradient checks


def numerical_grad(loss, a: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences of the scalar ``loss()`` with respect to ``a`` (perturbed in place)."""
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        up = loss()
        a[idx] = old - eps
        down = loss()
        a[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def rel_error(num: np.ndarray, ana: np.ndarray) -> float:
    num, ana = np.asarray(num), np.asarray(ana)
    assert num.shape == ana.shape
    return float(np.max(np.abs(num - ana))
                 / max(1e-8, np.max(np.abs(num)) + np.max(np.abs(ana))))


def assert_grad(num, ana, what):
    err = rel_error(num, ana)
    assert err < TOL, f"{what}: relative error {err:.3g} >= {TOL}"
    # Guard against comparing two zero arrays: the check must be able to fail.
    assert np.max(np.abs(num)) > 1e-3, f"{what}: gradient is (nearly) zero, check is vacuous"


def check_layer_grads(layer, x, rng, params=("W", "b")):
    """Finite-difference check of dx and every named parameter for L = sum(y * R)."""
    y = layer.forward(x, train=True)
    r = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(r)
    grads = {name: layer.grads[name].copy() for name in params}

    def loss():
        return float(np.sum(layer.forward(x, train=True) * r))

    assert_grad(numerical_grad(loss, x), dx, f"{layer.type_name} dx")
    for name in params:
        assert_grad(numerical_grad(loss, layer.params[name]), grads[name],
                    f"{layer.type_name} d{name}")


def distinct_values(rng, shape, gap=1e-2):
    """A random permutation of evenly spaced values: no ties, neighbours ``gap`` apart."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * gap).reshape(shape)


def naive_conv(x, w, b, stride, padding, groups=1):
    """Direct cross-correlation with loops (float64); ``padding`` an int or (top, left,
    bottom, right); ``w`` of shape (oc, c / groups, k, k)."""
    n, c, h, wd = x.shape
    oc, cg, k, _ = w.shape
    top, left, bottom, right = (padding,) * 4 if isinstance(padding, int) else padding
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    oh = (h + top + bottom - k) // stride + 1
    ow = (wd + left + right - k) // stride + 1
    y = np.zeros((n, oc, oh, ow))
    ocg = oc // groups
    for s in range(n):
        for o in range(oc):
            g = o // ocg
            for i in range(oh):
                for j in range(ow):
                    acc = b[o]
                    for ch in range(cg):
                        for a in range(k):
                            for bb in range(k):
                                acc += (w[o, ch, a, bb]
                                        * xp[s, g * cg + ch, i * stride + a, j * stride + bb])
                    y[s, o, i, j] = acc
    return y


def four_class_images(rng, n):
    """Four classes, each a bright pair of rows in noise, (n, 1, 8, 8): learnable in one
    epoch."""
    y = rng.integers(0, 4, n)
    x = rng.normal(0.0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for c in range(4):
        x[y == c, 0, 2 * c:2 * c + 2, :] += 1.0
    return x, y.astype(np.int64)


def tiny_convnet(rng, name="tiny"):
    """conv c1 -> pool -> fc1 -> fc2 on (1, 8, 8) inputs, four classes."""
    from dc_engine.core.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from dc_engine.core.model import Model

    return Model([Conv2D(1, 6, 3, padding=1, rng=rng, name="c1"), ReLU(name="r1"),
                  MaxPool2D(2, name="p1"), Flatten(name="f"),
                  Dense(96, 32, rng=rng, name="fc1"), ReLU(name="r2"),
                  Dense(32, 4, rng=rng, name="fc2")], input_shape=(1, 8, 8), name=name)


def four_class_dataset(noise: float = 0.0):
    """900 training and 200 test images of :func:`four_class_images` (seed 0), with Gaussian
    noise of std ``noise`` added (harder: the error of a net trained on it is not zero)."""
    from dc_engine.io.data import Dataset

    rng = np.random.default_rng(0)
    (xtr, ytr), (xte, yte) = four_class_images(rng, 900), four_class_images(rng, 200)
    if noise:
        xtr += rng.normal(0, noise, xtr.shape).astype(np.float32)
        xte += rng.normal(0, noise, xte.shape).astype(np.float32)
    return Dataset(xtr, ytr, xte, yte)


def trained_tiny_convnet(data):
    """:func:`tiny_convnet` (seed 1) trained two epochs on ``data`` (lr 0.05)."""
    from dc_engine.core.train import TrainConfig, fit

    model = tiny_convnet(np.random.default_rng(1))
    fit(model, data.x_train, data.y_train, TrainConfig(epochs=2, lr=0.05, lr_policy="fixed"),
        progress=False, threads=1)
    return model
