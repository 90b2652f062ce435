"""A/B of two versions of dc-engine: images/s of the compressed LeNets, one version per run.

Two versions cannot share a process (both are ``dc_engine``), so this script times the
version it imports on the shipped compressed models of a checkout, and an A/B runs it
alternately for each version on the same machine: the best of ``--samples`` samples (each
looping ``forward`` for ``--min-time`` seconds) is the least disturbed by other processes.

Usage (the 0.2.0 session's A/B against the 0.1.0 commit f88401b, six alternations)::

    git worktree add /tmp/old f88401b
    for i in 1 2 3 4 5 6; do
        PYTHONPATH=/tmp/old python bench/bench_versions.py /tmp/old
        python bench/bench_versions.py .
    done
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import dc_engine

ARCHS = ("lenet-300-100", "lenet-5")
BATCHES = (1, 256)


def _load_mnist(root: Path):
    try:  # 0.2.0 and later
        from dc_engine.io.data import load_mnist
    except ImportError:  # 0.1.0
        from dc_engine.data import load_mnist
    return load_mnist(root / "data" / "mnist")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="the checkout whose data/models and data/mnist to use")
    ap.add_argument("--samples", type=int, default=30, help="samples per model and batch (30)")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per sample (0.05)")
    args = ap.parse_args()
    x_all = _load_mnist(args.root).x_test[:max(BATCHES)].astype(np.float32)
    cells = []
    for arch in ARCHS:
        model = dc_engine.load(args.root / "data" / "models" / f"{arch}.dc.h5")
        for b in BATCHES:
            x = np.ascontiguousarray(x_all[:b])
            model.forward(x)  # warm-up (Numba cache load)
            samples = []
            for _ in range(args.samples):
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.min_time:
                    model.forward(x)
                    n += 1
                samples.append((time.perf_counter() - t0) / n)
            cells.append(f"{arch}/{b}: median {b / statistics.median(samples):,.0f} best "
                         f"{b / min(samples):,.0f} img/s")
    print(f"dc-engine {getattr(dc_engine, '__version__', '?')} ({dc_engine.__file__}): "
          + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
