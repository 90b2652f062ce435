"""Edge app: how dc-engine's runtime behaves inside a small Python app, next to onnxruntime.

Runs the compressed LeNets (``data/models/ARCH.dc.h5``, loaded by ``dc_engine.load``) and, when
onnxruntime is importable, the same weights decoded to float32 and exported to ONNX
(``python -m dc_engine.app.cli export``, into a temporary folder) on onnxruntime's CPU provider
(ORT). Without onnxruntime (or the ``onnx`` package the export needs) the dc-engine rows still
run and the ORT cells read "skipped". Inputs are real MNIST test images; a first child checks
that both runtimes agree on 256 of them at batch 1 (max |logit difference|, argmax).

Every measurement runs in a fresh child process (this script re-invoked with a hidden
``--worker SPEC``, or ``python -c`` snippets for the start-up rows) that prints JSON. Thread
control per child: dc-engine with n threads gets ``NUMBA_NUM_THREADS=n`` and runs inside
``dc_engine.threads.limit_threads(n)``; "default" means neither (Numba and BLAS use every
core); ORT gets ``intra_op_num_threads=n, inter_op_num_threads=1``. Every child but the
cold-start ones shares one Numba cache folder (``NUMBA_CACHE_DIR`` in the temporary folder,
filled by the first child), so nothing is written into the source tree. Rows:

1. Batch-1 latency (us per ``forward`` / ``run`` of one image), 1 and 2 threads, both LeNets:
   in each child the median of ``--repeats`` samples, each looping the call for >= 50 ms,
   after 300 calls and ``WARM_S`` seconds of warm-up; the row is the median over
   ``processes`` children per case, run in rounds that take every case once (on the shared
   machine this was written on, the speed of a whole process could change by ~2x, with no
   other load in sight; the cells show the range over the children).
2. Co-tenancy, LeNet-5: per-call times (perf_counter around each of ``calls`` calls), first
   idle, then with a Python busy loop (``python -c``, started before and killed after) taking
   a core; median and 99th percentile, as ratios to the idle median of the same process.
   dc-engine at its defaults and at 1 thread; ORT at 2 and 1 intra-op threads.
3. Alternating with the app's own NumPy work, LeNet-5: per-iteration times of a 512x512
   float32 matmul and of one predict, each in its own loop ("alone") and in a loop doing one of
   each ("alternating"), pooled over ``--repeats`` rounds of the three loops (each after
   ``WARM_S`` seconds of its own untimed iterations); dc-engine at its defaults, ORT at 2 threads.
4. Cold start, LeNet-5: ``python -c`` that reads ``time.perf_counter()`` before any import,
   then imports dc_engine, loads the ``.dc.h5``, classifies one image and reads the clock
   again ("in child"); "from launch" also counts process creation and interpreter start
   (CLOCK_MONOTONIC is system-wide on Linux, so the parent's launch time and the child's end
   time compare). Cold: a fresh empty ``NUMBA_CACHE_DIR`` per run (median of ``cold_runs``);
   warm: the same folder again after one run that fills it (median of ``warm_runs``). ORT:
   import onnxruntime, ``InferenceSession``, first ``run`` (it has no JIT cache). The OS file
   cache is warm in every case. ``python -c pass`` is the context.
5. Peak RSS (VmHWM of those warm children, see ``SNIPPET_END``; MB = 10^6 bytes), with
   ``import numpy, numba`` alone as the reference.
6. Information: bytes of the loaded models' weights (``Model.nbytes``) against float32.

The machine may be shared: from ``/proc/stat`` and ``/proc/PID/stat``, every timed phase (in
the start-up rows, every child) also reports "others": the cores other processes kept busy
meanwhile, on average (the machine's busy CPU time but the measured process's and, in row 2,
the busy loop's). Near 0 the rest of the machine was idle; near 1 a core was taken, and the
"idle" phase of row 2 was not idle. The acceptance targets are in ``TARGETS``. Prints a
table; writes JSON (environment, every child's raw output) to ``--json`` and the same table as
Markdown next to it (``.md``).

Usage::

    python bench/edge.py [--quick] [--repeats 7] [--json bench/results/edge.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from _common import WARM_S, environment, median, samples, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "data" / "models"
DEFAULT_JSON = ROOT / "bench" / "results" / "edge.json"
ARCHS = ("lenet-300-100", "lenet-5")
APP_ARCH = "lenet-5"
N_CHECK = 256
WARM_CALLS = 300
MATMUL_N = 512
MB = 1e6
T = TypeVar("T")

TARGETS = {"latency": 0.8, "cotenancy_median": 3.0, "cotenancy_p99": 10.0,
           "alternate_predict": 1.5, "alternate_matmul": 1.2, "cold_s": 1.5, "warm_s": 0.3,
           "rss_mb": 120.0}
"""Upper bounds: dc/ORT latency ratio; busy/idle ratios; alternating/alone ratios; seconds
in child to the first prediction; MB of peak RSS."""


@dataclass(frozen=True)
class Plan:
    repeats: int       # latency samples; rounds of the alternating loops
    calls: int         # timed calls per co-tenancy phase
    iters: int         # iterations per alternating loop per round
    cold_runs: int     # cold-start children, each with a fresh Numba cache
    warm_runs: int     # warm-start children (and ORT start-up children)
    processes: int     # latency children per case
    min_time: float = 0.05


FULL = Plan(repeats=7, calls=2000, iters=60, cold_runs=2, warm_runs=5, processes=3)
QUICK = Plan(repeats=3, calls=300, iters=30, cold_runs=1, warm_runs=2, processes=1)


# ----------------------------------------------------------------- CPU time of other processes


def proc_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def others_seconds(pids: list[int], reaped: bool) -> float | None:
    """CPU seconds the machine has been busy (/proc/stat) outside processes ``pids`` (and, with
    ``reaped``, this process and the children it waited for), or None without /proc."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
        mine = sum(proc_seconds(p) for p in pids)
    except OSError:
        return None
    user, nice, system, _, _, irq, softirq = (int(f) for f in fields)
    if reaped:
        t = os.times()
        mine += t.user + t.system + t.children_user + t.children_system
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK") - mine


