"""The fused batch-1 path: a chain of compressed layers run by one kernel call, on one thread.

:class:`FusedChain` turns a sequential model whose weighted layers are all compressed
(``Dense`` and ``Conv2D``, plus ``MaxPool2D``, ``ReLU``, ``Flatten``, ``Dropout``) into the
operation table of :func:`kernels.chain_forward` and runs one sample through it: no Python
between layers, no thread pool. For a big network (:data:`PARALLEL_WORK`) the same program
can also run with each large operation split over Numba's threads
(``kernels.chain_forward_parallel``, the same results bit for bit). :func:`choose`
decides, per model and machine, whether a batch of one takes the fused path, its parallel
variant or the per-layer path (which may split a product over threads): by measuring them
(:func:`calibrate`) wherever they differ in more than Python overhead, and remembering the
answer per CPU in a small JSON file (:func:`calibration_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numba
import numpy as np

from .. import kernels
from .._files import write_json
from .._version import __version__
from ..kernels import chain as ops_
from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, is_backend

_WORDS = (np.dtype(np.uint8), np.dtype(np.uint16))  # uint8 words are widened to uint16
_TILE_BYTES = 1 << 20  # kept equal to runtime.sqmatrix.TILE_BYTES (same column split)
_BLOCK_N, _WIDE_BLOCK_N = 64, 512  # and to its BLOCK_N, WIDE_BLOCK_N
_SERIAL_WORK = 16_384  # and to its SERIAL_ENTRIES: smaller operations stay on the calling thread
PARALLEL_WORK = 1 << 24
"""The least work (entries x output pixels, summed over a chain's products) for which the
parallel fused path is a candidate: ~8 ms of one thread's products (~0.5 ns an entry), where
a parallel launch per operation (~2-10 us) is noise. LeNet-5 (0.4M) stays far below it: a
small network's fused path stays on the calling thread, next to the app's own threads;
VGG-16 (5G) is far above."""

_LAUNCH_LOCK = threading.Lock()
_serialize: bool | None = None  # None: no parallel region has run yet


def launch(kernel, parallel: bool, *args) -> None:
    """Run ``kernel(*args)``; a launch that may start parallel regions (``parallel``) holds a
    process-wide lock under Numba's ``workqueue`` threading layer, which aborts the process
    when two threads launch parallel regions at once (and before the first launch, while the
    layer is not yet known). Under ``omp`` and ``tbb``, launches from several threads run
    concurrently. Every parallel kernel launch of the package goes through here
    (``runtime.sqmatrix`` too), so they all share the one lock."""
    global _serialize
    if not parallel or _serialize is False:
        kernel(*args)
        return
    with _LAUNCH_LOCK:
        kernel(*args)
        if _serialize is None:
            try:
                _serialize = numba.threading_layer() == "workqueue"
            except ValueError:  # no parallel region ran after all: ask again next launch
                pass


class NotFusable(Exception):
    """The model has a layer the fused path does not run (the message names it)."""


def _matrix(layer):
    """The layer's compressed weight, if it has the packed layout the chain kernel reads (and
    a float32 bias)."""
    if layer.params["b"].dtype != np.float32:
        raise NotFusable(f"{layer.name}: a {layer.params['b'].dtype} bias")
    w = layer.params.get("W")
    if not is_backend(w) or not all(hasattr(w, a) for a in ("words", "rowptr", "codebook",
                                                              "index_bits")):
        raise NotFusable(f"{layer.name}: its weight is not compressed")
    if w.words.dtype not in _WORDS:
        raise NotFusable(f"{layer.name}: {w.words.dtype} words (codes and gaps over 16 bits)")
    return w


class _Builder:
    """Collects operation rows and the arrays they point into."""

    def __init__(self):
        self.ops: list[list[int]] = []
        self.words: list[np.ndarray] = []
        self.words_len = 0
        self.ip: list[np.ndarray] = []
        self.ip_len = 0
        self.fp: list[np.ndarray] = []
        self.fp_len = 0
        self.buf_len = 0
        self.cols_len = 0
        self.wide_len = 0
        self.ibuf_len = 0
        self.shares: list[tuple] = []  # (layer, matrix, columns, offsets...) per product

    def region(self, n: int) -> int:
        off = self.buf_len
        self.buf_len += -(-n // 16) * 16  # 64-byte steps
        return off

    def add_words(self, w: np.ndarray) -> tuple[int, int]:
        off = self.words_len
        self.words.append(w.astype(np.uint16, copy=False))
        self.words_len += w.size
        return off, w.size

    def add_ints(self, a: np.ndarray) -> int:
        off = self.ip_len
        self.ip.append(np.ascontiguousarray(a, dtype=np.int64).reshape(-1))
        self.ip_len += a.size
        return off

    def add_floats(self, a: np.ndarray) -> int:
        off = self.fp_len
        self.fp.append(np.ascontiguousarray(a, dtype=np.float32).reshape(-1))
        self.fp_len += a.size
        return off

    def op(self, *fields: int) -> None:
        row = [int(f) for f in fields]
        self.ops.append(row + [0] * (ops_.N_FIELDS - len(row)))

    def add_matrix(self, layer, m, n_cols: int) -> tuple[int, int, int, int, int]:
        """A compressed layer's entries, row pointers, codebook and bias, and its product
        (``n_cols`` columns of input: 1 for Dense, the output pixels for Conv2D) in
        ``shares``. Returns their offsets: words, words length, rowptr, codebook, bias."""
        wo, wl = self.add_words(m.words)
        rp = self.add_ints(m.rowptr)
        cb = self.add_floats(m.codebook)
        bias = self.add_floats(layer.params["b"])
        self.shares.append((layer, m, n_cols, wo, wl, rp, cb, bias))
        return wo, wl, rp, cb, bias


class FusedChain:
    """A sequential model's batch-1 forward as one :func:`kernels.chain_forward` program.

    Build with :meth:`build`. The packed entries, codebooks and biases are copied into the
    program's own arrays; :meth:`adopt` then makes the layers share them (once the model
    takes this path), so the weights are held once (twice for layers of one-byte words,
    which the program widens to uint16).

    :meth:`run` takes the parallel kernel when :attr:`parallel` is set (by the model, when
    :func:`choose` picked ``"fused-parallel"``).

    Thread-safe: every calling thread gets its own scratch buffers; the kernel releases the GIL.
    """

    def __init__(self, b: _Builder, in_off: int, in_size: int, out_off: int, out_shape: tuple):
        self._shares = b.shares
        self.ops = np.array(b.ops, dtype=np.int64).reshape(-1, ops_.N_FIELDS)
        self.words = np.concatenate(b.words) if b.words else np.zeros(0, np.uint16)
        self.ip = np.concatenate(b.ip) if b.ip else np.zeros(0, np.int64)
        self.fp = np.concatenate(b.fp) if b.fp else np.zeros(0, np.float32)
        self.buf_len = b.buf_len
        self.ibuf_len = b.ibuf_len
        self.wide_len = max(1, b.wide_len)
        self.parallel = False
        self.in_off, self.in_size = in_off, in_size
        self.out_off, self.out_shape = out_off, out_shape
        self.out_size = int(np.prod(out_shape))
        self._local = threading.local()

    @classmethod
    def build(cls, layers, input_shape: tuple) -> FusedChain:
        """The program for ``layers`` (a chain) on one sample of ``input_shape``.

        Raises
        ------
        NotFusable
            A layer other than compressed Dense/Conv2D, MaxPool2D, ReLU, Flatten, Dropout, or
            a weight that is not float32 codes in the packed layout.
        """
        b = _Builder()
        shape = tuple(int(s) for s in input_shape)
        size = int(np.prod(shape))
        # Activations alternate between two slots as long as the largest one (the input in
        # slot 0): an operation reads one slot and writes the other (ReLU in place).
        cur, act_len = 0, size
        i = 0
        layers = tuple(layers)
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            relu = isinstance(nxt, ReLU)
            if isinstance(layer, (Flatten, Dropout)):
                shape = layer.output_shape(shape)
            elif isinstance(layer, ReLU):
                b.op(ops_.OP_RELU, cur, cur, size)
            elif isinstance(layer, Dense):
                m = _matrix(layer)
                n_out, n_in = m.shape
                if len(shape) != 1 or shape[0] != n_in:
                    raise NotFusable(f"{layer.name}: input of shape {shape}")
                dst, act_len = 1 - cur, max(act_len, n_out)
                wo, wl, rp, cb, bias = b.add_matrix(layer, m, 1)
                b.op(ops_.OP_SQ_DENSE, cur, dst, n_in, n_out, 0, wo, wl, rp, m.index_bits,
                     cb, m.codebook.size, bias, relu)
                cur, shape = dst, (n_out,)
                i += relu
            elif isinstance(layer, Conv2D):
                m = _matrix(layer)
                c, h, w = shape
                oc, (oh, ow) = layer.out_channels, layer._out_hw(h, w)
                k, s = layer.kernel_size, layer.stride
                top, left = layer.pads[:2]
                n = oh * ow
                block_n = min(_WIDE_BLOCK_N, max(_BLOCK_N, n))
                tile = max(1, min(m.shape[1], _TILE_BYTES // (4 * min(n, block_n))))
                nt = max(1, -(-m.shape[1] // tile)) + 1
                split_k = np.empty((oc, nt), np.int64)
                split_col = np.empty((oc, nt), np.int64)
                kernels.sq_col_split(m.words, m.rowptr, m.index_bits, tile, split_k, split_col)
                dst, act_len = 1 - cur, max(act_len, oc * n)
                wo, wl, rp, cb, bias = b.add_matrix(layer, m, n)
                sk, sc = b.add_ints(split_k), b.add_ints(split_col)
                valid = layer.pads == (0, 0, 0, 0)
                hp, wp = h, w
                if not valid:  # a zero-padded copy of the input (the kernel's arithmetic)
                    hp = max(h + top, (oh - 1) * s + k)
                    wp = max(w + left, (ow - 1) * s + k)
                    b.cols_len = max(b.cols_len, c * hp * wp)
                cols = np.arange(c // layer.groups * k * k)  # one group's patch columns
                ch, rem = np.divmod(cols, k * k)
                col_off = b.add_ints((ch * hp + rem // k) * wp + rem % k)
                b.op(ops_.OP_SQ_CONV, cur, dst, c, h, w, oc, k, s, top, left, oh, ow,
                     layer.groups, 0, wo, wl, sk, sc, nt, block_n, m.index_bits, cb,
                     m.codebook.size, bias, relu, -1, valid, col_off, -1)
                b.wide_len = max(b.wide_len, (oh - 1) * wp + ow)
                cur, shape = dst, (oc, oh, ow)
                i += relu
            elif isinstance(layer, MaxPool2D):
                c, h, w = shape
                oh, ow = layer._out_hw(h, w)
                k, s = layer.size, layer.stride
                padded = layer.pads != (0, 0, 0, 0) or (oh, ow) != ((h - k) // s + 1,
                                                                    (w - k) // s + 1)
                dst, act_len = 1 - cur, max(act_len, c * oh * ow)
                b.ibuf_len = max(b.ibuf_len, c * oh * ow)
                b.op(ops_.OP_MAXPOOL, cur, dst, c, h, w, k, s, layer.pads[0], layer.pads[1],
                     oh, ow, padded)
                cur, shape = dst, (c, oh, ow)
            else:
                raise NotFusable(f"{layer.name}: a {layer.type_name} layer")
            size = int(np.prod(shape))
            i += 1
        slots = (b.region(act_len), b.region(act_len))
        padded, wide = b.region(b.cols_len), b.region(b.wide_len)
        for row in b.ops:
            row[1], row[2] = slots[row[1]], slots[row[2]]
            if row[0] == ops_.OP_SQ_CONV:
                row[26], row[29] = padded, wide
        return cls(b, slots[0], int(np.prod(input_shape)), slots[cur], shape)

    @property
    def products(self) -> list[tuple]:
        """``(matrix, columns)`` of every compressed product, in order: what the per-layer
        path would multiply (columns 1 for Dense, the output pixels for Conv2D)."""
        return [(m, n) for _, m, n, *_ in self._shares]

    @property
    def work(self) -> int:
        """Entries x input columns summed over the products: the size of the network's
        batch-1 work, which :data:`PARALLEL_WORK` is compared with."""
        return sum(int(m.words.size) * max(int(n), 1) for m, n in self.products)

    def adopt(self) -> None:
        """Make the layers hold views of the program's arrays instead of their own: packed
        entries (uint16 ones; widened one-byte words stay a second copy), row pointers,
        codebooks and biases. The weights are then held once, and a change made in place to a
        layer's bias or a matrix's codebook reaches the fused path too."""
        for layer, m, _, wo, wl, rp, cb, bias in self._shares:
            if m.words.dtype == np.uint16:
                m.words = self.words[wo:wo + wl]
            m.rowptr = self.ip[rp:rp + m.rowptr.size]
            m.codebook = self.fp[cb:cb + m.codebook.size]
            layer.params["b"] = self.fp[bias:bias + layer.params["b"].size]

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        local = self._local
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.zeros(self.buf_len, np.float32)
            local.ibuf = np.zeros(max(1, self.ibuf_len), np.int32)
        return buf, local.ibuf

    def _wides(self, n_blocks: int) -> np.ndarray:
        local = self._local
        wides = getattr(local, "wides", None)
        if wides is None or wides.shape[0] != n_blocks:
            wides = local.wides = np.zeros((n_blocks, self.wide_len), np.float32)
        return wides

    def run(self, x: np.ndarray, parallel: bool | None = None) -> np.ndarray:
        """The output for one sample ``x`` (any shape holding ``in_size`` float32 values, e.g.
        (1, *input_shape)): a new array of shape (1, *out_shape).

        ``parallel`` (default :attr:`parallel`): split the large operations over Numba's
        threads, as many blocks as ``numba.get_num_threads()`` at this call (one: the serial
        kernel's code, no parallel launch). Same results either way, bit for bit."""
        buf, ibuf = self._scratch()
        buf[self.in_off:self.in_off + self.in_size] = x.reshape(-1)
        if self.parallel if parallel is None else parallel:
            n_blocks = numba.get_num_threads()
            launch(kernels.chain_forward_parallel, n_blocks > 1, self.ops, self.words, self.ip,
                   self.fp, buf, ibuf, n_blocks, self._wides(n_blocks), _SERIAL_WORK)
        else:
            kernels.chain_forward(self.ops, self.words, self.ip, self.fp, buf, ibuf)
        return buf[self.out_off:self.out_off + self.out_size].reshape(1, *self.out_shape).copy()


# --------------------------------------------------------------------------- the choice

PATHS = ("fused", "layered", "fused-parallel")
_ENV = "DC_ENGINE_BATCH1"
_lock = threading.Lock()
_memo: dict[str, str] = {}


def forced() -> str | None:
    """The path ``DC_ENGINE_BATCH1`` forces (``fused``, ``layered`` or ``fused-parallel``), or
    None."""
    value = os.environ.get(_ENV, "").strip().lower()
    return value if value in PATHS else None


def calibration_file() -> Path | None:
    """Where the measured choices are kept: ``dc-engine-batch1.json`` in ``NUMBA_CACHE_DIR``
    when set, else in ``~/.cache/dc-engine`` (``XDG_CACHE_HOME`` respected); None where there
    is no home folder to put it in (a container user without a passwd entry)."""
    base = os.environ.get("NUMBA_CACHE_DIR")
    if not base:
        try:
            cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        except (RuntimeError, KeyError, OSError):
            return None
        base = Path(cache) / "dc-engine"
    return Path(base) / "dc-engine-batch1.json"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _key(layers, input_shape: tuple, threads: int, candidates: tuple = ("fused", "layered")
         ) -> str:
    """Machine, thread count, the package version (its kernels), the paths compared and the
    model's shape of work (input shape, layer types and shapes, entries)."""
    parts = [_cpu(), numba.config.THREADING_LAYER, str(threads), __version__, str(input_shape)]
    if candidates != ("fused", "layered"):  # (the two-path keys stay as they were)
        parts.append(",".join(candidates))
    for layer in layers:
        w = layer.params.get("W") if layer.params else None
        parts.append(f"{layer.type_name}:{sorted(layer.hyperparameters.items())}:"
                     + (f"{w.shape}/{w.words.size}/{w.words.dtype}/{getattr(w, 'simd', 0)}"
                        if is_backend(w) else ""))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _read(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def calibrate(run_fused, run_layered, budget_s: float = 0.05, run_parallel=None) -> dict:
    """Median seconds per call of the paths: three rounds, alternating, each path timed in
    loops of about ``budget_s / 6`` seconds (``/ 9`` with ``run_parallel``, the third path
    ``"fused-parallel"``) after a first (compiling) call."""
    runs = {"fused": run_fused, "layered": run_layered}
    if run_parallel is not None:
        runs["fused-parallel"] = run_parallel
    for fn in runs.values():
        fn()
    t0 = time.perf_counter()
    for fn in runs.values():
        fn()
    share = budget_s / (3 * len(runs))
    loops = max(1, int(share / max(time.perf_counter() - t0, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(3):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            for _ in range(loops):
                fn()
            times[name].append((time.perf_counter() - t0) / loops)
    return {name: float(np.median(t)) for name, t in times.items()}


def choose(layers, input_shape: tuple, threads: int, needs_measuring: bool, run_fused,
           run_layered, run_parallel=None) -> str:
    """``"fused"``, ``"layered"`` or ``"fused-parallel"`` for a batch of one through
    ``layers`` at ``threads``.

    ``DC_ENGINE_BATCH1`` (``fused`` / ``layered`` / ``fused-parallel``) forces a path.
    Otherwise, where the per-layer path would run the same serial scalar kernels
    (``needs_measuring`` false), the fused one wins by construction (same kernels, no Python
    between layers). Else the paths are timed (:func:`calibrate`: a first call of each, then
    about 50 ms; the per-layer and parallel paths may start Numba's thread pool then) and the
    fastest kept, in memory and in :func:`calibration_file` (keyed by CPU, threading layer,
    thread count, package version, the paths compared, input shape and the layers' shapes), so
    the next process on this machine skips the measurement. ``run_parallel`` (the parallel
    fused path) is given only where it is a candidate: more than one thread and a big network
    (:data:`PARALLEL_WORK`).
    """
    if way := forced():
        return way
    if not needs_measuring:
        return "fused"
    candidates = PATHS if run_parallel is not None else PATHS[:2]
    key = _key(layers, input_shape, threads, candidates)
    with _lock:
        if key in _memo:
            return _memo[key]
        path = calibration_file()
        entry = _read(path).get(key)
        if isinstance(entry, dict) and entry.get("path") in candidates:
            _memo[key] = entry["path"]
            return entry["path"]
        times = calibrate(run_fused, run_layered, run_parallel=run_parallel)
        best = min(times, key=times.get)
        _memo[key] = best
        if path is not None:
            data = _read(path)
            data[key] = {"path": best, "seconds": times, "threads": threads, "cpu": _cpu()}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, data)
            except OSError:
                pass  # a read-only folder: measured again in the next process
        return best


__all__ = ["FusedChain", "NotFusable", "choose", "calibrate", "calibration_file", "forced",
           "launch", "PATHS", "PARALLEL_WORK"]
