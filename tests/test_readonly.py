"""A read-only deployment (issue 16): importing the runtime compiles nothing; with the package,
HOME and every cache folder read-only it still loads and runs a compressed model (compiling
uncached, with one warning); ``dc-engine warmup`` fills a Numba cache that such a deployment
then uses read-only, compiling nothing.

The read-only runs are child processes with a copy of the package laid out as installed
(``dc_engine/`` with the kernels in ``dc_engine/kernels/``) in a folder made read-only. Root
ignores file modes, so as root the child runs as ``nobody`` or, where ``nobody`` cannot run
this Python (it lives in /root), as root without the capabilities that bypass file modes
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER). A probe checks that the child really
cannot write there; where no way works the tests skip.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np
import pytest

import dc_engine

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "models" / "lenet-5.dc.h5"
NOBODY = 65534
TIMEOUT = 600

pytestmark = [
    pytest.mark.skipif(numba.config.DISABLE_JIT, reason="nothing is compiled or cached with "
                                                        "NUMBA_DISABLE_JIT=1"),
    pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX file modes and users only"),
]

# Runs in the child: imports the runtime, loads the model, runs one forward; reports what was
# compiled and loaded from the cache (every kernel is made by kernels._config.jit).
CHILD = r"""
import json, sys, warnings
warnings.simplefilter("always")
import numpy as np
import dc_engine
import dc_engine.runtime as rt
from dc_engine.kernels import _config

at_import = sum(len(k.overloads) for k in _config.JITTED)
model = rt.load(sys.argv[1])
y = model.forward(np.load(sys.argv[2]))
print(json.dumps({
    "package": dc_engine.__file__, "kernels": dc_engine.kernels.__file__,
    "compiled_at_import": at_import, "logits": y.tolist(),
    "compiled": sum(sum(k.stats.cache_misses.values()) for k in _config.JITTED),
    "loaded": sum(sum(k.stats.cache_hits.values()) for k in _config.JITTED),
}))
"""

# Checks the interpreter and the dependencies run, and that none of the folders given can be
# written (a folder that can is a sandbox that tests nothing).
PROBE = r"""
import json, sys, tempfile
import h5py, numba, numpy
writable = []
for folder in sys.argv[1:]:
    try:
        tempfile.TemporaryFile(dir=folder).close()
        writable.append(folder)
    except OSError:
        pass