def with_others(run: Callable[[], T], pids: list[int], reaped: bool = False
                ) -> tuple[T, float | None]:
    """``run()`` and the cores other processes kept busy meanwhile, on average (None without
    /proc): the machine's busy CPU time but that of ``pids`` (see :func:`others_seconds`)."""
    before, t0 = others_seconds(pids, reaped), time.perf_counter()
    out = run()
    after, wall = others_seconds(pids, reaped), time.perf_counter() - t0
    return out, None if before is None or after is None else max(0.0, (after - before) / wall)


# ----------------------------------------------------------------- children: timing helpers


def warm_up(fn: Callable[[], object], calls: int = WARM_CALLS, seconds: float = WARM_S) -> None:
    """At least ``calls`` calls and ``seconds`` seconds of untimed calls."""
    t_end = time.perf_counter() + seconds
    for _ in range(calls):
        fn()
    while time.perf_counter() < t_end:
        fn()


def loop_samples(fn: Callable[[], object], repeats: int, min_time: float) -> tuple[list, int]:
    """Seconds per call in ``repeats`` samples, each looping ``fn`` >= ``min_time`` s; loops."""
    t0 = time.perf_counter()
    for _ in range(20):
        fn()
    loops = max(1, int(np.ceil(min_time * 20 / (time.perf_counter() - t0))))
    return samples(fn, repeats, loops), loops


def call_times(parts: list[Callable[[], object]], iters: int) -> np.ndarray:
    """Seconds of each part per iteration, shape (iters, len(parts)), the parts called in turn,
    after :data:`WARM_S` seconds of untimed iterations."""
    t_end = time.perf_counter() + WARM_S
    while time.perf_counter() < t_end:
        for p in parts:
            p()
    clock = time.perf_counter
    out = np.empty((iters, len(parts) + 1))
    for i in range(iters):
        out[i, 0] = clock()
        for j, p in enumerate(parts):
            p()
            out[i, j + 1] = clock()
    return np.diff(out, axis=1)


