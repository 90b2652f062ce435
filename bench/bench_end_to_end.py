"""End to end: images/s of the compressed LeNets (runtime kernels) against their dense models.

For LeNet-300-100 and LeNet-5, loads the committed compressed file (``data/models/ARCH.dc.h5``,
run by :mod:`dc_engine.runtime` on the sparse-quantized kernels) and its dense decode
(``Model.to_dense()``: the same weights as float32 arrays, run by the training
engine's layers, i.e. NumPy/BLAS for the products), and times ``forward`` on real MNIST test
images at batch 1 and batch 256 (plus, when installed, PyTorch 2.x running the same dense
weights, as the framework a user would otherwise pick). Every time is the median of
``--repeats`` samples, each looping the call for at least ``--min-time`` seconds, one
implementation at a time after a discarded warm-up sample; everything runs once before timing
(Numba compilation / cache load). The outputs are checked to agree.

Usage::

    python bench/bench_end_to_end.py [--threads 2] [--repeats 7]
        [--json bench/results/end_to_end.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from _common import environment, timeit, write_json

ROOT = Path(__file__).resolve().parents[1]

ARCHS = ("lenet-300-100", "lenet-5")
BATCHES = (1, 256)


def torch_model(dense):
    """The dense model as a torch.nn.Sequential with the same float32 weights, or None."""
    try:
        import torch
    except ImportError:
        return None
    mods = []
    for layer in dense.layers:
        t = layer.type_name
        hp = layer.hyperparameters
        if t == "Dense":
            m = torch.nn.Linear(hp["in_features"], hp["out_features"])
        elif t == "Conv2D":
            m = torch.nn.Conv2d(hp["in_channels"], hp["out_channels"], hp["kernel_size"],
                                hp["stride"], hp["padding"])
        elif t == "MaxPool2D":
            mods.append(torch.nn.MaxPool2d(hp["size"], hp["stride"]))
            continue
        elif t == "ReLU":
            mods.append(torch.nn.ReLU())
            continue
        elif t == "Flatten":
            mods.append(torch.nn.Flatten())
            continue
        elif t == "Dropout":
            continue
        else:
            return None
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(layer.params["W"]))
            m.bias.copy_(torch.from_numpy(layer.params["b"]))
        mods.append(m)
    return torch.nn.Sequential(*mods).eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="BLAS/Numba/torch threads (2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed samples per median")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per sample")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()

    import dc_engine
    from dc_engine.io.data import load_mnist
    from dc_engine.threads import limit_threads

    ds = load_mnist()
    x_all = ds.x_test[:256].astype(np.float32)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rows = []
    with limit_threads(args.threads):
        for arch in ARCHS:
            path = ROOT / "data" / "models" / f"{arch}.dc.h5"
            cm = dc_engine.load(path)
            dense = cm.to_dense()
            tm = torch_model(dense) if torch is not None else None
            for b in BATCHES:
                x = np.ascontiguousarray(x_all[:b])
                ref = dense.forward(x)
                np.testing.assert_allclose(cm.forward(x), ref, rtol=1e-4,
                                           atol=1e-4 * float(np.abs(ref).max()))
                fns = {"compressed": lambda: cm.forward(x), "dense": lambda: dense.forward(x)}
                if tm is not None:
                    xt = torch.from_numpy(x)
                    with torch.inference_mode():
                        np.testing.assert_allclose(tm(xt).numpy(), ref, rtol=1e-4,
                                                   atol=1e-4 * float(np.abs(ref).max()))

                    def run_torch():
                        with torch.inference_mode():
                            tm(xt)

                    fns["torch"] = run_torch
                t = {k: timeit(f, args.repeats, args.min_time, warm=True) for k, f in fns.items()}
                t_c, t_d, t_t = t["compressed"], t["dense"], t.get("torch")
                row = {"model": arch, "batch": b, "compressed_s": t_c, "dense_s": t_d,
                       "compressed_img_s": b / t_c, "dense_img_s": b / t_d,
                       "speedup_vs_dense": t_d / t_c, "torch_s": t_t,
                       "torch_img_s": None if t_t is None else b / t_t,
                       "speedup_vs_torch": None if t_t is None else t_t / t_c,
                       "file_bytes": path.stat().st_size,
                       "dense_weight_bytes": 4 * dense.num_params()}
                rows.append(row)

    env = environment(args.threads, seed=0)
    print(f"# end to end: {env['cpu']}, {env['cores']} cores, threads={args.threads}, numpy "
          f"{env['numpy']}, numba {env['numba']}, torch {env['torch']}; median of "
          f"{args.repeats} samples (>= {args.min_time}s each)")
    print("| model | batch | compressed img/s | dense (NumPy/BLAS) img/s | x vs dense | "
          "PyTorch dense img/s | x vs PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        tt = "n/a" if r["torch_img_s"] is None else f"{r['torch_img_s']:,.0f}"
        st = "n/a" if r["speedup_vs_torch"] is None else f"{r['speedup_vs_torch']:.2f}"
        print(f"| {r['model']} | {r['batch']} | {r['compressed_img_s']:,.0f} | "
              f"{r['dense_img_s']:,.0f} | {r['speedup_vs_dense']:.2f} | {tt} | {st} |")
    write_json(args.json, {"env": env, "repeats": args.repeats, "min_time_s": args.min_time,
                           "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
