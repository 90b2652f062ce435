"""Sparse-quantized products: CompressedMatrix against dense BLAS, scipy and torch CSR.

For the FC layers of AlexNet, VGG-16 and LeNet-300-100 at the densities of Deep Compression
(Table 4, 5, 1) we build a random sparse ``W`` (uniform random positions, normal values, seeded),
compress it with ``CompressedMatrix.from_dense(W, wb, ib)`` for each ``--bits`` variant
(default ``5:5`` -- the paper's FC setting --, ``4:4`` -- EIE's one-byte entries --,
``5:auto`` -- the gap width that makes the packed entries smallest, see
``dc_engine.runtime.sqmatrix.best_index_bits`` -- and ``5:auto:scalar``, the same with the
scalar batch-1 kernel where the AVX-512 one would run), and time ``y = W x`` (batch 1) and
``Yt = W @ Xt`` (batch 64, ``Xt`` of shape (in, 64), C-contiguous) for:

* ours: ``m.matmul(x)`` / ``m.matmul_t(xt)`` (Numba kernels of kernels/sqmm.py; batch 1 by
  kernels/sqmm_avx512.py where the CPU has AVX-512F, recorded as ``env.avx512_matvec``);
* dense: NumPy float32 ``W @ x`` (BLAS) on the same quantized weights;
* scipy: ``scipy.sparse.csr_matrix`` float32 (int32 indices), ``csr @ x``;
* torch: ``torch.sparse_csr_tensor(crow.int(), col.int(), val)`` with ``torch.mv`` / ``torch.mm``
  (null when torch is missing).

Everyone gets the same thread count: ``numba.set_num_threads`` and threadpoolctl (through
``dc_engine.threads.limit_threads``), ``torch.set_num_threads``. Each time is the median of
``--repeats`` samples, each looping the call for ``--min-time`` seconds, one implementation at
a time after 0.3 s of untimed calls (``WARM_S``: interleaving them made each pay for the
previous one's spinning BLAS/OpenMP threads, 8-15x on our kernel after a dense product).
Everything is warmed up (Numba compilation) before timing and every result is checked against
the dense product.

Inputs are 64-byte aligned (``dc_engine.runtime.aligned_empty``), the same buffer for every
implementation: NumPy only guarantees 16 bytes, and where an ``Xt`` row straddles cache lines
our AVX-512 batch kernel ran up to 1.5x slower (torch up to 1.3x), so unaligned inputs made the
batch-64 times a lottery from run to run (docs/KERNELS.md).

Where the AVX-512 kernels run, batch 1 also times the x-gather floor of each variant of ours
(``bench/_gather.py``: the gathers of ``x`` alone, one per entry, at the matrix's columns):
dense time / floor is the best ratio to dense any kernel that gathers ``x`` per entry reaches.

Bytes read (the matrix only; ``x`` is the same for all): dense ``4*out*in``; CSR (scipy and
torch, int32) ``4*nnz + 4*nnz + 4*(out+1)``; ours ``m.nbytes`` (packed entries + row pointers +
codebook; at batch > 1 the column-split index of ``matmul_t`` is added). The lower-bound time is
bytes / bandwidth, the bandwidth measured once as the median time of a ``--threads``-thread sum
over a 256 MB float32 array.

Usage::

    python bench/bench_kernels.py [--threads 2] [--repeats 7] [--quick | --layers alexnet/fc6,...]
                            [--bits 5:5,4:4,5:auto,5:auto:scalar]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

from dc_engine import kernels
from dc_engine.runtime import CompressedMatrix, aligned_empty
from dc_engine.threads import limit_threads

from _common import environment, median, timeit, write_json

# (name, out, in, density) -- DC Table 4 (AlexNet), Table 5 (VGG-16), Table 1 (LeNet-300-100)
LAYERS = [
    ("alexnet/fc6", 4096, 9216, 0.09), ("alexnet/fc7", 4096, 4096, 0.09),
    ("alexnet/fc8", 1000, 4096, 0.25),
    ("vgg16/fc6", 4096, 25088, 0.04), ("vgg16/fc7", 4096, 4096, 0.04),
    ("vgg16/fc8", 1000, 4096, 0.23),
    ("lenet300/ip1", 300, 784, 0.07), ("lenet300/ip2", 100, 300, 0.09),
    ("lenet300/ip3", 10, 100, 0.25),
]
QUICK = {"alexnet/fc7", "lenet300/ip1", "lenet300/ip3"}
BATCHES = (1, 64)
BANDWIDTH_MB = 256
GOALS = {"b1_vs_dense": 3.0, "b1_vs_scipy": 1.5, "b1_vs_torch": 1.0,
         "b64_vs_dense": 1.0, "b64_vs_torch": 1.0}


@numba.njit(cache=True, parallel=True, fastmath={"reassoc", "nsz", "arcp", "contract"})
def _parallel_sum(a):
    total = 0.0
    for i in numba.prange(a.shape[0]):
        total += a[i]
    return total


def bandwidth(threads: int, repeats: int) -> float:
    """Bytes per second of a `threads`-thread streaming sum over 256 MB of float32."""
    a = np.ones(BANDWIDTH_MB * 2**20 // 4, dtype=np.float32)
    with limit_threads(threads):
        _parallel_sum(a)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _parallel_sum(a)
            samples.append(time.perf_counter() - t0)
    return a.nbytes / median(samples)


def random_layer(out: int, n_in: int, density: float, rng: np.random.Generator) -> np.ndarray:
    w = np.zeros((out, n_in), dtype=np.float32)
    for r0 in range(0, out, 256):  # by row blocks: no (out, in) float64 temporary
        r1 = min(out, r0 + 256)
        mask = rng.random((r1 - r0, n_in), dtype=np.float32) < density
        w[r0:r1][mask] = rng.standard_normal(int(mask.sum()), dtype=np.float32)
    return w


def torch_csr(csr):
    try:
        import torch
    except ImportError:
        return None
    return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int32)),
                                   torch.from_numpy(csr.indices.astype(np.int32)),
                                   torch.from_numpy(csr.data), size=csr.shape,
                                   check_invariants=False)


def parse_bits(text: str) -> list[tuple[int, int | str, bool]]:
    """``wb:ib[:scalar]`` variants -> (weight_bits, index_bits, simd allowed)."""
    out = []
    for part in text.split(","):
        wb, ib, *rest = part.split(":")
        if rest not in ([], ["scalar"]):
            raise SystemExit(f"--bits: bad variant {part!r} (want wb:ib or wb:ib:scalar)")
        out.append((int(wb), ib if ib == "auto" else int(ib), not rest))
    return out


def variant(wb, ib, simd) -> str:
    return f"ours {wb}:{ib}" + ("" if simd else " scalar")


def measure_layer(name, out, n_in, density, bits, threads, repeats, min_time, bw, rng):
    import scipy.sparse as sp
    w = random_layer(out, n_in, density, rng)
    mats = {}
    for wb, ib, simd in bits:
        t0 = time.perf_counter()
        m = mats[variant(wb, ib, simd)] = CompressedMatrix.from_dense(w, wb, ib)
        m.build_s = time.perf_counter() - t0
        m.simd = m.simd and simd
    first = next(iter(mats.values()))
    dense = first.to_dense()  # the peers multiply the same quantized weights (5:5 codebook)
    csr = sp.csr_matrix(dense)
    csr.indices = csr.indices.astype(np.int32)
    csr.indptr = csr.indptr.astype(np.int32)
    tcsr = torch_csr(csr)
    nnz = int(csr.nnz)
    rows = []
    for batch in BATCHES:
        shape = (n_in,) if batch == 1 else (n_in, batch)
        x = aligned_empty(shape)  # the same 64-byte aligned input for everyone (module docstring)
        x[...] = rng.standard_normal(shape, dtype=np.float32)
        fns, checks = {}, {}
        for key, m in mats.items():
            d = m.to_dense()
            checks[key] = (d.astype(np.float64) @ x, np.abs(d) @ np.abs(x))
            fns[key] = (lambda m=m: m.matmul(x)) if batch == 1 else (lambda m=m: m.matmul_t(x))
        fns["dense"] = lambda: dense @ x
        fns["scipy"] = lambda: csr @ x
        if tcsr is not None:
            import torch
            tx = torch.from_numpy(x)
            fns["torch"] = (lambda: torch.mv(tcsr, tx)) if batch == 1 else (
                lambda: torch.mm(tcsr, tx))
        with limit_threads(threads):
            for key, fn in fns.items():  # warm up and check every implementation
                got = np.asarray(fn())
                want, scale = checks.get(key, checks[next(iter(mats))])
                assert got.shape == want.shape, (key, got.shape)
                assert np.all(np.abs(got - want) <= 1e-4 * scale + 1e-6), f"{name} {key} wrong"
            times = {k: timeit(f, repeats, min_time, warm=True) for k, f in fns.items()}
            floors = {}
            if batch == 1 and kernels.SQMM_AVX512:  # where the time goes: x gathers alone
                from _gather import GatherFloor
                for key, m in mats.items():
                    if m.simd:
                        floor = GatherFloor(m, x, threads)
                        floor.check()
                        floors[key] = timeit(floor, repeats, min_time, warm=True)
        nbytes = {"dense": 4 * out * n_in, "scipy": 8 * nnz + 4 * (out + 1),
                  "torch": 8 * nnz + 4 * (out + 1) if tcsr is not None else None}
        for key, m in mats.items():
            extra = 0
            if batch > 1:
                extra = sum(a.nbytes for a in m._plan(batch)[2])
            nbytes[key] = m.nbytes + extra
        row = {"layer": name, "out": out, "in": n_in, "density": density, "nnz": nnz,
               "batch": batch, "time_s": {k: times.get(k) for k in nbytes},
               "bytes": nbytes,
               "bound_s": {k: (b / bw if b is not None else None) for k, b in nbytes.items()},
               "ours": {k: {"weight_bits": m.weight_bits, "index_bits": m.index_bits,
                            "entries": m.n_entries, "fillers": m.n_entries - m.nnz,
                            "word_bytes": m.words.itemsize, "build_s": m.build_s,
                            "simd": m.simd}
                        for k, m in mats.items()},
               "gather_floor_s": floors}
        row["speedup"] = {k: {peer: (times[peer] / times[k] if peer in times else None)
                              for peer in ("dense", "scipy", "torch")} for k in mats}
        rows.append(row)
    return rows


def goals(rows: list[dict], keys: list[str]) -> dict:
    """Which issue-6 goals each variant of ours meets (AlexNet and VGG FC layers)."""
    res = {}
    for key in keys:
        misses = []
        for r in rows:
            if not r["layer"].startswith(("alexnet", "vgg16")):
                continue
            s = r["speedup"][key]
            if r["batch"] == 1:
                for peer, want in (("dense", GOALS["b1_vs_dense"]),
                                   ("scipy", GOALS["b1_vs_scipy"]),
                                   ("torch", GOALS["b1_vs_torch"])):
                    if s[peer] is not None and s[peer] < want:
                        misses.append(f"{r['layer']} b1 vs {peer}: {s[peer]:.2f}x < {want}x")
            elif r["density"] <= 0.10:
                for peer in ("dense", "torch"):
                    if s[peer] is not None and s[peer] <= 1.0:
                        misses.append(f"{r['layer']} b{r['batch']} vs {peer}: {s[peer]:.2f}x")
        res[key] = {"met": not misses, "misses": misses}
    return res


def markdown(rows: list[dict], keys: list[str], env: dict, bw: float, args, met: dict) -> str:
    ms = lambda t: "-" if t is None else f"{t * 1e3:.3f}"  # noqa: E731
    lines = [f"# bench/bench_kernels.py: {env['cpu']}, {env['cores']} cores, "
             f"threads={args.threads}, "
             f"numpy {env['numpy']}, numba {env['numba']}, torch {env['torch']}, "
             f"python {env['python']}",
             f"# median of {args.repeats} samples (>= {args.min_time}s each); times "
             f"in ms; ratio = peer time / our time (> 1: ours faster); measured bandwidth "
             f"{bw / 1e9:.1f} GB/s ({args.threads}-thread sum over {BANDWIDTH_MB} MB)",
             f"# command: {' '.join(['python', 'bench/bench_kernels.py'] + sys.argv[1:])}", ""]
    head = "| layer | density | batch | " + " | ".join(keys) + " | dense | scipy | torch | "
    head += " | ".join(f"{k} vs dense/scipy/torch" for k in keys) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t = r["time_s"]
        cells = [r["layer"], f"{r['density']:.0%}", str(r["batch"])]
        cells += [ms(t[k]) for k in keys] + [ms(t["dense"]), ms(t["scipy"]), ms(t["torch"])]
        for k in keys:
            s = r["speedup"][k]
            cells.append(" / ".join("-" if s[p] is None else f"{s[p]:.2f}"
                                    for p in ("dense", "scipy", "torch")))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Bytes of the matrix read per product and the bandwidth bound (bytes / "
              "bandwidth, ms); entries = non-zeros + fillers.", ""]
    head = ("| layer | batch | nnz | " + " | ".join(f"{k} entries (B/entry)" for k in keys)
            + " | " + " | ".join(f"{k} MB (bound)" for k in keys)
            + " | dense MB (bound) | CSR MB (bound) |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        b, bo = r["bytes"], r["bound_s"]
        cells = [r["layer"], str(r["batch"]), str(r["nnz"])]
        cells += [f"{r['ours'][k]['entries']} ({r['ours'][k]['word_bytes']})" for k in keys]
        cells += [f"{b[k] / 1e6:.2f} ({ms(bo[k])})" for k in keys]
        cells += [f"{b['dense'] / 1e6:.2f} ({ms(bo['dense'])})",
                  f"{b['scipy'] / 1e6:.2f} ({ms(bo['scipy'])})"]
        lines.append("| " + " | ".join(cells) + " |")
    floor_keys = [k for k in keys if any(k in r.get("gather_floor_s", {}) for r in rows)]
    if floor_keys:
        lines += ["", "Where batch-1 time goes: the x-gather floor (bench/_gather.py: x gathered "
                  "at every entry's column, 16 per vgatherdps, nothing else; ms) and the best "
                  "ratio to dense a kernel that gathers x per entry could reach (dense / floor).",
                  ""]
        head = ("| layer | " + " | ".join(f"{k} ms / floor ms" for k in floor_keys)
                + " | dense ms | " + " | ".join(f"{k} dense / floor" for k in floor_keys) + " |")
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            f = r.get("gather_floor_s", {})
            if r["batch"] != 1 or not f:
                continue
            t = r["time_s"]
            cells = [r["layer"]] + [f"{ms(t[k])} / {ms(f.get(k))}" for k in floor_keys]
            cells.append(ms(t["dense"]))
            cells += [f"{t['dense'] / f[k]:.2f}" if k in f else "-" for k in floor_keys]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Goals (AlexNet and VGG FC layers): batch 1 >= 3x dense, >= 1.5x scipy, faster "
              "than torch; batch 64 at density <= 10% faster than dense and torch.", ""]
    for k in keys:
        lines.append(f"- {k}: {'MET' if met[k]['met'] else 'NOT MET'}"
                     + ("" if met[k]["met"] else ": " + "; ".join(met[k]["misses"])))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="timed samples per median")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per sample")
    ap.add_argument("--bits", default="5:5,4:4,5:auto,5:auto:scalar",
                    help="comma-separated weight_bits:index_bits[:scalar] variants of ours "
                         "(:scalar = the scalar batch-1 kernel even where AVX-512 runs)")
    ap.add_argument("--quick", action="store_true", help="three layers only (smoke run)")
    ap.add_argument("--layers", help="comma-separated layer names (e.g. alexnet/fc6); like "
                                     "--quick, writes no results unless --out/--md are given")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON results (default bench/results/kernels.json; none with "
                                  "--quick, so a smoke run never replaces the recorded results)")
    ap.add_argument("--md", help="markdown table (default bench/results/kernels.md; none with "
                                 "--quick)")
    args = ap.parse_args()
    known = [name for name, *_ in LAYERS]
    wanted = set(QUICK) if args.quick else set(known)
    if args.layers:
        wanted = set(args.layers.split(","))
        unknown = sorted(wanted - set(known))
        if unknown:
            ap.error(f"--layers: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    if not (args.quick or args.layers):
        args.out = args.out or "bench/results/kernels.json"
        args.md = args.md or "bench/results/kernels.md"
    bits = parse_bits(args.bits)
    keys = [variant(*b) for b in bits]
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    rng = np.random.default_rng(args.seed)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    bw = bandwidth(args.threads, 5)
    rows = []
    for name, out, n_in, density in LAYERS:
        if name not in wanted:
            continue
        rows += measure_layer(name, out, n_in, density, bits, args.threads, args.repeats,
                              args.min_time, bw, rng)
    env = environment(args.threads, args.seed)
    env["loadavg_before"] = load_before
    env["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    met = goals(rows, keys)
    md = markdown(rows, keys, env, bw, args, met)
    print(md, end="")
    write_json(args.out, {"env": env, "bandwidth_bytes_per_s": bw, "repeats": args.repeats,
                          "min_time_s": args.min_time, "bits": [list(b) for b in bits],
                          "command": " ".join(["python", "bench/bench_kernels.py"] + sys.argv[1:]),
                          "goals": GOALS, "goals_met": met, "results": rows})
    if args.md:
        Path(args.md).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
