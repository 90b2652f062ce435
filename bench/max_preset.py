"""The max preset, measured: what each method beyond Deep Compression buys, the preset on data
it was never tuned on, and the error-against-size picture.

Subcommands (each writes JSON into bench/results/ or docs/results/):

``ablation ARCH``
    Prunes the dense baseline once with the max preset's [prune] table (dead units kept), then
    builds the file with every method on, and with each method switched off in turn: dead-unit
    removal, shared biases (stage 2's ``bias_bits`` and the shared bias coding), the column
    scan order, the compact container. Reports bytes, validation error and time per variant.
    Validation split only: no test image is read.

``transfer ARCH [--dataset NAME] [--presets paper,max]``
    The presets, unchanged, on a dataset they were never tuned on: MNIST transformed, NAME one
    of inverted (255 - x), shifted (every digit moved by its own random offset of up to 4
    pixels), rotated (turned by its own random angle of up to 20 degrees), thick (strokes
    dilated), noisy (Gaussian pixel noise); the exact transformations are :data:`DATASETS`,
    written as ``out/transfer/mnist-NAME.npz``. Trains the dense baseline with the zoo's
    recipe, compresses it with each preset (the CLI, ``--threads 1``), and reports sizes,
    ratios against the dense network, validation and test errors, and the max preset's guard
    attempts.

``explore ARCH CONFIG OUT [--pruned PRUNED]``
    One setting tried on the way: the stages with CONFIG (from the dense baseline, or stages
    2-3 from a pruned model), validation error only. The settings tried for the presets are in
    ``docs/results/max/explore/``.

``paired``
    Adds ``test_paired`` (test images lost and won against the dense model, and the paired
    standard error of the error change) to transfer results written before it was recorded,
    from the files still in ``out/transfer/`` (only where the file is the one measured).

``frontier``
    The picture: test error against bytes for both LeNets (our files, published results),
    from ``docs/results/max/frontier.json``; writes ``docs/results/max/frontier.png``.

Usage::

    python bench/max_preset.py ablation lenet-300-100   # about 15 minutes here
    python bench/max_preset.py transfer lenet-300-100   # about 20 minutes
    python bench/max_preset.py transfer lenet-300-100 --dataset shifted
    python bench/max_preset.py frontier
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import environment, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FRONTIER = ROOT / "docs" / "results" / "max"


def _val_split(model):
    import dc_engine
    from dc_engine.stages.inputs import split_data

    ds = dc_engine.load_mnist(ROOT / "data" / "mnist").for_input(model.input_shape)
    return ds, split_data(ds, 5000, 0)


def _build(pruned, split, config, *, surgery: bool, bias_bits: bool, order: str, bias: str,
           container: str, out: Path | None = None) -> dict:
    """Quantize and encode a copy of ``pruned`` with the switches given, the file written to
    ``out`` (default: a temporary one); bytes, validation error, seconds."""
    import dataclasses
    import tempfile

    import dc_engine
    from dc_engine.core.train import evaluate
    from dc_engine.stages.encode import encode_model
    from dc_engine.stages.quantize import quantize_model
    from dc_engine.stages.surgery import remove_dead_units

    t0 = time.perf_counter()
    model = copy.deepcopy(pruned)
    dead = {}
    if surgery:
        model, dead = remove_dead_units(model)
    qcfg = config.quantize if bias_bits else dataclasses.replace(config.quantize, bias_bits={})
    q = quantize_model(model, split, qcfg, progress=False, threads=1)
    ecfg = dataclasses.replace(config.encode, order=order, bias=bias, container=container)
    comp = encode_model(model, ecfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = out or Path(tmp) / "m.dc.h5"
        dc_engine.save(comp, path)
        size = path.stat().st_size
        val = evaluate(dc_engine.load(path), split[2], split[3])["error"]
    return {"bytes": size, "val_error": val, "val_error_clustered": q["val_error_clustered"],
            "dead_units": dead, "seconds": time.perf_counter() - t0}


def ablation(arch: str, out: Path) -> dict:
    import dataclasses

    import dc_engine
    from dc_engine.config import default_config_path
    from dc_engine.core.train import evaluate
    from dc_engine.stages.inputs import training_recipe
    from dc_engine.stages.pipeline import CompressConfig, prune_stage
    from dc_engine.threads import limit_threads

    config = CompressConfig.from_toml(default_config_path(arch, "max"))
    dense = dc_engine.load(ROOT / "data" / "models" / f"{arch}.h5")
    ds, split = _val_split(dense)
    recipe = training_recipe(dense, config.train)
    with limit_threads(1):
        t0 = time.perf_counter()
        pruned = copy.deepcopy(dense)
        pcfg = dataclasses.replace(config.prune, remove_dead_units=False)
        prune_stage(pruned, split, pcfg, recipe, threads=1, progress=False)
        prune_s = time.perf_counter() - t0
        print(f"{arch}: pruned in {prune_s:.0f} s, validation error "
              f"{evaluate(pruned, split[2], split[3])['error']:.4f}", flush=True)
        on = dict(surgery=True, bias_bits=True, order=config.encode.order,
                  bias=config.encode.bias, container=config.encode.container)
        variants = {
            "max preset (every method)": on,
            "without dead-unit removal": dict(on, surgery=False),
            "without shared biases (float32 biases)": dict(on, bias_bits=False, bias="float32"),
            "without the column scan order (rows only)": dict(on, order="rows"),
            "without the compact container": dict(on, container="classic"),
            "Deep Compression's stage 2-3 (none of them)": dict(
                surgery=False, bias_bits=False, order="rows", bias="float32",
                container="classic"),
        }
        rows = {}
        for name, switches in variants.items():
            rows[name] = _build(pruned, split, config, **switches)
            r = rows[name]
            print(f"  {name:45s} {r['bytes']:7,d} B  val {100 * r['val_error']:.2f}%  "
                  f"{r['seconds']:.0f} s", flush=True)
    full = rows["max preset (every method)"]["bytes"]
    res = {"architecture": arch, "config": config.to_dict(), "prune_seconds": prune_s,
           "variants": rows,
           "bytes_saved": {name.replace("without ", ""): r["bytes"] - full
                           for name, r in rows.items() if name.startswith("without")},
           "environment": environment(1, 0)}
    write_json(out, res)
    return res


def _mnist_arrays() -> dict:
    folder = ROOT / "data" / "mnist"

    def idx(name):
        with gzip.open(folder / f"{name}.gz") as f:
            raw = f.read()
        ndim = raw[3]
        dims = np.frombuffer(raw[4:4 + 4 * ndim], ">u4").astype(int)
        return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(dims)

    return {"x_train": idx("train-images-idx3-ubyte"), "y_train": idx("train-labels-idx1-ubyte"),
            "x_test": idx("t10k-images-idx3-ubyte"), "y_test": idx("t10k-labels-idx1-ubyte")}


def _shift(images: np.ndarray, rng: np.random.Generator, reach: int) -> np.ndarray:
    """Each image moved by its own (dy, dx), both uniform in -reach..reach, zeros shifted in."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2 * reach, w + 2 * reach), np.uint8)
    padded[:, reach:reach + h, reach:reach + w] = images
    dy, dx = rng.integers(-reach, reach + 1, size=(2, n))
    out = np.empty_like(images)
    for i in range(n):
        out[i] = padded[i, reach - dy[i]:reach - dy[i] + h, reach - dx[i]:reach - dx[i] + w]
    return out


