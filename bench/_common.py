"""Shared helpers for the benchmarks: machine facts, medians, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
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
    """Versions, thread count, CPU and seed, recorded with every result (STYLE rule 35)."""
    import numba
    import numpy

    env = {"python": sys.version.split()[0], "numpy": numpy.__version__,
           "numba": numba.__version__, "cpu": cpu_name(), "cores": os.cpu_count(),
           "threads": threads, "seed": seed}
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


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
