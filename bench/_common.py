"""Shared helpers for the benchmarks: machine facts, medians, JSON output."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int, seed: int) -> dict:
    """Versions, thread count, CPU and seed, recorded with every result."""
    import numba
    import numpy

    env = {"python": sys.version.split()[0], "numpy": numpy.__version__,
           "numba": numba.__version__, "cpu": cpu_name(), "cores": os.cpu_count(),
           "threads": threads, "seed": seed}
    from dc_engine import kernels
    env["avx512_matvec"] = kernels.SQMM_AVX512  # batch 1 runs kernels.sq_matvec_avx512
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = [{k: i.get(k) for k in ("internal_api", "version", "num_threads")}
                       for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        pass
    try:
        import torch
        env["torch"] = torch.__version__
    except ImportError:
        env["torch"] = None
    return env


def median(xs) -> float:
    return float(statistics.median(xs))


WARM_S = 0.3
"""Seconds of untimed calls before the samples of :func:`timeit` when asked for (``warm``).
Thread pools interfere on 2 cores: after a call, OpenBLAS's idle threads spin for ~0.1-0.2 s,
and a 2-thread Numba kernel started in that window ran 8-15x slower here (0.33 -> 2.5-5 ms on
an AlexNet fc7 shape); interleaving implementations made each pay for the previous one's
threads. So the benchmarks time one implementation at a time, after WARM_S of it alone."""


def timeit(fn, repeats: int, min_time: float, warm: bool = False) -> float:
    """Median seconds per call of ``fn()`` over ``repeats`` samples, each looping the call
    until it lasts >= ``min_time`` seconds; two untimed calls first (Numba compilation / cache
    load), then, with ``warm``, :data:`WARM_S` seconds of untimed calls."""
    fn()
    t0 = time.perf_counter()
    fn()
    loops = max(1, int(math.ceil(min_time / max(time.perf_counter() - t0, 1e-9))))
    t_end = time.perf_counter() + (WARM_S if warm else 0.0)
    while time.perf_counter() < t_end:
        fn()
    return median(samples(fn, repeats, loops))


def samples(fn, repeats: int, loops: int) -> list[float]:
    """Seconds per call of ``fn()`` in ``repeats`` samples of ``loops`` calls each."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        out.append((time.perf_counter() - t0) / loops)
    return out


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``): an interrupted run never leaves a truncated result file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | None, payload: dict) -> None:
    """``payload`` as indented JSON, written atomically (:func:`write_text`); nothing when
    ``path`` is None or empty."""
    if path:
        write_text(path, json.dumps(payload, indent=2) + "\n")
