"""The fused batch-1 path (dc_engine.core.fused, kernels.chain): the kernel against its NumPy
twin, the path against the per-layer one, the choice between them, and threads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dc_engine
from dc_engine import CompressedMatrix, Model
from dc_engine.core import fused
from dc_engine.core.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dc_engine.kernels import reference

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "data" / "models"


def _compress(layer, rng, density, bits):
    w = np.array(layer.params["W"], dtype=np.float32)
    w[rng.random(w.shape) >= density] = 0.0
    layer.set_param("W", CompressedMatrix.from_dense(w.reshape(w.shape[0], -1),
                                                     weight_bits=bits, index_bits=bits % 4 + 2))
    layer.set_param("b", rng.standard_normal(layer.params["b"].shape).astype(np.float32))


@st.composite
def chains(draw):
    """A compressed chain: an optional conv block (padding, stride, groups, pooling with
    padding or ceil mode), then one to three Dense layers, ReLUs here and there."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    layers = []
    if draw(st.booleans()):
        c = draw(st.sampled_from([1, 2, 4]))
        g = draw(st.sampled_from([1, 2])) if c % 2 == 0 else 1
        oc = 2 * draw(st.integers(1, 3))
        k = draw(st.integers(1, 3))
        h = draw(st.integers(k + 2, 9))
        shape = (c, h, h + 1)
        layers.append(Conv2D(c, oc, k, stride=draw(st.integers(1, 2)),
                             padding=draw(st.integers(0, k - 1)), groups=g, rng=rng))
        if draw(st.booleans()):
            layers.append(ReLU())
        if draw(st.booleans()):
            layers.append(MaxPool2D(2, padding=draw(st.integers(0, 1)),
                                    ceil_mode=draw(st.booleans())))
        layers.append(Flatten())
    else:
        shape = (draw(st.integers(1, 40)),)
    out = shape
    for layer in layers:
        out = layer.output_shape(out)
    n_in = int(np.prod(out))
    for _ in range(draw(st.integers(1, 3))):
        n_out = draw(st.integers(1, 30))
        layers.append(Dense(n_in, n_out, rng=rng))
        if draw(st.booleans()):
            layers.append(ReLU())
        if draw(st.booleans()):
            layers.append(Dropout(0.5))
        n_in = n_out
    model = Model(layers, shape)
    density = draw(st.sampled_from([0.05, 0.3, 1.0]))
    for layer in model.weighted_layers():
        _compress(layer, rng, density, draw(st.integers(1, 8)))
    x = rng.standard_normal((1, *shape)).astype(np.float32)
    return model, x


@settings(max_examples=60, deadline=None)
@given(chains())
def test_chain_kernel_matches_its_numpy_twin_and_the_per_layer_path(case):
    model, x = case
    chain = fused.FusedChain.build(model.layers, model.input_shape)
    layered = model._forward_one(x)  # the per-layer path, serial at this size
    got = chain.run(x)
    assert got.shape == layered.shape
    # same kernels, same order: the per-layer path's result bit for bit
    assert np.array_equal(got.view(np.uint32), layered.view(np.uint32))
    buf, ibuf = chain._scratch()
    want = buf.copy()
    want[chain.in_off:chain.in_off + chain.in_size] = x.reshape(-1)
    reference.chain_forward(chain.ops, chain.words, chain.ip, chain.fp, want,
                            np.zeros_like(ibuf))
    out = want[chain.out_off:chain.out_off + chain.out_size]
    scale = 1e-4 * (1 + np.abs(out).max())
    np.testing.assert_allclose(got.reshape(-1), out, rtol=1e-4, atol=scale)


