"""The installed package: a wheel built from the repository holds one top-level package,
``dc_engine`` (the kernels inside it, PyPI's ``kernels`` package left alone), the shipped configs
and the console script, and it works from another folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ("Could not find a version", "No matching distribution", "Failed to establish",
           "Temporary failure in name resolution", "Network is unreachable")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of a copy of the sources (building in place would leave build/ behind)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.egg-info")
    for name in ("dc_engine", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q",
                          "-w", str(tmp / "dist")], capture_output=True, text=True)
    if res.returncode and any(s in res.stdout + res.stderr for s in OFFLINE):
        pytest.skip("pip could not fetch the build backend (setuptools): offline")
    assert res.returncode == 0, res.stdout + res.stderr
    (whl,) = (tmp / "dist").glob("dc_engine-*.whl")
    return whl


def test_wheel_installs_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("dc_engine-")}
    assert top == {"dc_engine"}  # no top-level "kernels": PyPI has a package of that name
    kernels = sorted(p.name for p in (ROOT / "kernels").glob("*.py"))
    assert sorted(n.rsplit("/", 1)[1] for n in names
                  if n.startswith("dc_engine/kernels/")) == kernels
    for config in (ROOT / "dc_engine" / "configs").glob("*.toml"):
        assert f"dc_engine/configs/{config.name}" in names
    meta = zipfile.ZipFile(wheel)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dc-engine = dc_engine.app.cli:main" in meta.read(entry).decode()


def test_installed_wheel_works_from_another_folder(wheel, tmp_path):
    """Installed (not editable) into a folder of its own: loads a shipped model, finds the
    shipped configs, asks for --data when no dataset is given, and installs no ``kernels``."""
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                          "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    code = f"""
import importlib.util, numpy as np, dc_engine
assert dc_engine.__file__.startswith({str(target)!r}), dc_engine.__file__
assert importlib.util.find_spec("kernels") is None
m = dc_engine.load({str(ROOT / "data/models/lenet-5.dc.h5")!r})
assert m.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
from dc_engine.stages.pipeline import CompressConfig
assert CompressConfig.shipped("lenet-300-100").quantize.bits == {{"ip1": 6, "ip2": 6, "ip3": 6}}
try:
    dc_engine.load_mnist()
except dc_engine.DatasetError as e:
    assert "--data" in str(e), e
else:
    raise AssertionError("load_mnist() found a dataset in the installed package")
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