def stats_us(t: np.ndarray) -> dict:
    return {"median_us": float(np.median(t)) * 1e6, "p99_us": float(np.percentile(t, 99)) * 1e6}


# ----------------------------------------------------------------- children: the workers


def dc_predictor(path: str, x: np.ndarray) -> Callable[[], object]:
    import dc_engine

    model = dc_engine.load(path)
    return lambda: model.forward(x)


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def ort_predictor(path: str, x: np.ndarray, threads: int) -> Callable[[], object]:
    sess = ort_session(path, threads)
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def predictor(spec: dict) -> Callable[[], object]:
    x = np.load(spec["image"])
    if spec["runtime"] == "dc":
        return dc_predictor(spec["model"], x)
    return ort_predictor(spec["onnx"], x, spec["threads"])


def threading_layer() -> str | None:
    """Numba's threading layer, once a parallel kernel ran (None if none did)."""
    if "numba" not in sys.modules:
        return None
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def worker_prepare(spec: dict) -> dict:
    """Save one MNIST test image for the other children; check dc-engine against ORT on
    N_CHECK images at batch 1; weight bytes. Fills the shared Numba cache."""
    import dc_engine

    ds = dc_engine.load_mnist()
    xs, ys = ds.x_test[:N_CHECK], ds.y_test[:N_CHECK]
    np.save(spec["image"], np.ascontiguousarray(xs[:1]))
    out = {}
    for arch in ARCHS:
        model = dc_engine.load(MODELS / f"{arch}.dc.h5")
        y_dc = np.concatenate([model.forward(xs[i:i + 1]) for i in range(len(xs))])
        row = {"nbytes": model.nbytes, "float32_bytes": 4 * model.num_params(),
               "file_bytes": (MODELS / f"{arch}.dc.h5").stat().st_size,
               "images": len(xs), "dc_accuracy": float(np.mean(y_dc.argmax(1) == ys))}
        onnx = spec["onnx"].get(arch)
        if onnx:
            sess = ort_session(onnx, 1)
            name = sess.get_inputs()[0].name
            y_ort = np.concatenate([sess.run(None, {name: xs[i:i + 1]})[0]
                                    for i in range(len(xs))])
            row.update(max_abs_diff=float(np.abs(y_dc - y_ort).max()),
                       max_abs_logit=float(np.abs(y_ort).max()),
                       argmax_agree=int(np.sum(y_dc.argmax(1) == y_ort.argmax(1))),
                       onnx_bytes=Path(onnx).stat().st_size)
        out[arch] = row
    return out


def worker_latency(spec: dict) -> dict:
    fn = predictor(spec)
    warm_up(fn)
    (times, loops), others = with_others(
        lambda: loop_samples(fn, spec["repeats"], spec["min_time"]), [os.getpid()])
    return {"us": median(times) * 1e6, "samples_us": [s * 1e6 for s in times],
            "loops": loops, "others_cores": others}


BURNER = ("import os\np = os.getppid()\nwhile os.getppid() == p:\n"
          "    for _ in range(100000):\n        pass\n")
"""A CPU-bound Python loop that also ends if the process that started it dies."""


def worker_cotenancy(spec: dict) -> dict:
    fn = predictor(spec)
    warm_up(fn)
    idle, idle_others = with_others(lambda: call_times([fn], spec["calls"]), [os.getpid()])
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        time.sleep(0.3)
        busy, busy_others = with_others(lambda: call_times([fn], spec["calls"]),
                                        [os.getpid(), burner.pid])
    finally:
        burner.kill()
        burner.wait()
    idle_s = {**stats_us(idle), "others_cores": idle_others}
    busy_s = {**stats_us(busy), "others_cores": busy_others}
    return {"idle": idle_s, "busy": busy_s,
            "median_ratio": busy_s["median_us"] / idle_s["median_us"],
            "p99_ratio": busy_s["p99_us"] / idle_s["median_us"]}