def test_forward_at_batch_one_takes_the_fused_path_and_equals_the_batch_rows(rng):
    model = dc_engine.load(MODELS / "lenet-5.dc.h5")
    x = rng.random((3, *model.input_shape), dtype=np.float32)
    os.environ.pop("DC_ENGINE_BATCH1", None)
    one = np.concatenate([model.forward(x[i:i + 1]) for i in range(3)])
    assert model._batch_one() is not None  # 1 thread or measured: fused on this model
    np.testing.assert_allclose(one, model.forward(x), rtol=1e-5, atol=1e-5)
    # the weights are held once: the matrices' entries are views of the program's arrays
    for layer in model.weighted_layers():
        assert layer.params["W"].words.base is not None


def test_unfusable_models_take_the_per_layer_path(rng):
    dense = dc_engine.load(MODELS / "lenet-300-100.h5")  # float weights
    x = rng.random((1, *dense.input_shape), dtype=np.float32)
    ref = x
    for layer in dense.layers:
        ref = layer.forward(ref)
    assert np.array_equal(dense.forward(x), ref)
    assert dense._batch_one() is None
    with pytest.raises(fused.NotFusable, match="not compressed"):
        fused.FusedChain.build(dense.layers, dense.input_shape)


def test_a_replaced_weight_rebuilds_the_path(rng):
    model = dc_engine.load(MODELS / "lenet-300-100.dc.h5")
    x = rng.random((1, *model.input_shape), dtype=np.float32)
    before = model.forward(x)
    ip3 = model["ip3"]
    w = ip3.params["W"].to_dense() * 2
    ip3.set_param("W", CompressedMatrix.from_codes(ip3.params["W"].to_codes(),
                                                   ip3.params["W"].codebook * 2))
    after = model.forward(x)
    np.testing.assert_allclose(after - model["ip3"].params["b"],
                               2 * (before - model["ip3"].params["b"]), rtol=1e-5, atol=1e-5)
    ip3.set_param("W", w)  # a float weight: the per-layer path from now on
    assert np.allclose(model.forward(x), after, rtol=1e-5, atol=1e-5)
    assert model._batch_one() is None


def test_env_forces_a_path(rng, monkeypatch):
    monkeypatch.setenv("DC_ENGINE_BATCH1", "layered")
    assert fused.choose((), (4,), 2, True, None, None) == "layered"
    model = dc_engine.load(MODELS / "lenet-300-100.dc.h5")
    x = rng.random((1, *model.input_shape), dtype=np.float32)
    words = [layer.params["W"].words for layer in model.weighted_layers()]
    model.forward(x)
    assert model._batch_one() is None  # forced: no chain built, the weights left as they were
    assert all(layer.params["W"].words is w for layer, w in zip(model.weighted_layers(), words))
    monkeypatch.setenv("DC_ENGINE_BATCH1", "fused")
    assert fused.choose((), (4,), 2, True, None, None) == "fused"
    monkeypatch.delenv("DC_ENGINE_BATCH1")
    assert fused.choose((), (4,), 2, False, None, None) == "fused"  # nothing to measure


def test_the_choice_is_measured_once_and_kept_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DC_ENGINE_BATCH1", raising=False)
    monkeypatch.setattr(fused, "_memo", {})
    layers = tuple(dc_engine.load(MODELS / "lenet-300-100.dc.h5").layers)
    calls = {"fused": 0, "layered": 0}

    def slow():
        calls["fused"] += 1
        sum(range(2000))

    def fast():
        calls["layered"] += 1

    assert fused.choose(layers, (784,), 2, True, slow, fast) == "layered"
    assert calls["fused"] > 3 and calls["layered"] > 3
    stored = json.loads(fused.calibration_file().read_text())
    (entry,) = stored.values()
    assert entry["path"] == "layered" and entry["seconds"]["fused"] > entry["seconds"]["layered"]
    monkeypatch.setattr(fused, "_memo", {})  # a new process: read from the file, not measured
    calls.update(fused=0, layered=0)
    assert fused.choose(layers, (784,), 2, True, slow, fast) == "layered"
    assert calls == {"fused": 0, "layered": 0}
    # another thread count, another input shape: other entries
    assert fused.choose(layers, (784,), 1, True, fast, slow) == "fused"
    assert fused.choose(layers, (1, 28, 28), 2, True, fast, slow) == "fused"
    assert len(json.loads(fused.calibration_file().read_text())) == 3


