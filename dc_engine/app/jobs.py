"""Each ``dc-engine`` command as a function from files to files.

A job reads its input file and its settings (a TOML config, default: the architecture's
shipped one), runs the library in memory (:mod:`dc_engine.stages`, :mod:`dc_engine.core`),
writes its output atomically, writes its reports and figures, and returns a JSON-able report.
No arithmetic lives here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np

from .._files import show_path, write_json, write_text
from ..config import default_config_path, dump_toml, load_toml
from ..core.model import Model
from ..core.train import TrainConfig, evaluate, fit
from ..core.zoo import ARCHITECTURES, RECIPES
from ..errors import ConfigError, DCFormatError
from ..io import compressed as compressed_file
from ..io.data import load_dataset, train_val_split
from ..runtime.files import load, save
from ..stages.encode import EncodeConfig, encode_model
from ..stages.inputs import check_recipe, training_recipe
from ..stages.pipeline import CompressConfig, auto_settings, prune_stage, quantize_stage
from ..stages.pipeline import compress as compress_model
from ..stages.prune import PruneConfig, layer_stats
from ..stages.quantize import QuantizeConfig
from ..stages.sizes import size_report
from ..stages.studies import bits_sweep as sweep_bits
from ..stages.studies import sensitivity_scan
from ..threads import limit_threads
from . import plots
from .report import bits_table, sensitivity_table


def stem(path) -> str:
    """A model file's name without ``.dc.h5`` / ``.h5``."""
    name = Path(path).name
    for suffix in (".dc.h5", ".h5"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def default_output(model_path, suffix: str) -> Path:
    """The default output of a command: ``<stem><suffix>`` in the current folder, where the
    stem drops a ``.pruned`` / ``.quantized`` the input has (``a.pruned.h5`` -> ``a``)."""
    base = stem(model_path)
    for step in (".pruned", ".quantized"):
        base = base.removesuffix(step)
    return Path(f"{base}{suffix}")


# ------------------------------------------------------------------------------- configs


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


def read_recipe(config_path) -> dict | None:
    """The [train] table of ``config_path`` (the recipe retraining starts from), or None when
    no config is given or it has none."""
    if not config_path:
        return None
    table = load_toml(config_path).get("train")
    return None if table is None else check_recipe(table, f"{config_path}: [train]")


def read_compress_config(config_path, architecture: str, preset: str = "paper"
                         ) -> tuple[CompressConfig, Path]:
    """All three tables of ``config_path`` (default: the architecture's shipped config of
    ``preset``)."""
    path = Path(config_path) if config_path else default_config_path(architecture, preset)
    return CompressConfig.from_toml(path), path


# ------------------------------------------------------------------------------- writing


def _report_base(out_path: Path, report_dir) -> Path:
    """``<report_dir>/<stem>`` (default folder: that of ``out_path``), the folder made."""
    report_dir = Path(report_dir) if report_dir else Path(out_path).parent
    report_dir.mkdir(parents=True, exist_ok=True)
    return report_dir / Path(out_path).name.removesuffix(".dc.h5").removesuffix(".h5")


def _write_json(path, report: dict) -> None:
    write_json(path, report)  # atomic: a kill leaves the old file or none, never half a one


def _write_study(out_dir, name: str, result: dict, table, plot) -> None:
    """Write ``name``.json, .md (``table(result)``) and .png (``plot``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / f"{name}.json", result)
    write_text(out_dir / f"{name}.md", table(result))
    plot(result, out_dir / f"{name}.png")


def _check_written(model, path: Path) -> None:
    """Read a written compressed file back: every weight and bias must equal the model's bit
    for bit (``to_dense`` of both)."""
    loaded = load(path).to_dense()
    mine = model.to_dense()
    for a, b in zip(mine.layers, loaded.layers):
        for k, w in a.params.items():
            if not np.array_equal(np.asarray(w).view(np.uint32),
                                  np.asarray(b.params[k]).view(np.uint32)):
                raise RuntimeError(f"{path}: layer {a.name!r}, {k!r} does not decode to the "
                                   f"model's weights; this is a bug, please report it")


def _weights(model, names) -> dict:
    return {n: np.array(model[n].params[model[n].weight_name]) for n in names}


# ------------------------------------------------------------------------------- jobs


def train(arch: str, out_path, data=None, *, seed: int = 0, val_size: int = 5000,
          threads: int | None = None, progress: bool = True,
          on_start: Callable[[str], None] | None = None, **overrides) -> dict:
    """Train a zoo architecture with its recipe (``overrides``: TrainConfig fields) on the
    dataset's training images minus ``val_size`` held out, evaluate, save.

    ``on_start`` is called with a one-line summary once the data is loaded and checked.
    Returns the saved metadata (recipe, history, validation and test errors) with
    ``params`` and ``seconds``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    recipe = dict(RECIPES[arch])
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(seed=seed, **recipe)
    ds = load_dataset(data)
    if not 0 <= val_size < len(ds.x_train):
        raise ValueError(f"the validation split (--val-size) must be in [0, "
                         f"{len(ds.x_train)}), got {val_size}")
    x_tr, y_tr, x_val, y_val = train_val_split(ds.x_train, ds.y_train, val_size, seed)
    model = ARCHITECTURES[arch](seed=seed)
    if tuple(ds.x_train.shape[1:]) != model.input_shape:
        raise ValueError(f"{arch} takes images of shape {model.input_shape}, the dataset has "
                         f"{tuple(ds.x_train.shape[1:])}")
    if on_start is not None:
        on_start(f"training {arch} ({model.num_params():,} parameters) on {len(x_tr):,} "
                 f"images, validating on {len(x_val):,}: " + ", ".join(
                     f"{k}={v}" for k, v in config.to_dict().items()))
    t0 = time.perf_counter()
    history = fit(model, x_tr, y_tr, config, x_val, y_val, progress=progress, threads=threads)
    seconds = time.perf_counter() - t0
    with limit_threads(threads):
        test = evaluate(model, ds.x_test, ds.y_test)
        val = evaluate(model, x_val, y_val) if len(x_val) else None
    meta = {"command": "train", "arch": arch, "train_config": config.to_dict(),
            "val_size": val_size, "threads": threads,
            "data": str(data or "data/mnist (shipped)"),
            "history": history.epochs, "train_seconds": seconds,
            "val_error": val["error"] if val else None, "test_error": test["error"]}
    save(model, out_path, metadata=meta)
    return dict(meta, params=model.num_params(), seconds=seconds,
                n_val=val["n"] if val else 0, n_test=test["n"])


def _stage_input(path, command: str, takes: str = "dense") -> Model:
    """The model file a stage command takes, loaded; a file of the wrong kind is named as such
    (ValueError): no stage takes a compressed model, ``encode`` takes a quantized one, and
    ``takes="unshared"`` (pruning) refuses a quantized one, whose weights are tied to
    codebooks."""
    model = load(path)
    shown = show_path(path)
    if model.compressed:
        want = ("a quantized one (dc-engine quantize)" if takes == "quantized" else
                "a dense (float) one: decode it first (dc-engine export, or model.to_dense() "
                "in Python)")
        raise ValueError(f"{shown} is a compressed model; {command} takes {want}")
    if takes == "unshared":
        shared = [l.name for l in model.weighted_layers() if l.weight_name in l.ties]
        if shared:
            raise ValueError(f"{shown} is a quantized model (layers {shared} share weights); "
                             f"{command} takes a dense or pruned one: the model it was "
                             f"quantized from")
    if takes == "quantized":
        plain = [l.name for l in model.weighted_layers() if l.weight_name not in l.ties]
        if plain:
            raise ValueError(f"{shown} is a dense model whose layers {plain} are not "
                             f"quantized; {command} takes a quantized one (dc-engine quantize)")
    return model


_WIDTHS = frozenset({"in_features", "out_features", "in_channels", "out_channels"})


def zoo_params(model) -> int | None:
    """The parameter count of the zoo network ``model`` was slimmed from by dead-unit removal
    (``[prune] remove_dead_units``), or None.

    A file holds the layers left after the removal, so its own count (and a ratio against
    it) is that of the smaller network. When ``model`` is named after a zoo architecture,
    has its input and output shapes, layer names and types and every hyperparameter but the
    layers' widths, and no width wider than the zoo's, the zoo network's count is returned if it is
    larger (else None: nothing was removed, or it is not that network)."""
    build = ARCHITECTURES.get(model.name)
    if build is None:
        return None
    zoo = build()
    if (tuple(zoo.input_shape), zoo.output_shape()) != \
            (tuple(model.input_shape), model.output_shape()) or \
            [(l.name, type(l)) for l in zoo.layers] != [(l.name, type(l)) for l in model.layers]:
        return None
    for a, b in zip(zoo.layers, model.layers):
        ha, hb = a.hyperparameters, b.hyperparameters
        if ha.keys() != hb.keys() or a.inputs != b.inputs:
            return None
        for k, v in ha.items():
            if (hb[k] > v) if k in _WIDTHS else (hb[k] != v):
                return None
    n = zoo.num_params()
    return n if n > model.num_params() else None


def evaluate_file(model_path, data=None, batch_size: int = 1000,
                  threads: int | None = None) -> dict:
    """Test error of a model file of either kind: ``{"error", "accuracy", "n", "params",
    "bytes", "compressed", "name", "zoo_params"}`` (``bytes``: the file size of a compressed
    model, else 4 x params, the float32 size; ``zoo_params``: :func:`zoo_params`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = load(model_path)
    ds = load_dataset(data).for_input(model.input_shape, str(model_path))
    with limit_threads(threads):
        res = evaluate(model, ds.x_test, ds.y_test, batch_size=batch_size)
    params = model.num_params()
    nbytes = os.path.getsize(model_path) if model.compressed else 4 * params
    return {"error": res["error"], "accuracy": res["accuracy"], "n": res["n"],
            "params": params, "bytes": nbytes, "compressed": model.compressed,
            "name": model.name, "zoo_params": zoo_params(model)}


def prune(dense_path, out_path, config_path=None, data=None, report_dir=None,
          threads: int | None = None, progress: bool = True) -> dict:
    """Stage 1 on a dense model file: iterative magnitude pruning with masked retraining
    (:func:`dc_engine.stages.pipeline.prune_stage`).

    Writes ``out_path`` (an ordinary dense model whose pruned weights are 0.0; the settings
    and the report are in its metadata) and, in ``report_dir`` (default: the folder of
    ``out_path``), ``<stem>.report.json`` and ``<stem>.weights.png``.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    model = _stage_input(dense_path, "prune", takes="unshared")
    config, cfg_path = read_prune_config(config_path, model.name)
    config.check_model(model)
    # before the dataset: a config problem is reported first
    recipe = training_recipe(model, read_recipe(config_path))
    ds = load_dataset(data).for_input(model.input_shape, str(dense_path))
    before = _weights(model, config.layers)
    report = prune_stage(model, ds, config, recipe, threads=threads, progress=progress)
    report.update(source=str(dense_path), architecture=model.name, config_file=str(cfg_path),
                  seconds=time.perf_counter() - t0)
    save(model, out_path, metadata={"command": "prune", "prune": report,
                                    "train_config": recipe})
    base = _report_base(out_path, report_dir)
    _write_json(f"{base}.report.json", report)
    plots.weight_histograms(before, _weights(model, before), f"{base}.weights.png",
                            f"{model.name}: weights before pruning and kept after retraining")
    return report


def quantize(pruned_path, out_path, config_path=None, data=None, report_dir=None,
             threads: int | None = None, progress: bool = True) -> dict:
    """Stage 2 on a (pruned) model file: k-means weight sharing and centroid fine-tuning
    (:func:`dc_engine.stages.pipeline.quantize_stage`).

    Writes ``out_path`` (codebook + index per shared layer; settings and report in the
    metadata) and, in ``report_dir``, ``<stem>.report.json`` and ``<stem>.codebook.png``.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    model = _stage_input(pruned_path, "quantize")
    config, cfg_path = read_quantize_config(config_path, model.name)
    config.check_model(model)
    recipe = training_recipe(model, read_recipe(config_path))
    if config.val_size == 0:
        raise ConfigError("quantization reports validation errors: val_size must be > 0")
    ds = load_dataset(data).for_input(model.input_shape, str(pruned_path))
    before = _weights(model, config.bits)
    report = quantize_stage(model, ds, config, recipe, threads=threads, progress=progress)
    report.update(source=str(pruned_path), architecture=model.name,
                  config_file=str(cfg_path), seconds=time.perf_counter() - t0)
    meta = dict(model.metadata)
    meta.update({"command": "quantize", "quantize": report, "train_config": recipe})
    save(model, out_path, metadata=meta)
    base = _report_base(out_path, report_dir)
    _write_json(f"{base}.report.json", report)
    plots.codebook_plot(before, report["codebooks_clustered"],
                        {l["name"]: l["codebook"] for l in report["layers"]},
                        f"{base}.codebook.png", f"{model.name}: weights and shared centroids")
    return report


def _write_compressed(model, out_path: Path, report_dir, extra: dict) -> dict:
    """Save a compressed model, read it back (bit-exact check), write ``<stem>.sizes.json``
    and ``.png``; returns the size report of the file."""
    written = save(model, out_path, kind="compressed")
    _check_written(model, written)  # loads it: every check of inspect's
    report = inspect(written, validate=False)
    report.update(extra)
    base = _report_base(out_path, report_dir)
    _write_json(f"{base}.sizes.json", report)
    plots.size_plot(report, f"{base}.sizes.png")
    return report


def encode(quantized_path, out_path, config_path=None, report_dir=None) -> dict:
    """Stage 3 on a quantized model file: code each layer's codes and relative indices
    (DC Sec. 4) into a compressed ``.dc.h5`` file (docs/FORMAT.md), then read it back and
    check that it decodes to the quantized weights bit for bit.

    Writes ``out_path`` and, in ``report_dir`` (default: the folder of ``out_path``),
    ``<stem>.sizes.json`` (the size report) and ``<stem>.sizes.png``. Returns the size report
    (with ``file_bytes``, ``config``).
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    model = _stage_input(quantized_path, "encode", takes="quantized")
    config, cfg_path = read_encode_config(config_path, model.name)
    compressed = encode_model(model, config, verify=False)  # the file itself is checked
    return _write_compressed(compressed, out_path, report_dir, {
        "source": str(quantized_path), "out": str(out_path),
        "config_file": None if cfg_path is None else str(cfg_path),
        "config": config.to_dict(), "seconds": time.perf_counter() - t0})


def inspect(path, validate: bool = True) -> dict:
    """The size report of a compressed file, from the file alone (no dataset needed). With
    ``validate`` (the default) the file first passes every check of ``dc_engine.load``
    (decoded streams, codebooks, shapes against the hyperparameters, the limits), so a table
    is shown only for a file that loads, and ``zoo_params`` is :func:`zoo_params` of the
    loaded model (None without ``validate``)."""
    c = compressed_file.read(path)  # a dense file is refused here, before it is read
    zoo = zoo_params(load(path)) if validate else None
    try:
        report = size_report(c.layers, os.path.getsize(path), c.architecture)
    except DCFormatError as exc:  # it names the layer; add the file
        raise DCFormatError(f"{path}, {exc}") from exc
    report["path"] = str(path)
    report["input_shape"] = list(c.input_shape)
    report["version"] = c.version
    report["container"] = "compact" if c.compact else "classic"
    report["zoo_params"] = zoo  # the network before dead-unit removal, when known
    return report


def compress(dense_path, out_path, config_path=None, data=None, report_dir=None,
             threads: int | None = None, progress: bool = True, keep: bool = False,
             on_stage: Callable[[str], None] | None = None, auto=None,
             preset: str | None = None, guard: dict | None = None) -> dict:
    """The whole job on a dense model file (:func:`dc_engine.compress` in between): writes
    ``out_path``, evaluates the written file, and writes every stage's report and figure into
    ``report_dir`` (default: the folder of ``out_path``): ``<stem>.pruned.report.json`` and
    ``.weights.png``, ``<stem>.quantized.report.json`` and ``.codebook.png``,
    ``<stem>.sizes.json`` and ``.png``, and ``<stem>.report.json`` with all of it.

    Settings: ``config_path``, else the architecture's shipped config of ``preset``
    (:data:`dc_engine.config.PRESETS`; default "paper"), else (or with ``auto``: True, an
    AutoConfig or a dict of its fields) the automatic settings, which are also written as
    ``<stem>.auto.toml`` (pass it back as ``config_path`` to run them again without the
    search).

    ``guard``: fields of a :class:`~dc_engine.stages.guard.GuardConfig` (e.g. ``{"budget":
    0.001}``) that replace those of the config's ``[guard]`` (a config without one gets the
    defaults for the rest); not with automatic settings, which have their own budget.

    With ``keep``, the intermediate models are saved beside ``out_path`` as
    ``<stem>.pruned.h5`` and ``<stem>.quantized.h5``.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    name = stem(out_path)
    if preset is not None and (config_path is not None or auto):
        raise ValueError("give a preset, a config or automatic settings, not two of them")
    model = _stage_input(dense_path, "compress", takes="unshared")
    search = auto_settings(config_path, False if preset is not None else auto, model.name)
    if guard and search:
        raise ValueError("guard settings apply to a config or a preset; automatic settings "
                         "have their own budget")
    config, cfg_path = (None, None) if search else read_compress_config(
        config_path, model.name, preset or "paper")
    if guard:
        config = config.with_guard(**guard)
    ds = load_dataset(data).for_input(model.input_shape, str(dense_path))
    compressed, report = compress_model(model, ds, config, auto=search or False,
                                        threads=threads, progress=progress, on_stage=on_stage)
    base = _report_base(out_path, report_dir)
    if search:
        config = CompressConfig.from_dict(report["config"])
        cfg_path = Path(f"{base}.auto.toml")
        write_text(cfg_path, auto_toml(report, dense_path, data))
    models = report.pop("models")
    pruned, quantized = models["pruned"], models["quantized"]
    p_report, q_report = report["prune"], report["quantize"]
    p_report.update(source=str(dense_path), architecture=model.name,
                    config_file=str(cfg_path))
    q_report.update(source=f"{name}.pruned.h5", architecture=model.name,
                    config_file=str(cfg_path))
    if keep:
        save(pruned, out_path.parent / f"{name}.pruned.h5", metadata=pruned.metadata)
        save(quantized, out_path.parent / f"{name}.quantized.h5", metadata=quantized.metadata)
    sizes = _write_compressed(compressed, out_path, report_dir, {
        "source": f"{name}.quantized.h5", "out": str(out_path), "config_file": str(cfg_path),
        "config": config.encode.to_dict()})
    with limit_threads(threads):  # the file, not the model in memory
        test_file = evaluate(load(out_path), ds.x_test, ds.y_test)["error"]
    _write_json(f"{base}.pruned.report.json", p_report)
    plots.weight_histograms(_weights(model, config.prune.layers),
                            _weights(pruned, config.prune.layers), f"{base}.pruned.weights.png",
                            f"{model.name}: weights before pruning and kept after retraining")
    _write_json(f"{base}.quantized.report.json", q_report)
    plots.codebook_plot(_weights(pruned, config.quantize.bits), q_report["codebooks_clustered"],
                        {l["name"]: l["codebook"] for l in q_report["layers"]},
                        f"{base}.quantized.codebook.png",
                        f"{model.name}: weights and shared centroids")
    report.update(source=str(dense_path), out=str(out_path), sizes=sizes,
                  config_file=str(cfg_path), test_error_compressed=test_file,
                  seconds=time.perf_counter() - t0)
    _write_json(f"{base}.report.json", report)
    return report


def auto_toml(report: dict, source, data) -> str:
    """The settings an automatic search chose, as a config file to edit and pass back with
    ``--config`` (it reproduces the run without the search)."""
    from ..errors import one_line

    a = report["auto"]
    head = [  # paths on one line each (a newline in a path would end the comment)
        f"# Settings chosen by dc-engine compress (automatic settings) for {one_line(str(source))}",
        f"# on {one_line(str(data)) if data else 'the shipped MNIST'}: validation error dense "
        f"{100 * a['val_error_dense']:.2f}%, compressed "
        f"{100 * a['quantize_attempts'][-1]['val_error_finetuned']:.2f}% (budget "
        f"{100 * a['settings']['budget']:g} points, "
        f"{'within' if a['within_budget'] else 'NOT within'} it).",
        "# [prune.layers] lists the kept fraction of every round applied; pass this file back",
        "# with --config to run these settings again without the search.",
        "",
    ]
    return "\n".join(head) + dump_toml(report["config"])


def sensitivity(dense_path, out_dir, data=None, fractions=None, val_size: int = 5000,
                seed: int = 0, threads: int | None = None) -> dict:
    """LWC Fig. 6 for a dense model file: writes ``sensitivity.json``, ``sensitivity.md`` and
    ``sensitivity.png`` into ``out_dir`` and returns the scan."""
    model = _stage_input(dense_path, "sensitivity", takes="unshared")
    ds = load_dataset(data).for_input(model.input_shape, str(dense_path))
    _, _, x_val, y_val = train_val_split(ds.x_train, ds.y_train, val_size, seed)
    if len(x_val) == 0:
        raise ValueError("the sensitivity scan needs a validation split (val_size > 0)")
    kw = {} if fractions is None else {"fractions": tuple(fractions)}
    with limit_threads(threads):
        scan = sensitivity_scan(model, x_val, y_val, **kw)
    scan["architecture"] = model.name
    scan["layers"] = layer_stats(model)
    _write_study(out_dir, "sensitivity", scan, sensitivity_table, plots.sensitivity_plot)
    return scan


def bits_sweep(pruned_path, out_dir, bits=range(2, 9), inits=("linear", "density", "random"),
               finetune_epochs: int = 1, config_path=None, data=None,
               threads: int | None = None) -> dict:
    """DC Figs. 7-8 for a (pruned) model file (:func:`dc_engine.stages.studies.bits_sweep`):
    writes ``bits_sweep.json``, ``.md`` and ``.png`` into ``out_dir``."""
    model = _stage_input(pruned_path, "bits-sweep")
    config, _ = read_quantize_config(config_path, model.name)
    ds = load_dataset(data).for_input(model.input_shape, str(pruned_path))
    with limit_threads(threads):
        out = sweep_bits(model, ds, config, bits, inits, finetune_epochs,
                         recipe=read_recipe(config_path), threads=threads)
    _write_study(out_dir, "bits_sweep", out, bits_table, plots.bits_plot)
    return out


# ---------------------------------------------------------------------------------- ONNX


def starter_config(model, source: str = "") -> str:
    """A first config (TOML text) for a model without a shipped one, e.g. an imported
    network: every weighted layer pruned and quantized with the paper's rules of thumb (the
    first layer is the most sensitive, fully connected layers prune hardest; 8-bit conv and
    5-bit fc codebooks, Deep Compression Table 3) and a [train] recipe to replace with the
    network's own. A starting point to edit, not a tuned result."""
    weighted = model.weighted_layers()
    lines = [
        f"# Starter Deep Compression settings for {model.name}"
        + (f", imported from {source}" if source else "") + ".",
        "# A starting point, not a tuned result: choose each layer's kept fraction with",
        "# `dc-engine sensitivity` on a validation split, then check the error after each stage.",
        "",
        "[train]",
        "# The recipe retraining starts from (TrainConfig fields): replace it with the one the",
        "# network was trained with. The stages scale lr by their lr_scale.",
        "lr = 0.01", "batch_size = 64", "momentum = 0.9", "weight_decay = 0.0005",
        'lr_policy = "fixed"', "",
        "[prune]", "rounds = 3", "lr_scale = 0.1", "val_size = 5000", "seed = 0", "",
        "[prune.retrain]", "epochs = 2", "",
    ]
    for i, layer in enumerate(weighted):
        conv = layer.type_name == "Conv2D"
        kept = 0.8 if i == 0 else 0.5 if conv else 0.25 if i == len(weighted) - 1 else 0.1
        lines += [f"[prune.layers.{layer.name}]", f"kept = {kept}", ""]
    lines += ["[quantize]", 'init = "linear"', "lr_scale = 0.01", "val_size = 5000",
              "seed = 0", "", "[quantize.finetune]", "epochs = 1", 'lr_policy = "fixed"', "",
              "[quantize.bits]"]
    lines += [f"{l.name} = {8 if l.type_name == 'Conv2D' else 5}" for l in weighted]
    lines += ["", "[encode]", 'index_bits = "auto"', ""]
    return "\n".join(lines)


