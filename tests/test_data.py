"""Tests for dc_engine.io.data: IDX reading, MNIST loading, validation split."""

from __future__ import annotations

import gzip
import hashlib
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dc_engine.errors import DatasetError
from dc_engine.io import data
from dc_engine.io.data import (
    DEFAULT_DATA_DIR,
    MNIST_FILES,
    Dataset,
    find_idx_file,
    load_mnist,
    read_idx,
    train_val_split,
)

from _helpers import idx_bytes, write_dataset, write_idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------------------- shipped MNIST


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_mnist()


def test_load_mnist_shapes_dtypes(mnist):
    assert mnist.x_train.shape == (60000, 1, 28, 28)
    assert mnist.x_test.shape == (10000, 1, 28, 28)
    assert mnist.y_train.shape == (60000,)
    assert mnist.y_test.shape == (10000,)
    assert mnist.x_train.dtype == np.float32 and mnist.x_test.dtype == np.float32
    assert mnist.y_train.dtype == np.int64 and mnist.y_test.dtype == np.int64


def test_load_mnist_values(mnist):
    for x in (mnist.x_train, mnist.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(mnist.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert set(np.unique(mnist.y_test).tolist()) == set(range(10))
    assert mnist.x_train.mean(dtype=np.float64) == pytest.approx(0.1307, abs=1e-3)


def test_default_dir_exists():
    assert DEFAULT_DATA_DIR.is_dir()
    for stem in MNIST_FILES.values():
        assert find_idx_file(DEFAULT_DATA_DIR, stem).name == stem + ".gz"


# ---------------------------------------------------------------------------- read_idx round trip

_dtypes = st.sampled_from([np.dtype(s) for s in ("u1", "i1", ">i2", ">i4", ">f4", ">f8")])
_arrays = _dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arr=_arrays, gz=st.booleans(), name=st.sampled_from(["a.idx", "b.gz", "c"]))
def test_read_idx_round_trip(tmp_path, arr, gz, name):
    p = write_idx(tmp_path / name, arr, gz=gz)
    got = read_idx(p)
    assert got.shape == arr.shape
    assert got.dtype == arr.dtype.newbyteorder("=")
    assert got.dtype.isnative
    assert got.tobytes() == arr.astype(got.dtype).tobytes()  # bit-exact (NaN, -0.0)
    assert got.flags.writeable


def test_read_idx_sha256_ok(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(arr)
    p = write_idx(tmp_path / "x.gz", arr, gz=True)
    digest = hashlib.sha256(raw).hexdigest()
    np.testing.assert_array_equal(read_idx(p, expected_sha256=digest.upper()), arr)


# ---------------------------------------------------------------------------- read_idx errors


def test_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"not found.*--data") as info:
        read_idx(tmp_path / "nope-idx1-ubyte")
    assert isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    p = tmp_path / "t"
    raw = idx_bytes(np.zeros((4, 3), np.uint8))[:-2]
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DatasetError, match=r"truncated payload.*12 payload bytes.*found 10"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path, gz):
    p = write_idx(tmp_path / "t", np.zeros((4, 3), np.uint8), gz=gz, extra=b"\x00")
    with pytest.raises(DatasetError, match=r"trailing data.*12 payload bytes"):
        read_idx(p)


@pytest.mark.parametrize("raw", [b"", b"\x00\x00", b"\x00\x00\x08\x02\x00\x00\x00\x01"])
def test_truncated_header(tmp_path, raw):
    p = tmp_path / "h"
    p.write_bytes(raw)
    with pytest.raises(DatasetError, match=r"truncated IDX header"):
        read_idx(p)


def test_bad_magic(tmp_path):
    p = tmp_path / "m"
    p.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DatasetError, match=r"bad IDX magic.*00 00.*found 01 00"):
        read_idx(p)


@pytest.mark.parametrize("code", [0x00, 0x07, 0x0A, 0x0F, 0xFF])
def test_unknown_dtype_code(tmp_path, code):
    p = write_idx(tmp_path / "c", np.zeros(3, np.uint8), code=code)
    with pytest.raises(DatasetError, match=f"unknown IDX dtype code 0x{code:02X}"):
        read_idx(p)


@pytest.mark.parametrize("ndim", [0, 5, 255])
def test_bad_ndim(tmp_path, ndim):
    p = tmp_path / "n"
    p.write_bytes(bytes([0, 0, 8, ndim]) + b"\x00" * 4 * ndim)
    with pytest.raises(DatasetError, match=f"unsupported IDX ndim {ndim}"):
        read_idx(p)


