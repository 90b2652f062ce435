"""Thread control: the one place that changes BLAS and Numba thread counts, always restored
in ``finally``.

Why it matters: OpenBLAS threads spin while they wait for work, so when the machine is busy
with another process a 2-thread BLAS on 2 cores can run many times slower than 1 thread
(README, "Threads", has the measurement). ``--threads 1`` keeps training fast on a shared
machine, and makes its floating-point results independent of the core count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ._validate import check_int


@contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run the body with at most ``n`` BLAS and Numba threads; restore both afterwards.

    Parameters
    ----------
    n : int >= 1, or None to leave the libraries' defaults (all cores) untouched.

    Raises
    ------
    TypeError
        ``n`` is not an integer (or None).
    ValueError
        ``n`` outside ``1..max_threads()``.
    """
    if n is None:
        yield
        return
    n = check_threads(n)
    import numba
    from threadpoolctl import threadpool_limits

    old = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(old)


def max_threads() -> int:
    """The most threads a thread count may ask for: the CPUs this process may run on (more
    threads than cores only make BLAS and Numba slower: their threads spin while they wait)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_threads(n) -> int:
    """``n`` as an int in ``1..max_threads()``; TypeError for a non-integer, ValueError with
    the machine's count otherwise."""
    n = check_int(n, "threads", 1)
    top = max_threads()
    if n > top:
        raise ValueError(f"threads must be in 1..{top} (the CPUs this process may run on), "
                         f"got {n}")
    return n


def blas_threads() -> int | None:
    """Threads the loaded BLAS uses now (None if threadpoolctl finds no BLAS)."""
    from threadpoolctl import threadpool_info

    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None


__all__ = ["limit_threads", "max_threads", "check_threads", "blas_threads"]
