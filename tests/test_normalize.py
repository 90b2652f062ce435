"""The Normalize layer (fixed per-channel input normalisation): forward by definition,
finite-difference backward in float64, argument errors, with_normalization's rewiring, dense
and compressed file round trips, ONNX export against onnxruntime, and `dc-engine import
--mean/--std`."""

from __future__ import annotations

import numpy as np
import pytest

import dc_engine
from dc_engine.core.layers import Add, Conv2D, Dense, Flatten, Normalize, ReLU
from dc_engine.core.model import INPUT, Model, with_normalization
from dc_engine.stages.encode import encode_model
from dc_engine.stages.quantize import share_layer

from _helpers import check_layer_grads


@pytest.mark.parametrize("shape, mean, std", [
    ((3, 4, 5, 5), [0.1, -0.2, 0.3, 0.0], [0.5, 2.0, 1.0, 0.25]),
    ((3, 4, 5, 5), [0.5], [0.25]),
    ((6, 3), [1.0, 2.0, 3.0], [1.0, 0.5, 4.0]),
    ((2, 1, 3, 3), 0.1307, 0.3081),
])
def test_forward_by_definition_and_backward_by_finite_differences(rng, shape, mean, std):
    x = rng.standard_normal(shape)
    layer = Normalize(mean, std)
    m = np.atleast_1d(np.asarray(mean, np.float64))
    s = np.atleast_1d(np.asarray(std, np.float64))
    want = np.empty_like(x)
    for c in range(shape[1]):
        k = c if len(m) > 1 else 0
        want[:, c] = (x[:, c] - m[k]) / s[k]
    y = layer.forward(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, want, rtol=1e-15, atol=1e-15)
    check_layer_grads(layer, x, rng, params=())
    y32 = layer.forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mean, std, needle", [
    ([0.1, 0.2], [0.3], "mean has 2 values"), ([0.1], [0.0], "std must be > 0"),
    ([0.1], [-1.0], "std must be > 0"), ([float("nan")], [1.0], "finite"),
    ([0.1], [float("inf")], "finite"), ([], [], "empty"), (["a"], [1.0], "numbers"),
    ("0.1", [1.0], "numbers"), ([True], [1.0], "numbers"),
])
def test_bad_arguments_are_named(mean, std, needle):
    with pytest.raises(ValueError, match=needle):
        Normalize(mean, std)


def test_channel_count_must_fit_the_input():
    layer = Normalize([0.1, 0.2], [1.0, 1.0], name="n")
    with pytest.raises(ValueError, match="2 channel values"):
        layer.output_shape((3, 8, 8))
    with pytest.raises(ValueError, match="expected 2 input channels"):
        layer.forward(np.zeros((1, 3, 8, 8), np.float32))
    assert Normalize([0.5], [2.0]).output_shape((3, 8, 8)) == (3, 8, 8)


def _mlp(rng):
    return Model([Flatten(name="f"), Dense(2 * 4 * 4, 5, rng=rng, name="d1"), ReLU(name="r"),
                  Dense(5, 3, rng=rng, name="d2")], input_shape=(2, 4, 4), name="mlp")


def _residual(rng):
    return Model([Conv2D(2, 2, 3, padding=1, rng=rng, name="c1"),
                  Add(name="add", inputs=["c1", INPUT]), Flatten(name="f"),
                  Dense(32, 3, rng=rng, name="d")], input_shape=(2, 4, 4), name="res")


@pytest.mark.parametrize("build", [_mlp, _residual])
def test_with_normalization_rewires_every_reader_of_the_input(rng, build):
    model = build(rng)
    x = rng.random((4, 2, 4, 4)).astype(np.float32)
    mean, std = [0.3, 0.6], [0.2, 0.5]
    xn = (x - np.array(mean, np.float32).reshape(1, 2, 1, 1)) / \
        np.array(std, np.float32).reshape(1, 2, 1, 1)
    want = model.forward(xn)
    normed = with_normalization(model, mean, std)
    assert normed.layers[0].type_name == "Normalize"
    assert all(INPUT not in ins for layer, ins in normed.wiring().steps[1:])
    np.testing.assert_allclose(normed.forward(x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="already normalises"):
        with_normalization(normed, [0.0], [1.0], name="again")


def test_with_normalization_refuses_bad_channels_and_taken_names(rng):
    with pytest.raises(ValueError, match="3 channel values"):
        with_normalization(_mlp(rng), [0.1] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="named 'd1'"):
        with_normalization(_mlp(rng), [0.1], [1.0], name="d1")


def test_dense_and_compressed_files_keep_the_normalisation(rng, tmp_path):
    model = with_normalization(_mlp(rng), [0.3, 0.6], [0.2, 0.5])
    x = rng.random((3, 2, 4, 4)).astype(np.float32)
    dense = dc_engine.load(dc_engine.save(model, tmp_path / "m.h5"))
    np.testing.assert_array_equal(dense.forward(x), model.forward(x))
    assert dense.layers[0].hyperparameters == {"mean": [0.3, 0.6], "std": [0.2, 0.5]}
    for layer in model.weighted_layers():
        share_layer(layer, 4)
    compressed = encode_model(model)
    loaded = dc_engine.load(dc_engine.save(compressed, tmp_path / "m.dc.h5"))
    assert loaded.layers[0].type_name == "Normalize"
    np.testing.assert_allclose(loaded.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.forward(x[:1]), model.forward(x[:1]), rtol=1e-5,
                               atol=1e-6)  # the batch-1 path


def test_onnx_export_matches_onnxruntime(rng, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from dc_engine.io.onnx import load_onnx, save_onnx

    model = with_normalization(_residual(rng), [0.3, 0.6], [0.2, 0.5])
    path = save_onnx(model, tmp_path / "m.onnx")
    x = rng.random((3, 2, 4, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-5, atol=1e-6)
    back = load_onnx(path)  # Sub / Div come back as channel arithmetic: same outputs
    np.testing.assert_allclose(back.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)


def test_cli_import_with_mean_and_std(rng, tmp_path, capsys):
    pytest.importorskip("onnx")
    from dc_engine.app.cli import main
    from dc_engine.io.onnx import save_onnx

    plain = _mlp(rng)
    onnx_path = save_onnx(plain, tmp_path / "m.onnx")
    x = rng.random((2, 2, 4, 4)).astype(np.float32)
    rc = main(["import", str(onnx_path), "--out", str(tmp_path / "m.h5"), "--mean",
               "0.3,0.6", "--std", "0.2,0.5", "--no-config"])
    assert rc == 0, capsys.readouterr().err
    model = dc_engine.load(tmp_path / "m.h5")
    assert model.layers[0].hyperparameters == {"mean": [0.3, 0.6], "std": [0.2, 0.5]}
    xn = (x - np.array([0.3, 0.6], np.float32).reshape(1, 2, 1, 1)) / \
        np.array([0.2, 0.5], np.float32).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(model.forward(x), plain.forward(xn), rtol=1e-5, atol=1e-6)
    for extra, needle in [(["--mean", "0.3"], "together"),
                          (["--mean", "0.3,x", "--std", "1,1"], "--mean"),
                          (["--mean", "0.3,0.2,0.1", "--std", "1,1,1"], "3 channel values"),
                          (["--mean", "0.3", "--std", "0"], "std must be > 0")]:
        out = tmp_path / "bad.h5"
        rc = main(["import", str(onnx_path), "--out", str(out), "--no-config", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err, err
        assert not out.exists()