def worker_alternate(spec: dict) -> dict:
    fn = predictor(spec)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32) for _ in range(2))

    def matmul() -> object:
        return a @ b

    warm_up(fn)
    warm_up(matmul, calls=10)
    runs: dict[str, list] = {"predict_alone": [], "matmul_alone": [], "alternating": []}

    def rounds() -> None:
        for _ in range(spec["repeats"]):
            runs["predict_alone"].append(call_times([fn], spec["iters"]))
            runs["matmul_alone"].append(call_times([matmul], spec["iters"]))
            runs["alternating"].append(call_times([matmul, fn], spec["iters"]))

    _, others = with_others(rounds, [os.getpid()])
    t = {k: np.concatenate(v) for k, v in runs.items()}
    out = {"others_cores": others, "predict_alone": stats_us(t["predict_alone"]),
           "matmul_alone": stats_us(t["matmul_alone"]),
           "matmul_alternating": stats_us(t["alternating"][:, 0]),
           "predict_alternating": stats_us(t["alternating"][:, 1])}
    for part in ("predict", "matmul"):
        out[f"{part}_ratio"] = (out[f"{part}_alternating"]["median_us"]
                                / out[f"{part}_alone"]["median_us"])
    return out


WORKERS = {"prepare": worker_prepare, "latency": worker_latency,
           "cotenancy": worker_cotenancy, "alternate": worker_alternate}


def run_as_worker(spec: dict) -> None:
    """The child side: run one worker (inside ``limit_threads`` for dc-engine with a thread
    count) and print its JSON."""
    load1 = os.getloadavg()[0]
    if spec.get("runtime") == "dc" and spec.get("threads"):
        from dc_engine.threads import limit_threads

        with limit_threads(spec["threads"]):
            out = WORKERS[spec["kind"]](spec)
    else:
        out = WORKERS[spec["kind"]](spec)
    out.update(loadavg_1min=load1, numba_threading_layer=threading_layer())
    print(json.dumps(out))


# ----------------------------------------------------------------- parent: children


def child_env(cache_dir: Path, numba_threads: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    if numba_threads:
        env["NUMBA_NUM_THREADS"] = str(numba_threads)
    return env


def last_json(proc: subprocess.CompletedProcess) -> dict:
    """The JSON a child printed last, or ``{"error": ...}`` with its stderr's last line."""
    if proc.returncode == 0:
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            pass
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def run_worker(spec: dict, cache_dir: Path) -> dict:
    threads = spec.get("threads") if spec.get("runtime") == "dc" else None
    argv = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        return last_json(subprocess.run(argv, env=child_env(cache_dir, threads),
                                        capture_output=True, text=True, timeout=600))
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 600 s"}


SNIPPET_END = ("import json\n"
               "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
               "print(json.dumps({'in_child_s': t1 - t0, 'import_s': t_import - t0,"
               " 'end': time.monotonic(), 'hwm_kb': int(hwm[0].split()[1]), 'out': out}))\n")
"""Prints the times and the peak RSS: VmHWM, the high-water mark of this process image since
``exec``. Not ``ru_maxrss``: Linux keeps it across ``exec``, so it would report the parent's
size at ``fork`` when that is larger (the parent has NumPy, Numba and dc-engine loaded)."""

DC_START = ("import time\nt0 = time.perf_counter()\nimport sys\nimport numpy as np\n"
            "import dc_engine\nt_import = time.perf_counter()\n"
            "model = dc_engine.load(sys.argv[1])\n"
            "out = int(model.forward(np.load(sys.argv[2])).argmax())\n"
            "t1 = time.perf_counter()\n" + SNIPPET_END)
ORT_START = ("import time\nt0 = time.perf_counter()\nimport sys\nimport numpy as np\n"
             "import onnxruntime as ort\nt_import = time.perf_counter()\n"
             "sess = ort.InferenceSession(sys.argv[3], providers=['CPUExecutionProvider'])\n"
             "feed = {sess.get_inputs()[0].name: np.load(sys.argv[2])}\n"
             "out = int(sess.run(None, feed)[0].argmax())\nt1 = time.perf_counter()\n"
             + SNIPPET_END)
IMPORT_ONLY = ("import time\nt0 = time.perf_counter()\nimport numpy, numba\nout = None\n"
               "t_import = t1 = time.perf_counter()\n" + SNIPPET_END)


def run_snippet(code: str, args: list[str], env: dict) -> dict:
    """Run ``python -c code *args``; its JSON plus ``launch_s``, launch to first prediction."""
    t_launch = time.monotonic()
    out, others = with_others(lambda: last_json(subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
        timeout=600)), [], reaped=True)
    out["others_cores"] = others
    if "end" in out:
        out["launch_s"] = out.pop("end") - t_launch
    return out


