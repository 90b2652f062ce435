"""Fuzz the ``dc-engine`` command line against its robustness contract.

Every case runs one ``dc-engine`` command line on a generated input and must end in one of
three ways:

(a) a clean refusal: exit status 2 and a stderr of exactly ONE line that starts with
    ``dc-engine COMMAND: error:``, no traceback, no unescaped control characters;
(b) success (exit 0) with a result identical to a reference run where one applies (the
    ``--json`` numbers of ``eval`` and ``inspect``, the bytes of an ``export`` or ``encode``
    output; an all-zero crafted network must give the error of always predicting class 0);
(c) a documented acceptance: success where no reference applies (e.g. a dataset whose pixels
    were changed), or, for a config that is valid, a run killed when it reaches training.

Anything else is a FAILURE, reported with a reproducer (the argv and a saved copy of the
input): a hang (every case runs under a timeout and is killed with SIGKILL), death by a
signal, a memory blow-up (every case runs under ``RLIMIT_AS``, default 4 GiB, so it shows up
as a ``MemoryError`` traceback or a signal), a traceback, a multi-line or malformed error
(argparse's usage text included), another exit status, an unexpected success, or a result
that differs from the reference.

Case classes (``--classes`` selects some; each is a generator, not a fixed list)
--------------------------------------------------------------------------------
special    Special files where a regular file is expected: a FIFO, a directory, /dev/zero,
           /dev/null, a UNIX socket, a symlink loop and a dangling symlink, as the model of
           eval / inspect / encode / export / prune, as --config, as one of the four IDX files
           in a --data folder, as the --data folder itself, as the ONNX file of import and as
           --out (never a /dev path as --out).
bomb       Decompression bombs in a copy of data/mnist: a .gz IDX file whose header declares
           billions of images over a short payload or over gigabytes of zeros, zeros without
           any header, raw files that declare more than they hold; run as
           ``eval data/models/lenet-300-100.dc.h5 --data FOLDER``.
damage     Byte damage of every shipped model in data/models (bit flips, truncation, zeroed or
           random ranges, inserted, deleted and appended bytes) under eval, inspect (.dc.h5)
           and export; a success must give the original file's results.
crafted    Well-formed files with absurd hyperparameters, written with h5py in the documented
           layouts (compressed: the container and hand-built all-zero layer payloads; dense:
           a small model saved by dc_engine, then its hyperparameters and input shape
           rewritten): huge paddings, kernels, strides, channel and feature counts, input
           shapes, pooling windows, odd JSON types, NaN, thousands of layers. Every weight is
           zero, so a successful eval must report the error of always predicting class 0.
wrong-kind Stage commands on the wrong kind of file (encode of a dense or compressed model,
           quantize / prune / compress of a compressed one, inspect of a dense one, import of
           an HDF5 file) and eval / inspect / export of HDF5 files that are not models (empty,
           foreign, filtered, external or linked datasets, deep JSON).
config     Mutated TOML configs (syntax errors, invalid UTF-8, NUL, wrong types, out-of-range,
           huge, NaN and infinite values, unknown keys and tables, duplicated keys, deep
           nesting) for prune / quantize / encode / compress (tiny dataset, --threads 1).
           A run that outlives the timeout is "accepted-timeout" when the config is valid
           (the stage's own config reader accepts it in a separate child), else a failure.
cmdline    Random options and values: negative, zero, huge and non-numeric numbers, paths
           with newlines, control characters and invalid UTF-8, over-long paths, missing
           files and folders, --out onto a directory or into a missing or read-only folder
           (skipped when running as root, where permissions do not apply). Commands that
           could train always get one invalid option, so they must be refused.
dataset    IDX files of a small real-MNIST dataset with damaged headers and payloads,
           labels out of range, other dtypes and shapes, mismatched counts, damaged gzip
           streams; neutral rewrites (recompressed, uncompressed) must give the same result.

Execution
---------
The parent imports ``dc_engine`` once (with ``NUMBA_NUM_THREADS=1``) and forks a child per
case (fork server); the child sets ``RLIMIT_AS``, redirects stdout and stderr to files, calls
``dc_engine.app.cli.main(argv)`` and exits with its status (an uncaught exception prints its
traceback and exits 1, as the console script would). ``--subprocess`` runs the real
``dc-engine`` console script instead (fork + exec, same limits): slower, but it covers the
entry point. ``--jobs`` children run at once (default 2).

Usage::

    python bench/fuzz.py --cases 300 --seed 0             # about 5-10 minutes on 2 cores
    python bench/fuzz.py --minutes 60 --seed 1 --jobs 2
    python bench/fuzz.py --cases 40 --subprocess
    python bench/fuzz.py --only crafted:3 --verbose      # one case again (class:index)

Results go to ``--out`` (default bench/results/fuzz.json); copies of the inputs of failing
cases to ``/tmp/fuzz-failures/``. The exit status is 1 when any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "data" / "models"
MNIST = ROOT / "data" / "mnist"
CONFIGS = ROOT / "dc_engine" / "configs"
DEFAULT_OUT = ROOT / "bench" / "results" / "fuzz.json"
FAILURES = Path("/tmp/fuzz-failures")
CACHE = Path("/tmp/fuzz-cache")

GiB = 1 << 30
MiB = 1 << 20
MEMORY_LIMIT = 4 * GiB
"""Address-space limit of every case. Importing numba + llvmlite + h5py maps about 0.5 GiB
here and evaluating LeNet-5 peaks near 1 GiB, so 4 GiB leaves normal runs room."""

ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}
"""Set before dc_engine is imported: the fork server must not fork running thread pools."""

MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
PREFIX = {"special": "sp", "bomb": "bo", "damage": "dm", "crafted": "cr", "wrong-kind": "wk",
          "config": "cf", "cmdline": "cl", "dataset": "ds"}
"""Short folder names of the case folders (UNIX socket paths must stay below 108 bytes)."""
CLASSES = ["special", "bomb", "damage", "crafted", "wrong-kind", "config", "cmdline", "dataset"]
WEIGHTS = {"special": 0.2, "bomb": 0.07, "damage": 0.25, "crafted": 0.1, "wrong-kind": 0.07,
           "config": 0.1, "cmdline": 0.11, "dataset": 0.1}
TIMEOUTS = {"special": 12, "bomb": 60, "damage": 60, "crafted": 60, "wrong-kind": 30,
            "config": 30, "cmdline": 30, "dataset": 30, "reference": 120}
"""Seconds per case by class. special is short: a FIFO hang is only told by the clock."""

ERROR_LINE = re.compile(r"dc-engine(?: (?P<cmd>[a-z][a-z-]*))?: error: ")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Control characters (all but tab and newline) that an error line must not carry raw."""
COMMANDS = ("train", "eval", "prune", "sensitivity", "quantize", "bits-sweep", "compress",
            "encode", "inspect", "import", "export")


# ============================================================================ cases & runs


@dataclass
class Case:
    """One command line to run and what its ending must be.

    ``expect``: "refuse" (a success is a failure), "same" (refusal, or success equal to the
    reference ``ref`` under ``compare``), "either" (refusal or success; ``compare`` still
    checked when given), "config" (as "either", and a timeout is accepted when ``config`` is
    a valid config for ``command``)."""

    cls: str
    index: int
    name: str
    argv: list
    expect: str = "refuse"
    compare: str | None = None
    """eval | inspect | export | file | zero | json: how a success is checked."""
    ref: str | None = None
    out: str | None = None
    """The output file whose bytes a success is judged by (export, file)."""
    inputs: list = field(default_factory=list)
    notes: str = ""
    timeout: float = 30.0
    config: str | None = None
    arch: str | None = None
    cwd: str | None = None
    dir: str | None = None

    @property
    def id(self) -> str:
        return f"{self.cls}:{self.index}"

    @property
    def command(self) -> str | None:
        return next((a for a in self.argv if a in COMMANDS), None)


@dataclass
class Run:
    rc: int | None
    signal: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes
    seconds: float
    maxrss_mb: float


def _set_limits(memory: int | None) -> None:
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child(target: Callable[[], int] | None, exec_argv: list | None, out_fd: int, err_fd: int,
           cwd: str | None, memory: int | None) -> None:
    """In the forked child: limits, redirections, then exec the console script or call
    ``target``; never returns."""
    rc = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        if cwd:
            os.chdir(cwd)
        _set_limits(memory)
        if exec_argv is not None:
            os.execv(exec_argv[0], exec_argv)
        # the streams the console script would get (same locale, same error handlers)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False),
                                      encoding=sys.__stdout__.encoding or "utf-8",
                                      errors=sys.__stdout__.errors or "strict")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False),
                                      encoding=sys.__stderr__.encoding or "utf-8",
                                      errors="backslashreplace", line_buffering=True)
        try:
            code = target()
            rc = 0 if code is None else code
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                rc = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                rc = 1
        except BaseException:  # what Python does with an uncaught exception
            traceback.print_exc()
            rc = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc(file=sys.__stderr__)
            rc = 120
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode("utf-8", "replace"))
        rc = 1
    finally:
        os._exit(rc if isinstance(rc, int) and 0 <= rc <= 255 else 1)


class Runner:
    """Runs callables or console-script argvs in forked children, ``jobs`` at a time, each
    under a timeout and an address-space limit."""

    def __init__(self, jobs: int = 2, memory: int | None = MEMORY_LIMIT,
                 subprocess: bool = False):
        self.jobs = max(1, jobs)
        self.memory = memory
        self.subprocess = subprocess
        self.exe = shutil.which("dc-engine") or str(Path(sys.executable).parent / "dc-engine")

    def _start(self, argv: list | None, target, cwd, timeout):
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        if target is None:
            if self.subprocess:
                exec_argv = [self.exe, *argv]
            else:
                from dc_engine.app.cli import main

                def target(argv=argv, main=main):
                    return main(list(argv))
                exec_argv = None
        else:
            exec_argv = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(target, exec_argv, out.fileno(), err.fileno(), cwd, self.memory)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return {"pid": pid, "out": out, "err": err, "t0": time.monotonic(),
                "deadline": time.monotonic() + timeout}

    @staticmethod
    def _finish(p, status, rusage, timed_out) -> Run:
        p["out"].seek(0)
        p["err"].seek(0)
        stdout, stderr = p["out"].read(), p["err"].read()
        p["out"].close()
        p["err"].close()
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        return Run(rc, None if timed_out else sig, timed_out, stdout, stderr,
                   time.monotonic() - p["t0"], rusage.ru_maxrss / 1024 if rusage else 0.0)

    @staticmethod
    def _kill(pid: int) -> None:
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            with contextlib.suppress(OSError):
                kill()

    def run_many(self, jobs: list[tuple], on_done: Callable[[int, Run], None] | None = None,
                 stop_at: float | None = None) -> list[Run | None]:
        """``jobs``: (argv or None, target callable or None, cwd, timeout). Returns the runs
        in order (None for jobs not started because ``stop_at``, a monotonic time, passed)."""
        results: list[Run | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        running: dict[int, dict] = {}
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    if stop_at is not None and time.monotonic() > stop_at:
                        pending.clear()
                        break
                    i = pending.popleft()
                    argv, target, cwd, timeout = jobs[i]
                    running[i] = self._start(argv, target, cwd, timeout)
                done = []
                for i, p in running.items():
                    pid, status, rusage = os.wait4(p["pid"], os.WNOHANG)
                    timed_out = False
                    if pid == 0 and time.monotonic() > p["deadline"]:
                        self._kill(p["pid"])
                        pid, status, rusage = os.wait4(p["pid"], 0)
                        timed_out = True
                    if pid:
                        results[i] = self._finish(p, status, rusage, timed_out)
                        done.append(i)
                for i in done:
                    del running[i]
                    if on_done is not None:
                        on_done(i, results[i])
                if running and not done:
                    time.sleep(0.02)
        finally:  # ^C or an error in on_done: leave no child behind
            for p in running.values():
                self._kill(p["pid"])
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p["pid"], 0)
        return results

    def run(self, argv: list | None = None, target=None, cwd=None, timeout: float = 60) -> Run:
        return self.run_many([(argv, target, cwd, timeout)])[0]


