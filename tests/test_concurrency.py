"""Models called from several Python threads at once: the serial results bit for bit, under
every threading layer Numba offers here (``workqueue`` aborts the process when two threads
launch parallel regions at once, so the runtime serialises its launches there: the products'
and the parallel fused path's, which LeNet-5 takes here only because the test forces it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"

THREADS_SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    import dc_engine
    model = dc_engine.load(sys.argv[1])
    rng = np.random.default_rng(0)
    xs = rng.random((1000, 1, *model.input_shape), dtype=np.float32)
    batch = rng.random((4, 16, *model.input_shape), dtype=np.float32)
    serial = np.stack([model.forward(x) for x in xs])
    serial_b = [model.forward(b) for b in batch]
    chain = model._batch_one()
    if chain is not None:  # the parallel fused path: the serial fused results bit for bit
        ser = np.stack([chain.run(x, parallel=False) for x in xs[:50]])
        assert np.array_equal(ser.view(np.uint32), serial[:50].view(np.uint32))
    out = [None] * 4
    def work(t):
        got = [model.forward(x) for x in xs]  # batch 1
        got_b = [model.forward(batch[t]) for _ in range(25)]  # parallel kernels
        out[t] = (np.stack(got), got_b)
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    for t, (got, got_b) in enumerate(out):
        assert np.array_equal(got.view(np.uint32), serial.view(np.uint32)), t
        assert all(np.array_equal(g, serial_b[t]) for g in got_b), t
    import numba
    print("ok", numba.threading_layer())
""")


@pytest.mark.parametrize("layer", ["default", "workqueue"])
@pytest.mark.parametrize("path", ["fused", "layered", "fused-parallel"])
def test_four_threads_give_the_serial_results_bit_for_bit(layer, path, tmp_path):
    env = dict(os.environ, DC_ENGINE_BATCH1=path, NUMBA_NUM_THREADS="2")
    if layer == "workqueue":
        env["NUMBA_THREADING_LAYER"] = "workqueue"
    proc = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(MODELS / "lenet-5.dc.h5")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok")
    if layer == "workqueue":
        assert "workqueue" in proc.stdout

