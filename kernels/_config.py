"""Shared Numba settings for every kernel: the fast-math flag set and the one decorator.

``FASTMATH`` is the one place the fast-math flag set is chosen (docs/CONTRIBUTING.md,
"Numba"). It leaves out ``nnan`` and ``ninf`` so that NaN and inf inputs behave as IEEE says;
codecs, index math and anything that must be exact never use it.

:func:`jit` is ``numba.njit(nogil=True)`` with the machine code cached on disk. It compiles
lazily, at the first call with each combination of argument types: no kernel has an eager
signature, so importing the package compiles nothing (an edge app that only runs models never
compiles the encoders). Where the compiled code is kept, first match wins:

1. ``NUMBA_CACHE_DIR``, when it is set and writable (Numba's own rule);
2. ``NUMBA_CACHE_DIR`` read-only but holding compiled kernels (a deployment's cache filled at
   build time by ``dc-engine warmup``): compiled code is loaded from it; a kernel (or argument
   types) it does not hold is compiled and not saved, and logged once;
3. the ``__pycache__`` folder beside the kernels, writable, then read-only holding kernels;
4. Numba's user-wide cache folder (``~/.cache/numba``), the same two ways;
5. nowhere: the kernels compile on first use in every process (seconds), and one
   :class:`CacheWarning` says so, naming ``NUMBA_CACHE_DIR`` and ``dc-engine warmup``.

Numba alone takes 1, 3 and 4 writable only, and refuses to import a ``cache=True`` function
when none is (``RuntimeError: cannot cache function ...: no locator available``); were it given
a read-only folder, its first save would raise. The read-only steps are Numba's own locators
with the writability probe replaced by a check that the folder holds index files (``*.nbi``),
and a cache class that skips saving; they serve only the kernels made by :func:`jit`, never
other Numba code in the process (Numba's ``CacheImpl._locator_classes`` is left alone).
"""

import errno
import functools
import logging
import os
import warnings

import numba
from numba.core import caching
from numba.core.dispatcher import Dispatcher

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_log = logging.getLogger(__name__)


class CacheWarning(UserWarning):
    """The kernels cannot be cached on disk here: every process compiles them again."""


_FIX = ("set NUMBA_CACHE_DIR to a writable folder, or fill one at build time with "
        "`NUMBA_CACHE_DIR=DIR dc-engine warmup` and run with the same NUMBA_CACHE_DIR "
        "(read-only is fine)")


def _numba_locator(name: str):
    """Numba's locator class ``name`` (Numba < 0.61 spells it with a leading underscore)."""
    return getattr(caching, name, None) or getattr(caching, "_" + name, None)


class _ReadOnly:
    """Mixed into a Numba locator: the same folder, taken when it can be read (not necessarily
    written) and holds compiled kernels. The cache never saves through it."""

    read_only = True

    def ensure_cache_path(self):
        path = self.get_cache_path()
        if not os.access(path, os.R_OK | os.X_OK):
            raise OSError(errno.EACCES, "cache folder not readable", path)

    @classmethod
    def from_function(cls, py_func, py_file):
        locator = super().from_function(py_func, py_file)  # (runs the ensure_cache_path above)
        if locator is None or not _holds_kernels(locator.get_cache_path()):
            return None
        return locator


@functools.cache
def _holds_kernels(folder: str) -> bool:
    """Whether ``folder`` (a per-source-folder cache subfolder, so the kernels' own) holds any
    Numba index file: a cache someone filled, not e.g. a ``__pycache__`` of bytecode only.
    A kernel it lacks then compiles without being saved, and without a warning at import."""
    try:
        return any(name.endswith(".nbi") for name in os.listdir(folder))
    except OSError:
        return False


@functools.cache
def _package_stamp() -> tuple:
    """``(name, mtime, size)`` of every module of this package, computed once per process.

    Numba marks a cached kernel stale when *its own* file changes; a kernel that calls kernels
    of other modules (``chain.chain_forward`` calls ``sqmm._matvec_rows``) would keep running
    their old code. So every kernel's cache entry is stamped with the whole package: changing
    any kernel module recompiles them all."""
    folder = os.path.dirname(os.path.abspath(__file__))
    return tuple((name, st.st_mtime, st.st_size) for name in sorted(os.listdir(folder))
                 if name.endswith(".py") and (st := os.stat(os.path.join(folder, name))))


class _PackageStamp:
    """Mixed into a Numba locator: the source stamp covers every kernel module."""

    def get_source_stamp(self):
        return _package_stamp()


