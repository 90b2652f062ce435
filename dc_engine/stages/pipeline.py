"""The whole job in memory, as the paper tells it (Deep Compression Fig. 1).

Stage 1 (Sec. 2): prune -> retrain with masks -> prune harder -> retrain ...  (:func:`prune_model`)
Stage 2 (Sec. 3): share weights by k-means -> fine-tune the centroids   (:func:`quantize_model`)
Stage 3 (Sec. 4): Huffman-code codes and relative indices                (:func:`encode_model`)

:func:`compress` runs the three on a copy of a dense model and returns the compressed model
and a report; ``dc_engine.save(compressed, "MODEL.dc.h5")`` writes the file. The command line
and the file-to-file functions (:mod:`dc_engine.app.jobs`) are thin wrappers over it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import default_config_path, dump_toml, has_shipped_config, load_toml
from ..core.train import evaluate
from ..errors import ConfigError
from ..io.data import Dataset
from ..threads import limit_threads
from .auto import AutoConfig, choose
from .encode import EncodeConfig, encode_model
from .guard import GuardConfig, back_off, paired_difference, widen
from .inputs import check_recipe, split_data, training_recipe
from .prune import PruneConfig, layer_stats, prune_model
from .quantize import QuantizeConfig, quantize_model
from .sizes import model_size_report
from .surgery import remove_dead_units

log = logging.getLogger(__name__)

_STAGES = {"prune": PruneConfig, "quantize": QuantizeConfig, "encode": EncodeConfig}
_TABLES = (*_STAGES, "train", "guard")


@dataclass(frozen=True)
class CompressConfig:
    """The settings of the three stages: a config file's ``[prune]``, ``[quantize]`` and
    ``[encode]`` tables (``[encode]`` may be left out: 5-bit gaps, Huffman), and an optional
    ``[train]`` table: the training recipe (TrainConfig fields) that retraining starts from,
    for a model that brings none (an imported one); it wins over the model's own.

    Build one from a TOML file (:meth:`from_toml`), from a dict of tables (:meth:`from_dict`),
    or take the shipped one of a zoo architecture (:meth:`shipped`).
    """

    prune: PruneConfig
    quantize: QuantizeConfig
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    train: dict | None = None
    guard: GuardConfig | None = None

    def __post_init__(self):
        for name, cls in _STAGES.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"CompressConfig.{name} must be a {cls.__name__}, got "
                                f"{type(getattr(self, name)).__name__}")
        if self.train is not None:
            object.__setattr__(self, "train", check_recipe(self.train, "[train]"))
        if self.guard is not None and not isinstance(self.guard, GuardConfig):
            raise TypeError(f"CompressConfig.guard must be a GuardConfig or None, got "
                            f"{type(self.guard).__name__}")

    @classmethod
    def from_dict(cls, tables: dict, source: str = "config") -> CompressConfig:
        """From ``{"prune": {...}, "quantize": {...}, "encode": {...}}`` (TOML's tables).

        Raises
        ------
        ConfigError
            A table is missing (``[encode]`` may be), unknown, or holds bad settings; the
            message names ``source`` and the table.
        """
        if not isinstance(tables, dict):
            raise ConfigError(f"{source}: expected a table of stage tables, got "
                              f"{type(tables).__name__}")
        unknown = sorted(set(tables) - set(_TABLES))
        if unknown:
            raise ConfigError(f"{source}: unknown table(s) {unknown}; a config has "
                              f"{', '.join(f'[{t}]' for t in _TABLES)}")
        stages = {}
        for name, stage_cls in _STAGES.items():
            table = tables.get(name, {} if name == "encode" else None)
            if not isinstance(table, dict):
                raise ConfigError(f"{source} has no [{name}] table")
            try:
                stages[name] = stage_cls.from_dict(table)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: [{name}]: {exc}") from None
        train = tables.get("train")
        if train is not None:
            stages["train"] = check_recipe(train, f"{source}: [train]")
        guard = tables.get("guard")
        if guard is not None:
            if not isinstance(guard, dict):
                raise ConfigError(f"{source}: [guard] must be a table")
            try:
                stages["guard"] = GuardConfig.from_dict(guard)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: [guard]: {exc}") from None
        return cls(**stages)

    @classmethod
    def from_toml(cls, path) -> CompressConfig:
        """From a TOML file (ConfigError naming the file when it is missing or bad)."""
        return cls.from_dict(load_toml(path), str(path))

    @classmethod
    def shipped(cls, architecture: str) -> CompressConfig:
        """The shipped config of a zoo architecture (``dc_engine/configs/ARCH.toml``);
        ConfigError when there is none."""
        return cls.from_toml(default_config_path(architecture))

    def with_guard(self, **fields) -> CompressConfig:
        """This config with ``fields`` of its ``[guard]`` replaced (a config without a guard
        gets :class:`GuardConfig`'s defaults for the others); ConfigError on a bad field."""
        base = self.guard.to_dict() if self.guard is not None else {}
        try:
            guard = GuardConfig.from_dict({**base, **fields})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[guard]: {exc}") from None
        return replace(self, guard=guard)

    def to_dict(self) -> dict:
        out = {name: getattr(self, name).to_dict() for name in _STAGES}
        if self.train is not None:
            out["train"] = dict(self.train)
        if self.guard is not None:
            out["guard"] = self.guard.to_dict()
        return out

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


def resolve_config(config, architecture: str) -> CompressConfig:
    """A CompressConfig from what :func:`compress` accepts: a CompressConfig, a dict of
    tables, the path of a TOML file, or None (the architecture's shipped config)."""
    if config is None:
        return CompressConfig.shipped(architecture)
    if isinstance(config, CompressConfig):
        return config
    if isinstance(config, dict):
        return CompressConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return CompressConfig.from_toml(config)
    raise TypeError(f"config must be a CompressConfig, a dict of tables, a TOML path or None, "
                    f"got {type(config).__name__}")


def _test_error(model, data) -> float | None:
    if isinstance(data, Dataset) and len(data.x_test):
        return evaluate(model, data.x_test, data.y_test)["error"]
    return None


def _check_encodable(model, config: CompressConfig) -> None:
    """What stage 3 would refuse after the two training stages, refused before them."""
    weighted = [l.name for l in model.weighted_layers()]
    missing = [n for n in weighted if n not in config.quantize.bits]
    if missing:
        raise ConfigError(f"[quantize.bits] gives no width for {missing}: stage 3 encodes "
                          f"quantized layers only, so every weighted layer of {model.name} "
                          f"({weighted}) needs one")
    unknown = sorted(set(config.encode.layers) - set(weighted))
    if unknown:
        raise ConfigError(f"[encode.layers] names {unknown}, which {model.name} has not; its "
                          f"weighted layers are {weighted}")
    _check_float32(model)


def _check_float32(model) -> None:
    wide = [l.name for l in model.layers if l.params and l.dtype != np.float32]
    if wide:
        raise TypeError(f"layers {wide} are {model.dtype}; compressed files hold float32 "
                        f"codebooks and biases: convert with model.astype(np.float32)")


def prune_stage(model, data, config: PruneConfig, recipe: dict, *, threads: int | None = None,
                progress: bool = True) -> dict:
    """Stage 1 as the jobs run it: :func:`prune_model` in place, then the masks dropped (the
    pruned weights are exact zeros, so a file stores none), with a report that adds the test
    errors before and after (None without test data), the totals, the settings and the time.
    With ``config.remove_dead_units`` the model's layers are then replaced by smaller ones
    (:func:`~dc_engine.stages.surgery.remove_dead_units`; the report's ``dead_units``); the
    report's weight counts are those before the removal.
    """
    t0 = time.perf_counter()
    with limit_threads(threads):
        test_dense = _test_error(model, data)
        report = prune_model(model, data, config, recipe=recipe, progress=progress,
                             threads=threads)
    return _finish_pruning(model, data, report, config, test_dense, t0, threads)


def _finish_pruning(model, data, report: dict, config: PruneConfig, test_dense, t0: float,
                    threads: int | None) -> dict:
    """:func:`prune_stage` after :func:`prune_model`: the test error, the report, the
    dead units removed."""
    with limit_threads(threads):
        test_pruned = _test_error(model, data)
    report = _prune_report(model, report, config, test_dense, test_pruned, t0)
    if config.remove_dead_units:
        slim, report["dead_units"] = remove_dead_units(model)
        model.layers = slim.layers
    return report


def _prune_report(model, report: dict, config: PruneConfig, test_dense, test_pruned,
                  t0: float) -> dict:
    """Finish a pruning report as :func:`prune_stage` returns it (masks dropped)."""
    for layer in model.layers:
        layer.masks.clear()
    report.setdefault("layers", layer_stats(model))
    total_w = sum(s["weights"] for s in report["layers"])
    total_kept = sum(s["kept"] for s in report["layers"])
    report.update(weights=total_w, kept=total_kept,
                  kept_fraction=total_kept / total_w if total_w else 0.0,
                  test_error_dense=test_dense, test_error=test_pruned,
                  config=config.to_dict(), config_toml=dump_toml({"prune": config.to_dict()}),
                  seconds=time.perf_counter() - t0)
    return report


def quantize_stage(model, data, config: QuantizeConfig, recipe: dict, *,
                   threads: int | None = None, progress: bool = True) -> dict:
    """Stage 2 as the jobs run it: :func:`quantize_model` in place, with a report that adds
    the test errors before and after (None without test data), the settings and the time."""
    t0 = time.perf_counter()
    with limit_threads(threads):
        test_before = _test_error(model, data)
        report = quantize_model(model, data, config, recipe=recipe, progress=progress,
                                threads=threads)
        test_after = _test_error(model, data)
    return _quantize_report(report, config, test_before, test_after, t0)


def _quantize_report(report: dict, config: QuantizeConfig, test_before, test_after,
                     t0: float) -> dict:
    """Finish a quantization report as :func:`quantize_stage` returns it."""
    report.update(test_error_before=test_before, test_error=test_after,
                  config=config.to_dict(), config_toml=dump_toml({"quantize": config.to_dict()}),
                  seconds=time.perf_counter() - t0)
    return report


def _stages_1_2(model, data, config: CompressConfig, recipe: dict, *,
                threads: int | None, progress: bool, stage: Callable[[str], None]):
    """Stages 1-2 on a copy of ``model``: the configured run, and under ``config.guard``
    (:mod:`dc_engine.stages.guard`) wider codes and earlier rounds while the validation error
    is over the budget. Returns ``(prune report, pruned model, quantize report, quantized
    model, the config taken, the guard's report or None)``."""
    guard = config.guard
    t0 = time.perf_counter()
    rounds = config.prune.rounds
    plan = [(0, 0)] if guard is None else guard.attempts(rounds)
    keep = {rounds - 1 - k for k, _ in plan if k}  # 0-based rounds whose model is kept
    if guard is not None:
        _, _, x_val, y_val = split_data(data, config.quantize.val_size, config.quantize.seed)
        if not len(x_val):
            raise ConfigError("[guard] compares validation errors: give [quantize] a "
                              "validation split (val_size >= 1)")
        dense_val = evaluate(model, x_val, y_val)["error"]
        dense_right = model.predict(x_val) == y_val
        limit = dense_val + guard.budget
    snapshots = {}

    def on_round(r: int, m) -> None:
        if r in keep:
            snapshots[r] = copy.deepcopy(m)

    work = copy.deepcopy(model)
    stage("stage 1/3: pruning and retraining")
    with limit_threads(threads):
        test_dense = _test_error(model, data)
        raw = prune_model(work, data, config.prune, recipe=recipe, progress=progress,
                          threads=threads, on_round=on_round)
    t_pruned = time.perf_counter()
    pruned_models = {}

    def pruned_after(back: int):
        """The pruned model and its report ``back`` rounds before the last."""
        if back not in pruned_models:
            pc = back_off(config.prune, back)
            m = work if back == 0 else snapshots.pop(rounds - 1 - back)
            rep = dict(raw, rounds=raw["rounds"][:rounds - back])
            if back:
                rep.pop("layers", None)
            rep = _finish_pruning(m, data, rep, pc, test_dense, t0, threads)
            rep["seconds"] = t_pruned - t0
            pruned_models[back] = (pc, m, rep)
        return pruned_models[back]

    if guard is None:
        pc, pruned, p_report = pruned_after(0)
        stage("stage 2/3: weight sharing and centroid fine-tuning")
        quantized = copy.deepcopy(pruned)
        quantized.metadata = {"command": "prune", "prune": p_report, "train_config": recipe}
        q_report = quantize_stage(quantized, data, config.quantize, recipe, threads=threads,
                                  progress=progress)
        return p_report, pruned, q_report, quantized, config, None

    attempts, best, seen = [], None, set()
    for i, (back, extra) in enumerate(plan):
        qc = widen(config.quantize, extra)
        key = (back, tuple(sorted(qc.bits.items())), tuple(sorted(qc.bias_bits.items())))
        if key in seen:  # every width already at the widest
            continue
        seen.add(key)
        pc, pruned, p_report = pruned_after(back)
        what = (f"{pc.rounds} of {rounds} rounds, " if back else "") + \
            ("configured widths" if not extra else f"widths +{extra} bit{'s' * (extra > 1)}")
        stage("stage 2/3: weight sharing and centroid fine-tuning" +
              ("" if not attempts else f" (guard: {what})"))
        quantized = copy.deepcopy(pruned)
        quantized.metadata = {"command": "prune", "prune": p_report, "train_config": recipe}
        q_report = quantize_stage(quantized, data, qc, recipe, threads=threads,
                                  progress=progress)
        val = q_report["val_error_finetuned"]
        ok = val <= limit + 1e-12
        with limit_threads(threads):
            paired = paired_difference(dense_right, quantized.predict(x_val) == y_val)
        attempts.append({"back_rounds": back, "extra_bits": extra, "rounds": pc.rounds,
                         "bits": dict(qc.bits), "bias_bits": dict(qc.bias_bits),
                         "val_error_pruned": p_report["rounds"][-1]["val_error_retrained"],
                         "val_error": val, "accepted": ok, "seconds": q_report["seconds"],
                         "val_lost": paired["lost"], "val_won": paired["won"],
                         "val_difference_se": paired["se"]})
        stage(f"guard: validation error {100 * val:.2f}% ({'within' if ok else 'over'} the "
              f"limit {100 * limit:.2f}%: dense {100 * dense_val:.2f}% + "
              f"{100 * guard.budget:g} points; the difference's standard error "
              f"{100 * paired['se']:.2f} points)")
        if best is None or val < best[0]:
            best = (val, len(attempts) - 1, pc, pruned, p_report, qc, quantized, q_report)
        if ok:
            break
        if back not in {k for k, _ in plan[i + 1:]}:
            pruned_models.pop(back)  # no later attempt starts from this round
    val, taken, pc, pruned, p_report, qc, quantized, q_report = best
    if not attempts[taken]["accepted"]:
        log.warning("the guard found no attempt within the budget (limit %.2f%%): kept the "
                    "one of lowest validation error, %.2f%%", 100 * limit, 100 * val)
    report = {"settings": guard.to_dict(), "val_error_dense": dense_val,
              "val_error_limit": limit, "attempts": attempts, "taken": taken,
              "within_budget": attempts[taken]["accepted"],
              "seconds": time.perf_counter() - t0}
    taken_config = CompressConfig(prune=pc, quantize=qc, encode=config.encode,
                                  train=config.train, guard=guard)
    return p_report, pruned, q_report, quantized, taken_config, report


def auto_settings(config, auto, architecture: str) -> AutoConfig | None:
    """Whether :func:`compress` searches the settings itself: the AutoConfig to search with,
    or None to use ``config``. ``auto`` True or an AutoConfig asks for the search; None
    searches when there is no ``config`` and no shipped one for ``architecture``."""
    if auto is None:
        return AutoConfig() if config is None and not has_shipped_config(architecture) \
            else None
    if auto is False:
        return None
    if config is not None:
        raise ValueError("give either a config or automatic settings (auto), not both")
    if auto is True:
        return AutoConfig()
    if isinstance(auto, AutoConfig):
        return auto
    if isinstance(auto, dict):
        return AutoConfig.from_dict(auto)
    raise TypeError(f"auto must be None, a bool, an AutoConfig or a dict of its fields, got "
                    f"{type(auto).__name__}")


def compress(model, data, config=None, *, auto=None, recipe: dict | None = None,
             threads: int | None = None, progress: bool = True,
             on_stage: Callable[[str], None] | None = None) -> tuple:
    """Deep Compression's three stages on a dense model, in memory.

    Parameters
    ----------
    model : Model with float weights (e.g. ``dc_engine.load("lenet-5.h5")``). Not changed:
        the stages run on a copy.
    data : Dataset, or ``(x_train, y_train, x_val, y_val)``. Retraining data; each stage
        holds out its config's validation split of a Dataset, and a Dataset's test images give
        the test errors of the report.
    config : CompressConfig, dict of tables, path of a TOML file, or None for the shipped
        config of ``model.name`` (``dc_engine/configs/ARCH.toml``), or the automatic settings
        when there is none.
    auto : None, bool, AutoConfig or dict of its fields. True (or settings) searches every
        layer's kept fraction and bits on the validation split under an accuracy budget
        (:mod:`dc_engine.stages.auto`) even where a shipped config exists; False never does.
        The chosen settings are ``report["config"]`` and the search ``report["auto"]``.
    recipe : dict of TrainConfig fields, optional. What retraining starts from (default: the
        config's ``[train]`` table, else the model's own recipe from its metadata, else the
        zoo's).
    threads : int, optional. BLAS and Numba threads (1 on a busy machine; with a fixed count
        the result is deterministic).
    progress : bool. Training progress bars on stderr.
    on_stage : callable, optional. Called with a one-line message as each stage starts.

    Returns
    -------
    (Model, dict)
        The compressed model (:func:`encode_model`'s result; save it with ``dc_engine.save``)
        and the report: ``prune``, ``quantize`` (the stages' reports), ``sizes``
        (:func:`dc_engine.stages.sizes.model_size_report`), ``config`` (the settings used),
        ``test_error_dense`` / ``_pruned`` / ``_quantized`` / ``_compressed`` (None without
        test data), ``seconds``. The pruned and quantized models are ``report["models"]``
        (``{"pruned": Model, "quantized": Model}``; not JSON).

    Raises
    ------
    ConfigError
        No shipped config for the architecture, a bad config, or no training recipe.
    ValueError, TypeError
        The config does not fit the model, bad data, or a model with compressed weights.
    """
    t0 = time.perf_counter()

    def stage(message: str) -> None:
        log.info(message)
        if on_stage is not None:
            on_stage(message)

    if model.compressed:
        raise ValueError(f"{model.name} is already compressed; compress a model with float "
                         f"weights")
    search = auto_settings(config, auto, model.name)
    guard_report = None
    if search is not None:
        _check_float32(model)
        split_data(data, 0, 0)  # bad data: fail before work
        with limit_threads(threads):
            stage("stages 1-2/3: automatic settings, pruning and quantization")
            test_dense = _test_error(model, data)
            res = choose(model, data, search, recipe=recipe, progress=progress,
                         threads=threads, on_step=stage)
            config = res.config
            recipe = training_recipe(model, config.train)
            # the stages' times: the search up to the pruned model, the quantization attempts
            t_stage = time.perf_counter() - sum(a["seconds"]
                                                for a in res.report["quantize_attempts"])
            pruned = res.pruned
            p_report = _prune_report(pruned, {
                "val_error_dense": res.report["val_error_dense"],
                "train_config": res.retrain_config, "rounds": res.report["rounds"]},
                config.prune, test_dense, _test_error(pruned, data),
                t0 + time.perf_counter() - t_stage)
            work = res.quantized
            q_report = _quantize_report(res.quantize_report, config.quantize,
                                        p_report["test_error"], _test_error(work, data),
                                        t_stage)
        pruned.metadata = {"command": "prune", "prune": p_report, "train_config": recipe}
        work.metadata = dict(pruned.metadata, command="quantize", quantize=q_report,
                             train_config=recipe)
    else:
        config = resolve_config(config, model.name)
        # before any work: a config problem first
        recipe = training_recipe(model, recipe if recipe is not None else config.train)
        config.prune.check_model(model)
        config.quantize.check_model(model)
        _check_encodable(model, config)
        split_data(data, config.prune.val_size, config.prune.seed)  # bad data: fail first
        with limit_threads(threads):
            p_report, pruned, q_report, work, config, guard_report = _stages_1_2(
                model, data, config, recipe, threads=threads, progress=progress, stage=stage)
        pruned.metadata = {"command": "prune", "prune": p_report, "train_config": recipe}
        work.metadata = dict(pruned.metadata, command="quantize", quantize=q_report,
                             train_config=recipe)

    with limit_threads(threads):
        stage("stage 3/3: Huffman coding")
        compressed = encode_model(work, config.encode)
        test_compressed = _test_error(compressed, data)
    report = {
        "architecture": model.name,
        "test_error_dense": p_report["test_error_dense"],
        "test_error_pruned": p_report["test_error"],
        "test_error_quantized": q_report["test_error"],
        "test_error_compressed": test_compressed,
        "sizes": model_size_report(compressed),
        "config": config.to_dict(),
        "prune": p_report, "quantize": q_report,
        "auto": None if search is None else res.report,
        "guard": guard_report,
        "seconds": time.perf_counter() - t0,
        "models": {"pruned": pruned, "quantized": work},
    }
    return compressed, report


__all__ = ["CompressConfig", "resolve_config", "auto_settings", "compress", "prune_stage",
           "quantize_stage"]