def test_corrupt_gzip_flipped_bytes(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (50, 20), dtype=np.uint8)
    good = gzip.compress(idx_bytes(arr), mtime=0)
    p = tmp_path / "corrupt.gz"
    # a sample of the deflate body after the 10-byte gzip header, plus the whole CRC/size trailer
    positions = sorted(set(range(10, len(good) - 8, 17)) | set(range(len(good) - 8, len(good))))
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= 0xFF
        p.write_bytes(bytes(bad))
        with pytest.raises(DatasetError, match=r"corrupt|truncated|trailing|magic|dtype|ndim"):
            read_idx(p)


def test_corrupt_gzip_crc(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(30, dtype=np.uint8)), mtime=0)
    bad = bytearray(good)
    bad[-8] ^= 0x01  # CRC32 field: the data inflates fine but fails the check
    p = tmp_path / "crc.gz"
    p.write_bytes(bytes(bad))
    with pytest.raises(DatasetError, match=r"corrupt or truncated gzip stream") as info:
        read_idx(p)
    assert isinstance(info.value.__cause__, OSError)


def test_truncated_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(300, dtype=">i2")), mtime=0)
    p = tmp_path / "cut.gz"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"corrupt or truncated gzip stream"):
        read_idx(p)


def test_wrong_sha256(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    p = write_idx(tmp_path / "s-idx1-ubyte", arr)
    actual = hashlib.sha256(idx_bytes(arr)).hexdigest()
    wrong = "0" * 64
    with pytest.raises(DatasetError, match=r"SHA-256 mismatch") as info:
        read_idx(p, expected_sha256=wrong)
    msg = str(info.value)
    assert "s-idx1-ubyte" in msg and wrong in msg and actual in msg


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "dims", [(2**31, 2**31), (2**32 - 1,) * 4, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1)]
)
def test_absurd_dims_fail_fast(tmp_path, gz, dims):
    p = write_idx(tmp_path / "big", np.zeros(0, np.uint8), gz=gz, dims=dims, extra=b"\x01" * 16)
    t0 = time.perf_counter()
    with pytest.raises(DatasetError,
                       match=r"trailing data|truncated payload|represented|above the limit"):
        read_idx(p)
    assert time.perf_counter() - t0 < 5.0


def test_zero_sized_with_absurd_dims(tmp_path):
    p = write_idx(tmp_path / "z", np.zeros(0, np.uint8), dims=(0, 2**32 - 1, 2**32 - 1, 2**32 - 1))
    with pytest.raises(DatasetError, match=r"cannot be represented"):
        read_idx(p)


def test_zero_sized_ok(tmp_path):
    p = write_idx(tmp_path / "z", np.zeros((0, 28, 28), np.uint8))
    assert read_idx(p).shape == (0, 28, 28)


# ---------------------------------------------------------------------------- find_idx_file


def test_find_idx_file_variants(tmp_path):
    arr = np.zeros(2, np.uint8)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", arr)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", arr, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", arr)
    got = find_idx_file(tmp_path, "t10k-images-idx3-ubyte")
    assert got.name == "t10k-images.idx3-ubyte"
    assert find_idx_file(tmp_path, "train-labels-idx1-ubyte").name.endswith(".gz")
    assert find_idx_file(tmp_path, "t10k-labels-idx1-ubyte").name == "t10k-labels-idx1-ubyte"
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz.*train-images\.idx3"):
        find_idx_file(tmp_path, "train-images-idx3-ubyte")


def test_find_idx_file_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"data folder not found.*--data"):
        find_idx_file(tmp_path / "absent", "train-images-idx3-ubyte")


# ---------------------------------------------------------------------------- load_mnist, custom


@pytest.mark.parametrize("gz", [False, True])
def test_load_custom_folder(tmp_path, gz):
    arrays = write_dataset(tmp_path / "ds", gz=gz)
    ds = load_mnist(tmp_path / "ds")  # MNIST names, other content: no hash check applies
    assert ds.x_train.shape == (12, 1, 5, 7) and ds.x_test.shape == (5, 1, 5, 7)
    assert ds.x_train.dtype == np.float32 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["train_images"] / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert 0.0 <= ds.x_test.min() and ds.x_test.max() <= 1.0


def test_load_str_path_and_fresh_arrays(tmp_path):
    write_dataset(tmp_path)
    a = load_mnist(str(tmp_path))
    a.x_train[:] = -1.0
    b = load_mnist(tmp_path)
    assert b.x_train.min() >= 0.0


