"""Static checks on kernels/: imports, one caching decorator (kernels._config.jit), fastmath from
one constant, a NumPy twin per kernel (docs/CONTRIBUTING.md, "Numba")."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest

from dc_engine import kernels
from dc_engine.kernels import reference

KERNEL_DIR = Path(kernels.__file__).resolve().parent
KERNEL_FILES = sorted(KERNEL_DIR.glob("*.py"))
# llvmlite is Numba's code generator (installed with it): kernels.sqmm_avx512 writes IR with it.
ALLOWED_ROOTS = {"numpy", "numba", "math", "llvmlite"}
# ``from __future__ import ...`` is a compiler directive, not a dependency.
DIRECTIVES = {"__future__"}
JIT_NAMES = {"njit", "jit"}


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _ids(path: Path) -> str:
    return path.name


def test_kernel_files_found():
    names = {p.name for p in KERNEL_FILES}
    assert {"__init__.py", "_config.py", "reference.py", "conv.py", "pool.py"} <= names


# kernels/_config.py sets Numba up (where the compiled code is cached): it may also use the
# standard library (os, logging, warnings, ...).
CONFIG_FILE = "_config.py"


@pytest.mark.parametrize("path", KERNEL_FILES, ids=_ids)
def test_kernels_import_only_numpy_numba_math(path):
    allowed = ALLOWED_ROOTS | (set(sys.stdlib_module_names) if path.name == CONFIG_FILE
                               else set())
    bad = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in allowed:
                    bad.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:  # relative: stays inside kernels/
                continue
            root = (node.module or "").split(".")[0]
            if root not in allowed | DIRECTIVES:
                bad.append(f"line {node.lineno}: from {node.module} import ...")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__"):
            bad.append(f"line {node.lineno}: __import__(...)")
    assert not bad, f"{path.name} imports outside numpy/numba/math: {bad}"


def _jit_aliases(tree: ast.Module, numba_only: bool = False) -> tuple[set[str], set[str]]:
    """Names bound to the numba module and to numba.njit / numba.jit in this file, and (unless
    ``numba_only``) to the kernels' decorator ``kernels._config.jit``."""
    modules, funcs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "numba":
                    modules.add(alias.asname or "numba")
        elif isinstance(node, ast.ImportFrom) and node.module == "numba":
            for alias in node.names:
                if alias.name in JIT_NAMES:
                    funcs.add(alias.asname or alias.name)
        elif (not numba_only and isinstance(node, ast.ImportFrom) and node.level == 1
              and node.module == "_config"):
            for alias in node.names:
                if alias.name == "jit":
                    funcs.add(alias.asname or alias.name)
    return modules, funcs


def _is_jit(expr: ast.expr, modules: set[str], funcs: set[str]) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id in funcs
    return (isinstance(expr, ast.Attribute) and expr.attr in JIT_NAMES
            and isinstance(expr.value, ast.Name) and expr.value.id in modules)


def _jit_uses(tree: ast.Module, numba_only: bool = False):
    """Yield (lineno, call-or-None) for every numba.njit/jit or kernels._config.jit use (only
    the former with ``numba_only``): decorators and plain calls."""
    modules, funcs = _jit_aliases(tree, numba_only)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                if _is_jit(dec, modules, funcs):  # bare @numba.njit: no options at all
                    yield node.lineno, None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_jit(node.func, modules, funcs):
            yield node.lineno, node


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


@pytest.mark.parametrize("path", [p for p in KERNEL_FILES if p.name != CONFIG_FILE], ids=_ids)
def test_every_kernel_uses_the_config_decorator(path):
    """``kernels._config.jit`` compiles lazily (no eager signature) and caches wherever a folder
    allows, read-only ones included; a direct ``numba.njit(cache=True)`` cannot even be
    imported where nothing is writable, and with a signature it compiles at import."""
    tree = _parse(path)
    direct = [lineno for lineno, _ in _jit_uses(tree, numba_only=True)]
    assert not direct, (f"{path.name}: numba.njit/jit at lines {direct}; decorate kernels with "
                        f"`from ._config import jit` / `@jit(...)` instead")
    bad = [f"line {lineno}: write @jit(...) with keyword options only (no signature)"
           for lineno, call in _jit_uses(tree) if call is None or call.args]
    assert not bad, f"{path.name}: {bad}"


def _fastmath_from_config(tree: ast.Module) -> set[str]:
    """Local names that hold kernels._config.FASTMATH (``from ._config import FASTMATH``)."""
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.level == 1
                and node.module == "_config"):
            for alias in node.names:
                if alias.name == "FASTMATH":
                    names.add(alias.asname or alias.name)
    return names


def _config_modules(tree: ast.Module) -> set[str]:
    """Local names bound to the kernels._config module (``from . import _config``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            for alias in node.names:
                if alias.name == "_config":
                    names.add(alias.asname or alias.name)
    return names


@pytest.mark.parametrize("path", KERNEL_FILES, ids=_ids)
def test_fastmath_only_through_config_constant(path):
    tree = _parse(path)
    consts = _fastmath_from_config(tree)
    mods = _config_modules(tree)
    bad = []
    for lineno, call in _jit_uses(tree):
        value = None if call is None else _keyword(call, "fastmath")
        if value is None:
            continue
        ok = ((isinstance(value, ast.Name) and value.id in consts)
              or (isinstance(value, ast.Attribute) and value.attr == "FASTMATH"
                  and isinstance(value.value, ast.Name) and value.value.id in mods))
        if not ok:
            bad.append(f"line {lineno}: fastmath={ast.unparse(value)}")
    assert not bad, f"{path.name}: fastmath must be kernels._config.FASTMATH: {bad}"


def test_fastmath_constant_leaves_out_nnan_and_ninf():
    from dc_engine.kernels._config import FASTMATH

    assert isinstance(FASTMATH, (set, frozenset))
    assert not {"nnan", "ninf", "fast"} & set(FASTMATH)


def _jitted_names(path: Path) -> list[str]:
    """Names of the functions in ``path`` decorated with numba.njit / numba.jit."""
    tree = _parse(path)
    modules, funcs = _jit_aliases(tree)
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if _is_jit(target, modules, funcs):
                    names.append(node.name)
    return names


# Public Numba kernels, found from the source so that this also works under NUMBA_DISABLE_JIT=1.
KERNELS = sorted(name for path in KERNEL_FILES if path.name not in ("reference.py", "__init__.py")
                 for name in _jitted_names(path) if not name.startswith("_"))


def test_expected_kernels_are_found():
    assert {"im2col", "col2im", "maxpool2d_forward", "maxpool2d_backward",
            "shift_images"} <= set(KERNELS)


def test_public_kernels_are_exported():
    missing = sorted(set(KERNELS) - set(kernels.__all__))
    assert not missing, f"public Numba kernels not listed in kernels.__all__: {missing}"


def test_reference_is_not_jitted():
    assert _jitted_names(KERNEL_DIR / "reference.py") == []


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_has_reference_twin_with_same_parameters(name):
    kernel = getattr(kernels, name)
    twin = getattr(reference, name, None)
    assert twin is not None, f"kernels.reference has no twin for {name}"
    assert inspect.isfunction(twin), (
        f"kernels.reference.{name} must be a plain function, got {type(twin).__name__}")
    want = list(inspect.signature(getattr(kernel, "py_func", kernel)).parameters)
    got = list(inspect.signature(twin).parameters)
    assert got == want, f"{name}: kernel parameters {want}, reference parameters {got}"