def _layer_rows(model) -> list[dict]:
    shapes = {"input": model.input_shape}
    rows = []
    for layer, ins in model.wiring().steps:
        arg = shapes[ins[0]] if layer.arity == 1 else [shapes[n] for n in ins]
        shapes[layer.name] = layer.output_shape(arg)
        rows.append({"name": layer.name, "type": layer.type_name, "inputs": list(ins),
                     "output_shape": list(shapes[layer.name]),
                     "params": int(sum(np.prod(p.shape) for p in layer.params.values()))})
    return rows


def import_onnx(onnx_path, out_path, input_shape=None, name=None, config_path=None,
                normalize=None) -> dict:
    """``dc-engine import``: an ONNX model (:func:`dc_engine.io.onnx.load_onnx`) saved as a
    dense model file, and, when ``config_path`` is given and no file is there yet, a starter
    config for its layers (:func:`starter_config`; an existing file is never overwritten).
    ``normalize``: ``(mean, std)`` per channel, put in front of the model as a Normalize layer
    (:func:`dc_engine.core.model.with_normalization`).
    Returns ``{"name", "layers", "params", "input_shape", "output_shape", "out", "config"}``."""
    from ..core.model import with_normalization
    from ..io.onnx import load_onnx

    model = load_onnx(onnx_path, input_shape=input_shape, name=name)
    if normalize is not None:
        model = with_normalization(model, *normalize)
    written = save(model, out_path, metadata=model.metadata)
    config = None
    if config_path is not None and not Path(config_path).exists():
        write_text(config_path, starter_config(model, Path(onnx_path).name), "config")
        config = str(config_path)
    return {"name": model.name, "layers": _layer_rows(model), "params": model.num_params(),
            "input_shape": list(model.input_shape), "output_shape": list(model.output_shape()),
            "out": str(written), "config": config, "source": model.metadata["source"]}