# ============================================================================ judging


def _last_exception(err: str) -> str:
    for line in reversed(err.strip().splitlines()):
        m = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b", line)
        if m:
            return m.group(1)
    return "?"


def error_line_problem(stderr: bytes, command: str | None) -> str | None:
    """None when ``stderr`` is one clean error line of ``command``, else what is wrong."""
    err = stderr.decode("utf-8", "replace")
    if "Traceback (most recent call last)" in err:
        return f"traceback ({_last_exception(err)})"
    text = err[:-1] if err.endswith("\n") else err
    if not text:
        return "empty stderr"
    if "\n" in text:
        if text.startswith("usage:"):
            return "multi-line error (argparse usage)"
        return "multi-line error"
    m = ERROR_LINE.match(text)
    if not m or (m.group("cmd") or None) != command:
        return "error line without the 'dc-engine COMMAND: error:' prefix"
    if CONTROL.search(text):
        return "unescaped control character in the error line"
    if ": error: out of memory" in text:  # the CLI's MemoryError line: a size got past the
        return "memory blow-up (MemoryError under RLIMIT_AS)"  # limits before allocating
    return None


def normalize(kind: str, run: Run, out: str | None):
    """The part of a successful run that must equal the reference's."""
    text = run.stdout.decode("utf-8", "replace")
    if kind in ("eval", "zero"):
        d = json.loads(text.strip().splitlines()[-1])
        return {k: d[k] for k in ("error", "accuracy", "n", "params", "compressed")}
    if kind == "inspect":
        d = json.loads(text)
        d.pop("path", None)
        for k in ("file_bytes", "ratio_file"):
            d.get("totals", {}).pop(k, None)
        return d
    if kind == "json":
        return json.loads(text)
    if kind in ("export", "file"):
        return hashlib.sha256(Path(out).read_bytes()).hexdigest()
    raise ValueError(kind)


def judge(case: Case, run: Run, ctx: Ctx) -> tuple[str, str]:
    """(verdict, detail): verdict is refused | identical | accepted | accepted-timeout |
    failure | skipped."""
    if run.timed_out:
        if case.expect == "config" and ctx.config_valid(case):
            return "accepted-timeout", "valid config; killed in training"
        return "failure", f"timeout ({case.timeout:.0f} s)"
    if run.signal is not None:
        return "failure", f"killed by signal {signal.Signals(run.signal).name}"
    if run.rc == 2:
        problem = error_line_problem(run.stderr, case.command)
        return ("failure", problem) if problem else ("refused", "")
    if run.rc != 0:
        problem = error_line_problem(run.stderr, case.command)
        if problem and problem.startswith("traceback"):
            return "failure", problem
        return "failure", f"exit status {run.rc}"
    if "Traceback (most recent call last)" in run.stderr.decode("utf-8", "replace"):
        return "failure", "traceback on a success"
    if case.expect == "refuse":
        return "failure", "unexpected success"
    if case.compare is None:
        return "accepted", ""
    try:
        got = normalize(case.compare, run, case.out)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        return "failure", f"unreadable result ({type(exc).__name__}: {exc})"
    if case.compare == "json":
        return "accepted", ""
    if case.compare == "zero":
        want = ({"error": ctx.tiny_zero_error, "n": ctx.tiny_n_test} if "--data" in case.argv
                else {"error": ctx.zero_error, "n": ctx.n_test})
        if got["error"] != want["error"] or got["n"] != want["n"]:
            return "failure", f"different result: {got}, an all-zero network gives {want}"
        return "identical", ""
    want = ctx.refs.get(case.ref)
    if want is None:
        return "skipped", f"reference {case.ref} failed"
    if got != want:
        if case.compare in ("eval", "inspect"):
            diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want)
                    if got.get(k) != want.get(k)}
            return "failure", f"different result: {json.dumps(diff)[:300]}"
        return "failure", f"different {case.compare} output bytes"
    return "identical", ""


# ============================================================================ file helpers


def str_attr(obj, key: str, value: str) -> None:
    """A fixed-length UTF-8 string attribute (how dc_engine writes strings)."""
    import h5py
    import numpy as np

    raw = value.encode("utf-8", "surrogatepass")
    obj.attrs.create(key, np.array(raw, dtype=h5py.string_dtype("utf-8", max(1, len(raw)))))