print(json.dumps(writable))
"""

WARMUP = "import sys; from dc_engine.app.cli import main; sys.exit(main(sys.argv[1:]))"


def _drop_dac_capabilities():
    """preexec_fn: drop from the bounding set (so from the exec'd root process) the
    capabilities that let root ignore file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _ways() -> list[tuple[str, dict]]:
    """Ways to run a child that file modes bind: (name, subprocess keyword arguments)."""
    if os.geteuid() != 0:
        return [("this user", {})]
    ways = [("nobody", {"user": NOBODY, "group": NOBODY, "extra_groups": []})]
    if sys.platform.startswith("linux"):
        ways.append(("root without CAP_DAC_OVERRIDE", {"preexec_fn": _drop_dac_capabilities}))
    return ways


def _set_modes(top: Path, dirs: int, files: int) -> None:
    for folder, _, names in os.walk(top):
        os.chmod(folder, dirs)
        for name in names:
            os.chmod(os.path.join(folder, name), files)


def _child_env(site: Path, home: Path, cache: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH", "DC_ENGINE_BATCH1")}
    env.update(HOME=str(home), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    return env


class Deployment:
    """The sandbox: ``top`` (0755) holding ``site`` (the package, read-only), ``home``
    (read-only), ``cache`` (filled by warmup, then made read-only), the model and the input."""

    def __init__(self, top: Path):
        self.top = top
        self.site, self.home, self.cache = top / "site", top / "home", top / "cache"
        self.model, self.x = top / "lenet-5.dc.h5", top / "x.npy"
        self.way: tuple[str, dict] | None = None
        self.prefilled: subprocess.CompletedProcess | None = None  # (no cache: warmup failed)

    def popen(self, args, env, sandboxed: bool, out, err) -> subprocess.Popen:
        extra = self.way[1] if sandboxed else {}
        return subprocess.Popen([sys.executable, *args], env=env, cwd=self.top, stdout=out,
                                stderr=err, text=True, **extra)

    def run(self, args, env, sandboxed: bool = True) -> subprocess.CompletedProcess:
        extra = self.way[1] if sandboxed else {}
        return subprocess.run([sys.executable, *args], env=env, cwd=self.top,
                              capture_output=True, text=True, timeout=TIMEOUT, **extra)

    def choose_way(self, *folders: Path) -> str | None:
        """Pick the first way whose child runs and can write none of ``folders``; returns why
        none did, or None."""
        why = []
        for name, kwargs in _ways():
            self.way = (name, kwargs)
            try:
                res = self.run(["-c", PROBE, *map(str, folders)],
                               _child_env(self.site, self.home, None))
            except (OSError, subprocess.SubprocessError) as exc:
                why.append(f"{name}: {exc}")
                continue
            if res.returncode != 0:
                why.append(f"{name}: {res.stderr.strip().splitlines()[-1:]}")
            elif json.loads(res.stdout):
                why.append(f"{name}: can still write {json.loads(res.stdout)}")
            else:
                return None
        self.way = None
        return "; ".join(why)


def _finish(proc: subprocess.Popen, out, err) -> subprocess.CompletedProcess:
    proc.wait(timeout=TIMEOUT)
    out.seek(0)
    err.seek(0)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


@pytest.fixture(scope="module")
def deployment():
    """Build the sandbox, then run at the same time (the machine has two cores) the warmup
    that fills ``cache`` (with normal rights) and the child that runs with nothing writable;
    then make ``cache`` read-only and run the child against it."""
    top = Path(tempfile.mkdtemp(prefix="dc-readonly-"))
    try:
        d = Deployment(top)
        ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc")
        shutil.copytree(ROOT / "dc_engine", d.site / "dc_engine", ignore=ignore)
        shutil.copytree(ROOT / "kernels", d.site / "dc_engine" / "kernels", ignore=ignore)
        d.home.mkdir()
        shutil.copy(MODEL, d.model)
        try:
            ds = dc_engine.load_mnist()
            x, label = ds.x_test[:1], int(ds.y_test[0])
        except dc_engine.DatasetError:
            x, label = np.random.default_rng(0).random((1, 1, 28, 28), np.float32), None
        np.save(d.x, np.ascontiguousarray(x, np.float32))
        _set_modes(d.site, 0o555, 0o444)
        _set_modes(d.home, 0o555, 0o444)
        os.chmod(d.model, 0o444)
        os.chmod(d.x, 0o444)
        os.chmod(top, 0o755)
        why = d.choose_way(d.site / "dc_engine", d.site / "dc_engine" / "kernels", d.home)
        if why:
            pytest.skip(f"cannot run a child that file modes bind here ({why})")
        d.label = label
        with tempfile.TemporaryFile("w+") as o1, tempfile.TemporaryFile("w+") as e1, \
                tempfile.TemporaryFile("w+") as o2, tempfile.TemporaryFile("w+") as e2:
            warm = d.popen(["-c", WARMUP, "warmup", str(d.model), "--json"],
                           _child_env(d.site, d.home, d.cache), False, o1, e1)
            # (the per-layer batch-1 path only: the default measures both paths, so compiles
            # both, which would double this child's time; the prefilled child below runs it)
            bare = d.popen(["-c", CHILD, str(d.model), str(d.x)],
                           {**_child_env(d.site, d.home, None), "DC_ENGINE_BATCH1": "layered"},
                           True, o2, e2)
            d.expected = dc_engine.load(MODEL).forward(x)  # (in this process, meanwhile)
            d.warmup = _finish(warm, o1, e1)
            d.uncached = _finish(bare, o2, e2)
        if d.cache.is_dir():
            _set_modes(d.cache, 0o555, 0o444)
            probe = d.run(["-c", PROBE, *map(str, [d.cache, *d.cache.iterdir()])],
                          _child_env(d.site, d.home, None))
            assert probe.returncode == 0 and json.loads(probe.stdout) == [], probe
            d.prefilled = d.run(["-c", CHILD, str(d.model), str(d.x)],
                                _child_env(d.site, d.home, d.cache))
        yield d
    finally:
        _set_modes(top, 0o755, 0o644)  # (a non-root owner cannot delete from 0555 folders)
        shutil.rmtree(top, ignore_errors=True)


def _report(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _check_prediction(d: Deployment, out: dict) -> None:
    assert out["package"].startswith(str(d.site)) and out["kernels"].startswith(str(d.site))
    logits = np.array(out["logits"], np.float32)
    np.testing.assert_allclose(logits, d.expected, rtol=1e-5, atol=1e-5)
    assert int(logits.argmax()) == int(d.expected.argmax())
    if d.label is not None:
        assert int(logits.argmax()) == d.label


def test_importing_the_runtime_compiles_nothing(tmp_path):
    code = ("import dc_engine.runtime; from dc_engine.kernels import _config; "
            "n = sum(len(k.overloads) for k in _config.JITTED); "
            "print(len(_config.JITTED), n)")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    kernels, compiled = map(int, res.stdout.split())
    assert kernels > 10 and compiled == 0
    assert not list(tmp_path.rglob("*.nbi"))


def test_runs_with_nothing_writable(deployment):
    """Package, HOME, __pycache__ and user cache read-only, no NUMBA_CACHE_DIR: the kernels
    compile uncached, one warning says how to fix it, and the prediction is right."""
    d = deployment
    out = _report(d.uncached)
    _check_prediction(d, out)
    assert out["compiled_at_import"] == 0 and out["compiled"] > 0 and out["loaded"] == 0
    assert "CacheWarning" in d.uncached.stderr
    assert d.uncached.stderr.count("cannot cache its compiled Numba kernels") == 1
    assert "NUMBA_CACHE_DIR" in d.uncached.stderr and "dc-engine warmup" in d.uncached.stderr


def test_warmup_fills_the_cache(deployment):
    d = deployment
    res = _report(d.warmup)
    assert res["models"] == [{"name": "lenet-5", "path": str(d.model), "compressed": True}]
    assert res["compiled"] > 0 and res["unsaved"] == []
    assert res["numba_cache_dir"] == str(d.cache)
    assert res["cache_dirs"] and all(p.startswith(str(d.cache)) for p in res["cache_dirs"])
    assert list(d.cache.rglob("*.nbi")) and list(d.cache.rglob("*.nbc"))


def test_a_read_only_cache_filled_by_warmup_is_used(deployment):
    """The same child with NUMBA_CACHE_DIR pointing at the warmed, now read-only, cache:
    everything is loaded from it, nothing compiled, no warning."""
    d = deployment
    assert d.prefilled is not None, d.warmup.stdout + d.warmup.stderr
    out = _report(d.prefilled)
    _check_prediction(d, out)
    assert out["compiled"] == 0 and out["loaded"] > 0, out
    assert "cannot cache" not in d.prefilled.stderr, d.prefilled.stderr


@pytest.mark.parametrize("args, message", [
    (["--batch", "1"], "--batch must be >= 2"),
    (["no-such-model.dc.h5"], "no model file at no-such-model.dc.h5"),
])
def test_warmup_refuses_bad_arguments_in_one_line(args, message, capsys):
    from dc_engine.app.cli import main

    assert main(["warmup", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dc-engine warmup: error: ") and message in err
    assert err.count("\n") == 1


def test_read_only_locators_serve_only_dc_engine_kernels():
    """Numba's own locator list is left alone: other Numba code in the process caches (or
    fails to) exactly as without dc-engine."""
    from numba.core import caching

    from dc_engine.kernels import _config

    assert not any(issubclass(c, _config._ReadOnly) for c in caching.CacheImpl._locator_classes)
    ours = _config._KernelCacheImpl._locator_classes
    assert any(issubclass(c, _config._ReadOnly) for c in ours)
    kinds = [getattr(c, "read_only", False) for c in ours[:6]]
    assert kinds == [False, True] * 3  # each writable folder before its read-only twin


def test_a_failed_save_into_a_writable_folder_is_remembered(tmp_path, monkeypatch):
    # a full disk, or a folder made unwritable after the probe: warmup must not report success
    from dc_engine.kernels import _config

    def full(self, sig, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_config.caching.FunctionCache, "save_overload", full)

    @_config.jit()
    def _probe_kernel(x):
        return x + 1

    assert _probe_kernel(1) == 2  # compiled, then the save fails: logged, not raised
    assert "_probe_kernel" in {name.rsplit(".", 1)[-1] for name in _config.UNSAVED}
    _config.JITTED.remove(_probe_kernel)