def export_onnx(model_path, out_path) -> dict:
    """``dc-engine export``: a model file of either kind written as ONNX
    (:func:`dc_engine.io.onnx.save_onnx`; a compressed model is decoded to float32). Returns
    ``{"name", "compressed", "params", "out", "bytes"}``."""
    from ..io.onnx import save_onnx

    model = load(model_path)
    written = save_onnx(model, out_path)
    return {"name": model.name, "compressed": model.compressed, "params": model.num_params(),
            "out": str(written), "bytes": written.stat().st_size}


# ------------------------------------------------------------------------------- warmup

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "data" / "models" / "lenet-5.dc.h5"
"""The model ``dc-engine warmup`` runs by default: LeNet-5 as shipped in a source checkout (an
installed wheel has none; a small built-in one is made instead)."""


def _builtin_model():
    """LeNet-5 with random weights, 10% kept, 5-bit codebooks, gap widths chosen per layer:
    a compressed model for ``warmup`` where no model file is at hand. Written to a temporary
    compressed file and loaded back when a temporary folder can be written (so loading
    is warmed up too), else used as built."""
    import tempfile

    from ..core.zoo import lenet5
    from ..runtime.sqmatrix import CompressedMatrix

    model = lenet5(seed=0)
    for layer in model.weighted_layers():
        w = np.array(layer.params["W"]).reshape(layer.params["W"].shape[0], -1)
        w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0.0
        layer.set_param("W", CompressedMatrix.from_dense(w, weight_bits=5, index_bits="auto"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lenet-5.dc.h5"
            save(model, path)
            return load(path)
    except OSError:
        return model


def _run_model(model, x1: np.ndarray, xn: np.ndarray) -> None:
    model.forward(x1)
    model.forward(xn)


def warmup(model_paths=(), batch: int = 8) -> dict:
    """``dc-engine warmup``: compile the Numba kernels that loading and running the models use,
    so that they land in Numba's on-disk cache (``NUMBA_CACHE_DIR`` when set).

    Each model is loaded and run at batch 1 and at ``batch``; a compressed one also at batch 1
    through every batch-1 path (``DC_ENGINE_BATCH1=fused``, ``layered`` and ``fused-parallel``:
    which one a process takes depends on the machine and the model), and decoded to its dense
    twin, which runs at both sizes too. The input is zeros (the kernels' types, not the
    values, decide what is compiled).

    Parameters
    ----------
    model_paths : paths of model files, dense or compressed. Default (empty):
        :data:`SHIPPED_MODEL`, or :func:`_builtin_model` where there is no source checkout.
    batch : int >= 2. The batch size of the batched runs.

    Returns
    -------
    dict
        ``{"models": [{"name", "path", "compressed"}], "batch", "seconds", "compiled",
        "loaded", "kernels", "cache_dirs", "unsaved", "numba_cache_dir"}``: kernel
        specialisations compiled in this process and loaded from the cache, kernels used,
        the folders holding them, the kernels compiled but not cached (a read-only or missing
        cache folder) and ``NUMBA_CACHE_DIR`` (None when unset).
    """
    from ..kernels import _config

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ValueError(f"batch must be an integer >= 2, got {batch!r}")
    before = {id(k): (sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))
              for k in _config.JITTED}
    t0 = time.perf_counter()
    paths = list(model_paths) or ([SHIPPED_MODEL] if SHIPPED_MODEL.is_file() else [None])
    models = []
    for path in paths:
        model = load(path) if path is not None else _builtin_model()
        x1 = np.zeros((1, *model.input_shape), np.float32)
        xn = np.zeros((batch, *model.input_shape), np.float32)
        _run_model(model, x1, xn)
        if model.compressed:
            for way in ("fused", "layered", "fused-parallel"):  # core.fused.choose reads it
                with mock.patch.dict(os.environ, {"DC_ENGINE_BATCH1": way}):
                    (load(path) if path is not None else _builtin_model()).forward(x1)
            _run_model(model.to_dense(), x1, xn)
        models.append({"name": model.name, "path": None if path is None else str(path),
                       "compressed": bool(model.compressed)})
    seconds = time.perf_counter() - t0
    compiled = loaded = 0
    used, dirs, unsaved = 0, set(), []
    for k in _config.JITTED:
        hits0, misses0 = before.get(id(k), (0, 0))
        hits = sum(k.stats.cache_hits.values()) - hits0
        misses = sum(k.stats.cache_misses.values()) - misses0
        if not hits and not misses:
            continue
        used += 1
        compiled += misses
        loaded += hits
        folder, writable = _config.cache_location(k)
        if folder is not None:
            dirs.add(str(folder))
        if misses and (not writable or k.py_func.__qualname__ in _config.UNSAVED):
            unsaved.append(k.__name__)  # (a save into a writable folder can fail too)
    return {"models": models, "batch": batch, "seconds": seconds, "compiled": compiled,
            "loaded": loaded, "kernels": used, "cache_dirs": sorted(dirs),
            "unsaved": sorted(set(unsaved)), "numba_cache_dir": _config.numba_cache_dir()}


__all__ = ["stem", "default_output", "read_prune_config", "read_quantize_config",
           "read_encode_config", "read_compress_config", "read_recipe", "train",
           "evaluate_file", "prune", "quantize", "encode", "inspect", "compress", "sensitivity",
           "bits_sweep", "starter_config", "import_onnx", "export_onnx", "warmup"]
