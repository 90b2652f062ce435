"""The runtime: compressed files load as the one Model type, run like their dense decode,
save back byte for byte, and import no training code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dc_engine
from dc_engine import runtime
from dc_engine.core.layers import Conv2D, Dense
from dc_engine.core.model import Model
from dc_engine.runtime import CompressedMatrix

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "data" / "models"
TRAINING = ("dc_engine.core.train", "dc_engine.core.optim", "dc_engine.core.losses",
            "dc_engine.stages", "dc_engine.stages.quantize", "dc_engine.stages.prune",
            "dc_engine.app", "dc_engine.app.jobs", "tqdm")


def test_runtime_imports_no_training_code():
    code = ("import sys, dc_engine.runtime; "
            f"bad = [m for m in {TRAINING!r} if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_loading_a_compressed_file_imports_no_training_code():
    path = MODELS / "lenet-5.dc.h5"
    code = ("import sys, numpy as np, dc_engine; "
            f"m = dc_engine.load({str(path)!r}); "
            "m.forward(np.zeros((2, 1, 28, 28), np.float32)); "
            f"bad = [x for x in {TRAINING!r} if x in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("arch", ["lenet-300-100", "lenet-5"])
def test_shipped_compressed_model_runs_like_its_quantized_model(arch, rng):
    cm = dc_engine.load(MODELS / f"{arch}.dc.h5")
    qm = dc_engine.load(MODELS / f"{arch}.quantized.h5")
    # one model type, the same layer classes: only the weight back end differs
    assert type(cm) is type(qm) is Model
    assert [type(l) for l in cm.layers] == [type(l) for l in qm.layers]
    assert cm.compressed and not qm.compressed
    assert cm.name == qm.name == arch
    assert cm.input_shape == qm.input_shape
    assert cm.num_params() == qm.num_params()
    for c, q in zip(cm.layers, qm.layers):
        assert c.name == q.name and c.hyperparameters == q.hyperparameters
        if isinstance(c, (Dense, Conv2D)):
            assert isinstance(c.params["W"], CompressedMatrix) and c.compressed
            assert isinstance(q.params["W"], np.ndarray) and not q.compressed
    x = rng.random((33,) + qm.input_shape, dtype=np.float32)
    ref = qm.forward(x)
    out = cm.forward(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert np.array_equal(cm.predict(x, batch_size=5), np.argmax(ref, axis=1))
    weights = sum(l.params["W"].n_entries for l in cm.weighted_layers())
    assert weights < cm.num_params() // 8  # pruned: packed entries, not one per weight
    assert cm.nbytes < 4 * cm.num_params() // 8
    dense = cm.to_dense()
    for layer in qm.layers:
        if layer.params:
            for k in ("W", "b"):
                assert np.array_equal(dense[layer.name].params[k].view(np.uint32),
                                      layer.params[k].view(np.uint32)), (layer.name, k)


def test_compressed_model_rejects_training_and_bad_shapes():
    cm = runtime.load(MODELS / "lenet-300-100.dc.h5")
    assert cm.input_shape == (1, 28, 28)
    with pytest.raises(ValueError, match="inference only"):
        cm.forward(np.zeros((1, 1, 28, 28), np.float32), train=True)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\), got \(1, 28, 28\)"):
        cm.forward(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        cm.predict(np.zeros((1, 1, 28, 28), np.float32), batch_size=0)
    assert cm.predict(np.zeros((0, 1, 28, 28), np.float32)).shape == (0,)


@pytest.mark.parametrize("arch", ["lenet-300-100", "lenet-5"])
@pytest.mark.parametrize("simd", [True, False])
def test_one_sample_path_matches_the_batched_path(arch, simd, rng):
    """forward on a batch of one runs the fused batch-1 path (product, then bias and ReLU in
    one call); it gives the batched path's rows, fresh arrays each call, on either kernel."""
    cm = runtime.load(MODELS / f"{arch}.dc.h5")
    for layer in cm.weighted_layers():
        m = layer.params["W"]
        m.simd = simd and m.simd
    x = rng.random((6,) + cm.input_shape, dtype=np.float32)
    x[2] = 0.0  # every activation zero before the biases
    batched = cm.forward(x)
    outs = [cm.forward(x[i:i + 1]) for i in range(len(x))]
    for i, out in enumerate(outs):
        assert out.shape == (1,) + batched.shape[1:] and out.dtype == np.float32
        np.testing.assert_allclose(out[0], batched[i], rtol=1e-5,
                                   atol=1e-5 * np.abs(batched).max())
    assert not np.shares_memory(outs[0], outs[1])
    # a non-contiguous float64 sample is converted, not misread
    wide = np.zeros((1,) + cm.input_shape[:-1] + (2 * cm.input_shape[-1],))
    wide[..., ::2] = x[3:4]
    np.testing.assert_allclose(cm.forward(wide[..., ::2])[0], batched[3], rtol=1e-5,
                               atol=1e-5 * np.abs(batched).max())