def interpreter_start(runs: int) -> float:
    """Median seconds of ``python -c pass``, launch to exit."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return median(times)


def summarize(runs: list[dict]) -> dict:
    """Medians of the runs that worked, the runs themselves, and the first error if any."""
    ok = [r for r in runs if "error" not in r]
    out: dict = {"runs": runs}
    if ok:
        keys = ("in_child_s", "import_s", "launch_s", "others_cores")
        out.update({k: median(v) for k in keys
                    if (v := [r[k] for r in ok if r.get(k) is not None])},
                   peak_rss_mb=median([r["hwm_kb"] for r in ok]) * 1024 / MB)
    if len(ok) < len(runs):
        out["error"] = next(r["error"] for r in runs if "error" in r)
    return out


def over_processes(runs: list[dict]) -> dict:
    """Latency children of one case: the median of their medians, their range, the runs."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"], "runs": runs}
    us = [r["us"] for r in ok]
    others = [r["others_cores"] for r in ok if r.get("others_cores") is not None]
    return {"us": median(us), "min_us": min(us), "max_us": max(us), "processes": len(ok),
            "others_cores": max(others) if others else None, "runs": runs}


def start_rows(plan: Plan, tmp: Path, img: Path, onnx: str | None) -> dict:
    """Rows 4 and 5: cold and warm starts, peak RSS, interpreter start."""
    model = str(MODELS / f"{APP_ARCH}.dc.h5")
    args = [model, str(img), onnx or ""]
    cold = []
    for i in range(plan.cold_runs):
        cache = tmp / f"numba-cold-{i}"
        cold.append(run_snippet(DC_START, args, child_env(cache)))
    cold_cache_files = sum(1 for p in cache.rglob("*") if p.is_file())
    warm = [run_snippet(DC_START, args, child_env(cache)) for _ in range(plan.warm_runs)]
    rows = {"python_pass_s": interpreter_start(plan.warm_runs),
            "dc_cold": summarize(cold), "dc_warm": summarize(warm),
            "numba_cache_files": cold_cache_files,
            "import_numpy_numba": summarize([run_snippet(IMPORT_ONLY, [], child_env(cache))
                                             for _ in range(plan.warm_runs)])}
    if onnx:
        rows["ort"] = summarize([run_snippet(ORT_START, args, child_env(cache))
                                 for _ in range(plan.warm_runs)])
    return rows


