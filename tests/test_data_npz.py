"""Datasets in one .npz (dc_engine.io.data.load_npz / load_dataset) and their bad inputs."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dc_engine import DatasetError, load_dataset, load_npz
from dc_engine.app import cli
from dc_engine.limits import limits_set


def _arrays(rng, n=6, m=3, shape=(5, 7), dtype=np.uint8):
    x = rng.integers(0, 256, (n + m, *shape)).astype(dtype)
    y = rng.integers(0, 10, n + m)
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


@settings(max_examples=30, deadline=None)
@given(layout=st.sampled_from(["NHW", "NCHW", "NHWC"]), channels=st.integers(1, 3),
       dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.float16]),
       compressed=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_every_layout_and_dtype_loads_as_nchw_float32(tmp_path_factory, layout, channels, dtype,
                                                       compressed, seed):
    rng = np.random.default_rng(seed)
    n, m, h, w = 5, 3, 6, 9
    chw = rng.integers(0, 256, (n + m, channels, h, w)).astype(dtype)
    if layout == "NHW":
        stored, chw = chw[:, 0], chw[:, :1]
    elif layout == "NHWC":
        stored = chw.transpose(0, 2, 3, 1)
    else:
        stored = chw
    y = rng.integers(0, 256, n + m).astype(rng.choice([np.uint8, np.int32, np.int64]))
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    (np.savez_compressed if compressed else np.savez)(
        path, x_train=stored[:n], y_train=y[:n], x_test=stored[n:], y_test=y[n:])
    ds = load_dataset(path)
    want = chw.astype(np.float32) / (np.float32(255.0) if dtype == np.uint8 else 1)
    assert ds.x_train.dtype == np.float32 and ds.x_train.flags.c_contiguous
    np.testing.assert_array_equal(ds.x_train, want[:n])
    np.testing.assert_array_equal(ds.x_test, want[n:])
    assert ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.y_test, y[n:])


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("y_test"), "missing array.*y_test"),
    (lambda a: a.update(x_train=a["x_train"].reshape(-1)), "must be .N, H, W."),
    (lambda a: a.update(x_train=a["x_train"][..., None, None]), "must be .N, H, W."),
    (lambda a: a.update(x_train=a["x_train"].astype(np.int32)), "uint8 or floating"),
    (lambda a: a.update(x_test=np.full((3, 5, 7), np.nan)), "NaN or inf"),
    (lambda a: a.update(x_test=a["x_test"][:, :4]), "train and test images differ"),
    (lambda a: a.update(x_train=a["x_train"][:0], y_train=a["y_train"][:0]), "no images"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "5 labels in y_train for 6 images"),
    (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "1-D integer labels"),
    (lambda a: a.update(y_test=a["y_test"][:, None]), "1-D integer labels"),
    (lambda a: a.update(y_test=a["y_test"] - 20), "within 0..255"),
    (lambda a: a.update(y_train=a["y_train"] + 300), "within 0..255"),
])
def test_bad_arrays_are_named(tmp_path, rng, change, message):
    arrays = _arrays(rng)
    change(arrays)
    path = _save(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError, match=message) as info:
        load_npz(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_object_arrays_are_refused_without_unpickling(tmp_path, rng):
    arrays = _arrays(rng)
    arrays["y_train"] = np.array([object()] * 6, dtype=object)
    path = _save(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError, match="Python objects"):
        load_npz(path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 40])
def test_a_file_that_is_not_an_archive_is_named(tmp_path, content):
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="not a readable .npz archive"):
        load_dataset(path)


def test_a_truncated_archive_is_named(tmp_path, rng):
    path = _save(tmp_path / "d.npz", **_arrays(rng, n=200, shape=(28, 28)))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DatasetError, match="not a readable .npz archive"):
        load_npz(path)


def test_a_corrupt_member_is_named(tmp_path, rng):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **_arrays(rng, n=200, shape=(28, 28)))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x_train.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start:start + 64] = os.urandom(64)  # inside the deflated pixels
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="not a readable .npz archive"):
        load_npz(path)


def test_declared_sizes_are_checked_before_decompressing(tmp_path, rng):
    path = _save(tmp_path / "d.npz", **_arrays(rng, n=100, shape=(28, 28)))
    with limits_set(dataset_bytes=50_000), pytest.raises(
            DatasetError, match="above the limit of 50,000 bytes"):
        load_npz(path)


def test_missing_files_folders_and_fifos(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_npz(tmp_path / "none.npz")
    with pytest.raises(DatasetError, match="directory"):
        load_npz(tmp_path)
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match="regular file"):
        load_dataset(fifo)  # refused before anything opens it (a FIFO would block)


def test_eval_takes_an_npz_and_checks_the_input_size(tmp_path, rng, tiny_mlp_model, capsys):
    # tiny_mlp_model is LeNet-300-100 on (1, 28, 28) images (tests/conftest.py)
    good = _save(tmp_path / "good.npz", **_arrays(rng, shape=(28, 28, 1)))  # NHWC
    assert cli.main(["eval", str(tiny_mlp_model), "--data", str(good)]) == 0
    assert "error" in capsys.readouterr().out.lower()
    bad = _save(tmp_path / "bad.npz", **_arrays(rng, shape=(6, 6)))
    assert cli.main(["eval", str(tiny_mlp_model), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "takes inputs of shape (1, 28, 28)" in err and "(1, 6, 6)" in err