def _rotate(images: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Each image turned about its centre by its own angle, uniform in -degrees..degrees
    (bilinear interpolation, zeros outside the image)."""
    n, h, w = images.shape
    angles = np.deg2rad(rng.uniform(-degrees, degrees, size=n))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.empty_like(images)
    for lo in range(0, n, 5000):
        a = angles[lo:lo + 5000, None, None]
        img = images[lo:lo + 5000].astype(np.float64)
        # inverse map: the source of output pixel p is R(-a) (p - c) + c
        sy = np.cos(a) * (yy - cy) - np.sin(a) * (xx - cx) + cy
        sx = np.sin(a) * (yy - cy) + np.cos(a) * (xx - cx) + cx
        y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
        fy, fx = sy - y0, sx - x0
        k = np.arange(len(img))[:, None, None]
        acc = np.zeros_like(img)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                yi, xi = y0 + dy, x0 + dx
                inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
                acc += np.where(inside, img[k, yi.clip(0, h - 1), xi.clip(0, w - 1)], 0) * wy * wx
        out[lo:lo + 5000] = np.rint(acc).clip(0, 255).astype(np.uint8)
    return out


def _thicken(images: np.ndarray) -> np.ndarray:
    """Strokes thickened: each pixel the largest of its 3 x 3 neighbourhood (grey dilation)."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2, w + 2), images.dtype)
    padded[:, 1:-1, 1:-1] = images
    return np.max([padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)],
                  axis=0)