def test_one_sample_path_follows_changes_to_the_layers(rng):
    """The fused plan (Dense + ReLU as one step) is rebuilt when the layer list changes, also
    when a removed layer is freed and a new one could take its id()."""
    from dc_engine.core.layers import Dropout
    cm = runtime.load(MODELS / "lenet-300-100.dc.h5")
    x = rng.random((3,) + cm.input_shape, dtype=np.float32)
    before = cm.forward(x[:1])
    relu = cm.layers.pop(2)  # ip1 now feeds ip2 without a ReLU
    assert type(relu).__name__ == "ReLU"
    np.testing.assert_allclose(cm.forward(x[:1])[0], cm.forward(x)[0], rtol=1e-5, atol=1e-4)
    assert not np.allclose(cm.forward(x[:1]), before)
    cm.layers.insert(2, relu)
    np.testing.assert_allclose(cm.forward(x[:1]), before, rtol=1e-6, atol=1e-6)
    for _ in range(3):  # replace the ReLU by a no-op, dropping every reference to it
        del cm.layers[2]
        cm.layers.insert(2, Dropout(0.0))
        np.testing.assert_allclose(cm.forward(x[:1])[0], cm.forward(x)[0], rtol=1e-5,
                                   atol=1e-4)
        assert not np.allclose(cm.forward(x[:1]), before)
        cm.layers[2] = relu
        np.testing.assert_allclose(cm.forward(x[:1]), before, rtol=1e-6, atol=1e-6)


def test_one_sample_path_on_one_thread(rng):
    """With numba.set_num_threads(1) the batch-1 path uses one row block (no parallel
    region) and gives the same result."""
    import numba
    cm = runtime.load(MODELS / "lenet-300-100.dc.h5")
    x = rng.random((1,) + cm.input_shape, dtype=np.float32)
    want = cm.forward(x)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(cm.forward(x), want)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("arch", ["lenet-300-100", "lenet-5"])
def test_a_loaded_compressed_file_saves_back_byte_for_byte(arch, tmp_path):
    """The layers record how their payloads were encoded, so save(load(f)) == f."""
    src = MODELS / f"{arch}.dc.h5"
    cm = dc_engine.load(src)
    out = dc_engine.save(cm, tmp_path / "again.dc.h5")
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(ValueError, match="no metadata"):
        dc_engine.save(cm, tmp_path / "x.dc.h5", metadata={"a": 1})


def test_compressed_and_float_weights_cannot_share_a_file(tmp_path):
    cm = dc_engine.load(MODELS / "lenet-300-100.dc.h5")
    cm["ip3"].set_param("W", cm["ip3"].params["W"].to_dense())  # back to a float array
    assert cm.compressed and not cm["ip3"].compressed
    with pytest.raises(ValueError, match="'ip3' has no compressed weight"):
        dc_engine.save(cm, tmp_path / "mixed.dc.h5")
    assert not (tmp_path / "mixed.dc.h5").exists()


