"""The validation guard (dc_engine.stages.guard, a config's [guard] table): its settings, the
order of its attempts, the configs it derives, and the whole job under it on a tiny conv net:
within the budget it changes nothing; over it, it widens and steps back, and the settings it
took replay the same file."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dc_engine
from dc_engine.errors import ConfigError
from dc_engine.stages import pipeline
from dc_engine.stages.guard import GuardConfig, back_off, paired_difference, widen
from dc_engine.stages.pipeline import CompressConfig, compress
from dc_engine.stages.prune import LayerPrune, PruneConfig
from dc_engine.stages.quantize import QuantizeConfig

from _helpers import four_class_dataset, trained_tiny_convnet

TABLES = {
    "prune": {"rounds": 2, "lr_scale": 0.5, "val_size": 150, "seed": 0,
              "retrain": {"epochs": 1, "lr_policy": "fixed"},
              "layers": {"c1": {"kept": 0.5}, "fc1": {"kept": 0.1}, "fc2": {"kept": 0.3}}},
    "quantize": {"bits": {"c1": 2, "fc1": 2, "fc2": 2}, "bias_bits": {"fc1": 2},
                 "val_size": 150, "seed": 0, "finetune": {"epochs": 1, "lr_policy": "fixed"}},
    "encode": {"index_bits": "auto"},
    "train": {"epochs": 2, "lr": 0.05, "lr_policy": "fixed"},
}


@pytest.fixture(scope="module")
def data():
    # noisier than test_auto's: the dense net's error is not zero, so bits and rounds show
    return four_class_dataset(noise=0.8)


@pytest.fixture(scope="module")
def dense(data):
    return trained_tiny_convnet(data)


def _config(**guard) -> CompressConfig:
    tables = dict(TABLES)
    if guard:
        tables["guard"] = guard
    return CompressConfig.from_dict(tables)


def _file_bytes(model, tmp_path, name) -> bytes:
    path = tmp_path / name
    dc_engine.save(model, path)
    return path.read_bytes()


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("bad", [
    {"budget": -0.1}, {"budget": 1.0}, {"budget": float("nan")}, {"budget": True},
    {"budget": "0.1"}, {"extra_bits": -1}, {"extra_bits": 9}, {"extra_bits": 1.0},
    {"back_rounds": -1}, {"back_rounds": False}, {"margin": 0.1},
])
def test_bad_guard_settings_are_config_errors_naming_the_table(bad):
    with pytest.raises(ConfigError, match=r"\[guard\]"):
        _config(**bad)


def test_a_guard_that_is_not_a_table_and_unknown_tables_are_refused():
    with pytest.raises(ConfigError, match=r"\[guard\] must be a table"):
        CompressConfig.from_dict(dict(TABLES, guard=0.002))
    with pytest.raises(ConfigError, match=r"unknown table\(s\) \['gaurd'\]"):
        CompressConfig.from_dict(dict(TABLES, gaurd={"budget": 0.002}))


def test_the_guard_round_trips_through_the_config_and_is_absent_by_default():
    assert "guard" not in _config().to_dict()
    cfg = _config(budget=0.01, extra_bits=1)
    assert cfg.guard == GuardConfig(budget=0.01, extra_bits=1, back_rounds=2)
    assert CompressConfig.from_dict(cfg.to_dict()) == cfg
    assert CompressConfig.from_dict(dict(TABLES, guard={})).guard == GuardConfig()


def test_attempts_widen_first_then_step_back_within_the_rounds_there_are():
    g = GuardConfig(extra_bits=2, back_rounds=2)
    assert g.attempts(6) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                             (2, 0), (2, 1), (2, 2)]
    assert g.attempts(2) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert g.attempts(1) == [(0, 0), (0, 1), (0, 2)]
    assert GuardConfig(extra_bits=0, back_rounds=0).attempts(6) == [(0, 0)]


@pytest.mark.parametrize("kind,value", [("kept", 0.02), ("quality", 1.5),
                                        ("kept", (0.5, 0.3, 0.2, 0.1))])
def test_back_off_lists_the_rounds_applied(kind, value):
    cfg = PruneConfig(layers={"a": LayerPrune(**{kind: value})}, rounds=4)
    for back in range(4):
        short = back_off(cfg, back)
        assert short.rounds == 4 - back
        assert short.layers["a"].per_round(short.rounds) == \
            cfg.layers["a"].per_round(4)[:4 - back]
    assert back_off(cfg, 0) is cfg
    with pytest.raises(ValueError, match="cannot step back 4 of 4 rounds"):
        back_off(cfg, 4)


def test_widen_adds_bits_to_weights_and_biases_up_to_eight():
    cfg = QuantizeConfig(bits={"a": 3, "b": 7, "c": 8, "d": 12}, bias_bits={"a": 4})
    w = widen(cfg, 2)
    assert w.bits == {"a": 5, "b": 8, "c": 8, "d": 12}
    assert w.bias_bits == {"a": 6}
    assert widen(cfg, 0) is cfg
    assert w.init == cfg.init and w.finetune == cfg.finetune and w.seed == cfg.seed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=400))
def test_paired_difference_matches_the_per_image_differences(pairs):
    a, b = (np.array(v, bool) for v in zip(*pairs))
    got = paired_difference(a, b)
    d = a.astype(int) - b.astype(int)  # +1 lost, -1 won, 0 the same
    assert got["lost"] == int(np.sum(d == 1)) and got["won"] == int(np.sum(d == -1))
    assert got["difference"] == pytest.approx(np.mean(~b) - np.mean(~a), abs=1e-12)
    # the standard error of a mean of paired differences (population variance)
    assert got["se"] == pytest.approx(np.std(d) / np.sqrt(len(d)), abs=1e-12)


@pytest.mark.parametrize("a, b", [([True], [True, False]), ([], []),
                                  ([[True]], [[False]])])
def test_paired_difference_refuses_mismatched_or_empty_inputs(a, b):
    with pytest.raises(ValueError, match="two boolean arrays of one non-zero length"):
        paired_difference(np.array(a, bool), np.array(b, bool))


# ------------------------------------------------------------------------------- the job


def test_within_the_budget_the_guard_changes_nothing(dense, data, tmp_path):
    plain, rep_plain = compress(dense, data, _config(), threads=1, progress=False)
    guarded, rep = compress(dense, data, _config(budget=0.9), threads=1, progress=False)
    g = rep["guard"]
    assert rep_plain["guard"] is None
    assert len(g["attempts"]) == 1 and g["taken"] == 0 and g["within_budget"]
    assert g["attempts"][0]["val_error"] == rep_plain["quantize"]["val_error_finetuned"]
    assert g["val_error_limit"] == pytest.approx(g["val_error_dense"] + 0.9)
    assert _file_bytes(guarded, tmp_path, "g.dc.h5") == _file_bytes(plain, tmp_path, "p.dc.h5")
    assert rep["config"]["prune"] == rep_plain["config"]["prune"]
    assert rep["config"]["quantize"] == rep_plain["config"]["quantize"]
    # the paired counts are those of the model taken, on the split the errors came from
    a = g["attempts"][0]
    n = TABLES["quantize"]["val_size"]
    assert (a["val_lost"] - a["val_won"]) / n == pytest.approx(a["val_error"]
                                                             - g["val_error_dense"])
    assert 0 <= a["val_difference_se"] <= ((a["val_lost"] + a["val_won"]) ** 0.5 / n) + 1e-12


def _scripted(monkeypatch, errors):
    """quantize_stage as it is, but each attempt's validation error taken from ``errors``
    (the guard's decisions then follow a known script)."""
    real = pipeline.quantize_stage
    script = iter(errors)

    def fake(*args, **kw):
        report = real(*args, **kw)
        report["val_error_finetuned"] = next(script)
        return report

    monkeypatch.setattr(pipeline, "quantize_stage", fake)


def test_over_the_budget_it_widens_then_steps_back_and_takes_the_first_within(
        dense, data, tmp_path, monkeypatch):
    _scripted(monkeypatch, [0.9, 0.9, 0.9, 0.0])
    model, rep = compress(dense, data, _config(budget=0.05, extra_bits=2, back_rounds=1),
                          threads=1, progress=False)
    g = rep["guard"]
    assert [(a["back_rounds"], a["extra_bits"]) for a in g["attempts"]] == \
        [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert [a["accepted"] for a in g["attempts"]] == [False, False, False, True]
    assert g["taken"] == 3 and g["within_budget"]
    taken = CompressConfig.from_dict(rep["config"])
    assert taken.prune == back_off(_config().prune, 1)
    assert taken.quantize == _config().quantize
    # the model of round 1 was the start: its kept fractions are round 1's targets
    kept = {s["name"]: s["kept_fraction"] for s in rep["prune"]["layers"]}
    assert kept["fc1"] == pytest.approx(0.1 ** 0.5, abs=0.01)
    assert len(rep["prune"]["rounds"]) == 1
    # the settings taken, run again without the guard, write the same file
    monkeypatch.undo()
    again, _ = compress(dense, data, CompressConfig(taken.prune, taken.quantize, taken.encode,
                                                    taken.train), threads=1, progress=False)
    assert _file_bytes(again, tmp_path, "a.dc.h5") == _file_bytes(model, tmp_path, "m.dc.h5")


def test_a_widened_attempt_is_taken_with_its_widths(dense, data, tmp_path, monkeypatch):
    _scripted(monkeypatch, [0.9, 0.0])
    model, rep = compress(dense, data, _config(budget=0.05), threads=1, progress=False)
    taken = CompressConfig.from_dict(rep["config"])
    assert rep["guard"]["taken"] == 1
    assert taken.quantize.bits == {"c1": 3, "fc1": 3, "fc2": 3}
    assert taken.quantize.bias_bits == {"fc1": 3}
    assert taken.prune == _config().prune
    assert {l.name: l.params[l.weight_name].weight_bits
            for l in model.weighted_layers()} == taken.quantize.bits
    monkeypatch.undo()
    again, _ = compress(dense, data, CompressConfig(taken.prune, taken.quantize, taken.encode,
                                                    taken.train), threads=1, progress=False)
    assert _file_bytes(again, tmp_path, "a.dc.h5") == _file_bytes(model, tmp_path, "m.dc.h5")


def test_none_within_keeps_the_lowest_and_says_so(dense, data, monkeypatch, caplog):
    _scripted(monkeypatch, [0.9, 0.5, 0.7, 0.5])
    with caplog.at_level(logging.WARNING, logger="dc_engine.stages.pipeline"):
        _, rep = compress(dense, data, _config(budget=0.05, extra_bits=1, back_rounds=1),
                          threads=1, progress=False)
    g = rep["guard"]
    assert len(g["attempts"]) == 4 and not g["within_budget"]
    assert g["taken"] == 1  # the lowest, the earlier of a tie
    assert "no attempt within the budget" in caplog.text


def test_widths_already_at_eight_are_not_tried_twice(dense, data, monkeypatch):
    tables = dict(TABLES, quantize=dict(TABLES["quantize"], bits={"c1": 8, "fc1": 8, "fc2": 8},
                                        bias_bits={}),
                  guard={"budget": 0.05, "extra_bits": 2, "back_rounds": 1})
    _scripted(monkeypatch, [0.9, 0.9])
    _, rep = compress(dense, data, CompressConfig.from_dict(tables), threads=1,
                      progress=False)
    assert [(a["back_rounds"], a["extra_bits"]) for a in rep["guard"]["attempts"]] == \
        [(0, 0), (1, 0)]


@pytest.fixture
def cli_inputs(dense, data, tmp_path):
    """The tiny net and its data as files, for the command line."""
    dense_path = tmp_path / "tiny.h5"
    dc_engine.save(dense, dense_path, metadata={"train_config": TABLES["train"]})
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
             y_test=data.y_test)
    return dense_path, npz


def _cli(cli_inputs, tmp_path, *args) -> int:
    from dc_engine.app.cli import main

    dense_path, npz = cli_inputs
    return main(["compress", str(dense_path), "--data", str(npz), "--out",
                 str(tmp_path / "tiny.dc.h5"), "--threads", "1", "--no-progress", *args])


def test_the_command_line_prints_the_guard(cli_inputs, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(_config(budget=0.9).to_toml())
    assert _cli(cli_inputs, tmp_path, "--config", str(cfg)) == 0
    out = capsys.readouterr().out
    assert "validation guard" in out and "<- taken" in out and "(within the budget)" in out
    assert "vs dense (s.e.)" in out


def test_the_table_reads_reports_written_before_the_standard_error():
    from dc_engine.app.report import guard_table

    g = {"val_error_dense": 0.02, "val_error_limit": 0.022, "taken": 1, "within_budget": True,
         "attempts": [{"rounds": 6, "extra_bits": 0, "val_error": 0.025},
                      {"rounds": 6, "extra_bits": 1, "val_error": 0.021,
                       "val_difference_se": 0.0014}]}
    lines = guard_table(g).splitlines()
    assert lines[1].split()[-1] == "+0.50"
    assert lines[2].split()[-4:] == ["+0.10", "(0.14)", "<-", "taken"]


@pytest.mark.parametrize("guarded", [True, False])
def test_budget_with_a_config_sets_its_guards_budget(cli_inputs, tmp_path, capsys, guarded):
    """--budget beside --config replaces [guard]'s budget, or adds a guard with the defaults
    for the rest; the report's config (which replays the file) carries it."""
    cfg = tmp_path / "c.toml"
    cfg.write_text((_config(budget=0.9, back_rounds=1) if guarded else _config()).to_toml())
    assert _cli(cli_inputs, tmp_path, "--config", str(cfg), "--budget", "85", "--json") == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = {"budget": 0.85, "extra_bits": 2, "back_rounds": 1 if guarded else 2}
    assert rep["config"]["guard"] == rep["guard"]["settings"] == want
    assert rep["guard"]["val_error_limit"] == pytest.approx(rep["guard"]["val_error_dense"]
                                                            + 0.85)


@pytest.mark.parametrize("args, message", [
    (["--config", "c.toml", "--auto"], "give --config or --auto, not both"),
    (["--config", "c.toml", "--budget", "100"], "in [0, 100): got 100"),
])
def test_bad_arguments_are_refused_before_any_work(cli_inputs, tmp_path, capsys, args,
                                                   message):
    assert _cli(cli_inputs, tmp_path, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tiny.dc.h5").exists()


def test_budget_with_a_preset_guards_the_shipped_settings(tmp_path, monkeypatch, capsys):
    """``--preset max --budget 0.05``: the shipped max config, its guard's budget replaced
    (its other guard settings kept); the stages receive exactly that."""
    from dc_engine.app import jobs
    from dc_engine.app.cli import main

    seen = {}

    def stop(model, data, config, **kw):
        seen["config"] = config
        raise KeyboardInterrupt  # no need to run the stages

    monkeypatch.setattr(jobs, "compress_model", stop)
    rc = main(["compress", "data/models/lenet-5.h5", "--preset", "max", "--budget", "0.05",
               "--out", str(tmp_path / "o.dc.h5"), "--no-progress"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    shipped = CompressConfig.from_toml("dc_engine/configs/lenet-5.max.toml")
    assert seen["config"] == shipped.with_guard(budget=0.0005)
    assert seen["config"].guard.back_rounds == shipped.guard.back_rounds == 5
    assert not (tmp_path / "o.dc.h5").exists()


def test_guard_settings_with_automatic_settings_are_refused(cli_inputs, tmp_path):
    from dc_engine.app import jobs

    with pytest.raises(ValueError, match="automatic settings have their own budget"):
        jobs.compress(cli_inputs[0], tmp_path / "o.dc.h5", data=cli_inputs[1], auto=True,
                      guard={"budget": 0.01})