def test_a_corrupt_or_unwritable_calibration_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "missing" / "deeper"))
    monkeypatch.setattr(fused, "_memo", {})
    fused.calibration_file().parent.mkdir(parents=True)
    fused.calibration_file().write_text("{not json")
    assert fused.choose((), (4,), 2, True, lambda: None, lambda: sum(range(500))) == "fused"
    assert json.loads(fused.calibration_file().read_text())  # rewritten whole


def test_no_home_folder_measures_without_a_file(monkeypatch):
    # a container user with no passwd entry: Path.home() raises; forward must not
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(fused, "_memo", {})

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert fused.calibration_file() is None
    assert fused.choose((), (4,), 2, True, lambda: None, lambda: sum(range(500))) == "fused"


def test_biases_codebooks_and_shapes_changed_later_reach_the_fused_path(rng):
    model = dc_engine.load(MODELS / "lenet-300-100.dc.h5")
    x = rng.random((1, *model.input_shape), dtype=np.float32)
    model.forward(x)
    chain = model._batch_one()
    assert chain is not None
    ip3 = model["ip3"]
    ip3.set_param("b", np.full(10, 100, np.float32))  # a new bias object: rebuilt
    assert np.array_equal(model.forward(x), model._forward_one(x))
    ip3.params["b"][:] = -100  # in place: the chain holds the same array
    ip3.params["W"].codebook[1:] *= 2
    assert np.array_equal(model.forward(x), model._forward_one(x))
    assert model.forward(x).max() < -50
    # a layer made elsewhere bumps the global wiring version: the same chain is kept
    chain = model._batch_one()
    ReLU()
    assert model._batch_one() is chain


def test_a_changed_input_shape_rebuilds_the_path(rng):
    conv = Conv2D(4, 2, 3, rng=rng)
    _compress(conv, rng, 0.5, 4)
    model = Model([conv], (4, 8, 6))
    x = rng.random((1, 4, 8, 6), dtype=np.float32)
    model.forward(x)
    model.input_shape = (4, 6, 8)
    x = rng.random((1, 4, 6, 8), dtype=np.float32)
    out = model.forward(x)
    assert out.shape == (1, 2, 4, 6)
    assert np.array_equal(out, model._forward_one(x))


def test_a_conv_over_two_column_tiles_matches_the_per_layer_path(rng):
    # 64 x 3 x 3 = 576 patch columns over 529 output pixels: two 512-column tiles
    conv = Conv2D(64, 4, 3, rng=rng)
    _compress(conv, rng, 0.3, 5)
    model = Model([conv, ReLU()], (64, 25, 25))
    chain = fused.FusedChain.build(model.layers, model.input_shape)
    assert chain.ops[0][19] > 2  # n_tiles + 1
    x = rng.standard_normal((1, 64, 25, 25)).astype(np.float32)
    assert np.array_equal(chain.run(x), model._forward_one(x))


def test_kernel_caches_are_stamped_with_the_whole_package():
    # chain_forward runs sqmm's and pool's kernels: a change to either must recompile it
    from dc_engine.kernels import _config

    stamp = _config._package_stamp()
    assert {"chain.py", "sqmm.py", "pool.py"} <= {name for name, _, _ in stamp}
    locator = dc_engine.kernels.chain_forward._cache._impl.locator
    assert locator.get_source_stamp() == stamp