def test_load_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"data folder not found.*--data PATH"):
        load_mnist(tmp_path / "missing")


def test_load_missing_file(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"IDX file not found.*t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_load_mismatched_counts(tmp_path):
    write_dataset(tmp_path, train_labels=np.zeros(11, np.uint8))
    with pytest.raises(DatasetError, match=r"train split.*12 images.*11 labels"):
        load_mnist(tmp_path)


def test_load_images_not_3d(tmp_path):
    write_dataset(tmp_path, test_images=np.zeros((5, 35), np.uint8))
    with pytest.raises(DatasetError, match=r"expected 3-D images"):
        load_mnist(tmp_path)


def test_load_labels_out_of_range(tmp_path):
    labels = np.zeros(12, ">i2")
    labels[3] = 300
    write_dataset(tmp_path, train_labels=labels)
    with pytest.raises(DatasetError, match=r"labels within 0\.\.255.*0\.\.300"):
        load_mnist(tmp_path)


def test_load_train_test_size_mismatch(tmp_path):
    write_dataset(tmp_path, test_images=np.zeros((5, 6, 7), np.uint8))
    with pytest.raises(DatasetError, match=r"differ in size"):
        load_mnist(tmp_path)


def test_default_folder_checks_sha256(tmp_path, monkeypatch):
    write_dataset(tmp_path)
    monkeypatch.setattr(data, "DEFAULT_DATA_DIR", tmp_path)
    with pytest.raises(DatasetError, match=r"SHA-256 mismatch"):
        load_mnist()
    with pytest.raises(DatasetError, match=r"SHA-256 mismatch"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------------------- train_val_split


def test_split_deterministic_and_disjoint():
    rng = np.random.default_rng(0)
    n = 200
    x = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    y = rng.integers(0, 10, n)
    a = train_val_split(x, y, 50, seed=7)
    b = train_val_split(x, y, 50, seed=7)
    c = train_val_split(x, y, 50, seed=8)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[2], c[2])
    x_tr, y_tr, x_val, y_val = a
    assert x_tr.shape == (150, 2, 3) and x_val.shape == (50, 2, 3)
    assert y_tr.shape == (150,) and y_val.shape == (50,)
    ids_tr, ids_val = x_tr[:, 0, 0].astype(int), x_val[:, 0, 0].astype(int)
    assert set(ids_tr).isdisjoint(ids_val)
    assert sorted(set(ids_tr) | set(ids_val)) == list(range(n))
    np.testing.assert_array_equal(y_tr, y[ids_tr])  # pairs stay aligned
    np.testing.assert_array_equal(y_val, y[ids_val])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), data_=st.data(), seed=st.integers(0, 2**32 - 1))
def test_split_partition_property(n, data_, seed):
    n_val = data_.draw(st.integers(0, n - 1))
    x = np.arange(n)
    x_tr, y_tr, x_val, y_val = train_val_split(x, -x, n_val, seed)
    assert len(x_val) == n_val and len(x_tr) == n - n_val
    assert np.array_equal(np.sort(np.concatenate([x_tr, x_val])), x)
    assert np.array_equal(y_tr, -x_tr) and np.array_equal(y_val, -x_val)


@pytest.mark.parametrize("n_val", [-1, 10, 11])
def test_split_bad_n_val(n_val):
    with pytest.raises(ValueError, match=r"0 <= n_val < len\(x\)"):
        train_val_split(np.zeros(10), np.zeros(10), n_val, seed=0)


def test_split_length_mismatch():
    with pytest.raises(ValueError, match=r"same length"):
        train_val_split(np.zeros(10), np.zeros(9), 2, seed=0)


def test_for_input_reshapes_images_for_a_model_that_takes_vectors():
    ds = data.Dataset(np.arange(2 * 12, dtype=np.float32).reshape(2, 1, 3, 4),
                      np.zeros(2, np.int64), np.ones((1, 1, 3, 4), np.float32),
                      np.zeros(1, np.int64))
    assert ds.for_input((1, 3, 4)) is ds
    flat = ds.for_input((12,))
    assert flat.x_train.shape == (2, 12) and flat.x_test.shape == (1, 12)
    assert np.shares_memory(flat.x_train, ds.x_train)  # a view, no copy
    np.testing.assert_array_equal(flat.x_train[1], ds.x_train[1].ravel())
    with pytest.raises(DatasetError, match=r"m.h5 takes inputs of shape \(3, 32, 32\)"):
        ds.for_input((3, 32, 32), "m.h5")