def test_to_dense_gives_an_independent_float_model(rng):
    cm = dc_engine.load(MODELS / "lenet-5.dc.h5")
    dense = cm.to_dense()
    assert not dense.compressed and dense.metadata == cm.metadata
    x = rng.random((4,) + cm.input_shape, dtype=np.float32)
    np.testing.assert_allclose(dense.forward(x), cm.forward(x), rtol=1e-4, atol=1e-4)
    dense["ip2"].params["b"][:] = 0.0  # a copy: the compressed model keeps its bias
    assert np.any(cm["ip2"].params["b"] != 0)


def test_compressed_layers_refuse_float64_and_training():
    cm = dc_engine.load(MODELS / "lenet-300-100.dc.h5")
    with pytest.raises(TypeError, match="float32"):
        cm.astype(np.float64)
    from dc_engine.core.train import TrainConfig, fit
    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(ValueError, match="inference only"):
        fit(cm, x, np.zeros(4, np.int64), TrainConfig(epochs=1), progress=False)


@pytest.fixture(scope="module")
def mnist_test():
    from dc_engine.io.data import load_mnist
    ds = load_mnist()
    return ds.x_test, ds.y_test


@pytest.mark.parametrize("arch, errors", [("lenet-300-100", 121), ("lenet-5", 70)])
def test_shipped_files_old_and_new_give_the_documented_test_errors(arch, errors, mnist_test):
    """The shipped files (payload version 2) and the same models as written before the coder
    interface (payload version 1, tests/data/v1/) decode to the same weights bit for bit and
    misclassify the documented number of the 10,000 MNIST test images (README: 1.21%, 0.70%)."""
    x, y = mnist_test
    new = dc_engine.load(MODELS / f"{arch}.dc.h5")
    old = dc_engine.load(ROOT / "tests" / "data" / "v1" / f"{arch}.dc.h5")
    for a, b in zip(new.to_dense().layers, old.to_dense().layers):
        for k in a.params:
            assert np.array_equal(a.params[k].view(np.uint32), b.params[k].view(np.uint32))
    assert [l.encoding for l in new.layers] == [l.encoding for l in old.layers]
    for model in (new, old):
        assert int(np.sum(model.predict(x) != y)) == errors


def test_one_sample_path_follows_replaced_weights(rng):
    """Whether a Dense weight is compressed is decided at each call: a model decoded in place
    (and made float64) after a batch-1 call runs the float path, exactly as per layer."""
    cm = runtime.load(MODELS / "lenet-300-100.dc.h5")
    x = rng.random((2,) + cm.input_shape, dtype=np.float32)
    cm.forward(x[:1])  # builds and caches the plan
    for layer in cm.weighted_layers():
        layer.set_param("W", layer.params["W"].to_dense())
    cm.astype(np.float64)
    assert not cm.compressed and cm.dtype == np.float64
    per_layer = x[:1].astype(np.float64)
    for layer in cm.layers:
        per_layer = layer.forward(per_layer)
    out = cm.forward(x[:1].astype(np.float64))
    assert out.dtype == np.float64 and np.array_equal(out, per_layer)
    # and the other way: a float model given a compressed weight runs it (fused once the
    # layer list changes)
    dense = dc_engine.load(MODELS / "lenet-300-100.quantized.h5")
    dense.forward(x[:1])
    ip1 = dense["ip1"]
    ip1.set_param("W", CompressedMatrix.from_dense(np.array(ip1.params["W"]), weight_bits=6))
    ref = x[:1]
    for layer in dense.layers:
        ref = layer.forward(ref)
    assert np.array_equal(dense.forward(x[:1]), ref)


def test_array_likes_are_float_parameters_not_back_ends():
    layer = Dense(2, 3, params={"W": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "b": [0.0, 1.0, 2.0]})
    assert not layer.compressed and layer.params["W"].dtype == np.float64
    layer.set_param("b", [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(layer.params["b"], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        layer.set_param("W", [1.0, 2.0])
