"""The import rules of docs/ARCHITECTURE.md, checked on every import of the package, the
function-level ones included (parsed, not executed)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dc_engine

PACKAGE_DIR = Path(dc_engine.__file__).resolve().parent
BASE = {"errors", "limits", "_validate", "_version", "_files", "buffers", "threads",
        "config"}

# Each unit and the units it may import (besides itself): docs/ARCHITECTURE.md, "Layers".
MAY_IMPORT = {
    "kernels": set(),
    "base": set(),
    "codecs": {"base", "kernels"},
    "core": {"codecs", "base", "kernels"},
    "io": {"core", "codecs", "base"},
    "runtime": {"io", "core", "codecs", "base", "kernels"},
    "stages": {"runtime", "io", "core", "codecs", "base", "kernels"},
    "app": {"stages", "runtime", "io", "core", "codecs", "base", "kernels"},
    "root": {"app", "stages", "runtime", "io", "core", "codecs", "base", "kernels"},
}
# Training code: what running a model must never import.
TRAINING = {"dc_engine.core.losses", "dc_engine.core.optim", "dc_engine.core.train"}
TRAINING_UNITS = {"stages", "app"}
# Modules that run models or read and write files: no training code, directly or not.
INFERENCE_UNITS = {"kernels", "base", "codecs", "io", "runtime"}
INFERENCE_CORE = {"dc_engine.core.layers", "dc_engine.core.model", "dc_engine.core.ties",
                  "dc_engine.core.fused",
                  "dc_engine.core.zoo", "dc_engine.core"}
# Third-party packages and the only units that may import them (the standard library and
# numpy are free everywhere; numba everywhere but base's plain modules).
THIRD_PARTY = {
    "h5py": {"io"},
    "onnx": {"io"},  # optional extra: imported inside dc_engine.io.onnx's functions only
    "matplotlib": {"app"},
    "tqdm": {"core"},
    "threadpoolctl": {"base"},
    "tomli": {"base"},
    "numba": {"kernels", "core", "runtime", "base"},
    "llvmlite": {"kernels"},
}
STDLIB = set(sys.stdlib_module_names)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    parts = ["dc_engine", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    if parts == ["dc_engine"]:
        return "root"
    if parts[1] in MAY_IMPORT:
        return parts[1]
    if parts[1] in BASE:
        return "base"
    raise AssertionError(f"{module} belongs to no unit of docs/ARCHITECTURE.md")


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every import in ``path`` (``from X import a`` gives X.a
    when X is a package of ours, so ``from .. import kernels`` counts as dc_engine.kernels)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if target.startswith("dc_engine"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    is_module = any((PACKAGE_DIR.parent / sub.replace(".", "/")).with_suffix(s)
                                    .exists() for s in (".py",)) or \
                        (PACKAGE_DIR.parent / sub.replace(".", "/")).is_dir()
                    if target == "dc_engine" and alias.name == "kernels":
                        is_module = True  # installed from the repository's kernels/
                    out.append((node.lineno, sub if is_module else target))
            else:
                out.append((node.lineno, target))
    return out


FILES = sorted(p for p in PACKAGE_DIR.rglob("*.py") if "kernels" not in p.parts)


def test_every_module_has_a_unit():
    assert FILES, "no package files found"
    for path in FILES:
        _unit(_module_name(path))
    # the kernels live outside dc_engine/ in the repository and install as dc_engine.kernels
    assert Path(dc_engine.kernels.__file__).resolve().parent.name == "kernels"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_imports_follow_the_layers(path):
    module = _module_name(path)
    unit = _unit(module)
    bad = []
    for line, target in _imports(path):
        root = target.split(".")[0]
        if root == "dc_engine":
            if target == "dc_engine" or target.startswith("dc_engine._version"):
                target_unit = "base" if target != "dc_engine" else "root"
            else:
                target_unit = _unit(target)
            if target_unit != unit and target_unit not in MAY_IMPORT[unit]:
                bad.append(f"line {line}: {target} ({unit} may not import {target_unit})")
            if unit in INFERENCE_UNITS or module in INFERENCE_CORE or \
                    module.startswith("dc_engine.core.layers."):
                if target in TRAINING or target_unit in TRAINING_UNITS:
                    bad.append(f"line {line}: {target} is training code")
        elif root in THIRD_PARTY:
            if unit not in THIRD_PARTY[root]:
                bad.append(f"line {line}: {target} (only {sorted(THIRD_PARTY[root])} may)")
        elif root not in STDLIB and root not in {"numpy", "tomllib"}:
            bad.append(f"line {line}: {target} is not a declared dependency")
    assert not bad, f"{module} breaks docs/ARCHITECTURE.md:\n" + "\n".join(bad)


def test_importing_the_package_and_loading_a_model_imports_no_training_code():
    """``import dc_engine`` and ``dc_engine.load`` are what an edge app runs: neither may pull in
    the stages, the optimizer or the training loop (the stage names are imported lazily)."""
    root = Path(__file__).resolve().parents[1]
    code = ("import sys, numpy as np, dc_engine; "
            f"m = dc_engine.load({str(root / 'data/models/lenet-5.dc.h5')!r}); "
            f"d = dc_engine.load({str(root / 'data/models/lenet-5.h5')!r}); "
            "m.forward(np.zeros((2, 1, 28, 28), np.float32)); "
            "bad = sorted(k for k in sys.modules if k.startswith(('dc_engine.stages', "
            "'dc_engine.app', 'dc_engine.core.train', 'dc_engine.core.optim', "
            "'dc_engine.core.losses', 'tqdm', 'matplotlib'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_stage_api_is_exported_lazily():
    import dc_engine as dc
    for name in ("compress", "prune_model", "quantize_model", "encode_model", "CompressConfig",
                 "PruneConfig", "QuantizeConfig", "EncodeConfig"):
        assert name in dc.__all__ and callable(getattr(dc, name))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dc.nope  # noqa: B018
    assert set(dc.__all__) <= set(dir(dc))