def _locator_classes() -> list:
    """Numba's locators in Numba's order, each writable one followed by its read-only twin,
    all stamping the whole package (:func:`_package_stamp`)."""
    bases = {name: _numba_locator(name) for name in (
        "UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")}
    out = []
    for name, base in bases.items():
        if base is not None:
            out += [type(f"Kernel{name}", (_PackageStamp, base), {}),
                    type(f"ReadOnly{name}", (_PackageStamp, _ReadOnly, base), {})]
    return out + [c for c in caching.CacheImpl._locator_classes if c not in bases.values()]


class _KernelCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = _locator_classes()


class _KernelCache(caching.FunctionCache):
    """Numba's per-function disk cache, with the read-only locators; saving never raises
    (a read-only folder is skipped, a failed write logged once)."""

    _impl_class = _KernelCacheImpl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._kernel = py_func.__qualname__
        self.read_only = getattr(self._impl.locator, "read_only", False)

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except OSError:  # an unreadable index or data file: compile instead
            return None

    def save_overload(self, sig, data):
        if self.read_only:
            _note_unsaved(self._kernel, sig, f"{self.cache_path} is read-only")
            return
        try:
            super().save_overload(sig, data)
        except OSError as exc:  # the folder became unwritable or full after the probe
            _note_unsaved(self._kernel, sig, str(exc))


_noted = set()
UNSAVED: set = set()
"""Names of the kernels compiled in this process whose code could not be saved (a read-only
folder, or a write that failed: full, or made unwritable after the probe)."""


def _note_unsaved(kernel: str, sig, why: str) -> None:
    """Remember that a kernel was compiled but could not be cached, and log it once per
    process."""
    UNSAVED.add(kernel)
    if "unsaved" in _noted:
        return
    _noted.add("unsaved")
    _log.warning("compiled the kernel %s%s but cannot cache it (%s): kernels missing from the "
                 "cache compile again in every process; %s", kernel, sig, why, _FIX)


def _disk_cache(py_func):
    """A :class:`_KernelCache` for ``py_func``, or Numba's no-op cache (warning once) when no
    folder can hold one."""
    try:
        return _KernelCache(py_func)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        if "uncached" not in _noted:
            _noted.add("uncached")
            where = (f"NUMBA_CACHE_DIR={numba.config.CACHE_DIR} is not writable and holds no "
                     f"compiled kernels" if numba.config.CACHE_DIR else "NUMBA_CACHE_DIR is unset")
            warnings.warn(f"dc-engine cannot cache its compiled Numba kernels ({where}; the "
                          f"package's __pycache__ and the user cache folder are not writable "
                          f"either): every process compiles them on first use, which takes "
                          f"seconds; {_FIX}. (Numba: {exc})", CacheWarning, stacklevel=3)
        return caching.NullCache()


JITTED: list = []
"""Every kernel made by :func:`jit` in this process (``dc-engine warmup`` reports on them)."""


def jit(**options):
    """The decorator of every kernel: ``numba.njit(nogil=True, **options)``, compiled lazily
    and cached on disk where a folder allows (module docstring).

    Parameters
    ----------
    **options : keyword arguments of ``numba.njit`` (``parallel``, ``fastmath``, ``nogil``,
        ``locals``, ...), not ``cache`` (always on, as this module says) and no signature:
        every kernel compiles at its first call.

    Returns
    -------
    A decorator giving a Numba dispatcher (the plain function under ``NUMBA_DISABLE_JIT=1``).
    """
    if "cache" in options:
        raise TypeError("jit() caches every kernel (kernels/_config.py); drop cache=")
    options.setdefault("nogil", True)

    def decorate(func):
        kernel = numba.njit(**options)(func)
        if isinstance(kernel, Dispatcher):  # not under NUMBA_DISABLE_JIT=1
            kernel._cache = _disk_cache(func)  # what Dispatcher.enable_caching does, our class
            JITTED.append(kernel)
        return kernel

    return decorate


def cache_location(kernel) -> tuple:
    """``(folder, writable)``: where ``kernel`` (made by :func:`jit`) keeps its compiled code,
    ``(None, False)`` when it is not cached."""
    cache = getattr(kernel, "_cache", None)
    path = getattr(cache, "cache_path", None)
    return path, path is not None and not getattr(cache, "read_only", False)


def numba_cache_dir() -> str | None:
    """``NUMBA_CACHE_DIR`` as Numba read it when it was imported (None when unset)."""
    return numba.config.CACHE_DIR or None