def _add_noise(images: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian noise of standard deviation ``sigma`` (intensity units) added to every pixel,
    rounded and clipped to 0..255."""
    noisy = images + rng.normal(0.0, sigma, size=images.shape)
    return np.rint(noisy).clip(0, 255).astype(np.uint8)


DATASETS = {
    "inverted": "MNIST, intensities inverted (255 - x)",
    "rotated": "MNIST, every digit turned about the image centre by its own random angle, "
               "uniform in -20..20 degrees (seed 2027; bilinear, zeros outside)",
    "thick": "MNIST, strokes thickened by a 3 x 3 grey dilation (each pixel the largest of its "
             "neighbourhood)",
    "noisy": "MNIST plus Gaussian pixel noise of standard deviation 50 (of 255), rounded and "
             "clipped (seed 2029)",
    "shifted": "MNIST, every digit moved by its own random offset of up to 4 pixels in each "
               "direction (seed 2026; zeros shifted in)",
}
"""The transformations of MNIST the transfer runs use (``transfer --dataset``)."""


def transformed_mnist(name: str, path: Path) -> Path:
    """MNIST transformed as :data:`DATASETS` says, as one .npz (uint8 images, N x 28 x 28)."""
    if path.is_file():
        return path
    arrays = _mnist_arrays()
    if name == "inverted":
        for k in ("x_train", "x_test"):
            arrays[k] = 255 - arrays[k]
    elif name == "shifted":
        rng = np.random.default_rng(2026)
        for k in ("x_train", "x_test"):
            arrays[k] = _shift(arrays[k], rng, 4)
    elif name == "rotated":
        rng = np.random.default_rng(2027)
        for k in ("x_train", "x_test"):
            arrays[k] = _rotate(arrays[k], rng, 20.0)
    elif name == "thick":
        for k in ("x_train", "x_test"):
            arrays[k] = _thicken(arrays[k])
    elif name == "noisy":
        rng = np.random.default_rng(2029)
        for k in ("x_train", "x_test"):
            arrays[k] = _add_noise(arrays[k], rng, 50.0)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def _cli(*args, json_out: bool = True) -> tuple[dict | None, float]:
    """Run ``dc-engine ARGS`` (its JSON output parsed); fails loudly with its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dc_engine.app.cli", *args]
                          + (["--json"] if json_out else []),
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"dc-engine {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if json_out else None
    return out, time.perf_counter() - t0


def _paired_test(dense: Path, compressed: Path, data: Path) -> dict:
    """Test images the dense model gets right and the file wrong and the reverse, with the
    paired standard error of the error change (:func:`dc_engine.stages.guard.paired_difference`)."""
    import dc_engine
    from dc_engine.io.data import load_dataset
    from dc_engine.stages.guard import paired_difference
    from dc_engine.threads import limit_threads

    with limit_threads(1):
        a, b = dc_engine.load(dense), dc_engine.load(compressed)
        ds = load_dataset(data).for_input(a.input_shape)
        return paired_difference(a.predict(ds.x_test) == ds.y_test,
                                 b.predict(ds.x_test) == ds.y_test)


def _work_files(work: Path, dataset: str, arch: str) -> tuple[Path, str]:
    """The transformed dataset's .npz in ``work`` and the stem of the run's model files
    (``STEM.h5``, ``STEM.PRESET.dc.h5``; inverted MNIST, the first, has the bare name)."""
    return (work / f"mnist-{dataset}.npz",
            arch if dataset == "inverted" else f"{dataset}.{arch}")


def transfer(arch: str, out: Path, work: Path, dataset: str = "inverted",
             presets: tuple = ("paper", "max")) -> dict:
    npz, stem = _work_files(work, dataset, arch)
    data = transformed_mnist(dataset, npz)
    dense = work / f"{stem}.h5"
    res = {"architecture": arch, "dataset": DATASETS[dataset],
           "data": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data)}
    if not dense.is_file():
        _, s = _cli("train", arch, "--out", str(dense), "--data", str(data), "--threads", "1",
                    "--no-progress", json_out=False)
        res["train_seconds"] = s
    ev, _ = _cli("eval", str(dense), "--data", str(data))
    res["dense_test_error"] = ev["error"]
    # the dense network's 4 bytes per parameter (a file's own report counts the parameters it
    # holds, fewer after dead-unit removal)
    original = 4 * ev["params"]
    res["original_bytes"] = original
    for preset in presets:
        path = work / f"{stem}.{preset}.dc.h5"
        rep, s = _cli("compress", str(dense), "--out", str(path), "--data", str(data),
                      "--preset", preset, "--threads", "1", "--force", "--no-progress")
        ev, _ = _cli("eval", str(path), "--data", str(data))
        res[preset] = {"bytes": path.stat().st_size, "ratio": original / path.stat().st_size,
                       "test_error": ev["error"],
                       "val_error_dense": rep["prune"]["val_error_dense"],
                       "val_error": rep["quantize"]["val_error_finetuned"],
                       "guard": rep.get("guard"), "config": rep["config"], "seconds": s,
                       "test_paired": _paired_test(dense, path, data)}
        print(f"{arch} on {dataset} MNIST, {preset}: {path.stat().st_size:,} B "
              f"({res[preset]['ratio']:.1f}x), test error {100 * ev['error']:.2f}% "
              f"(dense {100 * res['dense_test_error']:.2f}%, change s.e. "
              f"{100 * res[preset]['test_paired']['se']:.2f} points)", flush=True)
    res["environment"] = environment(1, 0)
    write_json(out, res)
    return res