def test_a_model_pickles_without_its_batch_one_cache(rng):
    import copy
    import pickle

    model = dc_engine.load(MODELS / "lenet-5.dc.h5")
    x = rng.random((1, *model.input_shape), dtype=np.float32)
    y = model.forward(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert "_b1_cache" not in clone.__dict__
        assert np.array_equal(clone.forward(x), y)


def test_the_chain_splits_columns_as_the_per_layer_path_does():
    # core may not import runtime, so fused repeats four constants of runtime.sqmatrix
    from dc_engine.runtime import sqmatrix

    assert (fused._TILE_BYTES, fused._BLOCK_N, fused._WIDE_BLOCK_N, fused._SERIAL_WORK) == (
        sqmatrix.TILE_BYTES, sqmatrix.BLOCK_N, sqmatrix.WIDE_BLOCK_N, sqmatrix.SERIAL_ENTRIES)


# --------------------------------------------------------------------------- the parallel path


def _run_parallel(chain, x, n_blocks, min_work):
    """The parallel kernel on ``x`` with ``n_blocks`` blocks and ``min_work``, straight."""
    from dc_engine.kernels import chain as ops

    buf, ibuf = chain._scratch()
    buf = buf.copy()
    buf[chain.in_off:chain.in_off + chain.in_size] = x.reshape(-1)
    ops.chain_forward_parallel(chain.ops, chain.words, chain.ip, chain.fp, buf, ibuf.copy(),
                                n_blocks, np.zeros((n_blocks, chain.wide_len), np.float32),
                                min_work)
    return buf[chain.out_off:chain.out_off + chain.out_size].reshape(1, *chain.out_shape)


@settings(max_examples=60, deadline=None)
@given(chains(), st.integers(1, 5), st.sampled_from([0, 0, 50, 16_384]))
def test_the_parallel_kernel_gives_the_serial_results_bit_for_bit(case, n_blocks, min_work):
    # every operation split (min_work 0) into up to 5 blocks (more blocks than threads, empty
    # blocks, blocks across conv groups), or only the larger ones
    model, x = case
    chain = fused.FusedChain.build(model.layers, model.input_shape)
    serial = chain.run(x, parallel=False)
    got = _run_parallel(chain, x, n_blocks, min_work)
    assert np.array_equal(got.view(np.uint32), serial.view(np.uint32))
    buf, ibuf = chain._scratch()
    want = buf.copy()
    want[chain.in_off:chain.in_off + chain.in_size] = x.reshape(-1)
    reference.chain_forward_parallel(chain.ops, chain.words, chain.ip, chain.fp, want,
                                     np.zeros_like(ibuf), n_blocks, None, min_work)
    out = want[chain.out_off:chain.out_off + chain.out_size]
    scale = 1e-4 * (1 + np.abs(out).max())
    np.testing.assert_allclose(got.reshape(-1), out, rtol=1e-4, atol=scale)


def test_the_parallel_path_on_a_wide_conv_chain_equals_the_serial_one(rng):
    # big enough for every operation to split at the run's own threshold: padded stride-1 and
    # stride-2 convolutions, groups, a padded pooling, a dense layer over 4 blocks
    layers = [Conv2D(8, 16, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
              Conv2D(16, 16, 3, stride=2, padding=1, groups=2, rng=rng), ReLU(),
              MaxPool2D(2, padding=1), Flatten(), Dense(16 * 5 * 5, 300, rng=rng), ReLU(),
              Dense(300, 10, rng=rng)]
    model = Model(layers, (8, 32, 32))
    for layer in model.weighted_layers():
        _compress(layer, rng, 0.5, 5)
    chain = fused.FusedChain.build(model.layers, model.input_shape)
    x = rng.standard_normal((1, 8, 32, 32)).astype(np.float32)
    serial = chain.run(x, parallel=False)
    for n_blocks in (2, 4):
        got = _run_parallel(chain, x, n_blocks, fused._SERIAL_WORK)
        assert np.array_equal(got.view(np.uint32), serial.view(np.uint32))
    assert np.array_equal(chain.run(x, parallel=True).view(np.uint32), serial.view(np.uint32))
    from dc_engine.threads import limit_threads

    with limit_threads(1):  # one thread: the serial kernel's code, no parallel launch
        assert np.array_equal(chain.run(x, parallel=True), serial)


def test_the_choice_offers_the_parallel_path_only_for_big_networks(rng, monkeypatch):
    monkeypatch.delenv("DC_ENGINE_BATCH1", raising=False)
    offered = []

    def spy(layers, input_shape, threads, needs_measuring, run_fused, run_layered,
            run_parallel=None):
        offered.append(run_parallel is not None)
        return "fused-parallel" if run_parallel is not None else "fused"

    monkeypatch.setattr(fused, "choose", spy)
    model = dc_engine.load(MODELS / "lenet-5.dc.h5")
    assert fused.FusedChain.build(model.layers, model.input_shape).work < fused.PARALLEL_WORK
    for threads in (1, 2):
        chain = model._choose_batch_one(tuple(model.layers), threads)
        assert chain is not None and not chain.parallel
    assert offered == [False, False]
    monkeypatch.setattr(fused, "PARALLEL_WORK", 1)  # as if LeNet-5 were big
    assert not model._choose_batch_one(tuple(model.layers), 1).parallel  # one thread: never
    chain = model._choose_batch_one(tuple(model.layers), 2)
    assert offered == [False, False, False, True] and chain.parallel
    x = rng.random((1, *model.input_shape), dtype=np.float32)
    assert np.array_equal(chain.run(x), chain.run(x, parallel=False))


def test_env_forces_the_parallel_path(rng, monkeypatch):
    monkeypatch.setenv("DC_ENGINE_BATCH1", "fused-parallel")
    assert fused.forced() == "fused-parallel"
    assert fused.choose((), (4,), 2, True, None, None) == "fused-parallel"
    model = dc_engine.load(MODELS / "lenet-5.dc.h5")
    x = rng.random((1, *model.input_shape), dtype=np.float32)
    got = model.forward(x)
    chain = model._batch_one()
    assert chain is not None and chain.parallel
    assert np.array_equal(got.view(np.uint32), chain.run(x, parallel=False).view(np.uint32))


def test_the_three_way_choice_is_measured_and_kept_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DC_ENGINE_BATCH1", raising=False)
    monkeypatch.setattr(fused, "_memo", {})
    layers = tuple(dc_engine.load(MODELS / "lenet-300-100.dc.h5").layers)
    calls = {"fused": 0, "layered": 0, "fused-parallel": 0}

    def timed(name, n):
        def run():
            calls[name] += 1
            sum(range(n))
        return run

    runs = (timed("fused", 2000), timed("layered", 4000))
    assert fused.choose(layers, (784,), 2, True, *runs, timed("fused-parallel", 10)) == (
        "fused-parallel")
    assert min(calls.values()) > 3
    (entry,) = json.loads(fused.calibration_file().read_text()).values()
    assert entry["path"] == "fused-parallel" and set(entry["seconds"]) == set(calls)
    # the two-way choice for the same model and threads is another entry, measured apart
    assert fused.choose(layers, (784,), 2, True, *runs) == "fused"
    assert len(json.loads(fused.calibration_file().read_text())) == 2
    monkeypatch.setattr(fused, "_memo", {})  # a new process: both read from the file
    calls.update({k: 0 for k in calls})
    assert fused.choose(layers, (784,), 2, True, *runs, timed("fused-parallel", 10)) == (
        "fused-parallel")
    assert fused.choose(layers, (784,), 2, True, *runs) == "fused"
    assert calls == {"fused": 0, "layered": 0, "fused-parallel": 0}


def test_parallel_launches_share_the_runtimes_lock():
    # workqueue aborts when two threads launch parallel regions at once: the chain's and the
    # products' launches must take one lock
    import inspect

    from dc_engine.runtime import sqmatrix

    assert "launch(kernel" in inspect.getsource(sqmatrix._launch)
    assert sqmatrix.launch is fused.launch
