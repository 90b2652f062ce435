"""The ``dc-engine`` command line. It only parses arguments, calls the jobs
(:mod:`dc_engine.app.jobs`) and prints; the work happens in the library."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

PROG = "dc-engine"


class CLIError(Exception):
    """A user error the CLI reports in one line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``dc-engine COMMAND: error: ... (see --help)``, exit 2
    (argparse's default prints the usage first, on several lines)."""

    def error(self, message: str):
        from ..errors import one_line
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _threads(text: str) -> int:
    from ..threads import check_threads
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    try:
        return check_threads(n)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", default=None,
                   help="the dataset: a folder in MNIST's four-file IDX layout "
                        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) or one "
                        ".npz file holding x_train, y_train, x_test, y_test (images (N, H, W), "
                        "(N, C, H, W) or (N, H, W, C), uint8 scaled to [0, 1] or float kept; "
                        "integer labels 0..255); default: the MNIST copy in data/mnist of a "
                        "dc-engine source checkout (an installed package has none: pass --data)")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="BLAS and Numba threads, at most the cores this process may use "
                        "(default: all cores). On a busy machine use 1: spinning BLAS threads "
                        "can make 2 threads many times slower than 1")


def _add_stage_parser(sub, name: str, summary: str, description: str, model: tuple[str, str],
                      out: tuple[str, str, str], tables: str | None = None,
                      training: bool = True) -> argparse.ArgumentParser:
    """A compression-stage command: MODEL [--out FILE --config --report-dir --force ...];
    ``out`` is (metavar, help, default suffix); ``training`` adds --no-progress, --threads and
    --data. Returns the parser for extras."""
    p = sub.add_parser(name, help=summary, description=description)
    p.add_argument("model", metavar=model[0], help=model[1])
    p.add_argument("--out", metavar=out[0], default=None,
                   help=f"{out[1]} (default: STEM{out[2]} in the current folder, STEM the "
                        f"model's file name without .h5, .pruned, .quantized)")
    p.set_defaults(out_suffix=out[2])
    p.add_argument("--config", metavar="FILE.toml",
                   help=f"settings ({tables or f'[{name}] table'}); default: the "
                        f"architecture's shipped config")
    p.add_argument("--report-dir", metavar="DIR",
                   help="where reports and figures go (default: the folder of --out)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    if training:
        p.add_argument("--no-progress", action="store_true", help="no progress output")
        _add_threads(p)
        _add_data(p)
    return p


def _parser() -> argparse.ArgumentParser:
    from .._version import __version__
    from ..config import PRESETS
    from ..core.zoo import ARCHITECTURES, RECIPES

    ap = _Parser(
        prog=PROG,
        description="Deep Compression (Han, Mao, Dally, ICLR 2016) on a NumPy + Numba engine: "
                    "train the paper's LeNets, prune, quantize and Huffman-encode them into "
                    "small HDF5 files (compress does all three), inspect and evaluate them.",
        epilog="Run 'dc-engine COMMAND --help' for the options of a command.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each epoch (INFO level)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    defaults = "; ".join(
        f"{a}: " + ", ".join(f"{k}={v}" for k, v in RECIPES[a].items()) for a in RECIPES)
    tp = sub.add_parser(
        "train", help="train a LeNet from scratch and save it as a dense HDF5 model",
        description="Train one of the paper's MNIST networks with SGD (momentum, L2 weight "
                    "decay, Caffe's learning-rate policies) on the training images minus a "
                    "held-out validation split, then report validation and test error and save "
                    "the model. Options left out take the architecture's documented recipe "
                    f"({defaults}).")
    tp.add_argument("arch", choices=sorted(ARCHITECTURES), help="network to train")
    tp.add_argument("--out", required=True, metavar="FILE.h5", help="where to save the model")
    tp.add_argument("--epochs", type=int, help="passes over the training split")
    tp.add_argument("--lr", type=float, help="base learning rate")
    tp.add_argument("--batch-size", type=int, help="images per SGD step")
    tp.add_argument("--seed", type=int, default=0,
                    help="seeds initialisation, split, shuffling, augmentation (default 0)")
    tp.add_argument("--momentum", type=float, help="SGD momentum")
    tp.add_argument("--weight-decay", type=float, help="L2 weight decay on weights (not biases)")
    tp.add_argument("--lr-policy", choices=["inv", "step", "fixed"],
                    help="learning-rate schedule: inv = lr*(1+gamma*iter)^-power (Caffe's "
                         "LeNet solver), step = lr*gamma^(epoch//step-epochs), fixed")
    tp.add_argument("--gamma", type=float, help="gamma of the lr policy")
    tp.add_argument("--power", type=float, help="power of the inv policy")
    tp.add_argument("--step-epochs", type=int, help="epochs between decays (step policy)")
    tp.add_argument("--augment-shift", type=int,
                    help="random translation of training images by up to this many pixels "
                         "(0 turns augmentation off)")
    tp.add_argument("--val-size", type=int, default=5000,
                    help="training images held out for validation (default 5000)")
    _add_threads(tp)
    tp.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    tp.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data(tp)

    ep = sub.add_parser(
        "eval", help="test error of a saved model",
        description="Evaluate a saved model on the test images of the dataset.")
    ep.add_argument("model", metavar="FILE.h5",
                    help="a model saved by dc-engine: dense (.h5) or compressed (.dc.h5)")
    ep.add_argument("--json", action="store_true",
                    help='print one JSON line: {"error", "accuracy", "n", "params", "bytes", '
                         '"compressed", "zoo_params"} (error and accuracy as fractions; bytes = '
                         "the file size of a compressed model, else 4 * params, the float32 "
                         "size; zoo_params: the zoo network's parameter count when dead-unit "
                         "removal slimmed it, else null)")
    ep.add_argument("--batch-size", type=int, default=1000,
                    help="images per forward pass (default 1000)")
    _add_threads(ep)
    _add_data(ep)

    _add_stage_parser(
        sub, "prune", "stage 1: magnitude pruning with masked retraining",
        "Prune a dense model by weight magnitude, layer by layer, and retrain it with the pruned "
        "connections held at exactly zero, over one or more rounds (Han et al. 2015; Deep "
        "Compression Sec. 2). Settings come from the [prune] table of a TOML config (default: "
        "the shipped one for the model's architecture, dc_engine/configs/ARCH.toml). Writes the "
        "pruned model (an ordinary model file whose pruned weights are 0.0, with the settings "
        "and report in its metadata), STEM.report.json and STEM.weights.png.",
        ("DENSE.h5", "the dense model to prune"),
        ("PRUNED.h5", "where to save it", ".pruned.h5"))
    _add_stage_parser(
        sub, "quantize", "stage 2: k-means weight sharing and centroid fine-tuning",
        "Cluster each layer's non-zero weights by 1-D k-means into a codebook (slot 0 is 0.0 for "
        "pruned weights), replace every weight by its centroid, and fine-tune the centroids with "
        "the summed gradients of their weights (Deep Compression Sec. 3). Settings come from the "
        "[quantize] table of a TOML config (default: the architecture's shipped config). Writes "
        "the quantized model (codebook + index per layer), STEM.report.json and "
        "STEM.codebook.png.",
        ("PRUNED.h5", "the (pruned) model to quantize"),
        ("QUANTIZED.h5", "where to save it", ".quantized.h5"))

    cp = _add_stage_parser(
        sub, "compress", "the whole job: prune, quantize, Huffman-encode into MODEL.dc.h5",
        "Run the three stages of Deep Compression on a dense model: magnitude pruning with "
        "masked retraining ([prune]), k-means weight sharing with centroid fine-tuning "
        "([quantize]) and Huffman coding of the weight codes and relative indices ([encode]), "
        "with settings from one TOML config (default: the architecture's shipped config; for a "
        "model without one, or with --auto, settings chosen on the validation split). "
        "Prints each stage's table, the paper-style size table and the test error of the "
        "compressed file; writes STEM.report.json, STEM.sizes.json/.png and the stages' "
        "figures.",
        ("DENSE.h5", "the dense model to compress"),
        ("MODEL.dc.h5", "the compressed file (its folder is created if missing)", ".dc.h5"),
        tables="[prune], [quantize], [encode] tables")
    cp.add_argument("--keep", action="store_true",
                    help="keep the intermediate models beside --out (STEM.pruned.h5, "
                         "STEM.quantized.h5); with --force they may be overwritten")
    cp.add_argument("--json", action="store_true",
                    help="print the whole report as JSON instead of the tables")
    cp.add_argument("--auto", action="store_true",
                    help="choose every layer's kept fraction and bits on the validation split "
                         "(sensitivity scans, pruning rounds checked against --budget), even "
                         "for an architecture with a shipped config; the default for a model "
                         "without one. The choice is printed and written as STEM.auto.toml "
                         "(edit it, pass it back with --config)")
    cp.add_argument("--preset", choices=PRESETS,
                    help="the architecture's shipped settings to use: 'paper' (Deep "
                         "Compression's, the default) or 'max' (the smallest file at the "
                         "paper's error: harder pruning, shared biases, compact container; "
                         "README \"Beyond the paper\")")
    cp.add_argument("--budget", type=float, metavar="POINTS",
                    help="the validation error the compressed model may add to the dense "
                         "model's, in percentage points. Alone or with --auto: the automatic "
                         "settings' budget (default 0.1). With --preset or --config: the "
                         "validation guard's budget, replacing the config's [guard] budget "
                         "(a config without [guard] gets one with its other defaults; the max "
                         "preset's is 0.2)")

    encp = _add_stage_parser(
        sub, "encode", "stage 3: Huffman-encode a quantized model into MODEL.dc.h5",
        "Encode every layer of a quantized model (dc-engine quantize) as relative indices and "
        "codebook codes, Huffman-code both streams (Deep Compression Sec. 4) and write the "
        "compressed HDF5 file (docs/FORMAT.md); the file is read back and checked to decode to "
        "the quantized weights bit for bit. Settings: the [encode] table of the config "
        "(index_bits, default 5, or \"auto\"; coder, default \"huffman\"). Prints the size "
        "table; writes STEM.sizes.json and .png.",
        ("QUANTIZED.h5", "the quantized model"),
        ("MODEL.dc.h5", "the compressed file", ".dc.h5"),
        training=False)
    encp.add_argument("--json", action="store_true", help="print the size report as JSON")

    ip = sub.add_parser(
        "inspect", help="the size table of a compressed file, from the file alone",
        description="Print the paper-style per-layer table (weights, kept, weight and index "
                    "bits before and after Huffman coding, compress rates) and the size after "
                    "each stage of a compressed model file, read from the file alone.")
    ip.add_argument("model", metavar="MODEL.dc.h5", help="a compressed model file")
    ip.add_argument("--json", action="store_true",
                    help="print JSON: per layer {name, shape, nnz, kept, weight_bits, "
                         "index_bits, coded_weight_bits, coded_index_bits, bytes, ...} and "
                         "totals {original_bytes, compressed_bytes, file_bytes, ratio_file, "
                         "ratio_payload, ...}, zoo_params (the dense zoo network's parameter "
                         "count when dead-unit removal slimmed it, else null)")

    bp = sub.add_parser(
        "bits-sweep", help="error vs bits for the three centroid initialisations",
        description="Quantize every configured layer at each width in --bits with each "
                    "initialisation (linear, density, random), fine-tune the centroids for "
                    "--epochs, and record the validation error after clustering and after "
                    "fine-tuning (like Deep Compression Figs. 7-8). Writes DIR/bits_sweep.json, "
                    ".md and .png.")
    bp.add_argument("model", metavar="PRUNED.h5", help="the (pruned) model")
    bp.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    bp.add_argument("--bits", type=int, nargs="+", default=list(range(2, 9)), metavar="B",
                    help="widths to try (default: 2 3 4 5 6 7 8)")
    bp.add_argument("--epochs", type=int, default=1,
                    help="fine-tuning epochs per point (default 1; 0: clustering only)")
    bp.add_argument("--config", metavar="FILE.toml",
                    help="which layers and fine-tuning settings ([quantize] table); default: "
                         "the architecture's shipped config")
    _add_threads(bp)
    _add_data(bp)

    imp = sub.add_parser(
        "import", help="read an ONNX model into a dense dc-engine model file",
        description="Read a network exported to ONNX (torch.onnx.export, tf2onnx, the ONNX "
                    "model zoo, ...) into a dense float32 model file that the other commands "
                    "take: BatchNormalization and per-channel scales are folded into the "
                    "convolution or fully connected layer before them, and unsupported "
                    "operators are refused with one line naming them (docs/ONNX.md lists the "
                    "supported ones). Prints the layers; writes a starter config for the "
                    "stages (STEM.toml beside --out) unless one exists. Needs the onnx package "
                    "(pip install 'dc-engine[onnx]').")
    imp.add_argument("model", metavar="MODEL.onnx", help="the ONNX file")
    imp.add_argument("--out", metavar="MODEL.h5", default=None,
                     help="the dense model file (default: STEM.h5 in the current folder)")
    imp.add_argument("--input-shape", metavar="C,H,W", default=None,
                     help="one sample's shape, e.g. 3,224,224 or 784, for a model whose input "
                          "dimensions are symbolic (the batch dimension always is)")
    imp.add_argument("--name", default=None,
                     help="the model's name (default: the ONNX graph's name or the file stem)")
    imp.add_argument("--mean", metavar="M[,M...]", default=None,
                     help="with --std: the per-channel normalisation the network was trained "
                          "with, (x - mean) / std, on inputs scaled to [0, 1] from uint8 "
                          "(e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225); stored in "
                          "the model as a Normalize layer that every command applies")
    imp.add_argument("--std", metavar="S[,S...]", default=None,
                     help="with --mean: the per-channel standard deviations")
    imp.add_argument("--no-config", action="store_true",
                     help="do not write the starter config STEM.toml")
    imp.add_argument("--json", action="store_true", help="print the layer table as JSON")
    imp.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    exp = sub.add_parser(
        "export", help="write a dense or compressed model file as ONNX",
        description="Write a model file (dense .h5 or compressed .dc.h5, whose weights are "
                    "decoded to float32) as an ONNX file (opset 13) that onnxruntime and other "
                    "ONNX runtimes run. Needs the onnx package (pip install 'dc-engine[onnx]').")
    exp.add_argument("model", metavar="MODEL.h5", help="a model file written by dc-engine")
    exp.add_argument("--out", metavar="MODEL.onnx", default=None,
                     help="the ONNX file (default: STEM.onnx in the current folder)")
    exp.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    wp = sub.add_parser(
        "warmup", help="compile and cache the kernels that running a model needs",
        description="Compile the Numba kernels that loading and running the models use (each "
                    "at batch 1 and at --batch; a compressed one through both batch-1 paths "
                    "and as its decoded dense twin too) and keep them in Numba's on-disk "
                    "cache, so that later processes start without compiling. The cache is "
                    "NUMBA_CACHE_DIR when set, else the kernels' __pycache__ folder or "
                    "~/.cache/numba, whichever is writable. A read-only deployment runs "
                    "'NUMBA_CACHE_DIR=DIR dc-engine warmup MODEL.dc.h5' at build time and the "
                    "app with the same NUMBA_CACHE_DIR, then read-only, on the same kind of "
                    "CPU. Exits with status 2 when compiled kernels could not be cached.")
    wp.add_argument("models", nargs="*", metavar="MODEL.h5",
                    help="the model files the app runs, dense or compressed (default: the "
                         "shipped data/models/lenet-5.dc.h5 of a source checkout, else a small "
                         "built-in compressed LeNet-5)")
    wp.add_argument("--batch", type=int, default=8, metavar="N",
                    help="the batch size > 1 to run besides 1 (default 8)")
    wp.add_argument("--json", action="store_true",
                    help='print one JSON line: {"models", "batch", "seconds", "compiled", '
                         '"loaded", "kernels", "cache_dirs", "unsaved", "numba_cache_dir"}')

    sp = sub.add_parser(
        "sensitivity", help="per-layer pruning sensitivity scan (table and PNG)",
        description="Prune each layer alone, by magnitude, to a sweep of kept-fractions, "
                    "without retraining, and measure the validation error (Han et al. 2015, "
                    "Fig. 6). Writes DIR/sensitivity.json, DIR/sensitivity.md and "
                    "DIR/sensitivity.png. Use it to choose the per-layer settings of a pruning "
                    "config.")
    sp.add_argument("model", metavar="DENSE.h5", help="the dense model to scan")
    sp.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    sp.add_argument("--fractions", type=float, nargs="+", metavar="F",
                    help="kept-fractions to try, each in (0, 1] (default: 1 0.5 0.3 0.2 0.1 "
                         "0.05 0.02 0.01)")
    sp.add_argument("--val-size", type=int, default=5000,
                    help="training images held out for validation (default 5000, seed 0, the "
                         "same split as train)")
    _add_threads(sp)
    _add_data(sp)
    return ap


def _output_path(path, force: bool) -> Path:
    """--out checked before any work: never overwrite a file unasked, fail early on a missing
    or read-only folder, a directory or a special file (what atomic_write would refuse after
    the work)."""
    from .._files import check_output, show_path

    out = Path(path)
    if out.exists() and not force:
        raise CLIError(f"{show_path(out)} exists; pass --force to overwrite it or choose "
                       f"another --out")
    if not out.parent.is_dir():
        raise CLIError(f"the folder of --out does not exist: {show_path(out.parent)}")
    check_output(out, "output", probe=True)
    return out


def _output_dir(path) -> None:
    """A folder argument fails before any work is done if it names an existing file, or an
    existing folder that cannot be written."""
    from .._files import show_path

    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CLIError(f"{show_path(p)} exists and is not a folder; pass a folder for the "
                       f"results")
    top = p if p.exists() else next((a for a in p.absolute().parents if a.exists()), None)
    if top is not None and not os.access(top, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write the results into {show_path(p)}: {show_path(top)} is not "
                       f"writable; pass another folder")


def _out(args) -> Path:
    """--out, or the command's default beside nothing: STEM<suffix> in the current folder."""
    from .jobs import default_output
    return Path(args.out) if args.out else default_output(args.model, args.out_suffix)


def _cmd_train(args) -> int:
    from ..core.train import TrainConfig
    from ..core.zoo import RECIPES
    from .jobs import train

    out = _output_path(args.out, args.force)
    overrides = {k: getattr(args, k) for k in (
        "epochs", "lr", "batch_size", "momentum", "weight_decay", "lr_policy", "gamma",
        "power", "step_epochs", "augment_shift")}
    config = TrainConfig(seed=args.seed, **dict(RECIPES[args.arch], **{
        k: v for k, v in overrides.items() if v is not None}))  # bad options fail here
    res = train(args.arch, out, args.data, seed=args.seed, val_size=args.val_size,
                threads=args.threads, progress=not args.no_progress,
                on_start=lambda line: print(line, file=sys.stderr), **overrides)
    epoch_s = sorted(r["seconds"] for r in res["history"])
    med = epoch_s[len(epoch_s) // 2] if epoch_s else 0.0
    print(f"{args.arch}: {config.epochs} epochs in {res['seconds']:.0f} s (median epoch "
          f"{med:.1f} s), {res['params']:,} parameters")
    if res["val_error"] is not None:
        print(f"validation error {100 * res['val_error']:.2f}% on {res['n_val']:,} images")
    print(f"test error       {100 * res['test_error']:.2f}% on {res['n_test']:,} images")
    print(f"saved {_line(out)} ({out.stat().st_size:,} bytes)")
    return 0


def _cmd_eval(args) -> int:
    from .jobs import evaluate_file

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = evaluate_file(args.model, args.data, args.batch_size, args.threads)
    if args.json:
        print(json.dumps({k: out[k] for k in ("error", "accuracy", "n", "params", "bytes",
                                              "compressed", "zoo_params")}))
        return 0
    params, nbytes = out["params"], out["bytes"]
    if out["compressed"]:
        print(f"{_line(args.model)}: {out['name']}, compressed: {params:,} parameters in "
              f"{nbytes:,} bytes on disk ({4 * params / nbytes:.1f}x smaller than float32)")
        if out["zoo_params"]:
            print(_zoo_line(out["name"], out["zoo_params"], nbytes))
    else:
        print(f"{_line(args.model)}: {out['name']}, {params:,} parameters ({4 * params:,} bytes as "
              f"float32)")
    print(f"test error {100 * out['error']:.2f}% (accuracy {100 * out['accuracy']:.2f}%) on "
          f"{out['n']:,} images")
    return 0


def _run_stage(args, run, table) -> int:
    """A stage command (prune, quantize): check the outputs, run, print the report table."""
    out = _output_path(_out(args), args.force)
    _output_dir(args.report_dir)
    report = run(args.model, out, config_path=args.config, data=args.data,
                 report_dir=args.report_dir, threads=args.threads,
                 progress=not args.no_progress)
    print(table(report), end="")
    print(f"saved {_line(out)} ({out.stat().st_size:,} bytes)")
    return 0


def _cmd_prune(args) -> int:
    from . import jobs, report
    return _run_stage(args, jobs.prune, report.prune_table)


def _cmd_quantize(args) -> int:
    from . import jobs, report
    return _run_stage(args, jobs.quantize, report.quantize_table)


def _cmd_bits_sweep(args) -> int:
    from . import jobs, report

    if args.epochs < 0:
        raise CLIError(f"--epochs must be >= 0, got {args.epochs}")
    _output_dir(args.out)
    bad = [b for b in args.bits if not 1 <= b <= 16]
    if bad:
        raise CLIError(f"--bits must lie in 1..16, got {bad}")
    sweep = jobs.bits_sweep(args.model, args.out, bits=args.bits, finetune_epochs=args.epochs,
                            config_path=args.config, data=args.data, threads=args.threads)
    print(report.bits_table(sweep), end="")
    print(f"wrote {_line(Path(args.out) / 'bits_sweep.json')}, .md and .png")
    return 0


def _cmd_compress(args) -> int:
    from . import jobs, report

    auto = guard = None
    if args.preset is not None and (args.config or args.auto):
        raise CLIError("give --preset, --config or --auto, not two of them: each names the "
                       "settings")
    if args.auto and args.config:
        raise CLIError("give --config or --auto, not both: --auto chooses the settings that a "
                       "config file would give")
    if args.budget is not None and (not math.isfinite(args.budget)
                                    or not 0 <= args.budget < 100):
        raise CLIError(f"--budget is in percentage points, in [0, 100): got {args.budget}")
    budget = None if args.budget is None else {"budget": args.budget / 100}
    if args.preset is not None or args.config:
        guard = budget  # the validation guard of the named settings
    elif args.auto or budget is not None:
        auto = budget or {}
    out = _out(args)
    if Path(args.model).is_file():  # the long job's output folder is made for it (mkdir -p)
        out.parent.mkdir(parents=True, exist_ok=True)
    out = _output_path(out, args.force)
    _output_dir(args.report_dir)
    if args.keep and not args.force:
        for suffix in (".pruned.h5", ".quantized.h5"):
            _output_path(out.parent / (jobs.stem(out) + suffix), False)
    t0 = time.perf_counter()

    def on_stage(message: str) -> None:
        if not args.no_progress:
            print(f"[{time.perf_counter() - t0:6.0f} s] {message}", file=sys.stderr, flush=True)

    res = jobs.compress(args.model, out, config_path=args.config, data=args.data,
                        report_dir=args.report_dir, threads=args.threads,
                        progress=not args.no_progress, keep=args.keep, on_stage=on_stage,
                        auto=auto, preset=args.preset, guard=guard)
    if args.json:
        print(json.dumps(res))
        return 0
    if res.get("auto"):
        print("automatic settings (chosen on the validation split):")
        print(report.auto_table(res["auto"]), end="")
        print(f"wrote them to {_line(res['config_file'])} (pass it back with --config)")
    if res.get("guard"):
        print("validation guard ([guard] of the config; the settings taken are the report's "
              "config):")
        print(report.guard_table(res["guard"]), end="")
    print(report.compress_table(res), end="")
    print(f"saved {_line(out)} ({out.stat().st_size:,} bytes on disk)")
    return 0


def _cmd_encode(args) -> int:
    from . import jobs, report

    out = _output_path(_out(args), args.force)
    _output_dir(args.report_dir)
    res = jobs.encode(args.model, out, config_path=args.config, report_dir=args.report_dir)
    if args.json:
        print(json.dumps(res))
        return 0
    print(report.size_table(res), end="")
    print(f"saved {_line(out)} ({out.stat().st_size:,} bytes on disk)")
    return 0


def _cmd_inspect(args) -> int:
    from . import jobs, report

    res = jobs.inspect(args.model)
    if args.json:
        print(json.dumps(res))
        return 0
    t = res["totals"]
    compact = " (compact container)" if res["container"] == "compact" else ""
    print(f"{_line(args.model)}: {res['architecture']}, compressed format version "
          f"{res['version']}{compact}, input shape {tuple(res['input_shape'])}")
    print(report.size_table(res), end="")
    print()
    print(report.bytes_table(res), end="")
    print(f"file: {t['file_bytes']:,} bytes on disk = {t['ratio_file']:.1f}x smaller than "
          f"{t['original_bytes']:,} bytes of float32 parameters")
    if res["zoo_params"]:
        print(_zoo_line(res["architecture"], res["zoo_params"], t["file_bytes"]))
    return 0


def _zoo_line(name: str, params: int, nbytes: int) -> str:
    """The ratio against the zoo network a slimmed file came from (dead units removed)."""
    return (f"dead units removed: the zoo's dense {name} has {params:,} parameters "
            f"({4 * params:,} bytes as float32); this file is {4 * params / nbytes:.1f}x "
            f"smaller than that")


def _cmd_sensitivity(args) -> int:
    from . import jobs, report

    _output_dir(args.out)
    scan = jobs.sensitivity(args.model, args.out, data=args.data, fractions=args.fractions,
                            val_size=args.val_size, threads=args.threads)
    print(report.sensitivity_table(scan), end="")
    print(f"wrote {_line(Path(args.out) / 'sensitivity.json')}, .md and .png")
    return 0


def _cmd_warmup(args) -> int:
    from . import jobs

    if args.batch < 2:
        raise CLIError(f"--batch must be >= 2 (batch 1 always runs), got {args.batch}")
    for path in args.models:
        if not Path(path).is_file():
            raise CLIError(f"no model file at {_line(path)}")
    res = jobs.warmup(args.models, batch=args.batch)
    if res["unsaved"]:
        where = (f"NUMBA_CACHE_DIR={res['numba_cache_dir']} is not writable"
                 if res["numba_cache_dir"] else "NUMBA_CACHE_DIR is unset and no default "
                 "cache folder is writable")
        raise CLIError(f"compiled {len(res['unsaved'])} kernels ({', '.join(res['unsaved'])}) "
                       f"but could not cache them: {where}; set NUMBA_CACHE_DIR to a writable "
                       f"folder")
    if args.json:
        print(json.dumps(res))
        return 0
    for m in res["models"]:
        kind = "compressed" if m["compressed"] else "dense"
        print(f"{_line(m['path'] or 'built-in model')}: {m['name']}, {kind}, ran at batch 1 "
              f"and {res['batch']}")
    print(f"{res['kernels']} kernels: {res['compiled']} compiled and cached, {res['loaded']} "
          f"loaded from the cache, in {res['seconds']:.1f} s")
    source = (f"NUMBA_CACHE_DIR={res['numba_cache_dir']}" if res["numba_cache_dir"]
              else "NUMBA_CACHE_DIR unset: Numba's default folders")
    for folder in res["cache_dirs"] or ["(none: the kernels ran uncached)"]:
        print(f"Numba cache: {_line(folder)} ({_line(source)})")
    return 0


def _input_shape(text: str | None) -> tuple | None:
    if text is None:
        return None
    try:  # 3,224,224 or 3x224x224
        shape = tuple(int(d) for d in re.split(r"[,x]", text.strip()))
    except ValueError:
        shape = ()
    if len(shape) not in (1, 3) or any(d < 1 for d in shape):
        raise CLIError(f"--input-shape takes one sample's shape as C,H,W or FEATURES of "
                       f"positive integers, got {text!r}")
    return shape


def _floats(text: str, option: str) -> list[float]:
    """``"0.5,0.25"`` as ``[0.5, 0.25]``; CLIError naming ``option`` otherwise."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"{option} takes comma-separated numbers, one per channel, got "
                       f"{text!r}") from None


def _cmd_import(args) -> int:
    from . import jobs

    shape = _input_shape(args.input_shape)
    normalize = None
    if (args.mean is None) != (args.std is None):
        raise CLIError("give --mean and --std together (the normalisation (x - mean) / std)")
    if args.mean is not None:
        normalize = (_floats(args.mean, "--mean"), _floats(args.std, "--std"))
    out = _output_path(args.out or f"{Path(args.model).stem}.h5", args.force)
    config = None if args.no_config else out.parent / f"{jobs.stem(out)}.toml"
    res = jobs.import_onnx(args.model, out, input_shape=shape, name=args.name,
                           config_path=config, normalize=normalize)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{_line(args.model)}: {res['name']}, {len(res['layers'])} layers, {res['params']:,} "
          f"parameters, input {tuple(res['input_shape'])}, output "
          f"{tuple(res['output_shape'])}")
    width = max(len(r["name"]) for r in res["layers"])
    for r in res["layers"]:
        print(f"  {r['name']:<{width}}  {r['type']:<16} {str(tuple(r['output_shape'])):<16} "
              f"{r['params']:>10,}  <- {', '.join(r['inputs'])}")
    print(f"saved {_line(out)} ({out.stat().st_size:,} bytes)")
    if res["config"]:
        print(f"wrote the starter config {_line(res['config'])} (dc-engine compress "
              f"{_line(out)} chooses every layer's settings itself on the validation split; "
              f"or edit the file and pass --config {_line(res['config'])})")
    elif config is not None:
        print(f"kept the existing config {_line(config)}")
    return 0


def _cmd_export(args) -> int:
    from . import jobs

    out = _output_path(args.out or f"{jobs.stem(args.model)}.onnx", args.force)
    res = jobs.export_onnx(args.model, out)
    kind = "compressed (decoded to float32)" if res["compressed"] else "dense"
    print(f"{_line(args.model)}: {res['name']}, {kind}, {res['params']:,} parameters")
    print(f"saved {_line(out)} ({res['bytes']:,} bytes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dc-engine`` console script; returns the exit status."""
    args, extra = _parser().parse_known_args(argv)
    if extra:  # argparse would name no command: "dc-engine: error: unrecognized arguments"
        print(f"{PROG} {args.command}: error: unrecognized arguments: "
              f"{_line(' '.join(extra))} (see {PROG} {args.command} --help)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # A warning is one line for a user ("dc-engine: warning: ..."), not a source excerpt; the
    # formatter is put back afterwards (main may run inside another program, or a test).
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"{PROG}: warning: {_line(message)}\n"
    try:
        return _run(args)
    finally:
        warnings.formatwarning = formatwarning


def _run(args) -> int:
    from ..errors import ConfigError, DatasetError, DCFormatError

    commands = {"train": _cmd_train, "eval": _cmd_eval, "prune": _cmd_prune,
                "sensitivity": _cmd_sensitivity, "quantize": _cmd_quantize,
                "bits-sweep": _cmd_bits_sweep, "compress": _cmd_compress,
                "encode": _cmd_encode, "inspect": _cmd_inspect, "import": _cmd_import,
                "export": _cmd_export, "warmup": _cmd_warmup}
    try:
        return commands[args.command](args)
    except (CLIError, ConfigError, DatasetError, DCFormatError, OSError, ValueError,
            TypeError, ImportError, OverflowError, FloatingPointError) as e:
        _error(args.command, e)
        return 2
    except MemoryError as e:
        _error(args.command, f"out of memory{f' ({e})' if str(e) else ''}: the input needs more "
                             f"memory than this machine has free (a smaller --batch-size, a "
                             f"smaller model or dataset, or lower limits in dc_engine.limits)")
        return 2
    except RecursionError:
        _error(args.command, "the input is nested too deeply to read")
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _line(message) -> str:
    """``message`` on one line: newlines and control characters escaped (errors.one_line),
    whatever it holds (a path with a newline, a library's multi-line text)."""
    from ..errors import one_line
    return one_line(str(message))


def _error(command: str, message) -> None:
    print(f"{PROG} {command}: error: {_line(message)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