def add_paired(work: Path) -> list[Path]:
    """Add ``test_paired`` (:func:`_paired_test`) to the transfer results written before it
    was recorded, from the files in ``work``; a preset whose file there is not the one the
    result measured (another size) is left as it is. Returns the results changed."""
    names = {v: k for k, v in DATASETS.items()}
    changed = []
    for path in sorted(RESULTS.glob("max_transfer_*.json")):
        res = json.loads(path.read_text())
        name = names.get(res.get("dataset"))
        if name is None:
            continue
        npz, stem = _work_files(work, name, res["architecture"])
        todo = [p for p in ("paper", "max") if p in res and "test_paired" not in res[p]]
        for preset in todo:
            f = work / f"{stem}.{preset}.dc.h5"
            if f.is_file() and f.stat().st_size == res[preset]["bytes"]:
                res[preset]["test_paired"] = _paired_test(work / f"{stem}.h5", f, npz)
        if any("test_paired" in res[p] for p in todo):
            write_json(path, res)
            changed.append(path)
    return changed


def explore(arch: str, config: Path, out: Path, pruned: Path | None = None) -> dict:
    """One setting tried on the way to the preset: the three stages with ``config`` on the
    dense baseline (or stages 2-3 on an already pruned model), the file written to ``out``,
    VALIDATION error only (the dataset handed to the stages has no test images)."""
    import dc_engine
    from dc_engine.core.train import evaluate
    from dc_engine.io.data import Dataset
    from dc_engine.stages.pipeline import CompressConfig
    from dc_engine.stages.pipeline import compress as compress_model
    from dc_engine.threads import limit_threads

    t0 = time.perf_counter()
    cfg = CompressConfig.from_toml(config)
    model = dc_engine.load(pruned or ROOT / "data" / "models" / f"{arch}.h5")
    ds, split = _val_split(model)
    no_test = Dataset(ds.x_train, ds.y_train, ds.x_train[:0], ds.y_train[:0])
    with limit_threads(1):
        if pruned is None:
            comp, rep = compress_model(model, no_test, cfg, threads=1, progress=False)
            dc_engine.save(rep["models"]["pruned"], out.with_name(
                out.name.replace(".dc.h5", ".pruned.h5")))
            dc_engine.save(comp, out)
            val = evaluate(dc_engine.load(out), split[2], split[3])["error"]
        else:
            e = cfg.encode
            val = _build(model, split, cfg, surgery=cfg.prune.remove_dead_units, bias_bits=True,
                         order=e.order, bias=e.bias, container=e.container, out=out)["val_error"]
    res = {"config": str(config), "file": str(out), "bytes": out.stat().st_size,
           "val_error": val, "seconds": time.perf_counter() - t0}
    print(json.dumps(res), flush=True)
    return res


def frontier() -> Path | None:
    from dc_engine.app.plots import frontier_plot

    data = json.loads((FRONTIER / "frontier.json").read_text())
    return frontier_plot(data, FRONTIER / "frontier.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ablation")
    a.add_argument("arch", choices=["lenet-300-100", "lenet-5"])
    a.add_argument("--json", type=Path)
    t = sub.add_parser("transfer")
    t.add_argument("arch", choices=["lenet-300-100", "lenet-5"])
    t.add_argument("--json", type=Path)
    t.add_argument("--work", type=Path, default=ROOT / "out" / "transfer")
    t.add_argument("--dataset", choices=sorted(DATASETS), default="inverted")
    t.add_argument("--presets", default="paper,max",
                   help="comma-separated presets to run (default: paper,max)")
    e = sub.add_parser("explore")
    e.add_argument("arch", choices=["lenet-300-100", "lenet-5"])
    e.add_argument("config", type=Path)
    e.add_argument("out", type=Path)
    e.add_argument("--pruned", type=Path, help="start from this pruned model (stages 2-3)")
    sub.add_parser("frontier")
    pp = sub.add_parser("paired")
    pp.add_argument("--work", type=Path, default=ROOT / "out" / "transfer")
    args = ap.parse_args(argv)
    if args.cmd == "ablation":
        ablation(args.arch, args.json or RESULTS / f"max_ablation_{args.arch}.json")
    elif args.cmd == "explore":
        explore(args.arch, args.config, args.out, args.pruned)
    elif args.cmd == "transfer":
        name = args.arch if args.dataset == "inverted" else f"{args.dataset}_{args.arch}"
        transfer(args.arch, args.json or RESULTS / f"max_transfer_{name}.json", args.work,
                 args.dataset, tuple(args.presets.split(",")))
    elif args.cmd == "paired":
        for path in add_paired(args.work):
            print(f"added test_paired to {path.relative_to(ROOT)}")
    else:
        print(f"wrote {frontier()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
