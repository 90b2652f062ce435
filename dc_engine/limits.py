"""Limits shared by the stages, the codecs, the files and the runtime (one home for each).

Changing one of these changes what files dc-engine writes or accepts: see docs/FORMAT.md.
"""

import contextlib as _contextlib
import os as _os

MAX_BITS = 16
"""Widest weight code, relative-index gap field and index array: codes and gaps are held in
uint16, and a codebook has at most ``2**MAX_BITS`` entries."""

MAX_LAYERS = 10_000
"""Most layers a model file (dense or compressed) may hold: a guard against absurd layer lists
(loading takes about a millisecond per layer)."""

MAX_CODE_LENGTH = 15
"""Longest Huffman code a layer payload can record (its code-length tables hold 4 bits per
symbol)."""

MAX_ARCHITECTURE_BYTES = 4 * 2**20
"""Longest architecture JSON (UTF-8 bytes) a compact compressed file (container version 3)
may hold once inflated: its reader inflates at most this much, so a deflate bomb costs no
memory (10,000 layers at 400 bytes each fit)."""



# --------------------------------------------------------------------------------------------
# Resource limits on untrusted input (settable)
# --------------------------------------------------------------------------------------------
# Sizes that a file's header or hyperparameters declare are checked against these before any
# memory is allocated for them, so a small file cannot make dc-engine allocate gigabytes or
# run for hours. Each can be set for the process by an environment variable (read when the
# check runs) or, in Python, by ``set_limits`` / ``limits_set``, which take precedence.


LIMITS: dict[str, int] = {
    "dataset_bytes": 2**30,
    "sample_elements": 2**27,
    "model_weights": 2**28,
}
"""Defaults. ``dataset_bytes``: the raw (decompressed) bytes one dataset file may declare (an
IDX payload; MNIST's training images are 47 MB). ``sample_elements``: the values one sample may
need in any one layer's input, output or scratch space (a convolution's padded input and its
patch matrix), in a forward or backward pass (VGG-16 at 224 x 224 needs 29 M). ``model_weights``:
the weights (parameters) a model file may declare in all (VGG-16 has 138 M)."""

ENV_VARS: dict[str, str] = {name: f"DC_ENGINE_MAX_{name.upper()}" for name in LIMITS}
"""The environment variable of each limit: ``DC_ENGINE_MAX_DATASET_BYTES``,
``DC_ENGINE_MAX_SAMPLE_ELEMENTS``, ``DC_ENGINE_MAX_MODEL_WEIGHTS`` (a positive integer)."""

_SET: dict[str, int] = {}


def limit(name: str) -> int:
    """The limit ``name`` in force: set in Python, else its environment variable, else the
    default. ValueError names an environment variable that is not a positive integer."""
    if name not in LIMITS:
        raise KeyError(f"unknown limit {name!r}; known: {sorted(LIMITS)}")
    if name in _SET:
        return _SET[name]
    raw = _os.environ.get(ENV_VARS[name])
    if raw is None or not raw.strip():
        return LIMITS[name]
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV_VARS[name]} must be a positive integer, got {raw!r:.40}")
    return value


def how_to_raise(name: str) -> str:
    """The advice a refusal by the limit ``name`` ends with."""
    return (f"if it is meant to be this large, raise the limit ({ENV_VARS[name]}=N, or "
            f"dc_engine.limits.set_limits({name}=N))")


def set_limits(**values: int | None) -> None:
    """Set limits for this process, e.g. ``set_limits(sample_elements=2**30)``; None goes back
    to the environment variable or the default."""
    for name, value in values.items():
        if name not in LIMITS:
            raise TypeError(f"unknown limit {name!r}; known: {sorted(LIMITS)}")
        if value is None:
            _SET.pop(name, None)
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"limit {name} must be a positive integer, got {value!r}")
        _SET[name] = value


@_contextlib.contextmanager
def limits_set(**values: int | None):
    """:func:`set_limits` for the body of a ``with`` block; the previous values come back."""
    old = dict(_SET)
    try:
        set_limits(**values)
        yield
    finally:
        _SET.clear()
        _SET.update(old)


__all__ = ["MAX_BITS", "MAX_LAYERS", "MAX_CODE_LENGTH", "MAX_ARCHITECTURE_BYTES", "LIMITS",
           "ENV_VARS", "limit", "how_to_raise", "set_limits", "limits_set"]
