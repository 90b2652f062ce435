"""Argument checks shared by the public functions (one home; no heavy imports).

Each check returns the value converted to a plain Python type, raises ``TypeError`` for a value
of the wrong type and ``ValueError`` for a value out of range, and names the argument.
"""

from __future__ import annotations

import math

import numpy as np

from .limits import MAX_BITS


def is_int(value) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, what: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (either bound may be None).

    Raises
    ------
    TypeError
        ``value`` is not an integer (a bool is not).
    ValueError
        ``value`` is out of range.
    """
    if not is_int(value):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            bound = f">= {low}"
        elif low is None:
            bound = f"<= {high}"
        else:
            bound = f"in {low}..{high}"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return value


def check_bits(value, what: str = "bits") -> int:
    """A field width in ``1..MAX_BITS`` (weight codes, relative-index gaps)."""
    return check_int(value, what, 1, MAX_BITS)


def check_number(value, what: str, low: float | None = None, *, strict: bool = False) -> float:
    """``value`` as a finite float, ``>= low`` (``> low`` when ``strict``).

    Raises
    ------
    TypeError
        ``value`` is not a real number (a bool is not).
    ValueError
        ``value`` is NaN, infinite or below the bound.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and (value <= low if strict
                                                          else value < low)):
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{what} must be a finite number{bound}, got {value!r}")
    return value


def int_array(x, what: str) -> np.ndarray:
    """``x`` as an array of an integer dtype (not converted); TypeError otherwise."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array, got dtype {x.dtype}; cast with "
                        f".astype(np.uint16)")
    return x


def kernel_input(x: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous, writeable ``dtype`` array for a codec kernel: the one specialisation it is
    compiled (and cached) for takes mutable C arrays of the stated dtype, so a read-only buffer
    such as ``np.frombuffer(bytes)`` is copied rather than compiling another."""
    return np.require(x, dtype=dtype, requirements=["C", "W"])


__all__ = ["is_int", "check_int", "check_bits", "check_number", "int_array", "kernel_input"]