def ort_status() -> str | None:
    """onnxruntime's version, or None when it does not import."""
    proc = subprocess.run([sys.executable, "-c", "import onnxruntime; print(onnxruntime."
                           "__version__)"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def export_onnx(arch: str, tmp: Path) -> tuple[str | None, str | None]:
    """(path of the exported ONNX file, None) or (None, why not)."""
    out = tmp / f"{arch}.onnx"
    proc = subprocess.run([sys.executable, "-m", "dc_engine.app.cli", "export",
                           str(MODELS / f"{arch}.dc.h5"), "--out", str(out), "--force"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["export failed"])[-1]
    return str(out), None


# ----------------------------------------------------------------- parent: the run


def measure(plan: Plan, tmp: Path) -> dict:
    """Every child, in order; the raw results."""
    img = tmp / "image.npy"
    cache = tmp / "numba"
    ort_version = ort_status()
    onnx: dict[str, str] = {}
    skipped = None if ort_version else "onnxruntime does not import"
    for arch in ARCHS if ort_version else ():
        path, why = export_onnx(arch, tmp)
        if path:
            onnx[arch] = path
        else:
            skipped = f"ONNX export failed: {why}"
    res: dict = {"ort_version": ort_version, "ort_skipped": skipped,
                 "check": run_worker({"kind": "prepare", "image": str(img), "onnx": onnx},
                                     cache)}
    base = {"image": str(img), "repeats": plan.repeats, "min_time": plan.min_time,
            "calls": plan.calls, "iters": plan.iters}

    def spec(kind: str, runtime: str, arch: str, threads: int | None) -> dict:
        return {**base, "kind": kind, "runtime": runtime, "threads": threads,
                "model": str(MODELS / f"{arch}.dc.h5"), "onnx": onnx.get(arch)}

    runtimes = ("dc", "ort") if len(onnx) == len(ARCHS) else ("dc",)
    cases = [(a, n, r) for a in ARCHS for n in (1, 2) for r in runtimes]
    runs: dict[tuple, list] = {c: [] for c in cases}
    for _ in range(plan.processes):
        for a, n, r in cases:
            runs[a, n, r].append(run_worker(spec("latency", r, a, n), cache))
    res["latency"] = [{"arch": a, "threads": n, "runtime": r, **over_processes(runs[a, n, r])}
                      for a, n, r in cases]
    cot = [("dc", None), ("dc", 1)] + ([("ort", 2), ("ort", 1)] if "ort" in runtimes else [])
    res["cotenancy"] = [{"runtime": r, "threads": n,
                         **run_worker(spec("cotenancy", r, APP_ARCH, n), cache)}
                        for r, n in cot]
    alt = [("dc", None)] + ([("ort", 2)] if "ort" in runtimes else [])
    res["alternate"] = [{"runtime": r, "threads": n,
                         **run_worker(spec("alternate", r, APP_ARCH, n), cache)}
                        for r, n in alt]
    res["start"] = start_rows(plan, tmp, img, onnx.get(APP_ARCH))
    return res


# ----------------------------------------------------------------- parent: the table


@dataclass
class Line:
    row: str
    case: str
    dc: str
    ort: str
    metric: str
    value: float | None = None
    target: float | None = None
    others: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        if self.value is None:
            return "n/a"
        return "pass" if self.value <= self.target else "FAIL"


def find(rows: list[dict], **key) -> dict:
    """The row with these fields, or ``{"error": "skipped"}``."""
    return next((r for r in rows if all(r.get(k) == v for k, v in key.items())),
                {"error": "skipped"})


def fmt(r: dict, text: Callable[[dict], str]) -> str:
    return r["error"] if "error" in r else text(r)


def ratio(r: dict, key: str) -> float | None:
    return None if "error" in r else r[key]


def others(*rows: dict) -> str:
    """The rows' ``others_cores``, " / "-separated ("?" where missing)."""
    return " / ".join("?" if r.get("others_cores") is None else f"{r['others_cores']:.2f}"
                      for r in rows)


def phase_others(*rows: dict) -> str:
    """:func:`others` of the idle and the busy phases of co-tenancy rows."""
    return ", ".join(f"{phase} {others(*(r.get(phase, {}) for r in rows))}"
                     for phase in ("idle", "busy"))


def thread_label(n: int | None) -> str:
    return "default threads" if n is None else f"{n} thread{'s' * (n > 1)}"


def latency_lines(res: dict) -> list[Line]:
    def text(r: dict) -> str:
        spread = f" ({r['min_us']:.0f}-{r['max_us']:.0f})" if r["processes"] > 1 else ""
        return f"{r['us']:.1f} us{spread}"

    lines = []
    for arch in ARCHS:
        for n in (1, 2):
            d, o = (find(res["latency"], arch=arch, threads=n, runtime=r) for r in ("dc", "ort"))
            value = None if "error" in d or "error" in o else d["us"] / o["us"]
            lines.append(Line("1 latency", f"{arch} batch 1, {thread_label(n)}",
                              fmt(d, text), fmt(o, text), "dc / ORT", value,
                              TARGETS["latency"], others(d, o)))
    return lines


def cotenancy_lines(res: dict) -> list[Line]:
    def cell(r: dict, stat: str, key: str) -> str:
        return fmt(r, lambda r: f"{r[key]:.2f}x ({r['idle']['median_us']:.0f} -> "
                                f"{r['busy'][stat]:.0f} us)")

    lines = []
    for dc_n, ort_n, target in ((None, 2, True), (1, 1, False)):
        d = find(res["cotenancy"], runtime="dc", threads=dc_n)
        o = find(res["cotenancy"], runtime="ort", threads=ort_n)
        for stat, key, name in (("median_us", "median_ratio", "median"),
                                ("p99_us", "p99_ratio", "p99")):
            lines.append(Line(
                "2 co-tenancy", f"{APP_ARCH} {name}, dc {thread_label(dc_n)}, ORT "
                f"{thread_label(ort_n)}", cell(d, stat, key), cell(o, stat, key),
                f"busy {name} / idle median", ratio(d, key),
                TARGETS[f"cotenancy_{name}"] if target else None, phase_others(d, o)))
    return lines


def alternate_lines(res: dict) -> list[Line]:
    d = find(res["alternate"], runtime="dc")
    o = find(res["alternate"], runtime="ort")
    lines = []
    for part, what in (("predict", f"{APP_ARCH} predict"), ("matmul", "512x512 matmul")):
        def cell(r: dict) -> str:
            return fmt(r, lambda r: f"{r[part + '_ratio']:.2f}x ("
                                    f"{r[part + '_alone']['median_us']:.0f} -> "
                                    f"{r[part + '_alternating']['median_us']:.0f} us)")

        lines.append(Line("3 alternating", f"{what}; dc default threads, ORT 2 threads",
                          cell(d), cell(o), "alternating / alone median",
                          ratio(d, f"{part}_ratio"), TARGETS[f"alternate_{part}"],
                          others(d, o)))
    return lines


def start_lines(res: dict) -> list[Line]:
    s = res["start"]
    o = s.get("ort", {"error": "skipped"})

    def secs(r: dict) -> str:
        return fmt(r, lambda r: f"{r['in_child_s']:.2f} s (import {r['import_s']:.2f}, "
                                f"from launch {r['launch_s']:.2f})")

    def mb(r: dict) -> str:
        return fmt(r, lambda r: f"{r['peak_rss_mb']:.0f} MB")

    def value(r: dict, key: str) -> float | None:
        return None if "error" in r else r[key]

    return [
        Line("4 cold start", f"{APP_ARCH} import+load+1st predict, cold Numba cache",
             secs(s["dc_cold"]), "no JIT cache", "s in child", value(s["dc_cold"], "in_child_s"),
             TARGETS["cold_s"], others(s["dc_cold"])),
        Line("4 cold start", f"{APP_ARCH} import+load+1st predict, warm Numba cache",
             secs(s["dc_warm"]), secs(o), "s in child", value(s["dc_warm"], "in_child_s"),
             TARGETS["warm_s"], others(s["dc_warm"], o)),
        Line("4 cold start", "context: python -c pass, launch to exit",
             f"{s['python_pass_s']:.3f} s", "", "s"),
        Line("5 peak RSS", f"{APP_ARCH} import+load+1st predict, warm cache",
             mb(s["dc_warm"]), mb(o), "MB", value(s["dc_warm"], "peak_rss_mb"),
             TARGETS["rss_mb"]),
        Line("5 peak RSS", "context: import numpy, numba alone", mb(s["import_numpy_numba"]),
             "", "MB"),
    ]


def weight_lines(res: dict) -> list[Line]:
    lines = []
    for arch in ARCHS:
        c = res["check"].get(arch, res["check"])
        lines.append(Line("6 weights", f"{arch} weight bytes in memory (ORT: float32)",
                          fmt(c, lambda r: f"{r['nbytes']:,} B"),
                          fmt(c, lambda r: f"{r['float32_bytes']:,} B"), "float32 / dc",
                          None if "error" in c else c["float32_bytes"] / c["nbytes"]))
    return lines


def table(lines: list[Line]) -> list[str]:
    out = ["| row | case | dc-engine | ORT | metric | dc-engine value | target | result | "
           "others, cores (dc / ORT) |", "|---|---|---|---|---|---|---|---|---|"]
    for l in lines:
        value = "" if l.value is None else f"{l.value:.2f}"
        target = "" if l.target is None else f"<= {l.target:g}"
        out.append(f"| {l.row} | {l.case} | {l.dc} | {l.ort} | {l.metric} | {value} | "
                   f"{target} | {l.verdict} | {l.others} |")
    return out


def header(env: dict, res: dict, plan: Plan, wall_s: float, command: str) -> list[str]:
    ort = res["ort_version"] or "not installed"
    out = [f"# edge app: {env['cpu']}, {env['cores']} cores, python {env['python']}, numpy "
           f"{env['numpy']}, numba {env['numba']}, onnxruntime {ort}; command: {command}; "
           f"{wall_s:.0f} s",
           f"# latency: median over {plan.processes} children (range in brackets) of the "
           f"median of {plan.repeats} samples (>= {plan.min_time}s each); "
           f"co-tenancy: {plan.calls} timed calls per phase; alternating: {plan.repeats} "
           f"rounds x {plan.iters} iterations; start-up: median of {plan.cold_runs} cold / "
           f"{plan.warm_runs} warm children; others: cores other processes kept busy during "
           f"the timed phase (latency: the most over its children; start-up: the child's life, "
           f"median over runs)"]
    if res["ort_skipped"]:
        out.append(f"# ORT skipped: {res['ort_skipped']}")
    for arch in ARCHS:
        c = res["check"].get(arch, res["check"])
        if "max_abs_diff" in c:
            out.append(f"# check {arch}: dc-engine vs ORT on {c['images']} MNIST test images "
                       f"at batch 1: max |logit diff| {c['max_abs_diff']:.2g} (max |logit| "
                       f"{c['max_abs_logit']:.1f}), argmax agrees on {c['argmax_agree']}/"
                       f"{c['images']}; dc-engine accuracy {c['dc_accuracy']:.3f}")
        elif "error" in c:
            out.append(f"# check {arch}: {c['error']}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples and runs, a smoke test; writes no file unless --json")
    ap.add_argument("--repeats", type=int, help="latency samples / alternating rounds "
                    f"(default {FULL.repeats}, --quick {QUICK.repeats})")
    ap.add_argument("--json", metavar="FILE", help="results JSON; the Markdown table goes "
                    f"next to it as .md (default {DEFAULT_JSON.relative_to(ROOT)})")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run_as_worker(json.loads(args.worker))
        return 0

    t0 = time.perf_counter()
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = replace(plan, repeats=args.repeats)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dc-edge-") as tmp:
        # environment() imports numba and dc-engine's kernels: first, so that an import error
        # ends the run before it starts; with the children's Numba cache
        os.environ["NUMBA_CACHE_DIR"] = str(Path(tmp) / "numba")
        env = environment(os.cpu_count() or 1, seed=0)
        res = measure(plan, Path(tmp))
    env.update(onnxruntime=res["ort_version"], loadavg_before=load_before,
               loadavg_after=os.getloadavg())
    wall = time.perf_counter() - t0
    command = " ".join(["python", "bench/edge.py", *sys.argv[1:]])
    lines = (latency_lines(res) + cotenancy_lines(res) + alternate_lines(res)
             + start_lines(res) + weight_lines(res))
    text = "\n".join(header(env, res, plan, wall, command) + [""] + table(lines)) + "\n"
    print(text, end="")
    json_path = Path(args.json) if args.json else (None if args.quick else DEFAULT_JSON)
    if json_path:
        write_json(str(json_path), {
            "env": env, "command": command, "wall_s": wall, "plan": plan.__dict__,
            "targets": TARGETS, "lines": [{**l.__dict__, "result": l.verdict} for l in lines],
            "raw": res})
        write_text(json_path.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
