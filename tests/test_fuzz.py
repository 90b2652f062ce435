"""Fuzz tests of the command line's robustness contract: a fast, seeded subset of
``bench/fuzz.py`` (which runs the same classes of cases at scale, see its docstring).

Every case must end as

(a) a clean refusal: exit status 2 and a stderr of exactly one line starting
    ``dc-engine COMMAND: error:``, no traceback, no raw control characters (paths escaped);
(b) a success whose result equals a reference run (``--json`` numbers of eval and inspect,
    the bytes of an encode output); an all-zero crafted network must give the error of
    always predicting class 0;
(c) or a documented acceptance (a success where no reference applies).

Cases that could hang (special files), blow up memory (bombs, crafted hyperparameters,
damaged files) or start training run in a forked child of this process under a timeout and an
address-space limit (``RLIMIT_AS``), killed with SIGKILL on timeout; the rest call
``dc_engine.app.cli.main`` in-process with ``capsys``. Nothing here is marked xfail: a test
fails while its class of input is mishandled.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import os
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dc_engine.app.cli import main

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from fuzz import make_special  # noqa: E402  (the harness's maker of special files)

MODELS = ROOT / "data" / "models"
MNIST = ROOT / "data" / "mnist"
DC = MODELS / "lenet-300-100.dc.h5"
DENSE = MODELS / "lenet-300-100.h5"
QUANT = MODELS / "lenet-300-100.quantized.h5"
STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
GiB, MiB = 1 << 30, 1 << 20
FAST = settings(max_examples=20, deadline=None, derandomize=True, database=None)
ERROR_LINE = re.compile(r"dc-engine(?: (?P<cmd>[a-z][a-z-]*))?: error: ")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
COMMANDS = ("train", "eval", "prune", "sensitivity", "quantize", "bits-sweep", "compress",
            "encode", "inspect", "import", "export")


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


MEMORY = max(4 * GiB, _vm_size() + 3 * GiB)
"""RLIMIT_AS of a forked case: 4 GiB (numba and h5py map ~0.5 GiB, LeNet-5 eval peaks near
1 GiB), or more when this process is already large."""


# ============================================================================ running & judging


def _child(argv, out_fd: int, err_fd: int, cwd: str) -> None:
    rc = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.chdir(cwd)
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                      errors="surrogateescape")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", line_buffering=True)
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # what the console script does with an uncaught exception
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode("utf-8", "replace"))
    finally:
        os._exit(rc if isinstance(rc, int) and 0 <= rc <= 255 else 1)


def run_isolated(cases: list[tuple], jobs: int = 3) -> list[dict]:
    """Run ``(argv, timeout, cwd)`` cases in forked children, ``jobs`` at a time; each gives
    {"rc", "signal", "timeout", "out", "err", "seconds"}."""
    results = [None] * len(cases)
    pending = list(range(len(cases)))[::-1]
    running = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i = pending.pop()
                argv, timeout, cwd = cases[i]
                out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(argv, out.fileno(), err.fileno(), cwd)
                running[i] = (pid, out, err, time.monotonic(), timeout)
            for i, (pid, out, err, t0, timeout) in list(running.items()):
                got, status = os.waitpid(pid, os.WNOHANG)
                late = got == 0 and time.monotonic() - t0 > timeout
                if late:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                    got, status = os.waitpid(pid, 0)
                if got:
                    out.seek(0)
                    err.seek(0)
                    results[i] = {
                        "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                        "signal": None if late or not os.WIFSIGNALED(status)
                        else os.WTERMSIG(status),
                        "timeout": late, "out": out.read().decode("utf-8", "replace"),
                        "err": err.read().decode("utf-8", "replace"),
                        "seconds": time.monotonic() - t0}
                    out.close()
                    err.close()
                    del running[i]
            time.sleep(0.02)
    finally:
        for pid, *_ in running.values():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return results


def error_problem(err: str, argv) -> str | None:
    """None if ``err`` is one clean error line of the command in ``argv``."""
    if "Traceback (most recent call last)" in err:
        return "traceback"
    text = err[:-1] if err.endswith("\n") else err
    if "\n" in text or not text:
        return "not exactly one line"
    command = next((a for a in argv if a in COMMANDS), None)
    m = ERROR_LINE.match(text)
    if not m or m.group("cmd") != command:
        return "no 'dc-engine COMMAND: error:' prefix"
    if CONTROL.search(text):
        return "unescaped control character"
    return None


def verdict(res: dict, argv, expect: str = "refuse", check=None) -> str:
    """"ok: ..." or a failure description. ``expect``: refuse (a success fails) or either;
    ``check(stdout)`` judges a success (returns None when it is right)."""
    if res["timeout"]:
        return "FAIL: timeout (a hang, or it started training)"
    if res["signal"]:
        return f"FAIL: killed by {signal.Signals(res['signal']).name}"
    if "Traceback (most recent call last)" in res["err"]:
        return f"FAIL: traceback (exit status {res['rc']}): {res['err'][-600:]}"
    if res["rc"] == 2:
        problem = error_problem(res["err"], argv)
        return f"FAIL: {problem}: {res['err'][-600:]}" if problem else "ok: refused"
    if res["rc"] != 0:
        return f"FAIL: exit status {res['rc']}: {res['err'][-600:]}"
    if expect == "refuse":
        return f"FAIL: unexpected success: {res['out'][-300:]}"
    problem = check(res["out"]) if check else None
    return f"FAIL: {problem}" if problem else "ok: success"


def in_process(argv, capsys) -> dict:
    """``main(argv)`` here (for what cannot hang, allocate or train); an uncaught exception
    fails the test with its traceback."""
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return {"rc": rc, "signal": None, "timeout": False, "out": captured.out,
            "err": captured.err}


# ============================================================================ inputs


def idx_header(code: int, dims) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def gzip_zeros(path: Path, head: bytes, zeros: int) -> Path:
    """``gzip(head + zeros zero bytes)`` built from repeated 1-MiB deflate blocks (cached in
    /tmp/fuzz-cache, as bench/fuzz.py does)."""
    cache = Path(tempfile.gettempdir()) / "fuzz-cache"
    cached = cache / f"zeros-{hashlib.sha1(head + str(zeros).encode()).hexdigest()[:16]}.gz"
    if not cached.exists():
        cache.mkdir(exist_ok=True)

        def deflate(data: bytes) -> bytes:
            co = zlib.compressobj(9, zlib.DEFLATED, -15)
            return co.compress(data) + co.flush(zlib.Z_FULL_FLUSH)

        crc, chunk = zlib.crc32(head), bytes(64 * MiB)
        for _ in range(zeros // len(chunk)):
            crc = zlib.crc32(chunk, crc)
        crc = zlib.crc32(bytes(zeros % len(chunk)), crc)
        block = deflate(bytes(MiB))
        tmp = cached.with_suffix(f".{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflate(head))
            for _ in range(zeros // MiB):
                f.write(block)
            f.write(deflate(bytes(zeros % MiB)) + b"\x03\x00")
            f.write(struct.pack("<II", crc, (len(head) + zeros) & 0xFFFFFFFF))
        os.replace(tmp, cached)
    os.symlink(cached, path)
    return path


def str_attr(obj, key: str, value: str) -> None:
    raw = value.encode("utf-8")
    obj.attrs.create(key, np.array(raw, dtype=h5py.string_dtype("utf-8", max(1, len(raw)))))


def zero_payload(shape) -> bytes:
    """A valid version-2 layer payload of an all-zero weight (no entries, all-zero Huffman
    length tables sized for the decoder's weights-per-byte rule, no bias)."""
    n, ndim, ib = math.prod(shape), len(shape), 1
    for wb in range(1, 17):
        if n <= max(2**20, 2**16 * (34 + 4 * ndim + -(-2**wb // 2) + -(-2**ib // 2))):
            break
    body = (struct.pack("<3sBBBB", b"DCL", 2, wb, ib, ndim) + struct.pack(f"<{ndim}I", *shape)
            + struct.pack("<IIIIIBB", 0, 0, 0, 0, 0, 1, 1) + bytes(-(-2**wb // 2))
            + bytes(-(-2**ib // 2)))
    return body + struct.pack("<I", zlib.crc32(body))


def write_compressed(path: Path, input_shape, layers) -> Path:
    """A compressed-kind file (docs/FORMAT.md) of ``layers`` ([name, type, hp]) with all-zero
    weights, written with h5py without any validation."""
    payloads = []
    for _, ltype, hp in layers:
        if ltype == "Dense":
            payloads.append(zero_payload((hp["out_features"], hp["in_features"])))
        elif ltype == "Conv2D":
            k = hp["kernel_size"]
            payloads.append(zero_payload((hp["out_channels"], hp["in_channels"], k, k)))
        else:
            payloads.append(b"")
    arch = json.dumps({"name": "crafted", "input_shape": input_shape,
                       "layers": [[*l, len(p)] for l, p in zip(layers, payloads)]},
                      separators=(",", ":"))
    blob = b"".join(payloads)
    with h5py.File(path, "w", libver=("v110", "v110")) as f:
        str_attr(f, "format", "dc-engine")
        str_attr(f, "kind", "compressed")
        f.attrs.create("version", np.uint8(1))
        str_attr(f, "architecture", arch)
        f.create_dataset("payload", data=np.frombuffer(blob, np.uint8))
    return path


TAIL = [["gap", "GlobalAvgPool2D", {}], ["flat", "Flatten", {}],
        ["fc", "Dense", {"in_features": 1, "out_features": 10}]]


def conv(k=1, padding=0, stride=1, cout=1):
    return ["c1", "Conv2D", {"in_channels": 1, "out_channels": cout, "kernel_size": k,
                             "stride": stride, "padding": padding}]


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="fuzz-test-"))  # short: UNIX socket paths < 108 bytes
    yield d
    for p in d.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                os.chmod(p, 0o755)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny(work):
    """Real MNIST images: 5,064 training (the shipped configs hold out 5,000) and 64 test."""
    d = work / "tiny"
    d.mkdir()
    for role, stem in STEMS.items():
        with gzip.open(MNIST / f"{stem}.gz") as f:
            raw = f.read()
        n = 5064 if role.startswith("train") else 64
        item = 784 if role.endswith("images") else 1
        head = idx_header(8, (n, 28, 28) if item == 784 else (n,))
        (d / f"{stem}.gz").write_bytes(gzip.compress(head + raw[len(head):len(head) + n * item],
                                                     mtime=0))
    return d


def zero_error() -> float:
    """Test error of a network whose logits are all zero (argmax picks class 0)."""
    with gzip.open(MNIST / f"{STEMS['test_labels']}.gz") as f:
        labels = f.read()[8:]
    return (len(labels) - labels.count(0)) / len(labels)


def eval_numbers(out: str) -> dict:
    d = json.loads(out.strip().splitlines()[-1])
    return {k: d[k] for k in ("error", "accuracy", "n", "params", "compressed")}


def inspect_numbers(out: str) -> dict:
    d = json.loads(out)
    d.pop("path", None)
    for k in ("file_bytes", "ratio_file"):
        d["totals"].pop(k, None)
    return d


# ============================================================================ isolated batch


def _data_with(work: Path, name: str, stem: str) -> Path:
    """A folder of symlinks to the shipped MNIST files, ``stem`` left out."""
    d = work / name
    d.mkdir()
    for s in STEMS.values():
        if s != stem:
            os.symlink(MNIST / f"{s}.gz", d / f"{s}.gz")
    return d


def isolated_cases(work: Path, tiny: Path) -> dict:
    """name -> (argv, timeout, expect, check); inputs are made here."""
    cases = {}
    train = ["--threads", "1", "--no-progress", "--data", str(tiny)]
    # 1. special files where a regular file is expected (a FIFO used to hang in HDF5's open)
    sp = work / "special"
    sp.mkdir()
    for kind, slot in [("fifo", "eval"), ("fifo", "inspect"), ("fifo", "encode-config"),
                       ("fifo", "prune-config"), ("fifo", "data"),
                       ("dir", "eval"), ("dev-null", "inspect"), ("dev-zero", "eval"),
                       ("dev-zero", "prune-config"), ("socket", "eval"),
                       ("symlink-loop", "data-folder"), ("symlink-loop", "export")]:
        d = sp / f"{kind}-{slot}"
        d.mkdir()
        if slot == "data":
            data = _data_with(d, "data", STEMS["train_images"])
            make_special(kind, data / f"{STEMS['train_images']}.gz")
            argv = ["eval", str(DC), "--threads", "1", "--data", str(data)]
        elif slot == "data-folder":
            folder = str(make_special(kind, d / "data"))
            argv = ["eval", str(DC), "--threads", "1", "--data", folder]
        elif slot.endswith("-config"):
            cfg = str(make_special(kind, d / "config.toml"))
            argv = (["encode", str(QUANT), "--config", cfg, "--out", str(d / "o.dc.h5")]
                    if slot == "encode-config" else
                    ["prune", str(DENSE), "--config", cfg, "--out", str(d / "o.h5"), *train])
        else:
            path = str(make_special(kind, d / "model.dc.h5"))
            argv = {"eval": ["eval", path, "--threads", "1"], "inspect": ["inspect", path],
                    "export": ["export", path, "--out", str(d / "o.onnx")]}[slot]
        cases[f"special: {kind} as {slot}"] = (argv, 8, "refuse", None)
    # 2. decompression bombs in a copy of data/mnist
    bombs = work / "bombs"
    bombs.mkdir()
    for name, stem, make in [
        ("4e9 images declared, 2 KB given", STEMS["test_images"],
         lambda p: p.write_bytes(gzip.compress(idx_header(8, (2**32 - 1, 28, 28))
                                               + bytes(2048)))),
        ("1e9 images declared, 3 GiB of zeros", STEMS["train_images"],
         lambda p: gzip_zeros(p, idx_header(8, (10**9, 28, 28)), 3 * GiB)),
        ("1 GiB of zeros without a header", STEMS["test_images"],
         lambda p: gzip_zeros(p, b"", GiB)),
        ("2**31 labels declared, 1 GiB of zeros", STEMS["train_labels"],
         lambda p: gzip_zeros(p, idx_header(8, (2**31,)), GiB)),
    ]:
        data = _data_with(bombs, f"b{len(cases)}", stem)
        make(data / f"{stem}.gz")
        cases[f"bomb: {name}"] = (["eval", str(DC), "--threads", "1", "--data", str(data)], 60,
                                  "refuse", None)
    # 4. crafted compressed files with absurd hyperparameters, all weights zero
    cr = work / "crafted"
    cr.mkdir()
    zero = zero_error()

    def zero_check(out):
        got = eval_numbers(out)
        return None if got["error"] == zero else f"error {got['error']}, expected {zero}"

    for name, shape, layers in [
        ("Conv2D padding 2**30", [1, 28, 28], [conv(padding=2**30), *TAIL]),
        ("Conv2D kernel 1024 padding 512", [1, 28, 28], [conv(k=1024, padding=512), *TAIL]),
        ("Conv2D padding [2**31, 0, 0, 0]", [1, 28, 28], [conv(padding=[2**31, 0, 0, 0]),
                                                          *TAIL]),
        ("MaxPool2D size 2**30 padding 2**30-1", [1, 28, 28],
         [["pool", "MaxPool2D", {"size": 2**30, "stride": 1, "padding": 2**30 - 1}], *TAIL]),
        ("input shape 1x65536x65536", [1, 65536, 65536], TAIL),
        ("Conv2D stride 2**63", [1, 28, 28], [conv(stride=2**63), *TAIL]),
    ]:
        path = write_compressed(cr / f"c{len(cases)}.dc.h5", shape, layers)
        cases[f"crafted eval: {name}"] = (["eval", str(path), "--json", "--threads", "1"], 15,
                                          "either", zero_check)
        cases[f"crafted inspect: {name}"] = (["inspect", str(path), "--json"], 15, "either",
                                             lambda out: json.loads(out) and None)
    # 5. stage commands on the wrong kind of file (they could start training: isolated)
    for cmd, model in [("quantize", "lenet-300-100.dc.h5"), ("prune", "lenet-300-100.dc.h5"),
                       ("prune", "lenet-300-100.quantized.h5"),
                       ("compress", "lenet-300-100.dc.h5")]:
        argv = [cmd, str(MODELS / model), "--out", str(work / f"{cmd}-{model}"), *train]
        cases[f"wrong kind: {cmd} of {model}"] = (argv, 8, "refuse", None)
    # 7. command lines whose success must equal the reference
    nl = work / "new\nline"
    nl.mkdir()
    cases["cmdline: encode --out with a newline in its folder"] = (
        ["encode", str(QUANT), "--out", str(nl / "a\nb.dc.h5")], 60, "either", "same-encode")
    cases["cmdline: eval --threads 100000"] = (
        ["eval", str(DC), "--json", "--threads", "100000"], 60, "either", "same-eval")
    # the console script writes stderr with backslashreplace (pytest's capture would not)
    cases["cmdline: inspect of a missing path of invalid UTF-8"] = (
        ["inspect", str(work / "\udcff\udcfe.dc.h5")], 20, "refuse", None)
    return cases


DEEP = 100_000
BAD_CONFIGS = {
    "syntax error": "[prune\nrounds = 1\n",
    "invalid UTF-8": b"[prune]\nrounds = 1 # \xff\xfe\n",
    "NUL byte": b"[prune]\nrounds = 1\x00\n",
    "rounds = 10**30": "[prune]\nrounds = 1000000000000000000000000000000\n",
    "rounds = -1": "[prune]\nrounds = -1\n",
    "rounds = nan": "[prune]\nrounds = nan\n",
    "kept = inf": "[prune]\nrounds = 1\n[prune.layers.ip1]\nkept = inf\n",
    "kept = 0": "[prune]\nrounds = 1\n[prune.layers.ip1]\nkept = 0\n",
    "kept = 'x'": "[prune]\nrounds = 1\n[prune.layers.ip1]\nkept = 'x'\n",
    "unknown layer": "[prune]\nrounds = 1\n[prune.layers.nope]\nkept = 0.5\n",
    "unknown key": "[prune]\nrounds = 1\nbogus = 1\n[prune.layers.ip1]\nkept = 0.5\n",
    "duplicate key": "[prune]\nrounds = 1\nrounds = 2\n",
    "epochs = 1e308": "[prune]\nrounds = 1\n[prune.retrain]\nepochs = 1e308\n"
                      "[prune.layers.ip1]\nkept = 0.5\n",
    "lr = -inf": "[train]\nlr = -inf\n[prune]\nrounds = 1\n[prune.layers.ip1]\nkept = 0.5\n",
    # deep structures inside [prune], where an unknown key is an error anyway
    "array nested 100000 deep": f"[prune]\nrounds = 1\nx = {'[' * DEEP}{']' * DEEP}\n",
    "inline tables nested 100000 deep": f"[prune]\nx = {'{ a = ' * DEEP}1{' }' * DEEP}\n",
    "dotted key of 10000 parts": "[prune]\nrounds = 1\n" + ".".join(["a"] * 10000) + " = 1\n",
    "random bytes": bytes(range(256)) * 4,
}


def config_cases(work: Path, tiny: Path) -> dict:
    """name -> (argv, timeout, expect, check): prune with each of :data:`BAD_CONFIGS` (tiny
    dataset, --threads 1); a bad config must be refused before any training."""
    d = work / "configs"
    d.mkdir()
    cases = {}
    for i, (name, text) in enumerate(BAD_CONFIGS.items()):
        cfg = d / f"c{i}.toml"
        cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
        cases[f"config: {name}"] = (["prune", str(DENSE), "--config", str(cfg), "--out",
                                     str(d / f"o{i}.h5"), "--threads", "1", "--no-progress",
                                     "--data", str(tiny)], 8, "refuse", None)
    return cases


@pytest.fixture(scope="module")
def isolated(work, tiny):
    """Every isolated case of :func:`isolated_cases` and :func:`config_cases`, run at once
    (hangs and timeouts overlap)."""
    cases = {**isolated_cases(work, tiny), **config_cases(work, tiny)}
    names = list(cases)
    runs = run_isolated([(cases[n][0], cases[n][1], str(work)) for n in names], jobs=4)
    return cases, dict(zip(names, runs)), work


_REFS: dict = {}


def reference(work: Path, argv: list) -> dict:
    """The result of a reference run of ``argv`` (run once, on first need)."""
    key = tuple(argv)
    if key not in _REFS:
        res = run_isolated([(argv, 120, str(work))])[0]
        assert res["rc"] == 0, f"reference run {argv} failed: {res['err'][-2000:]}"
        _REFS[key] = res
    return _REFS[key]


def ref_eval(work: Path, model: Path) -> dict:
    return eval_numbers(reference(work, ["eval", str(model), "--json", "--threads", "1"])["out"])


def ref_inspect(work: Path) -> dict:
    return inspect_numbers(reference(work, ["inspect", str(DC), "--json"])["out"])


ISOLATED = [
    *(f"special: {k} as {s}" for k, s in [
        ("fifo", "eval"), ("fifo", "inspect"), ("fifo", "encode-config"), ("fifo", "prune-config"),
        ("fifo", "data"), ("dir", "eval"), ("dev-null", "inspect"),
        ("dev-zero", "eval"), ("dev-zero", "prune-config"), ("socket", "eval"),
        ("symlink-loop", "data-folder"), ("symlink-loop", "export")]),
    "bomb: 4e9 images declared, 2 KB given", "bomb: 1e9 images declared, 3 GiB of zeros",
    "bomb: 1 GiB of zeros without a header", "bomb: 2**31 labels declared, 1 GiB of zeros",
    *(f"crafted {c}: {n}" for n in [
        "Conv2D padding 2**30", "Conv2D kernel 1024 padding 512", "Conv2D padding [2**31, 0, 0, 0]",
        "MaxPool2D size 2**30 padding 2**30-1", "input shape 1x65536x65536", "Conv2D stride 2**63"]
      for c in ("eval", "inspect")),
    "wrong kind: quantize of lenet-300-100.dc.h5", "wrong kind: prune of lenet-300-100.dc.h5",
    "wrong kind: prune of lenet-300-100.quantized.h5",
    "wrong kind: compress of lenet-300-100.dc.h5",
    "cmdline: encode --out with a newline in its folder", "cmdline: eval --threads 100000",
    "cmdline: inspect of a missing path of invalid UTF-8",
]


@pytest.mark.parametrize("name", ISOLATED)
def test_isolated_case(isolated, name):
    """Special files, bombs, crafted files, wrong-kind stage inputs, command lines: refused
    cleanly, or a success equal to the reference (classes 1, 2, 4, 5, 7 of bench/fuzz.py)."""
    cases, runs, work = isolated
    argv, _, expect, check = cases[name]
    if check == "same-encode":
        def check(out):
            got = Path(argv[3]).read_bytes()
            if got == DC.read_bytes():  # encode of the shipped quantized file gives it
                return None
            ref = work / "refs" / "ref.dc.h5"
            if not ref.exists():
                ref.parent.mkdir(exist_ok=True)
                reference(work, ["encode", str(QUANT), "--out", str(ref)])
            return None if got == ref.read_bytes() else "output differs from a reference encode"
    elif check == "same-eval":
        def check(out):
            got, want = eval_numbers(out), ref_eval(work, DC)
            return None if got == want else f"{got} != reference {want}"
    v = verdict(runs[name], argv, expect, check)
    assert v.startswith("ok"), f"{name}: {v}\nargv: {argv}"


# ============================================================================ byte damage (3)


def _damaged(work: Path, original: Path, data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(dir=work))
    path = d / original.name
    path.write_bytes(data)
    return path


def _check_same(work: Path, kind: str, model: Path = DC):
    """A success must give the undamaged file's numbers (reference run on first need)."""
    def check(out):
        got = (eval_numbers if kind == "eval" else inspect_numbers)(out)
        want = ref_eval(work, model) if kind == "eval" else ref_inspect(work)
        return None if got == want else f"accepted with other results: {str(got)[:300]}"
    return check


def _flip(data: bytes, flips) -> bytes:
    b = bytearray(data)
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    return bytes(b)


DC_BYTES = DC.read_bytes()
DENSE_BYTES = DENSE.read_bytes()
FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)), min_size=1, max_size=4)


@settings(FAST, max_examples=15)
@given(flips=FLIPS)
def test_bit_flips_in_a_compressed_file(work, flips):
    """inspect of lenet-300-100.dc.h5 with flipped bits: refused, or the original's table."""
    path = _damaged(work, DC, _flip(DC_BYTES, flips))
    argv = ["inspect", str(path), "--json"]
    v = verdict(run_isolated([(argv, 30, str(work))])[0], argv, "either",
                _check_same(work, "inspect"))
    assert v.startswith("ok"), f"{v}\nflips {flips}"


@settings(FAST, max_examples=8)
@given(cut=st.one_of(st.integers(0, len(DC_BYTES) - 1).map(lambda n: ("truncate", n)),
                     st.binary(min_size=1, max_size=4096).map(lambda b: ("append", b)),
                     st.tuples(st.integers(0, len(DC_BYTES) - 1), st.integers(1, 4096))
                     .map(lambda t: ("zero", t))),
       command=st.sampled_from(["eval", "inspect"]))
def test_truncated_extended_zeroed_compressed_file(work, cut, command):
    """eval / inspect of lenet-300-100.dc.h5 truncated, with junk appended or a zeroed range."""
    kind, arg = cut
    if kind == "truncate":
        data = DC_BYTES[:arg]
    elif kind == "append":
        data = DC_BYTES + arg
    else:
        pos, n = arg
        data = DC_BYTES[:pos] + bytes(min(n, len(DC_BYTES) - pos)) + DC_BYTES[pos + n:]
    path = _damaged(work, DC, data)
    argv = ([command, str(path), "--json"]
            + (["--threads", "1"] if command == "eval" else []))
    v = verdict(run_isolated([(argv, 60, str(work))])[0], argv, "either",
                _check_same(work, command))
    assert v.startswith("ok"), f"{v}\n{kind} {arg if kind != 'append' else len(arg)}"


@settings(FAST, max_examples=8)
@given(flips=FLIPS)
def test_bit_flips_in_a_dense_file(work, flips):
    """eval of lenet-300-100.h5 with flipped bits: refused, or the original's numbers."""
    path = _damaged(work, DENSE, _flip(DENSE_BYTES, flips))
    argv = ["eval", str(path), "--json", "--threads", "1"]
    v = verdict(run_isolated([(argv, 60, str(work))])[0], argv, "either",
                _check_same(work, "eval", DENSE))
    assert v.startswith("ok"), f"{v}\nflips {flips}"


# ============================================================================ datasets (8)


@settings(FAST, max_examples=6)
@given(role=st.sampled_from(sorted(STEMS)), pos=st.integers(0, 15), value=st.integers(0, 255),
       gz=st.booleans())
def test_idx_header_damage(work, tiny, role, pos, value, gz):
    """eval --data on the small dataset with one header byte of one IDX file changed."""
    data = Path(tempfile.mkdtemp(dir=work)) / "data"
    shutil.copytree(tiny, data)
    stem = STEMS[role]
    with gzip.open(data / f"{stem}.gz") as f:
        raw = bytearray(f.read())
    # any change of an image file's 16-byte header breaks it; a labels file may stay valid
    # (int8 labels, label values 0..255)
    changed = role.endswith("images") and raw[pos] != value
    raw[pos] = value
    (data / f"{stem}.gz").unlink()
    (data / (f"{stem}.gz" if gz else stem)).write_bytes(gzip.compress(bytes(raw)) if gz
                                                        else bytes(raw))
    argv = ["eval", str(DC), "--json", "--threads", "1", "--data", str(data)]
    run = run_isolated([(argv, 30, str(work))])[0]
    v = verdict(run, argv, "refuse" if changed else "either", None)
    assert v.startswith("ok"), f"{v}\n{stem}: byte {pos} = {value}"


@pytest.mark.parametrize("mutation", ["labels out of range", "count mismatch", "int8 labels",
                                      "pixels changed", "trailing bytes", "gzip truncated"])
def test_idx_payload_damage(work, tiny, mutation, capsys):
    """Dataset payload damage: refused, or (labels >= 10, other pixels) evaluated."""
    data = Path(tempfile.mkdtemp(dir=work)) / "data"
    shutil.copytree(tiny, data)
    stem = STEMS["test_labels" if "label" in mutation or "count" in mutation
                 else "test_images"]
    with gzip.open(data / f"{stem}.gz") as f:
        raw = bytearray(f.read())
    blob = None
    if mutation == "labels out of range":
        raw[8:12] = bytes([10, 200, 255, 17])
    elif mutation == "count mismatch":
        raw[4:8] = struct.pack(">I", 63)
        raw = raw[:-1]
    elif mutation == "int8 labels":
        raw[2] = 0x09
        raw[8] = 0xFF
    elif mutation == "pixels changed":
        raw[16:800] = bytes(784)
    elif mutation == "trailing bytes":
        raw += b"\x01\x02"
    else:
        blob = gzip.compress(bytes(raw))[:-9]
    (data / f"{stem}.gz").write_bytes(blob if blob is not None else gzip.compress(bytes(raw)))
    argv = ["eval", str(DC), "--json", "--threads", "1", "--data", str(data)]
    expect = "either" if mutation in ("labels out of range", "pixels changed") else "refuse"
    v = verdict(in_process(argv, capsys), argv, expect, lambda out: eval_numbers(out) and None)
    assert v.startswith("ok"), v


# ============================================================================ configs (6)


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_is_refused_before_training(isolated, name):
    """Bad configs (class 6 of bench/fuzz.py), run with prune in the isolated batch."""
    cases, runs, _ = isolated
    argv = cases[f"config: {name}"][0]
    v = verdict(runs[f"config: {name}"], argv, "refuse")
    assert v.startswith("ok"), f"config {name}: {v}"


# ============================================================================ in-process (5, 7)


def _not_model(path: Path, kind: str) -> Path:
    with h5py.File(path, "w") as f:
        if kind == "foreign":
            f["x"] = np.arange(10)
        elif kind != "empty":
            str_attr(f, "format", "dc-engine")
            str_attr(f, "kind", kind)
            f.attrs["version"] = np.uint8(1)
    return path


@pytest.mark.parametrize("argv", [
    ["inspect", str(DENSE)], ["inspect", str(QUANT)], ["encode", str(DENSE), "--out", "{d}/o"],
    ["encode", str(MODELS / "lenet-5.pruned.h5"), "--out", "{d}/o"],
    ["import", str(DENSE), "--out", "{d}/o.h5"], ["import", str(DC), "--out", "{d}/o.h5"],
    ["export", "{not-model:empty}", "--out", "{d}/o.onnx"],
    ["export", "{not-model:foreign}", "--out", "{d}/o.onnx"],
    ["export", "{not-model:dense}", "--out", "{d}/o.onnx"],
    ["eval", "{not-model:compressed}"], ["inspect", "{not-model:compressed}"],
])
def test_wrong_kind_is_refused(work, argv, capsys):
    d = Path(tempfile.mkdtemp(dir=work))
    argv = [a.replace("{d}", str(d)) for a in argv]
    argv = [str(_not_model(d / "m.h5", a[11:-1])) if a.startswith("{not-model:") else a
            for a in argv]
    v = verdict(in_process(argv, capsys), argv, "refuse")
    assert v.startswith("ok"), v


@pytest.mark.parametrize("argv", [
    ["eval", "{d}/missing\nsecond line.h5"], ["inspect", "{d}/a\rb\x1b[31m.dc.h5"],
    ["export", "{d}/nl\n\n.h5", "--out", "{d}/o.onnx"],
    ["encode", str(QUANT), "--out", "{d}/no\nsuch/x.dc.h5"],
    ["eval", str(DC), "--threads", "abc"], ["eval", str(DC), "--batch-size", "0"],
    ["eval", str(DC), "--threads", "-1"], ["eval", str(DC), "--bogus"],
    ["export", str(DC), "--out", "{d}"], ["export", str(DC), "--out", "{d}", "--force"],
    ["eval", "{d}/" + "x" * 300], ["eval", "/" + "/".join(["z" * 200] * 30)],
    ["encode", str(QUANT), "--out", "{d}/missing/x.dc.h5"],
])
def test_bad_command_line_gives_one_clean_line(work, argv, capsys):
    """Bad values, missing files, paths with newlines or control characters: one line."""
    d = Path(tempfile.mkdtemp(dir=work))
    argv = [a.replace("{d}", str(d)) for a in argv]
    v = verdict(in_process(argv, capsys), argv, "refuse")
    assert v.startswith("ok"), v


def test_read_only_out_folder(work, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: permission checks do not apply")
    d = Path(tempfile.mkdtemp(dir=work)) / "ro"
    d.mkdir()
    d.chmod(0o555)
    argv = ["export", str(DC), "--out", str(d / "x.onnx")]
    v = verdict(in_process(argv, capsys), argv, "refuse")
    assert v.startswith("ok"), v