def write_container(path: Path, arch_text: str, blob: bytes, version: int = 1,
                    layout: str | None = None) -> Path:
    """A compressed-kind file as docs/FORMAT.md lays it out, without any validation (so the
    architecture JSON may say anything)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w", libver=("v110", "v110"), meta_block_size=512) as f:
        str_attr(f, "format", "dc-engine")
        str_attr(f, "kind", "compressed")
        f.attrs.create("version", np.uint8(version))
        str_attr(f, "architecture", arch_text)
        if blob:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_obj_track_times(False)
            compact = layout == "compact" or (layout is None and len(blob) <= 60_000)
            dcpl.set_layout(h5py.h5d.COMPACT if compact else h5py.h5d.CONTIGUOUS)
            space = h5py.h5s.create_simple((len(blob),))
            ds = h5py.h5d.create(f.id, b"payload", h5py.h5t.STD_U8LE, space, dcpl=dcpl)
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.frombuffer(blob, dtype=np.uint8))
    return path


def zero_payload(shape, n_bias: int = 0, version: int = 2) -> bytes:
    """A valid layer payload (docs/FORMAT.md, version 2) of an all-zero weight of ``shape``:
    no entries, Huffman tables of all-zero lengths, ``n_bias`` zero biases; the weight width
    is chosen so the payload is long enough for the decoder's weights-per-byte rule."""
    shape = [int(d) for d in shape]
    n = math.prod(shape)
    ndim = len(shape)
    ib = 1
    for wb in range(1, 17):
        size = 29 + 4 * ndim + -(-2**wb // 2) + -(-2**ib // 2) + 4 * n_bias + 4
        if n <= max(2**20, 2**16 * size):
            break
    head = (struct.pack("<3sBBBB", b"DCL", version, wb, ib, ndim)
            + struct.pack(f"<{ndim}I", *shape)
            + struct.pack("<IIIII", 0, 0, n_bias, 0, 0) + struct.pack("<BB", 1, 1))
    body = head + bytes(-(-2**wb // 2)) + bytes(-(-2**ib // 2)) + bytes(4 * n_bias)
    return body + struct.pack("<I", zlib.crc32(body))


def idx_header(code: int, dims) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _deflate_zeros(n: int) -> bytes:
    """Raw deflate of ``n`` zero bytes ending on a byte boundary with a cleared history, so
    copies of it can be concatenated."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(bytes(n)) + co.flush(zlib.Z_FULL_FLUSH)


def gzip_with_zeros(path: Path, head: bytes, zeros: int) -> Path:
    """A symlink at ``path`` to ``gzip(head + zeros zero bytes)``, written in time and space
    of the compressed size (repeated deflate blocks of 1 MiB of zeros) with a correct CRC and
    length, cached in /tmp/fuzz-cache."""
    key = hashlib.sha1(head + str(zeros).encode()).hexdigest()[:16]
    cached = CACHE / f"zeros-{key}.gz"
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        co = zlib.compressobj(9, zlib.DEFLATED, -15)
        first = co.compress(head) + co.flush(zlib.Z_FULL_FLUSH)
        block, rest = _deflate_zeros(MiB), _deflate_zeros(zeros % MiB)
        crc = zlib.crc32(head)
        chunk = bytes(64 * MiB)
        for _ in range(zeros // len(chunk)):
            crc = zlib.crc32(chunk, crc)
        crc = zlib.crc32(bytes(zeros % len(chunk)), crc)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
            f.write(first)
            for _ in range(zeros // MiB):
                f.write(block)
            f.write(rest)
            f.write(b"\x03\x00")  # an empty final block
            f.write(struct.pack("<II", crc, (len(head) + zeros) & 0xFFFFFFFF))
        os.replace(tmp, cached)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.symlink(cached, path)
    return path


def make_special(kind: str, path: Path) -> Path:
    """A special file at ``path`` (for /dev kinds: a symlink to the device)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "dev-zero":
        os.symlink("/dev/zero", path)
    elif kind == "dev-null":
        os.symlink("/dev/null", path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(str(path))
        finally:
            s.close()
    elif kind == "symlink-loop":
        os.symlink(path.name, path)
    elif kind == "dangling-symlink":
        os.symlink(path.parent / "nothing-here", path)
    else:
        raise ValueError(kind)
    return path


SPECIAL_NOTES = {"fifo": "os.mkfifo(PATH)", "dir": "mkdir PATH",
                 "dev-zero": "ln -s /dev/zero PATH", "dev-null": "ln -s /dev/null PATH",
                 "socket": "bind an AF_UNIX socket at PATH",
                 "symlink-loop": "ln -s NAME PATH (points to itself)",
                 "dangling-symlink": "ln -s missing PATH"}


def _read_gz(path: Path) -> bytes:
    with gzip.open(path, "rb") as f:
        return f.read()


# ============================================================================ context


class Ctx:
    """Shared inputs (data folders, references) and the per-case folders of one run."""

    def __init__(self, work: Path, runner: Runner, seed: int, timeout_scale: float = 1.0):
        self.work = work
        self.runner = runner
        self.seed = seed
        self.timeout_scale = timeout_scale
        self.shared = work / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.refs: dict[str, object] = {}
        self.ref_cases: dict[str, Case] = {}
        self._valid: dict[str, bool] = {}
        self.ref_failed: set[str] = set()
        self.is_root = os.geteuid() == 0
        labels = _read_gz(MNIST / f"{MNIST_FILES['test_labels']}.gz")[8:]
        self.n_test = len(labels)
        self.zero_error = (self.n_test - labels.count(0)) / self.n_test
        self._mnist_copy: Path | None = None
        self._tiny: Path | None = None

    def case_dir(self, case_cls: str, index: int) -> Path:
        d = self.work / f"{PREFIX[case_cls]}{index}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def timeout(self, cls: str) -> float:
        """The class's timeout; the console script pays its imports (~2-5 s) on top."""
        return TIMEOUTS[cls] * self.timeout_scale + (10 if self.runner.subprocess else 0)

    @property
    def mnist_copy(self) -> Path:
        """A folder of symlinks to the four shipped MNIST files (not the default folder, so
        no SHA-256 check)."""
        if self._mnist_copy is None:
            d = self.shared / "mnist"
            d.mkdir()
            for stem in MNIST_FILES.values():
                os.symlink(MNIST / f"{stem}.gz", d / f"{stem}.gz")
            self._mnist_copy = d
        return self._mnist_copy

    def data_folder(self, into: Path, replace: str | None = None) -> Path:
        """``into``/data: symlinks to the shipped MNIST files but ``replace`` (a stem)."""
        d = into / "data"
        d.mkdir()
        for stem in MNIST_FILES.values():
            if stem != replace:
                os.symlink(MNIST / f"{stem}.gz", d / f"{stem}.gz")
        return d

    @property
    def tiny(self) -> Path:
        """A small dataset of real MNIST images: 5,064 training images (enough for the
        shipped configs' 5,000-image validation split) and 64 test images, gzip'd."""
        if self._tiny is None:
            d = self.shared / "tiny"
            d.mkdir()
            for role, stem in MNIST_FILES.items():
                raw = _read_gz(MNIST / f"{stem}.gz")
                n = 5064 if role.startswith("train") else 64
                item = 784 if role.endswith("images") else 1
                head = idx_header(raw[2], (n, 28, 28) if item == 784 else (n,))
                body = raw[len(head):len(head) + n * item]
                (d / f"{stem}.gz").write_bytes(gzip.compress(head + body, mtime=0))
            self._tiny = d
        return self._tiny

    @property
    def tiny_n_test(self) -> int:
        return len(self.tiny_raw(MNIST_FILES["test_labels"])) - 8

    @property
    def tiny_zero_error(self) -> float:
        """The test error of a network whose logits are all zero (it predicts class 0)."""
        labels = self.tiny_raw(MNIST_FILES["test_labels"])[8:]
        return (len(labels) - labels.count(0)) / len(labels)

    def tiny_raw(self, stem: str) -> bytes:
        return _read_gz(self.tiny / f"{stem}.gz")

    # ------------------------------------------------------------------ references

    def ref(self, key: str, argv: list, compare: str, out: str | None = None) -> str:
        """Register a reference run (a success whose normalized result cases compare to)."""
        if key not in self.ref_cases:
            self.ref_cases[key] = Case("reference", len(self.ref_cases), key, argv,
                                       expect="either", compare=compare, out=out,
                                       timeout=self.timeout("reference"))
        return key

    def eval_ref(self, model: Path, data: Path | None = None) -> str:
        argv = ["eval", str(model), "--json", "--threads", "1"]
        if data is not None:
            argv += ["--data", str(data)]
        return self.ref(f"eval {model.name} {data.name if data else 'mnist'}", argv, "eval")

    def inspect_ref(self, model: Path) -> str:
        return self.ref(f"inspect {model.name}", ["inspect", str(model), "--json"], "inspect")

    def export_ref(self, model: Path) -> str:
        out = self.shared / f"ref-{model.name}.onnx"
        return self.ref(f"export {model.name}", ["export", str(model), "--out", str(out),
                                                 "--force"], "export", str(out))

    def encode_ref(self, model: Path) -> str:
        d = self.shared / f"ref-encode-{model.name}"
        d.mkdir(exist_ok=True)
        out = d / "ref.dc.h5"
        return self.ref(f"encode {model.name}", ["encode", str(model), "--out", str(out),
                                                 "--force"], "file", str(out))

    def run_refs(self, keys, log) -> list[dict]:
        """Run the references not run yet; returns failure records for those that failed."""
        todo = [k for k in dict.fromkeys(keys) if k and k not in self.refs
                and k in self.ref_cases and k not in self.ref_failed]
        failures = []
        runs = self.runner.run_many([(self.ref_cases[k].argv, None, str(self.shared),
                                      self.ref_cases[k].timeout) for k in todo])
        for k, run in zip(todo, runs):
            c = self.ref_cases[k]
            ok = run.rc == 0 and not run.timed_out
            if ok:
                try:
                    self.refs[k] = normalize(c.compare, run, c.out)
                except (ValueError, KeyError, IndexError, OSError):
                    ok = False
            if not ok:
                self.ref_failed.add(k)
                log(f"reference run failed: {k}: rc={run.rc} timeout={run.timed_out}\n"
                    f"{run.stderr.decode('utf-8', 'replace')[-800:]}")
                failures.append({"id": c.id, "cls": "reference", "name": k, "argv": c.argv,
                                 "verdict": "failure", "detail": "the reference run failed",
                                 "stderr": run.stderr.decode("utf-8", "replace")[-2000:]})
        return failures

    # ------------------------------------------------------------------ configs

    def config_valid(self, case: Case) -> bool:
        """Whether the stage's own config reader accepts ``case.config`` (in a child)."""
        key = f"{case.command} {case.config}"
        if key not in self._valid:
            run = self.runner.run(target=lambda: _check_config(case.command, case.config,
                                                               case.arch), timeout=30)
            self._valid[key] = run.rc == 0 and not run.timed_out
        return self._valid[key]


def _check_config(command: str, config: str, arch: str) -> int:
    from dc_engine.app import jobs

    if command in ("prune", "quantize"):
        getattr(jobs, f"read_{command}_config")(config, arch)
        jobs.read_recipe(config)
    elif command == "encode":
        jobs.read_encode_config(config, arch)
    else:
        jobs.read_compress_config(config, arch)
        jobs.read_recipe(config)
    return 0


# ============================================================================ generators


def _model(name: str) -> Path:
    return MODELS / name


SHIPPED = sorted(p.name for p in MODELS.glob("*.h5"))


# ---------------------------------------------------------------------------- special

SPECIAL_KINDS = ["fifo", "dir", "dev-zero", "dev-null", "socket", "symlink-loop",
                 "dangling-symlink"]
SPECIAL_SLOTS = ["eval", "inspect", "encode", "export", "prune", "prune-config",
                 "quantize-config", "encode-config", "compress-config", "data-file",
                 "data-shadow", "data-folder", "import", "out"]


def special_list() -> list[tuple[str, str]]:
    return [(k, s) for s in SPECIAL_SLOTS for k in SPECIAL_KINDS
            if not (s == "out" and k in ("dev-zero", "dev-null"))]  # never rename over /dev


def gen_special(ctx: Ctx, rng: random.Random, index: int, item) -> Case:
    kind, slot = item
    d = ctx.case_dir("special", index)
    sp = d / "special"
    timeout = ctx.timeout("special")
    train = ["--threads", "1", "--no-progress"]
    expect, compare, ref, out = "refuse", None, None, None
    if slot in ("eval", "inspect", "encode", "export", "prune"):
        sp = make_special(kind, d / ("model.dc.h5" if slot in ("eval", "inspect") else
                                     "model.h5"))
        argv = {"eval": ["eval", str(sp), "--threads", "1"],
                "inspect": ["inspect", str(sp)],
                "encode": ["encode", str(sp), "--out", str(d / "o.dc.h5")],
                "export": ["export", str(sp), "--out", str(d / "o.onnx")],
                "prune": ["prune", str(sp), "--out", str(d / "o.h5"), *train,
                          "--data", str(ctx.tiny)]}[slot]
    elif slot.endswith("-config"):
        cmd = slot.removesuffix("-config")
        sp = make_special(kind, d / "config.toml")
        model = {"prune": "lenet-300-100.h5", "quantize": "lenet-300-100.pruned.h5",
                 "encode": "lenet-300-100.quantized.h5", "compress": "lenet-300-100.h5"}[cmd]
        argv = [cmd, str(_model(model)), "--config", str(sp), "--out", str(d / "o.h5")]
        if cmd != "encode":
            argv += [*train, "--data", str(ctx.tiny)]
        if kind == "dev-null" and cmd == "encode":  # an empty config: the defaults
            expect = "either"
    elif slot in ("data-file", "data-shadow"):
        stem = rng.choice(list(MNIST_FILES.values()))
        data = ctx.data_folder(d, replace=stem if slot == "data-file" else None)
        # data-shadow: the special file takes the raw name, the .gz is still there
        sp = make_special(kind, data / (f"{stem}.gz" if slot == "data-file" else stem))
        model = _model("lenet-300-100.dc.h5")
        argv = ["eval", str(model), "--json", "--threads", "1", "--data", str(data)]
        if slot == "data-shadow":
            expect, compare, ref = "same", "eval", ctx.eval_ref(model, ctx.mnist_copy)
    elif slot == "data-folder":
        sp = make_special(kind, d / "data")
        argv = ["eval", str(_model("lenet-300-100.dc.h5")), "--threads", "1", "--data", str(sp)]
    elif slot == "import":
        sp = make_special(kind, d / "net.onnx")
        argv = ["import", str(sp), "--out", str(d / "net.h5")]
    else:  # out: a special file in the case folder as --out, with or without --force
        sp = make_special(kind, d / "out.onnx")
        model = _model("lenet-300-100.dc.h5")
        argv = ["export", str(model), "--out", str(sp)]
        force = rng.random() < 0.7
        if force:
            argv.append("--force")
        # a dangling symlink or a loop names no file: replacing the link is no overwrite
        if force or kind in ("dangling-symlink", "symlink-loop"):
            expect, compare, ref, out = "same", "export", ctx.export_ref(model), str(sp)
    return Case("special", index, f"{kind} as {slot}", argv, expect, compare, ref, out,
                inputs=[str(sp.parent if slot in ("data-file", "data-shadow") else sp)],
                notes=SPECIAL_NOTES[kind].replace("PATH", str(sp)), timeout=timeout, dir=str(d))


# ---------------------------------------------------------------------------- bomb

BOMB_KINDS = ["short", "zeros", "exact", "headerless", "raw-declared", "labels-zeros",
              "many-members", "wide-images"]


def gen_bomb(ctx: Ctx, rng: random.Random, index: int, item=None) -> Case:
    d = ctx.case_dir("bomb", index)
    kind = rng.choice(BOMB_KINDS)
    images = rng.choice(["train_images", "test_images"])
    stem = MNIST_FILES["train_labels" if kind == "labels-zeros" else images]
    data = ctx.data_folder(d, replace=stem)
    target = data / f"{stem}.gz"
    n = rng.choice([2**20, 10**9, 2**31, 2**32 - 1])
    zero_mib = rng.choice([64, 512, 1024, 2048, 3072, 5120])
    if kind == "short":
        raw = idx_header(8, (n, 28, 28)) + rng.randbytes(rng.randrange(0, 8192))
        target.write_bytes(gzip.compress(raw, mtime=0))
        what = f"header declares {n} images, {len(raw)} bytes follow"
    elif kind == "zeros":
        gzip_with_zeros(target, idx_header(8, (n, 28, 28)), zero_mib * MiB)
        what = f"header declares {n} images, {zero_mib} MiB of zeros follow"
    elif kind == "exact":  # a consistent file of zero images that does not fit in memory
        n = zero_mib * MiB // 784
        gzip_with_zeros(target, idx_header(8, (n, 28, 28)), n * 784)
        what = f"{n} zero images, consistent header"
    elif kind == "headerless":
        gzip_with_zeros(target, b"", zero_mib * MiB)
        what = f"{zero_mib} MiB of zeros, no header"
    elif kind == "raw-declared":
        target = data / stem
        target.write_bytes(idx_header(8, (n, 28, 28)) + bytes(rng.randrange(0, 4096)))
        what = f"uncompressed, header declares {n} images"
    elif kind == "labels-zeros":
        gzip_with_zeros(target, idx_header(8, (n,)), zero_mib * MiB)
        what = f"labels: header declares {n}, {zero_mib} MiB of zeros follow"
    elif kind == "many-members":
        member = gzip.compress(bytes(MiB), mtime=0)
        head = gzip.compress(idx_header(8, (n, 28, 28)), mtime=0)
        count = rng.choice([256, 1024, 4096])
        target.write_bytes(head + member * count)
        what = f"header declares {n} images, then {count} gzip members of 1 MiB of zeros"
    else:  # wide-images: few images, each enormous
        h = rng.choice([2**16, 2**20, 2**31])
        gzip_with_zeros(target, idx_header(8, (1, h, h)), zero_mib * MiB)
        what = f"header declares 1 image of {h}x{h}, {zero_mib} MiB of zeros follow"
    argv = ["eval", str(_model("lenet-300-100.dc.h5")), "--threads", "1", "--data", str(data)]
    return Case("bomb", index, f"{kind}: {stem}: {what}", argv, "refuse",
                inputs=[str(data)], timeout=ctx.timeout("bomb"), dir=str(d))


# ---------------------------------------------------------------------------- damage

DAMAGE = ["bitflip", "bitflip-head", "truncate", "zero-range", "random-range", "append",
          "insert", "delete", "byte-set"]


def damage(data: bytes, rng: random.Random, kind: str) -> tuple[bytes, str]:
    b = bytearray(data)
    size = len(b)
    if kind in ("bitflip", "bitflip-head"):
        span = size if kind == "bitflip" else min(size, 4096)
        flips = [(rng.randrange(span), rng.randrange(8)) for _ in range(rng.choice([1, 1, 2,
                                                                                     8]))]
        for pos, bit in flips:
            b[pos] ^= 1 << bit
        return bytes(b), "flip " + ", ".join(f"bit {bit} of byte {pos}" for pos, bit in flips)
    if kind == "truncate":
        n = rng.choice([0, 8, 512, size - 1, size // 2, rng.randrange(size)])
        return bytes(b[:n]), f"truncate to {n} bytes"
    pos = rng.randrange(size)
    n = min(size - pos, rng.choice([1, 4, 64, 4096]))
    if kind == "zero-range":
        b[pos:pos + n] = bytes(n)
        return bytes(b), f"zero bytes {pos}..{pos + n - 1}"
    if kind == "random-range":
        b[pos:pos + n] = rng.randbytes(n)
        return bytes(b), f"random bytes {pos}..{pos + n - 1}"
    if kind == "append":
        n = rng.choice([1, 100, 4096, 65536])
        junk = bytes(n) if rng.random() < 0.3 else rng.randbytes(n)
        return bytes(b) + junk, f"append {n} {'zero' if not any(junk) else 'random'} bytes"
    if kind == "insert":
        return bytes(b[:pos]) + rng.randbytes(n) + bytes(b[pos:]), f"insert {n} bytes at {pos}"
    if kind == "delete":
        return bytes(b[:pos]) + bytes(b[pos + n:]), f"delete bytes {pos}..{pos + n - 1}"
    value = rng.choice([0, 0xFF, 0x7F, 0x80])
    b[pos] = value
    return bytes(b), f"set byte {pos} to {value:#04x}"


def gen_damage(ctx: Ctx, rng: random.Random, index: int, item=None) -> Case:
    d = ctx.case_dir("damage", index)
    name = rng.choice(SHIPPED)
    kind = rng.choice(DAMAGE)
    data, what = damage(_model(name).read_bytes(), rng, kind)
    path = d / name
    path.write_bytes(data)
    commands = ["eval", "export"] + (["inspect", "inspect"] if name.endswith(".dc.h5") else [])
    cmd = rng.choice(commands)
    out = None
    if cmd == "eval":
        argv, compare, ref = (["eval", str(path), "--json", "--threads", "1"], "eval",
                              ctx.eval_ref(_model(name)))
    elif cmd == "inspect":
        argv, compare, ref = ["inspect", str(path), "--json"], "inspect", ctx.inspect_ref(
            _model(name))
    else:
        out = str(d / "out.onnx")
        argv, compare, ref = ["export", str(path), "--out", out], "export", ctx.export_ref(
            _model(name))
    return Case("damage", index, f"{name}: {what}", argv, "same", compare, ref, out,
                inputs=[str(path)], notes=f"data/models/{name} with: {what}",
                timeout=ctx.timeout("damage"), dir=str(d))


# ---------------------------------------------------------------------------- crafted

HUGE = [2**16, 2**20, 2**30, 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63 - 1, 2**64, 10**30]
JUNK_VALUES = [True, False, 1.0, 1.5, "1", "", None, [], [1], {}, -1, 0, 1e308, float("nan"),
               float("inf"), 2**64, -2**63, 10**400]


def _tail(channels: int = 1) -> list:
    """Global average pool, flatten, Dense(channels, 10): any (C, H, W) to 10 logits."""
    return [["gap", "GlobalAvgPool2D", {}], ["flat", "Flatten", {}],
            ["fc", "Dense", {"in_features": channels, "out_features": 10}]]


def crafted_spec(rng: random.Random) -> tuple[str, list, list]:
    """(description, input_shape, layers [[name, type, hp], ...]) of an all-zero network
    with one absurd part."""
    t = rng.choice(["conv-padding", "conv-kernel", "conv-channels", "dense-wide",
                    "input-shape", "maxpool", "avgpool", "conv-stride", "lrn", "dropout",
                    "many-layers", "junk-type", "deep-json"])
    img = [1, 28, 28]
    if t == "conv-padding":
        p = rng.choice(HUGE)
        pad = p if rng.random() < 0.6 else rng.choice([[p, 0, 0, 0], [0, 0, 0, p], [p] * 4])
        layers = [["c1", "Conv2D", {"in_channels": 1, "out_channels": 1, "kernel_size": 1,
                                    "stride": 1, "padding": pad}]] + _tail()
        return f"Conv2D padding {pad}", img, layers
    if t == "conv-kernel":
        k = rng.choice([64, 256, 512, 1024, 2048, 4096])
        p = rng.choice([k // 2, k, 0])
        layers = [["c1", "Conv2D", {"in_channels": 1, "out_channels": 1, "kernel_size": k,
                                    "stride": 1, "padding": p}]] + _tail()
        return f"Conv2D kernel {k} padding {p}", img, layers
    if t == "conv-channels":
        c = rng.choice([2**16, 2**20, 2**24, 2**28])
        layers = [["c1", "Conv2D", {"in_channels": 1, "out_channels": c, "kernel_size": 1,
                                    "stride": 1, "padding": 0}]] + _tail(c)
        return f"Conv2D 1 -> {c} channels", img, layers
    if t == "dense-wide":
        o = rng.choice([2**17, 342_000, 2**20, 2**24])
        layers = [["ip1", "Dense", {"in_features": 784, "out_features": o}],
                  ["relu", "ReLU", {}], ["ip2", "Dense", {"in_features": o, "out_features": 10}]]
        return f"Dense 784 -> {o} -> 10", [784], layers
    if t == "input-shape":
        shape = rng.choice([[2**31], [1, 2**16, 2**16], [1, 46341, 46341], [2**31, 1, 1],
                            [3, 2**20, 2**20], [2**20, 2**20, 2**20], [1] * 8])
        if len(shape) == 3:
            return f"input shape {shape}", shape, _tail(shape[0])
        return f"input shape {shape}", shape, [
            ["flat", "Flatten", {}],
            ["fc", "Dense", {"in_features": math.prod(shape), "out_features": 10}]]
    if t in ("maxpool", "avgpool"):
        s = rng.choice([2**10, 2**20, 2**30, 2**31, 2**40])
        hp = {"size": s, "stride": rng.choice([1, s]), "padding": rng.choice([s - 1, s // 2]),
              "ceil_mode": rng.random() < 0.5}
        if t == "avgpool":
            hp["count_include_pad"] = rng.random() < 0.5
        kind = "MaxPool2D" if t == "maxpool" else "AvgPool2D"
        return f"{kind} {hp}", img, [["pool", kind, hp]] + _tail()
    if t == "conv-stride":
        s = rng.choice([2**31, 2**32, 2**40, 2**63])
        layers = [["c1", "Conv2D", {"in_channels": 1, "out_channels": 1, "kernel_size": 1,
                                    "stride": s, "padding": 0}]] + _tail()
        return f"Conv2D stride {s}", img, layers
    if t == "lrn":
        hp = {"size": rng.choice([1, 5, 2**20, 2**31, 2**63]),
              "alpha": rng.choice([1e-4, 1e308, float("nan"), -1.0]),
              "beta": rng.choice([0.75, 1e308, float("inf"), -5.0]),
              "k": rng.choice([1.0, 0.0, -1.0, 1e-308])}
        return f"LocalResponseNorm {hp}", img, [["lrn", "LocalResponseNorm", hp]] + _tail()
    if t == "dropout":
        rate = rng.choice([float("nan"), float("inf"), -1.0, 1.0, 1.5, 1e-300, 2**64])
        return f"Dropout rate {rate}", [784], [
            ["drop", "Dropout", {"rate": rate}],
            ["fc", "Dense", {"in_features": 784, "out_features": 10}]]
    if t == "many-layers":
        n = rng.choice([300, 2000, 9999, 10001, 100000])
        layers = [[f"r{i}", "ReLU", {}] for i in range(n)]
        return f"{n} ReLU layers", [784], layers + [
            ["fc", "Dense", {"in_features": 784, "out_features": 10}]]
    if t == "junk-type":
        layers = [["c1", "Conv2D", {"in_channels": 1, "out_channels": 1, "kernel_size": 1,
                                    "stride": 1, "padding": 0}]] + _tail()
        victim = rng.choice([layers[0][2], layers[-1][2]])
        key = rng.choice(sorted(victim))
        victim[key] = rng.choice(JUNK_VALUES)
        return f"hyperparameter {key} = {victim[key]!r:.40}", img, layers
    depth = rng.choice([100, 1000, 100000])
    layers = [["c1", "Conv2D", {"in_channels": 1, "out_channels": 1, "kernel_size": 1,
                                "stride": 1, "padding": 0}]] + _tail()
    layers[0][2]["padding"] = {"deep": depth}  # replaced by raw JSON below
    return f"padding nested {depth} deep", img, layers


def _weight_shape(ltype: str, hp: dict):
    """The weight shape the hyperparameters imply, or (1, 1) when they imply none that a
    payload can hold (the file is then inconsistent on purpose)."""
    try:
        if ltype == "Dense":
            shape = (hp["out_features"], hp["in_features"])
        else:
            k = hp["kernel_size"]
            shape = (hp["out_channels"], hp["in_channels"], k, k)
        if all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 2**32
               for v in shape) and math.prod(shape) <= 2**28:
            return shape
    except (KeyError, TypeError):
        pass
    return (1, 1)


def _arch_json(name: str, shape, layers: list, payload_sizes: list) -> str:
    rows = [[ln, lt, hp, size] for (ln, lt, hp), size in zip(layers, payload_sizes)]
    return _dumps({"name": name, "input_shape": shape, "layers": rows})


def write_crafted_compressed(path: Path, shape, layers: list) -> Path:
    payloads = []
    for _, ltype, hp in layers:
        if ltype in ("Dense", "Conv2D"):
            payloads.append(zero_payload(_weight_shape(ltype, hp)))
        else:
            payloads.append(b"")
    arch = _arch_json("crafted", shape, layers, [len(p) for p in payloads])
    return write_container(path, arch, b"".join(payloads))


def _dumps(obj) -> str:
    """Compact JSON (NaN allowed); ``{"deep": N}`` becomes N nested lists, deeper than
    json.dumps can write."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=True)
    m = re.search(r'\{"deep":(\d+)\}', text)
    if m:
        depth = int(m.group(1))
        text = text.replace(m.group(0), "[" * depth + "]" * depth)
    return text


def _benign(ltype: str, hp: dict):
    """(hyperparameters, params) of a small layer with the parameter shapes ``hp`` implies."""
    import numpy as np

    if ltype in ("Dense", "Conv2D"):
        w = _weight_shape(ltype, hp)
        if math.prod(w) > 2**22 or w == (1, 1) and ltype == "Conv2D":
            raise ValueError(f"no small dense file for {ltype} {hp}")
        params = {"W": np.zeros(w, np.float32), "b": np.zeros(w[0], np.float32)}
        if ltype == "Dense":
            return {"in_features": w[1], "out_features": w[0]}, params
        return {"in_channels": w[1], "out_channels": w[0], "kernel_size": w[2]}, params
    if ltype in ("MaxPool2D", "AvgPool2D", "LocalResponseNorm"):
        return {"size": 1}, None
    if ltype == "Dropout":
        return {"rate": 0.5}, None
    return {}, None


def write_crafted_dense(path: Path, shape, layers: list) -> Path:
    """A dense model file of ``layers``: a small all-zero model whose layers have the same
    parameter shapes under benign hyperparameters is saved by dc_engine, then the
    hyperparameters and the input shape in the file are rewritten (only the layer
    constructors and the reader's checks see the absurd values)."""
    import h5py
    import numpy as np

    from dc_engine.core.layers import build_layer
    from dc_engine.core.model import Model
    from dc_engine.io.dense import save

    built = []
    for ln, lt, hp in layers:
        bhp, params = _benign(lt, hp)
        built.append(build_layer(lt, bhp, ln, params))
    first = built[0]
    if first.type_name == "Conv2D":
        base = (first.in_channels, first.kernel_size, first.kernel_size)
    elif first.type_name in ("Flatten", "Dropout", "ReLU", "Dense"):
        dense = next(b for b in built if b.type_name == "Dense")
        base = (dense.in_features,)
    else:
        dense = next(b for b in built if b.type_name == "Dense")
        base = (dense.in_features, 28, 28)
    model = Model(built, base, name="crafted")
    save(model, path)
    hps = {ln: hp for ln, _, hp in layers}
    with h5py.File(path, "r+") as f:
        for key, g in f["layers"].items():
            del g.attrs["hyperparameters"]
            str_attr(g, "hyperparameters", _dumps(hps[key.split("_", 1)[1]]))
        big = any(v >= 2**63 for v in shape)
        f.attrs["input_shape"] = np.array(shape, dtype=np.uint64 if big else np.int64)
    return path


def gen_crafted(ctx: Ctx, rng: random.Random, index: int, item=None) -> Case:
    d = ctx.case_dir("crafted", index)
    what, shape, layers = crafted_spec(rng)
    dense = rng.random() < 0.3 and not what.startswith(("padding nested", "many"))
    path = d / ("crafted.h5" if dense else "crafted.dc.h5")
    try:
        (write_crafted_dense if dense else write_crafted_compressed)(path, shape, layers)
    except Exception as exc:  # the dense writer cannot build every shape: fall back
        if not dense:
            raise
        path.unlink(missing_ok=True)
        path = d / "crafted.dc.h5"
        write_crafted_compressed(path, shape, layers)
        what += f" (dense writer: {type(exc).__name__})"
    cmd = "eval" if path.name == "crafted.h5" or rng.random() < 0.6 else "inspect"
    if cmd == "eval":
        # on the 64 test images of the tiny dataset: a network within the limits may still
        # need much compute per image (by design: VGG-16 needs 15 GFLOP), and the case must
        # tell a hang from a long evaluation of 10,000 images
        argv = ["eval", str(path), "--json", "--threads", "1", "--data", str(ctx.tiny)]
        if rng.random() < 0.3:
            argv += ["--batch-size", str(rng.choice([1, 7, 10**6]))]
        compare = "zero"
    else:
        argv, compare = ["inspect", str(path), "--json"], "json"
    kind = "dense" if path.name == "crafted.h5" else "compressed"
    return Case("crafted", index, f"{kind}: {what}", argv, "either", compare,
                inputs=[str(path)], notes=f"{kind} file, all-zero weights: {what}",
                timeout=ctx.timeout("crafted"), dir=str(d))


# ---------------------------------------------------------------------------- wrong kind

NOT_MODELS = ["empty", "foreign-dataset", "dense-attrs-only", "compressed-attrs-only",
              "vlen-format", "chunked-payload", "external-payload", "soft-link-payload",
              "external-link-payload", "architecture-dataset", "deep-architecture",
              "huge-attribute", "dense-chunked-weights"]


def write_not_model(kind: str, path: Path) -> Path:
    """An HDF5 file that is not a dc-engine model, in one of :data:`NOT_MODELS` ways."""
    import h5py
    import numpy as np

    arch = json.dumps({"name": "x", "input_shape": [784], "layers": [
        ["fc", "Dense", {"in_features": 784, "out_features": 10}, 4096]]})
    big = kind in ("huge-attribute", "deep-architecture")  # attributes over 64 KiB
    with h5py.File(path, "w", libver="latest" if big else None) as f:
        if kind == "empty":
            return path
        if kind == "foreign-dataset":
            f["x"] = np.arange(1000)
            f.attrs["format"] = "something-else"
            return path
        if kind == "vlen-format":
            f.attrs["format"] = "dc-engine"  # h5py writes str as variable-length
            f.attrs["kind"] = "compressed"
            return path
        str_attr(f, "format", "dc-engine")
        if kind == "dense-attrs-only":
            str_attr(f, "kind", "dense")
            f.attrs["version"] = np.int64(2)
            return path
        str_attr(f, "kind", "compressed")
        f.attrs.create("version", np.uint8(1))
        if kind == "compressed-attrs-only":
            return path
        if kind == "architecture-dataset":
            f["architecture"] = np.frombuffer(arch.encode(), np.uint8)
            return path
        if kind == "deep-architecture":
            str_attr(f, "architecture", "[" * 200000 + "]" * 200000)
            return path
        if kind == "huge-attribute":
            str_attr(f, "architecture", arch)
            f.attrs["junk"] = np.zeros(8 * MiB, np.uint8)
            f.create_dataset("payload", data=np.zeros(4096, np.uint8))
            return path
        str_attr(f, "architecture", arch)
        if kind == "chunked-payload":  # a filter bomb: gzip'd chunks far larger than stored
            f.create_dataset("payload", shape=(4096,), dtype=np.uint8, chunks=(4096,),
                             compression="gzip")
        elif kind == "external-payload":
            f.create_dataset("payload", shape=(4096,), dtype=np.uint8,
                             external=[("/dev/zero", 0, h5py.h5f.UNLIMITED)])
        elif kind == "soft-link-payload":
            f.create_dataset("real", data=np.zeros(4096, np.uint8))
            f["payload"] = h5py.SoftLink("/real")
        elif kind == "external-link-payload":
            f["payload"] = h5py.ExternalLink("/dev/zero", "/x")
        elif kind == "dense-chunked-weights":
            f.attrs["kind"] = np.array(b"dense", dtype=h5py.string_dtype("utf-8", 5))
            g = f.create_group("layers").create_group("0_fc")
            g.create_dataset("W", shape=(10**5, 10**4), dtype=np.float32, chunks=(1000, 1000),
                             compression="gzip")
    return path


def wrong_kind_list() -> list[tuple]:
    items = []
    for m in ("lenet-300-100", "lenet-5"):
        items += [("encode", f"{m}.dc.h5", "either"), ("encode", f"{m}.h5", "refuse"),
                  ("encode", f"{m}.pruned.h5", "refuse"), ("quantize", f"{m}.dc.h5", "refuse"),
                  ("prune", f"{m}.dc.h5", "refuse"), ("prune", f"{m}.quantized.h5", "refuse"),
                  ("compress", f"{m}.dc.h5", "refuse"), ("inspect", f"{m}.h5", "refuse"),
                  ("inspect", f"{m}.quantized.h5", "refuse"),
                  ("import", f"{m}.h5", "refuse"), ("sensitivity", f"{m}.dc.h5", "refuse"),
                  ("bits-sweep", f"{m}.dc.h5", "refuse")]
    items += [("eval", "onnx", "refuse"), ("inspect", "onnx", "refuse"),
              ("import", "random-bytes", "refuse"), ("import", "empty-file", "refuse")]
    items += [(cmd, f"not-model:{k}", "refuse") for k in NOT_MODELS
              for cmd in ("eval", "inspect", "export")]
    return items


def gen_wrong_kind(ctx: Ctx, rng: random.Random, index: int, item) -> Case:
    cmd, what, expect = item
    d = ctx.case_dir("wrong-kind", index)
    if what.startswith("not-model:"):
        path = write_not_model(what.split(":", 1)[1], d / "model.h5")
    elif what == "onnx":
        path = d / "model.onnx"
        shutil.copy(ctx.shared / "ref-lenet-300-100.dc.h5.onnx", path)
    elif what == "random-bytes":
        path = d / "net.onnx"
        path.write_bytes(rng.randbytes(rng.choice([1, 100, 10000])))
    elif what == "empty-file":
        path = d / "net.onnx"
        path.write_bytes(b"")
    else:
        path = d / what
        shutil.copy(_model(what), path)
    train = ["--threads", "1", "--no-progress", "--data", str(ctx.tiny)]
    argv = {"encode": ["encode", str(path), "--out", str(d / "o.dc.h5")],
            "quantize": ["quantize", str(path), "--out", str(d / "o.h5"), *train],
            "prune": ["prune", str(path), "--out", str(d / "o.h5"), *train],
            "compress": ["compress", str(path), "--out", str(d / "o.dc.h5"), *train],
            "inspect": ["inspect", str(path)],
            "import": ["import", str(path), "--out", str(d / "o.h5")],
            "eval": ["eval", str(path), "--threads", "1"],
            "export": ["export", str(path), "--out", str(d / "o.onnx")],
            "sensitivity": ["sensitivity", str(path), "--out", str(d / "scan"), "--threads",
                            "1", "--data", str(ctx.tiny)],
            "bits-sweep": ["bits-sweep", str(path), "--out", str(d / "sweep"), "--threads", "1",
                           "--data", str(ctx.tiny)]}[cmd]
    return Case("wrong-kind", index, f"{cmd} of {what}", argv, expect, inputs=[str(path)],
                timeout=ctx.timeout("wrong-kind"), dir=str(d))


# ---------------------------------------------------------------------------- config

TOML_VALUES = ["0", "-1", "1", "2", "17", "1000000000", "9223372036854775807",
               "-9223372036854775808", "1e308", "-1e308", "1e-320", "nan", "+inf", "-inf",
               "-0.0", "0.5", "1.5", "true", "false", '""', '"x"', '"auto"', '"huffman"',
               '"fixed"', '"' + "x" * 10000 + '"', '"\\u0000"', "[]", "[1, 2]", '["a"]',
               "[[1], [2]]", "{}", "{ a = 1 }", "1979-05-27T07:32:00Z", "07:32:00",
               "0x7fffffff", "0o777", "0b1"]
TOML_KEYS = ["rounds", "lr_scale", "val_size", "seed", "epochs", "lr", "lr_policy", "gamma",
             "step_epochs", "kept", "init", "index_bits", "coder", "max_code_length",
             "batch_size", "momentum", "weight_decay", "power", "augment_shift", "ip1", "conv1",
             "bogus", "layers", "bits", "retrain", "finetune", "coder_options"]


def mutate_toml(text: str, rng: random.Random) -> tuple[bytes, list[str]]:
    lines = text.splitlines()
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        m = rng.choice(["set", "set", "set", "add-key", "add-table", "delete", "duplicate",
                        "garble", "truncate", "deep-array", "deep-table", "dotted", "layer",
                        "kept"])
        assigns = [i for i, l in enumerate(lines) if re.match(r"\s*[\w.]+\s*=", l)]
        tables = [i for i, l in enumerate(lines) if l.startswith("[")]
        if m == "set" and assigns:
            i = rng.choice(assigns)
            key = lines[i].split("=")[0].strip()
            value = rng.choice(TOML_VALUES)
            lines[i] = f"{key} = {value}"
            done.append(f"set {key} = {value[:30]}")
        elif m == "add-key" and tables:
            i = rng.choice(tables)
            key, value = rng.choice(TOML_KEYS), rng.choice(TOML_VALUES)
            lines.insert(i + 1, f"{key} = {value}")
            done.append(f"add {key} = {value[:30]} in {lines[i]}")
        elif m == "add-table":
            t = rng.choice(["[bogus]", "[prune.bogus]", "[encode.layers.nope]",
                            "[quantize.bits.nope]", "[prune.layers.nope]", "[train]",
                            "[[prune]]", "[encode.coder_options]"])
            lines += [t, f"{rng.choice(TOML_KEYS)} = {rng.choice(TOML_VALUES)}"]
            done.append(f"add table {t}")
        elif m == "delete" and lines:
            i = rng.randrange(len(lines))
            done.append(f"delete line {lines[i][:40]!r}")
            del lines[i]
        elif m == "duplicate" and assigns:
            i = rng.choice(assigns)
            lines.insert(i + 1, lines[i])
            done.append(f"duplicate {lines[i][:40]!r}")
        elif m == "garble" and lines:
            i = rng.randrange(len(lines))
            s = lines[i]
            pos = rng.randrange(len(s) + 1)
            ch = rng.choice(["[", "]", '"', "=", "\x00", "\x1b", "\udcff", "\t", "\\", "#"])
            lines[i] = s[:pos] + ch + s[pos + 1:]
            done.append(f"garble line {i} with {ch!r}")
        elif m == "truncate":
            keep = rng.randrange(len(lines) + 1)
            lines = lines[:keep]
            done.append(f"truncate to {keep} lines")
        elif m == "deep-array":
            depth = rng.choice([50, 1000, 100000])
            lines.insert(0, f"deep = {'[' * depth}{']' * depth}")
            done.append(f"array nested {depth} deep")
        elif m == "deep-table":
            depth = rng.choice([50, 1000, 100000])
            lines.insert(0, f"deep = {'{ a = ' * depth}1{' }' * depth}")
            done.append(f"inline table nested {depth} deep")
        elif m == "dotted":
            n = rng.choice([100, 10000])
            lines.append(".".join(["a"] * n) + " = 1")
            done.append(f"dotted key of {n} parts")
        elif m == "layer":
            tables_l = [i for i in tables if ".layers." in lines[i] or "bits" in lines[i]]
            if tables_l:
                i = rng.choice(tables_l)
                lines[i] = re.sub(r"\.(\w+)\]$", ".nope]", lines[i])
                done.append(f"rename table to {lines[i]}")
        elif m == "kept":
            value = rng.choice(["0", "0.0", "1", "1.0000001", "-0.1", "1e-300", "nan"])
            lines = [re.sub(r"^kept = .*", f"kept = {value}", l) if rng.random() < 0.5 else l
                     for l in lines]
            done.append(f"kept = {value}")
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.08:
        return rng.randbytes(rng.randrange(1, 2000)), ["random bytes"]
    if rng.random() < 0.05:
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogateescape"), done + ["BOM"]
    if rng.random() < 0.05:
        return text.replace("\n", "\r\n").encode("utf-8", "surrogateescape"), done + ["CRLF"]
    return text.encode("utf-8", "surrogateescape"), done or ["unchanged"]


def gen_config(ctx: Ctx, rng: random.Random, index: int, item=None) -> Case:
    d = ctx.case_dir("config", index)
    cmd = rng.choice(["encode"] * 4 + ["quantize"] * 2 + ["prune"] * 3 + ["compress"])
    arch = "lenet-300-100" if rng.random() < 0.85 else "lenet-5"
    model = {"prune": f"{arch}.h5", "quantize": f"{arch}.pruned.h5",
             "encode": f"{arch}.quantized.h5", "compress": f"{arch}.h5"}[cmd]
    raw, what = mutate_toml((CONFIGS / f"{arch}.toml").read_text(), rng)
    cfg = d / "config.toml"
    cfg.write_bytes(raw)
    argv = [cmd, str(_model(model)), "--config", str(cfg), "--out",
            str(d / ("o.dc.h5" if cmd in ("encode", "compress") else "o.h5")), "--force"]
    if cmd != "encode":
        argv += ["--threads", "1", "--no-progress", "--data", str(ctx.tiny)]
    return Case("config", index, f"{cmd} {arch}: {'; '.join(what)[:160]}", argv, "config",
                inputs=[str(cfg)], timeout=ctx.timeout("config"), config=str(cfg), arch=arch,
                dir=str(d))


# ---------------------------------------------------------------------------- cmdline

BAD_INTS = ["-1", "0", "-2147483648", "100000", "10**6", "99999999999999999999", "abc", "",
            " 1", "1.5", "1e3", "0x10", "nan", "٣"]
BAD_FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e308", "1e-320", "abc", "", "10"]


def weird_path(d: Path, rng: random.Random, exists: bool) -> tuple[str, str]:
    """A path with an odd name; with ``exists``, a copy of a shipped model is put there."""
    name = rng.choice(["a\nb", "a\rb", "a\x1b[31mred", "tab\there", "bell\x07", "nl\n\n\n",
                       "\udcff\udcfe", "sp ace", "-dash", "x" * 255, "é", "a;b$(c)"])
    path = d / f"{name}.dc.h5"
    if exists:
        try:
            shutil.copy(_model("lenet-300-100.dc.h5"), path)
        except OSError:
            exists = False
    return str(path), repr(name)


POISON = {
    "train": [["--epochs", "-1"], ["--batch-size", "0"], ["--lr", "nan"], ["--lr", "-1"],
              ["--val-size", "-1"], ["--val-size", "1000000000"], ["--threads", "0"],
              ["--data", "/nonexistent/fuzz"], ["--augment-shift", "-1"],
              ["--lr-policy", "bogus"], ["--momentum", "nan"]],
    "stage": [["--threads", "0"], ["--threads", "-1"], ["--data", "/nonexistent/fuzz"],
              ["--config", "/nonexistent/fuzz.toml"]],
    "study": [["--threads", "0"], ["--data", "/nonexistent/fuzz"], ["--val-size", "-1"]],
}


def gen_cmdline(ctx: Ctx, rng: random.Random, index: int, item=None) -> Case:
    d = ctx.case_dir("cmdline", index)
    dc = _model("lenet-300-100.dc.h5")
    quant = _model("lenet-300-100.quantized.h5")
    t = rng.choice(["eval-weird-model", "eval-missing-weird", "eval-options", "encode-weird-out",
                    "out-dir", "out-missing-folder", "out-readonly", "training-poison",
                    "random", "long-path", "no-command"])
    expect, compare, ref, out, inputs = "refuse", None, None, None, []
    if t == "eval-weird-model":
        path, name = weird_path(d, rng, exists=True)
        argv = ["eval", path, "--json", "--threads", "1"]
        expect, compare, ref, what = "same", "eval", ctx.eval_ref(dc), f"model named {name}"
        inputs = [path]
    elif t == "eval-missing-weird":
        path, name = weird_path(d, rng, exists=False)
        cmd = rng.choice(["eval", "inspect", "export", "encode"])
        argv = [cmd, path]
        what = f"{cmd} of a missing file named {name}"
    elif t == "eval-options":
        # valid or not (--threads 100000 may be capped rather than refused), a success must
        # give the reference's numbers: threads, batch size and a copy of the data do not
        # change them
        opts = []
        for opt in rng.sample(["--threads", "--batch-size", "--data"], rng.randrange(1, 4)):
            if opt == "--data":
                v = rng.choice([str(ctx.mnist_copy), "/nonexistent", str(dc), "", "/"])
            else:
                v = rng.choice(BAD_INTS + ["1", "2", "7", "1000"])
            opts += [opt, v]
        argv = ["eval", str(dc), "--json", *opts]
        expect, compare, ref = "same", "eval", ctx.eval_ref(dc)
        what = f"eval {' '.join(opts)!r}"
    elif t == "encode-weird-out":
        path, name = weird_path(d, rng, exists=False)
        argv = ["encode", str(quant), "--out", path]
        expect, compare, ref, out = "same", "file", ctx.encode_ref(quant), path
        what = f"encode --out named {name}"
    elif t == "out-dir":
        target = d / "existing-dir.onnx"
        target.mkdir()
        cmd = rng.choice(["export", "encode", "import", "prune"])
        src = {"export": dc, "encode": quant, "import": dc, "prune": _model("lenet-300-100.h5")}
        argv = [cmd, str(src[cmd]), "--out", str(target)]
        if rng.random() < 0.6:
            argv.append("--force")
        if cmd == "prune":
            argv += ["--threads", "1", "--no-progress", "--data", str(ctx.tiny)]
        what = f"{cmd} --out onto a directory"
    elif t == "out-missing-folder":
        cmd = rng.choice(["export", "encode", "train"])
        target = d / "missing" / "deeper" / "x.h5"
        argv = {"export": ["export", str(dc), "--out", str(target)],
                "encode": ["encode", str(quant), "--out", str(target)],
                "train": ["train", "lenet-300-100", "--out", str(target), "--threads", "1",
                          "--no-progress"]}[cmd]
        what = f"{cmd} --out into a missing folder"
    elif t == "out-readonly":
        ro = d / "ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
        argv = ["export", str(dc), "--out", str(ro / "x.onnx")]
        what = "export --out into a read-only folder"
        if ctx.is_root:
            return Case("cmdline", index, what + " (skipped: running as root, permissions "
                        "do not apply)", argv, "skip", dir=str(d))
    elif t == "training-poison":
        cmd = rng.choice(["train", "prune", "quantize", "compress", "sensitivity",
                          "bits-sweep"])
        group = "train" if cmd == "train" else "study" if cmd in (
            "sensitivity", "bits-sweep") else "stage"
        poison = rng.choice(POISON[group])
        if cmd == "bits-sweep" and poison[0] == "--val-size":
            poison = ["--bits", rng.choice(["0", "17", "-1", "abc"])]
        pos = {"train": "lenet-300-100", "prune": str(_model("lenet-300-100.h5")),
               "quantize": str(_model("lenet-300-100.pruned.h5")),
               "compress": str(_model("lenet-300-100.h5")),
               "sensitivity": str(_model("lenet-300-100.h5")),
               "bits-sweep": str(_model("lenet-300-100.pruned.h5"))}[cmd]
        argv = [cmd, pos, "--out", str(d / ("o" if cmd in ("sensitivity", "bits-sweep")
                                            else "o.h5"))]
        if "--threads" not in poison:
            argv += ["--threads", "1"]
        if cmd not in ("sensitivity", "bits-sweep"):
            argv.append("--no-progress")
        if "--data" not in poison:
            argv += ["--data", str(ctx.tiny)]
        argv += poison
        what = f"{cmd} {' '.join(poison)}"
    elif t == "long-path":
        n = rng.choice([300, 5000, 100000])
        path = str(d / ("y" * n)) if rng.random() < 0.5 else "/" + "/".join(["z" * 200] * (
            n // 200))
        argv = [rng.choice(["eval", "inspect", "export"]), path]
        what = f"path of {len(path)} characters"
    elif t == "no-command":
        argv = rng.choice([[], ["--bogus"], ["evaluate", str(dc)], ["-v"], ["eval"]])
        what = f"argv {argv!r:.60}"
    else:  # random: a command with random options and values
        cmd = rng.choice(["eval", "inspect", "export", "encode", "import"])
        pos = rng.choice([str(dc), str(quant), "/nonexistent", "", "-", "--"])
        argv = [cmd, pos]
        for _ in range(rng.randrange(1, 4)):
            opt = rng.choice(["--threads", "--batch-size", "--json", "--out", "--force",
                              "--config", "--data", "--input-shape", "--name", "--bogus", "-h"])
            argv.append(opt)
            if opt in ("--threads", "--batch-size"):
                argv.append(rng.choice(BAD_INTS))
            elif opt in ("--out", "--config", "--data"):
                argv.append(rng.choice([str(d / "o.x"), "", "/", str(d), "/nonexistent/a"]))
            elif opt == "--input-shape":
                argv.append(rng.choice(["0", "-1", "1,2", "3x224x224", "x", "1" * 30, ""]))
            elif opt == "--name":
                argv.append(rng.choice(["", "\n", "x\ny", "a" * 10000]))
        expect, what = "either", "random options"
        if argv[:2] == ["eval", str(dc)] and "--json" in argv and "-h" not in argv:
            expect, compare, ref = "same", "eval", ctx.eval_ref(dc)
    return Case("cmdline", index, f"{t}: {what}", argv, expect, compare, ref, out,
                inputs=inputs, timeout=ctx.timeout("cmdline"), dir=str(d))


# ---------------------------------------------------------------------------- dataset

DATASET_MUTATIONS = {
    # mutation: expectation (refuse, same: neutral rewrite, either: a changed but valid set)
    "recompress": "same", "raw": "same", "magic": "refuse", "dtype": "refuse",
    "ndim": "refuse", "dims": "refuse", "truncate": "refuse", "append": "refuse",
    "pixels": "either", "labels-range": "either", "labels-int8": "refuse",
    "labels-float": "refuse", "drop-items": "refuse", "reshape-same-size": "either",
    "reshape-other-size": "refuse", "extra-axis": "refuse", "gz-flip": "same",
    "gz-truncate": "refuse", "gz-trailing": "same", "empty": "refuse", "zero-items": "refuse",
}


def mutate_idx(raw: bytes, role: str, rng: random.Random, kind: str) -> tuple[bytes, bool, str]:
    """(new raw bytes, gzip them?, description) for an IDX file of ``role``."""
    ndim = raw[3]
    dims = list(struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim]))
    head = 4 + 4 * ndim
    body = bytearray(raw[head:])
    images = role.endswith("images")
    if kind == "raw":
        return raw, False, "stored uncompressed"
    if kind == "magic":
        b = bytearray(raw)
        b[rng.randrange(2)] = rng.randrange(1, 256)
        return bytes(b), True, f"magic {bytes(b[:4]).hex()}"
    if kind == "dtype":
        code = rng.choice([0x00, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF])
        return raw[:2] + bytes([code]) + raw[3:], True, f"dtype code {code:#04x}"
    if kind == "ndim":
        n = rng.choice([0, 2, 4, 5, 255] if images else [0, 2, 3, 255])
        return raw[:3] + bytes([n]) + raw[4:], True, f"ndim {n}"
    if kind == "dims":
        i = rng.randrange(ndim)
        new = rng.choice([0, 1, dims[i] - 1, dims[i] + 1, 2**31, 2**32 - 1])
        dims[i] = new
        return idx_header(raw[2], dims) + bytes(body), True, f"dim {i} = {new}"
    if kind == "truncate":
        n = rng.randrange(len(raw))
        return raw[:n], True, f"truncated to {n} bytes"
    if kind == "append":
        n = rng.choice([1, 784, 4096])
        return raw + rng.randbytes(n), True, f"{n} bytes appended"
    if kind == "pixels" and images:
        for _ in range(rng.choice([1, 100, 10000])):
            body[rng.randrange(len(body))] = rng.randrange(256)
        return raw[:head] + bytes(body), True, "random pixels changed"
    if kind in ("labels-range", "pixels"):
        if images:
            return raw, True, "unchanged"
        for _ in range(rng.choice([1, 10])):
            body[rng.randrange(len(body))] = rng.randrange(10, 256)
        return raw[:head] + bytes(body), True, "labels of 10..255"
    if kind in ("labels-int8", "labels-float"):
        if kind == "labels-int8":
            vals = bytes((x if rng.random() < 0.9 else 0xFF) for x in body)
            return raw[:2] + b"\x09" + raw[3:head] + vals, True, "labels int8 with -1"
        floats = struct.pack(f">{len(body)}f", *body)
        return raw[:2] + b"\x0d" + raw[3:head] + floats, True, "labels float32"
    if kind == "drop-items":
        k = rng.randrange(1, dims[0])
        dims[0] -= k
        item = math.prod(dims[1:]) if images else 1
        return idx_header(raw[2], dims) + bytes(body[:dims[0] * item]), True, f"{k} dropped"
    if kind == "zero-items":
        dims[0] = 0
        return idx_header(raw[2], dims), True, "no items"
    if kind in ("reshape-same-size", "reshape-other-size", "extra-axis"):
        if not images:
            return raw, True, "unchanged"
        if kind == "reshape-same-size":
            dims = [dims[0], 14, 56]
        elif kind == "reshape-other-size":
            dims = [dims[0], 27, 29]
            body = body[:dims[0] * 27 * 29]
        else:
            dims = [dims[0], 28, 28, 1]
        return idx_header(raw[2], dims) + bytes(body), True, f"shape {dims}"
    if kind == "empty":
        return b"", rng.random() < 0.5, "empty file"
    return raw, True, kind  # recompress / gz-*: handled on the gzip bytes


def gen_dataset(ctx: Ctx, rng: random.Random, index: int, item=None) -> Case:
    d = ctx.case_dir("dataset", index)
    data = d / "data"
    shutil.copytree(ctx.tiny, data, symlinks=True)
    role = rng.choice(list(MNIST_FILES))
    stem = MNIST_FILES[role]
    kind = rng.choice(list(DATASET_MUTATIONS))
    expect = DATASET_MUTATIONS[kind]
    raw, gz, what = mutate_idx(ctx.tiny_raw(stem), role, rng, kind)
    if what == "unchanged":
        expect = "same"
    elif what == "dtype code 0x09" and role.endswith("labels"):
        expect = "either"  # int8 labels of 0..9 are valid
    (data / f"{stem}.gz").unlink()
    if not gz:
        (data / stem).write_bytes(raw)
    else:
        blob = gzip.compress(raw, compresslevel=rng.choice([1, 6, 9]),
                             mtime=rng.choice([0, 123456789]))
        if kind == "gz-flip":
            b = bytearray(blob)
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
            blob, what = bytes(b), f"gzip bit flip at byte {pos}"
        elif kind == "gz-truncate":
            n = rng.randrange(len(blob))
            blob, what = blob[:n], f"gzip truncated to {n} bytes"
        elif kind == "gz-trailing":
            junk = rng.choice([bytes(8), rng.randbytes(100), blob])
            blob, what = blob + junk, f"{len(junk)} bytes after the gzip stream"
        elif kind == "recompress":
            what = "recompressed (other level / mtime)"
        (data / f"{stem}.gz").write_bytes(blob)
    model = _model("lenet-300-100.dc.h5" if rng.random() < 0.8 else "lenet-5.dc.h5")
    argv = ["eval", str(model), "--json", "--threads", "1", "--data", str(data)]
    compare = "eval" if expect == "same" else "json"
    return Case("dataset", index, f"{stem}: {kind}: {what}", argv, expect, compare,
                ctx.eval_ref(model, ctx.tiny) if expect == "same" else None,
                inputs=[str(data)], notes=f"the small MNIST subset with {stem}: {what}",
                timeout=ctx.timeout("dataset"), dir=str(d))


GENERATORS = {"special": (gen_special, special_list), "bomb": (gen_bomb, None),
              "damage": (gen_damage, None), "crafted": (gen_crafted, None),
              "wrong-kind": (gen_wrong_kind, wrong_kind_list), "config": (gen_config, None),
              "cmdline": (gen_cmdline, None), "dataset": (gen_dataset, None)}


# ============================================================================ the run


def plan(seed: int, n: int, classes: list[str]) -> list[tuple[str, int]]:
    """(class, index) of ``n`` cases: each class gets its share of :data:`WEIGHTS`; the
    order is shuffled by ``seed`` so a partial (--minutes) run covers every class."""
    total = sum(WEIGHTS[c] for c in classes)
    quota = {c: int(n * WEIGHTS[c] / total) for c in classes}
    for c in sorted(classes, key=lambda c: -WEIGHTS[c])[:n - sum(quota.values())]:
        quota[c] += 1
    items = [(c, k) for c in classes for k in range(quota[c])]
    random.Random(seed).shuffle(items)
    return items


def make_case(ctx: Ctx, cls: str, k: int) -> Case:
    gen, enum = GENERATORS[cls]
    rng = random.Random(f"{ctx.seed}:{cls}:{k}")
    item = None
    if enum is not None:
        items = enum()
        random.Random(f"{ctx.seed}:{cls}").shuffle(items)
        item = items[k % len(items)]
    return gen(ctx, rng, k, item)


def save_reproducer(case: Case, run: Run | None, run_id: str) -> dict:
    """Copy the case's inputs under /tmp/fuzz-failures and rewrite its argv to them."""
    dest = FAILURES / run_id / case.id.replace(":", "-")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    argv = list(case.argv)
    saved = []
    for src in case.inputs:
        s = Path(src)
        target = dest / (s.name if len(s.name) < 200 else "input")
        try:
            if s.is_symlink() or not (s.is_file() or s.is_dir()):
                saved.append(f"{src} is special: {case.notes}")
                continue
            if s.is_dir():
                shutil.copytree(s, target, symlinks=True)
            else:
                shutil.copy(s, target)
        except OSError as exc:
            saved.append(f"{src}: not copied ({exc})")
            continue
        saved.append(str(target))
        argv = [a.replace(src, str(target)) for a in argv]
    if run is not None:
        (dest / "stderr.txt").write_bytes(run.stderr[-100_000:])
        (dest / "stdout.txt").write_bytes(run.stdout[-100_000:])
    (dest / "argv.json").write_text(json.dumps(argv) + "\n")
    return {"saved": saved, "repro_argv": argv, "folder": str(dest)}


def fmt_argv(argv) -> str:
    return "dc-engine " + " ".join(repr(a) if not re.fullmatch(r"[\w./:=,+-]+", a) else a
                                   for a in argv)


def summary_table(records: list[dict], classes: list[str]) -> str:
    rows = [("class", "cases", "refused", "identical", "accepted", "acc.-timeout", "skipped",
             "failures", "max RSS MB")]
    total = Counter()
    for c in classes + ["reference"]:
        rs = [r for r in records if r["cls"] == c]
        if not rs:
            continue
        v = Counter(r["verdict"] for r in rs)
        rss = max((r.get("maxrss_mb") or 0 for r in rs), default=0)
        row = (c, len(rs), v["refused"], v["identical"], v["accepted"], v["accepted-timeout"],
               v["skipped"], v["failure"], rss)
        total.update(dict(zip(rows[0][1:-1], row[1:-1])))
        total["max RSS MB"] = max(total["max RSS MB"], rss)
        rows.append(row)
    rows.append(("total", *(total[k] for k in rows[0][1:])))
    return "\n".join(f"{r[0]:<12}" + "".join(f"{x:>13}" for x in r[1:]) for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=300, help="number of cases (default 300)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="run until this many minutes have passed (the plan is then large)")
    ap.add_argument("--classes", nargs="+", choices=CLASSES, default=CLASSES)
    ap.add_argument("--only", nargs="+", metavar="CLASS:K", default=None,
                    help="run these cases only (ids as printed, e.g. crafted:3)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--memory-gib", type=float, default=MEMORY_LIMIT / GiB,
                    help="RLIMIT_AS of every case in GiB (default 4)")
    ap.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every class timeout (slow or busy machine)")
    ap.add_argument("--subprocess", action="store_true",
                    help="run the real dc-engine console script (fork + exec) per case")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--verbose", action="store_true", help="print every case")
    args = ap.parse_args(argv)

    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    import dc_engine  # noqa: F401  (the fork server imports the library once)
    from dc_engine.app import cli, jobs  # noqa: F401
    with contextlib.suppress(ImportError):
        import dc_engine.io.onnx  # noqa: F401

    t_start = time.monotonic()
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-seed{args.seed}"
    work = Path(tempfile.mkdtemp(prefix="fuzz-", dir="/tmp"))
    runner = Runner(args.jobs, int(args.memory_gib * GiB), args.subprocess)
    ctx = Ctx(work, runner, args.seed, args.timeout_scale)
    log = print
    if args.only:
        items = [(s.split(":")[0], int(s.split(":")[1])) for s in args.only]
    else:
        n = args.cases if args.minutes is None else max(args.cases, 100_000)
        items = plan(args.seed, n, args.classes)
    stop_at = None if args.minutes is None else t_start + 60 * args.minutes
    print(f"fuzz: {len(items) if args.minutes is None else 'until time'} cases, seed "
          f"{args.seed}, {'subprocess' if args.subprocess else 'fork server'}, "
          f"{args.jobs} jobs, RLIMIT_AS {args.memory_gib:g} GiB, work folder {work}")

    records: list[dict] = []
    failures: list[dict] = []
    ctx.export_ref(_model("lenet-300-100.dc.h5"))  # also the ONNX input of wrong-kind
    failures += ctx.run_refs(list(ctx.ref_cases), log)
    batch = max(8, 4 * args.jobs)
    pos = 0
    try:
        while pos < len(items) and (stop_at is None or time.monotonic() < stop_at):
            chunk = items[pos:pos + batch]
            pos += len(chunk)
            cases = []
            for cls, k in chunk:
                try:
                    cases.append(make_case(ctx, cls, k))
                except Exception as exc:  # a generator bug must not stop the run
                    log(f"generator error in {cls}:{k}: {type(exc).__name__}: {exc}")
                    records.append({"id": f"{cls}:{k}", "cls": cls, "verdict": "skipped",
                                    "detail": f"generator error: {exc!r}"[:300]})
            failures += ctx.run_refs([c.ref for c in cases], log)
            todo = [c for c in cases if c.expect != "skip"]
            for c in cases:
                if c.expect == "skip":
                    records.append({"id": c.id, "cls": c.cls, "name": c.name, "argv": c.argv,
                                    "verdict": "skipped", "detail": c.name})

            def done(i, run, todo=todo):
                c = todo[i]
                verdict, detail = judge(c, run, ctx)
                rec = {"id": c.id, "cls": c.cls, "name": c.name, "argv": c.argv,
                       "verdict": verdict, "detail": detail, "rc": run.rc,
                       "seconds": round(run.seconds, 2), "maxrss_mb": round(run.maxrss_mb)}
                if verdict == "failure":
                    rec["stderr"] = run.stderr.decode("utf-8", "replace")[-2000:]
                    rec.update(save_reproducer(c, run, run_id))
                    failures.append(rec)
                    log(f"FAIL {c.id} [{detail}] {c.name}\n     {fmt_argv(rec['repro_argv'])}")
                elif args.verbose:
                    log(f"{verdict:<16} {c.id:<14} {run.seconds:5.1f}s {c.name[:90]}")
                records.append(rec)
                if c.dir and not args.keep and verdict != "failure":
                    shutil.rmtree(c.dir, ignore_errors=True)

            # every case runs in its own folder: a default output lands there, not here
            runner.run_many([(c.argv, None, c.cwd or c.dir or str(work), c.timeout)
                             for c in todo], done, stop_at)
    except KeyboardInterrupt:
        log("interrupted: writing the results so far")
    finally:
        if not args.keep:
            for p in work.rglob("*"):  # read-only folders made by cmdline cases
                if p.is_dir() and not p.is_symlink():
                    with contextlib.suppress(OSError):
                        os.chmod(p, 0o755)
            shutil.rmtree(work, ignore_errors=True)

    table = summary_table(records + [f for f in failures if f["cls"] == "reference"],
                          args.classes)
    kinds = Counter((f["cls"], f["detail"].split(":")[0][:60]) for f in failures)
    print()
    print(table)
    if failures:
        print("\nfailures by class and kind:")
        for (cls, kind), count in sorted(kinds.items()):
            print(f"  {cls:<11} {count:>4}  {kind}")
    result = {"seed": args.seed, "cases": len(records), "mode": "subprocess" if
              args.subprocess else "fork", "jobs": args.jobs, "memory_limit": int(
                  args.memory_gib * GiB), "seconds": round(time.monotonic() - t_start, 1),
              "root": ctx.is_root, "summary": table, "failures": failures}
    # one line per case, without the argv (paths of a deleted work folder): failures keep it
    lines = [json.dumps({k: v for k, v in r.items() if k not in ("argv", "cls")}, default=str)
             for r in records]
    text = json.dumps(result, indent=1, default=str)
    text = text[:-2] + ',\n "records": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    json.loads(text)  # still one JSON document
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\n{len(failures)} failures in {len(records)} cases, "
          f"{time.monotonic() - t_start:.0f} s; results in {args.out}"
          + (f", inputs of failures in {FAILURES / run_id}" if failures else ""))
    return 1 if failures else 0


__all__ = ["Case", "Run", "Runner", "Ctx", "judge", "error_line_problem", "zero_payload",
           "write_container", "gzip_with_zeros", "make_special", "crafted_spec", "damage",
           "mutate_toml", "mutate_idx", "write_not_model"]

if __name__ == "__main__":
    sys.exit(main())
