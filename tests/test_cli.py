"""The command line: train and eval end to end on a tiny IDX data set, errors, help texts."""

from __future__ import annotations

import json
import sys

import pytest

from dc_engine.app.cli import _parser, main
from dc_engine.io import dense as store


def test_train_saves_model_with_recipe_and_history(tiny_mlp_model):
    model = store.load(tiny_mlp_model)
    assert model.name == "lenet-300-100"
    meta = model.metadata
    assert meta["train_config"]["epochs"] == 2
    assert meta["train_config"]["augment_shift"] == 1  # the recipe's value, not overridden
    assert len(meta["history"]) == 2
    assert meta["threads"] == 1
    assert 0.0 <= meta["test_error"] <= 1.0


def test_eval_json_is_one_line_with_the_documented_keys(tiny_mlp_model, tiny_mnist, capsys):
    rc = main(["eval", str(tiny_mlp_model), "--data", str(tiny_mnist), "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    res = json.loads(out)
    assert set(res) == {"error", "accuracy", "n", "params", "bytes", "compressed",
                        "zoo_params"}
    assert res["compressed"] is False and res["zoo_params"] is None
    assert res["n"] == 40
    assert res["params"] == 266610 and res["bytes"] == 4 * 266610
    assert res["error"] == pytest.approx(1.0 - res["accuracy"])
    model = store.load(tiny_mlp_model)
    from dc_engine.core.train import evaluate
    from dc_engine.io.data import load_mnist
    ds = load_mnist(tiny_mnist)
    assert res["error"] == pytest.approx(evaluate(model, ds.x_test, ds.y_test)["error"])


def test_train_refuses_to_overwrite_without_force(tiny_mlp_model, tiny_mnist, capsys):
    before = tiny_mlp_model.read_bytes()
    rc = main(["train", "lenet-300-100", "--out", str(tiny_mlp_model), "--data", str(tiny_mnist),
               "--epochs", "1", "--no-progress"])
    assert rc == 2
    assert "--force" in capsys.readouterr().err
    assert tiny_mlp_model.read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["eval", "nope.h5"], "not found"),
    (["train", "lenet-5", "--out", "{tmp}/m.h5", "--data", "{tmp}/missing"], "not found"),
    (["train", "lenet-5", "--out", "{tmp}/no/such/dir/m.h5"], "does not exist"),
    (["train", "lenet-5", "--out", "{tmp}/m.h5", "--epochs", "-1", "--data", "{data}"],
     "epochs"),
    (["train", "lenet-5", "--out", "{tmp}/m.h5", "--val-size", "999999", "--data", "{data}"],
     "val-size"),
])
def test_bad_input_gives_one_line_error_and_status_2(argv, message, tmp_path, tiny_mnist, capsys):
    argv = [a.format(tmp=tmp_path, data=tiny_mnist) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("dc-engine")


def test_eval_rejects_a_corrupt_model(tmp_path, tiny_mlp_model, tiny_mnist, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(tiny_mlp_model.read_bytes()[:5000])
    assert main(["eval", str(bad), "--data", str(tiny_mnist)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_help_documents_every_option():
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"train", "eval"}
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            for opt in action.option_strings:
                assert opt in text, f"{name}: {opt} missing from --help"
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name}: {action.option_strings} has no help text"
    assert "train" in parser.format_help() and "eval" in parser.format_help()


def test_main_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "dc-engine" in capsys.readouterr().out


def test_threads_context_restores_counts():
    import numba

    from dc_engine.threads import blas_threads, limit_threads
    before_numba, before_blas = numba.get_num_threads(), blas_threads()
    with limit_threads(1):
        assert numba.get_num_threads() == 1
        assert blas_threads() in (1, None)
    assert numba.get_num_threads() == before_numba and blas_threads() == before_blas
    with pytest.raises(ValueError, match="threads"):
        with limit_threads(0):
            pass


def test_missing_matplotlib_warns_once_and_writes_nothing(monkeypatch, tmp_path, recwarn):
    from dc_engine.app import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(plots, "_warned", False)
    scan = {"fractions": [1.0, 0.5], "errors": {"ip1": [0.1, 0.2]}, "baseline": 0.1}
    assert plots.sensitivity_plot(scan, tmp_path / "a.png") is None
    assert plots.sensitivity_plot(scan, tmp_path / "b.png") is None
    msgs = [str(w.message) for w in recwarn if "matplotlib" in str(w.message)]
    assert len(msgs) == 1 and "pip install 'dc-engine[plot]'" in msgs[0]
    assert list(tmp_path.iterdir()) == []
