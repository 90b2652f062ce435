"""The compression job, stage by stage, as the paper tells it (Deep Compression Fig. 1).

Stage 1 (Sec. 2): prune -> retrain with masks -> prune harder -> retrain ...  (:func:`prune`)
Stage 2 (Sec. 3): share weights by k-means -> fine-tune the centroids          (:func:`quantize`)
Stage 3 (Sec. 4): Huffman-code codes and relative indices into a .dc.h5 file  (:func:`encode`)
All three on a dense model: :func:`compress`. The table of a compressed file: :func:`inspect`.

Each function reads its input file, runs the stage on the shipped (or given) data, writes its
output file atomically and returns a JSON-able report. No arithmetic lives here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import container, store
from .compress import EncodeConfig, encode_model, size_report, size_table
from .config import ConfigError, default_config_path, dump_toml, load_toml
from .data import load_mnist, train_val_split
from .prune import PruneConfig, layer_stats, prune_model, sensitivity_scan
from .quantize import QuantizeConfig, quantize_model
from .threads import limit_threads
from .train import evaluate
from .zoo import RECIPES

log = logging.getLogger(__name__)


def _recipe(model) -> dict:
    """The training recipe a model was trained with (its metadata), else its zoo recipe."""
    meta = getattr(model, "metadata", {}) or {}
    cfg = meta.get("train_config")
    if isinstance(cfg, dict):
        return {k: v for k, v in cfg.items() if k != "seed"}
    if model.name in RECIPES:
        return dict(RECIPES[model.name])
    raise ConfigError(f"{model.name}: no training recipe in the file's metadata and none in "
                      "the zoo; give every retraining setting in the config's [prune.retrain]")


def _read_stage_config(config_path, architecture: str, stage: str, cls,
                       optional: bool = False):
    """The [stage] table of ``config_path`` (default: the architecture's shipped config).

    With ``optional``, a missing table (or no shipped config) gives ``cls()``, the defaults,
    and the path None when no file was read."""
    if config_path:
        path = Path(config_path)
    else:
        try:
            path = default_config_path(architecture)
        except ConfigError:
            if optional:
                return cls(), None
            raise
    table = load_toml(path).get(stage, {} if optional else None)
    if not isinstance(table, dict):
        raise ConfigError(f"{path} has no [{stage}] table")
    try:
        return cls.from_dict(table), path
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None


def read_prune_config(config_path, architecture: str) -> tuple[PruneConfig, Path]:
    """The [prune] table of ``config_path`` (default: the architecture's shipped config)."""
    return _read_stage_config(config_path, architecture, "prune", PruneConfig)


def read_quantize_config(config_path, architecture: str) -> tuple[QuantizeConfig, Path]:
    """The [quantize] table of ``config_path`` (default: the architecture's shipped config)."""
    return _read_stage_config(config_path, architecture, "quantize", QuantizeConfig)


def read_encode_config(config_path, architecture: str) -> tuple[EncodeConfig, Path | None]:
    """The [encode] table of ``config_path`` (default: the architecture's shipped config);
    defaults (5-bit indices) when the file has no [encode] table or the architecture has no
    shipped config."""
    return _read_stage_config(config_path, architecture, "encode", EncodeConfig, optional=True)


def _stage_inputs(model_path, config_path, data, read_config) -> tuple:
    """What a training stage starts from: the model, its stage config (checked against the
    model) and the config's path, its training recipe, the dataset and the (train, val) split
    of the config's ``val_size`` and ``seed``."""
    model = store.load(model_path)
    config, cfg_path = read_config(config_path, model.name)
    config.check_model(model)
    recipe = _recipe(model)  # before the dataset: a config problem is reported first
    ds = load_mnist(data)
    split = train_val_split(ds.x_train, ds.y_train, config.val_size, config.seed)
    return model, config, cfg_path, recipe, ds, split


def _write_report(report: dict, out_path: Path, report_dir) -> str:
    """Write ``<stem>.report.json`` into ``report_dir`` (default: the folder of ``out_path``);
    returns the path prefix ``<report_dir>/<stem>`` for the stage's figures."""
    report_dir = Path(report_dir) if report_dir else out_path.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    base = report_dir / out_path.name.removesuffix(".h5")
    Path(f"{base}.report.json").write_text(json.dumps(report, indent=1) + "\n")
    return str(base)


def _write_study(out_dir, name: str, result: dict, table, plot) -> None:
    """Write ``name``.json, .md (``table(result)``) and .png (``plot``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(table(result))
    plot(result, out_dir / f"{name}.png")


def prune(dense_path, out_path, config_path=None, data=None, report_dir=None,
          threads: int | None = None, progress: bool = True) -> dict:
    """Stage 1 on a dense model file: iterative magnitude pruning with masked retraining.

    Writes ``out_path`` (an ordinary dense model whose pruned weights are 0.0; the settings
    and the report are in its metadata) and, in ``report_dir`` (default: the folder of
    ``out_path``), ``<stem>.report.json`` and ``<stem>.weights.png``.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    model, config, cfg_path, recipe, ds, (x_tr, y_tr, x_val, y_val) = _stage_inputs(
        dense_path, config_path, data, read_prune_config)
    before = {l.name: l.params["W"].copy() for l in model.layers if l.name in config.layers}
    with limit_threads(threads):
        test_dense = evaluate(model, ds.x_test, ds.y_test)["error"]
        report = prune_model(model, config, recipe, x_tr, y_tr, x_val, y_val,
                             progress=progress, threads=threads)
        test_pruned = evaluate(model, ds.x_test, ds.y_test)["error"]
    total_w = sum(s["weights"] for s in report["layers"])
    total_kept = sum(s["kept"] for s in report["layers"])
    report.update({
        "source": str(dense_path), "architecture": model.name, "config_file": str(cfg_path),
        "config": config.to_dict(), "config_toml": dump_toml({"prune": config.to_dict()}),
        "test_error_dense": test_dense, "test_error": test_pruned,
        "weights": total_w, "kept": total_kept, "kept_fraction": total_kept / total_w,
        "seconds": time.perf_counter() - t0})
    for layer in model.layers:  # the mask is derivable from the zeros: store none
        layer.masks.clear()
    store.save(model, out_path, metadata={"command": "prune", "prune": report,
                                          "train_config": recipe})
    base = _write_report(report, out_path, report_dir)
    from .plots import weight_histograms
    after = {n: model[n].params["W"] for n in before}
    weight_histograms(before, after, f"{base}.weights.png",
                      f"{model.name}: weights before pruning and kept after retraining")
    return report


def quantize(pruned_path, out_path, config_path=None, data=None, report_dir=None,
             threads: int | None = None, progress: bool = True) -> dict:
    """Stage 2 on a (pruned) model file: k-means weight sharing per layer, then fine-tuning of
    the shared centroids with the summed gradients (DC Sec. 3).

    Writes ``out_path`` (codebook + index per quantized layer; see docs/FORMAT.md) and, in
    ``report_dir``, ``<stem>.report.json`` and ``<stem>.codebook.png``.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    model, config, cfg_path, recipe, ds, (x_tr, y_tr, x_val, y_val) = _stage_inputs(
        pruned_path, config_path, data, read_quantize_config)
    if len(x_val) == 0:
        raise ConfigError("quantization reports validation errors: val_size must be > 0")
    before = {n: model[n].params["W"].copy() for n in config.bits}
    with limit_threads(threads):
        test_before = evaluate(model, ds.x_test, ds.y_test)["error"]
        report = quantize_model(model, config, recipe, x_tr, y_tr, x_val, y_val,
                                progress=progress, threads=threads)
        test_after = evaluate(model, ds.x_test, ds.y_test)["error"]
    report.update({
        "source": str(pruned_path), "architecture": model.name, "config_file": str(cfg_path),
        "config": config.to_dict(), "config_toml": dump_toml({"quantize": config.to_dict()}),
        "test_error_before": test_before, "test_error": test_after,
        "seconds": time.perf_counter() - t0})
    meta = dict(getattr(model, "metadata", {}) or {})
    meta.update({"command": "quantize", "quantize": report, "train_config": recipe})
    store.save(model, out_path, metadata=meta)
    base = _write_report(report, out_path, report_dir)
    from .plots import codebook_plot
    codebook_plot(before, report["codebooks_clustered"],
                  {l["name"]: l["codebook"] for l in report["layers"]},
                  f"{base}.codebook.png",
                  f"{model.name}: weights and shared centroids")
    return report


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".dc.h5", ".h5"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def _check_decoded(model, out_path: Path) -> None:
    """Read the written file back; every weight and bias must equal the model's bit for bit."""
    from .runtime import load as load_compressed

    loaded = load_compressed(out_path)
    for layer, got in zip((l for l in model.layers if l.params),
                          (l for l in loaded.layers if hasattr(l, "weight"))):
        same_w = np.array_equal(got.weight().view(np.uint32),
                                layer.params["W"].astype(np.float32).view(np.uint32))
        b = layer.params.get("b")
        same_b = b is None or np.array_equal(got.bias.view(np.uint32), b.view(np.uint32))
        if not (same_w and same_b):
            raise RuntimeError(f"{out_path}: layer {layer.name!r} does not decode to the "
                               f"quantized weights; this is a bug, please report it")


def encode(quantized_path, out_path, config_path=None, report_dir=None, model=None) -> dict:
    """Stage 3 on a quantized model file: Huffman-code each layer's codes and relative
    indices (DC Sec. 4) into a compressed ``.dc.h5`` file (docs/FORMAT.md), then read it back
    and check that it decodes to the quantized weights bit for bit.

    Writes ``out_path`` and, in ``report_dir`` (default: the folder of ``out_path``),
    ``<stem>.sizes.json`` (the :func:`dc_engine.compress.size_report`) and
    ``<stem>.sizes.png``. Returns the size report (with ``file_bytes``, ``config``).
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    if model is None:
        model = store.load(quantized_path)
    config, cfg_path = read_encode_config(config_path, model.name)
    records = encode_model(model, config, verify=False)  # _check_decoded checks the file itself
    written = container.write(out_path, model.name, model.input_shape, records)
    _check_decoded(model, written)
    report = size_report(records, os.path.getsize(written), model.name)
    report.update({"source": str(quantized_path), "out": str(out_path),
                   "config_file": None if cfg_path is None else str(cfg_path),
                   "config": config.to_dict(), "seconds": time.perf_counter() - t0})
    report_dir = Path(report_dir) if report_dir else out_path.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    base = report_dir / _stem(out_path)
    Path(f"{base}.sizes.json").write_text(json.dumps(report, indent=1) + "\n")
    from .plots import size_plot
    size_plot(report, f"{base}.sizes.png")
    return report


def inspect(path) -> dict:
    """The size report of a compressed file, from the file alone (no dataset needed)."""
    c = container.read(path)
    report = size_report(c.layers, os.path.getsize(path), c.architecture)
    report["path"] = str(path)
    report["input_shape"] = list(c.input_shape)
    report["version"] = c.version
    return report


def compress(dense_path, out_path, config_path=None, data=None, report_dir=None,
             threads: int | None = None, progress: bool = True, keep: bool = False) -> dict:
    """The whole job on a dense model file: prune + retrain (stage 1), quantize + fine-tune
    (stage 2), Huffman-encode (stage 3) into ``out_path``; then evaluate the compressed file.

    With ``keep``, the intermediate models are kept beside ``out_path`` as
    ``<stem>.pruned.h5`` and ``<stem>.quantized.h5``; otherwise they live in a temporary folder.
    Reports and figures of every stage go to ``report_dir`` (default: the folder of
    ``out_path``); ``<stem>.report.json`` holds all three stages and the test errors.
    """
    t0 = time.perf_counter()

    def say(*what) -> None:
        if progress:
            print(f"[{time.perf_counter() - t0:6.0f} s]", *what, file=sys.stderr, flush=True)

    out_path = Path(out_path)
    stem = _stem(out_path)
    report_dir = Path(report_dir) if report_dir else out_path.parent
    with tempfile.TemporaryDirectory(prefix="dc-engine-") as tmp:
        work = out_path.parent if keep else Path(tmp)
        pruned, quantized = work / f"{stem}.pruned.h5", work / f"{stem}.quantized.h5"
        say("stage 1/3: pruning and retraining", dense_path)
        p_report = prune(dense_path, pruned, config_path, data, report_dir, threads, progress)
        say("stage 2/3: weight sharing and centroid fine-tuning")
        q_report = quantize(pruned, quantized, config_path, data, report_dir, threads,
                            progress)
        say("stage 3/3: Huffman coding into", out_path)
        sizes = encode(quantized, out_path, config_path, report_dir)
    from .runtime import load as load_compressed

    ds = load_mnist(data)
    with limit_threads(threads):
        test_compressed = evaluate(load_compressed(out_path), ds.x_test, ds.y_test)["error"]
    report = {
        "architecture": sizes["architecture"], "source": str(dense_path), "out": str(out_path),
        "test_error_dense": p_report["test_error_dense"],
        "test_error_pruned": p_report["test_error"],
        "test_error_quantized": q_report["test_error"],
        "test_error_compressed": test_compressed,
        "sizes": sizes, "prune": p_report, "quantize": q_report,
        "seconds": time.perf_counter() - t0,
    }
    (report_dir / f"{stem}.report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def compress_table(report: dict) -> str:
    """The whole job's summary: the stage tables, the size table, the errors."""
    parts = ["== stage 1: pruning", prune_table(report["prune"]),
             "== stage 2: trained quantization", quantize_table(report["quantize"]),
             "== stage 3: Huffman coding", size_table(report["sizes"])]
    errs = (f"test error: dense {100 * report['test_error_dense']:.2f}% -> pruned "
            f"{100 * report['test_error_pruned']:.2f}% -> quantized "
            f"{100 * report['test_error_quantized']:.2f}% -> compressed file "
            f"{100 * report['test_error_compressed']:.2f}%   ({report['seconds']:.0f} s)")
    return "\n".join(parts) + errs + "\n"


def quantize_table(report: dict) -> str:
    """The per-layer quantization report as text."""
    lines = [f"{'layer':<8} {'bits':>4} {'#weights':>9} {'non-zero':>9} {'distinct':>8} "
             f"{'largest cluster':>15} {'empty clusters':>14}"]
    for l in report["layers"]:
        pops = l["populations"][1:]
        lines.append(f"{l['name']:<8} {l['bits']:>4} {l['weights']:>9,} {l['nonzero']:>9,} "
                     f"{l['distinct_nonzero']:>8} {max(pops, default=0):>15,} "
                     f"{sum(1 for p in pops if p == 0):>14}")
    lines.append("")
    lines.append(f"validation error: before {100 * report['val_error_before']:.2f}%  after "
                 f"clustering {100 * report['val_error_clustered']:.2f}%  after fine-tuning "
                 f"{100 * report['val_error_finetuned']:.2f}%")
    lines.append(f"test error: before {100 * report['test_error_before']:.2f}% -> quantized "
                 f"{100 * report['test_error']:.2f}%   ({report['seconds']:.0f} s)")
    return "\n".join(lines) + "\n"


def bits_sweep(pruned_path, out_dir, bits=range(2, 9), inits=("linear", "density", "random"),
               finetune_epochs: int = 1, config_path=None, data=None,
               threads: int | None = None) -> dict:
    """Validation error against bits (every quantized layer at the same width) for each
    initialisation, after clustering and after ``finetune_epochs`` of centroid fine-tuning
    (like DC Figs. 7-8). Writes ``bits_sweep.json``, ``.md`` and ``.png`` into ``out_dir``."""
    base = store.load(pruned_path)
    config, _ = read_quantize_config(config_path, base.name)
    recipe = _recipe(base)
    ds = load_mnist(data)
    x_tr, y_tr, x_val, y_val = train_val_split(ds.x_train, ds.y_train, config.val_size,
                                               config.seed)
    bits = [int(b) for b in bits]
    out = {"architecture": base.name, "bits": bits, "finetune_epochs": finetune_epochs,
           "layers": list(config.bits), "clustered": {}, "finetuned": {}}
    with limit_threads(threads):
        out["baseline"] = evaluate(base, x_val, y_val)["error"]
        for init in inits:
            out["clustered"][init], out["finetuned"][init] = [], []
            for b in bits:
                model = store.load(pruned_path)
                ft = dict(config.finetune, epochs=finetune_epochs)
                cfg = QuantizeConfig(bits={n: b for n in config.bits}, init=init, finetune=ft,
                                     lr_scale=config.lr_scale, val_size=config.val_size,
                                     seed=config.seed)
                r = quantize_model(model, cfg, recipe, x_tr, y_tr, x_val, y_val,
                                   progress=False, threads=threads)
                out["clustered"][init].append(r["val_error_clustered"])
                out["finetuned"][init].append(r["val_error_finetuned"])
                log.info("%s %d bits: clustered %.4f fine-tuned %.4f", init, b,
                         r["val_error_clustered"], r["val_error_finetuned"])
    from .plots import bits_plot
    _write_study(out_dir, "bits_sweep", out, bits_table, bits_plot)
    return out


def bits_table(sweep: dict) -> str:
    """Markdown: validation error (%) per init and bits, after clustering / after fine-tuning."""
    head = "| init | " + " | ".join(f"{b} bits" for b in sweep["bits"]) + " |"
    rows = [head, "|---" * (len(sweep["bits"]) + 1) + "|"]
    for init in sweep["clustered"]:
        cells = [f"{100 * c:.2f} / {100 * f:.2f}"
                 for c, f in zip(sweep["clustered"][init], sweep["finetuned"][init])]
        rows.append(f"| {init} | " + " | ".join(cells) + " |")
    rows.append("")
    rows.append(f"Validation error (%) after clustering / after {sweep['finetune_epochs']} "
                f"epoch(s) of centroid fine-tuning, every layer at the same width; pruned model: "
                f"{100 * sweep['baseline']:.2f}%.")
    return "\n".join(rows) + "\n"


def sensitivity(dense_path, out_dir, data=None, fractions=None, val_size: int = 5000,
                seed: int = 0, threads: int | None = None) -> dict:
    """LWC Fig. 6 for a dense model file: writes ``sensitivity.json``, ``sensitivity.md`` and
    ``sensitivity.png`` into ``out_dir`` and returns the scan."""
    model = store.load(dense_path)
    ds = load_mnist(data)
    _, _, x_val, y_val = train_val_split(ds.x_train, ds.y_train, val_size, seed)
    if len(x_val) == 0:
        raise ValueError("the sensitivity scan needs a validation split (val_size > 0)")
    kw = {} if fractions is None else {"fractions": tuple(fractions)}
    with limit_threads(threads):
        scan = sensitivity_scan(model, x_val, y_val, **kw)
    scan["architecture"] = model.name
    scan["layers"] = layer_stats(model)
    from .plots import sensitivity_plot
    _write_study(out_dir, "sensitivity", scan, sensitivity_table, sensitivity_plot)
    return scan


def sensitivity_table(scan: dict) -> str:
    """Markdown: one row per layer, validation error (%) at each kept-fraction."""
    head = "| layer | " + " | ".join(f"{100 * f:g}% kept" for f in scan["fractions"]) + " |"
    rows = [head, "|---" * (len(scan["fractions"]) + 1) + "|"]
    for name, errs in scan["errors"].items():
        rows.append(f"| {name} | " + " | ".join(f"{100 * e:.2f}" for e in errs) + " |")
    rows.append("")
    rows.append(f"Validation error of the dense model: {100 * scan['baseline']:.2f}%. Each "
                "layer is pruned alone by magnitude, without retraining.")
    return "\n".join(rows) + "\n"


def prune_table(report: dict) -> str:
    """The per-layer pruning report as text (paper-style)."""
    rounds = report["rounds"]
    lines = [f"{'layer':<8} {'#weights':>9} {'kept':>8} {'kept %':>7}"]
    for s in report["layers"]:
        lines.append(f"{s['name']:<8} {s['weights']:>9,} {s['kept']:>8,} "
                     f"{100 * s['kept_fraction']:>6.2f}%")
    lines.append(f"{'total':<8} {report['weights']:>9,} {report['kept']:>8,} "
                 f"{100 * report['kept_fraction']:>6.2f}%  "
                 f"({report['weights'] / max(report['kept'], 1):.1f}x fewer weights)")
    lines.append("")
    lines.append(f"{'round':<6} {'val error after pruning':>24} {'after retraining':>17}")
    dense = report.get("val_error_dense")
    if dense is not None:
        lines.append(f"{'dense':<6} {100 * dense:>23.2f}%")
    def pct(e, width):
        return f"{'n/a':>{width + 1}}" if e is None else f"{100 * e:>{width}.2f}%"

    for r in rounds:
        lines.append(f"{r['round']:<6} {pct(r['val_error_pruned'], 23)} "
                     f"{pct(r['val_error_retrained'], 16)}")
    lines.append("")
    lines.append(f"test error: dense {100 * report['test_error_dense']:.2f}% -> pruned "
                 f"{100 * report['test_error']:.2f}%   ({report['seconds']:.0f} s)")
    return "\n".join(lines) + "\n"


__all__ = ["prune", "sensitivity", "quantize", "bits_sweep", "encode", "compress", "inspect",
           "read_prune_config", "read_quantize_config", "read_encode_config", "compress_table",
           "prune_table", "sensitivity_table", "quantize_table", "bits_table"]
