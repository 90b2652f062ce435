"""The command line of stage 3: compress (end to end on a tiny data set), encode, inspect, and
eval on compressed files."""

from __future__ import annotations

import contextlib
import io
import json
import os

import h5py
import numpy as np
import pytest

from dc_engine import Flatten, Model, runtime
from dc_engine.app.cli import main
from dc_engine.io import dense as store

from _helpers import prune_toml

TINY_CONFIG = prune_toml(rounds=1) + """
[quantize]
val_size = 16

[quantize.finetune]
epochs = 1

[quantize.bits]
ip1 = 4
ip2 = 4
ip3 = 5

[encode]
index_bits = 5
"""

LAYER_KEYS = {"name", "shape", "nnz", "kept", "weight_bits", "index_bits", "coded_weight_bits",
              "coded_index_bits", "bytes"}
TOTAL_KEYS = {"original_bytes", "compressed_bytes", "file_bytes", "ratio_file", "ratio_payload"}


@pytest.fixture(scope="module")
def compressed(tiny_mnist, tiny_mlp_model, tmp_path_factory):
    """`dc-engine compress --keep` on the tiny MLP: (folder, config, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("compress")
    config = folder / "tiny.toml"
    config.write_text(TINY_CONFIG)
    out, err = io.StringIO(), io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["compress", str(tiny_mlp_model), "--out", str(folder / "mlp.dc.h5"),
                   "--config", str(config), "--data", str(tiny_mnist), "--keep",
                   "--threads", "1", "--no-progress"])
    assert rc == 0, err.getvalue()
    return folder, config, out.getvalue(), err.getvalue()


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_line_error(err: str, command: str) -> str:
    err = err.strip()
    assert err.startswith(f"dc-engine {command}: error:") and "\n" not in err
    return err


def test_compress_end_to_end(compressed, tiny_mnist, capsys):
    folder, _, out, _ = compressed
    dc = folder / "mlp.dc.h5"
    assert dc.is_file() and dc.stat().st_size > 0
    assert "P+Q+H" in out and "file on disk" in out
    assert f"saved {dc} ({dc.stat().st_size:,} bytes on disk)" in out
    for name in ("mlp.report.json", "mlp.sizes.png", "mlp.sizes.json", "mlp.pruned.h5",
                 "mlp.quantized.h5"):
        assert (folder / name).is_file(), name
    report = json.loads((folder / "mlp.report.json").read_text())
    assert report["sizes"]["totals"]["file_bytes"] == dc.stat().st_size
    assert report["sizes"]["config"]["index_bits"] == 5
    assert [l["index_bits"] for l in report["sizes"]["layers"]] == [5, 5, 5]
    assert [l["weight_bits"] for l in report["sizes"]["layers"]] == [4, 4, 5]

    rc, dc_out, _ = run(["eval", dc, "--data", tiny_mnist, "--json"], capsys)
    assert rc == 0
    on_dc = json.loads(dc_out)
    rc, q_out, _ = run(["eval", folder / "mlp.quantized.h5", "--data", tiny_mnist, "--json"],
                       capsys)
    assert rc == 0
    on_quantized = json.loads(q_out)
    assert on_dc["error"] == on_quantized["error"] == report["test_error_compressed"]
    assert on_dc["compressed"] is True and on_quantized["compressed"] is False
    assert on_dc["bytes"] == dc.stat().st_size and on_dc["params"] == 266_610
    assert on_dc["n"] == 40
    quantized = store.load(folder / "mlp.quantized.h5")
    decoded = runtime.load(dc).to_dense()
    for la, lb in zip(quantized.layers, decoded.layers):
        for k in la.params:
            assert np.array_equal(la.params[k].view(np.uint32), lb.params[k].view(np.uint32))


def test_eval_text_on_compressed_file(compressed, tiny_mnist, capsys):
    dc = compressed[0] / "mlp.dc.h5"
    rc, out, _ = run(["eval", dc, "--data", tiny_mnist], capsys)
    assert rc == 0
    assert "compressed: 266,610 parameters" in out and f"{dc.stat().st_size:,} bytes" in out
    assert "test error" in out


def test_compress_refuses_to_overwrite_without_force(compressed, tiny_mnist, tiny_mlp_model,
                                                     tmp_path, capsys):
    out = tmp_path / "mlp.dc.h5"
    out.write_bytes((compressed[0] / "mlp.dc.h5").read_bytes())
    before = out.read_bytes()
    rc, _, err = run(["compress", tiny_mlp_model, "--out", out, "--config", compressed[1],
                      "--data", tiny_mnist, "--threads", "1", "--no-progress"], capsys)
    assert rc == 2
    assert "--force" in one_line_error(err, "compress")
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["mlp.dc.h5"]


def test_compress_keep_refuses_to_overwrite_intermediates(compressed, tiny_mnist,
                                                          tiny_mlp_model, tmp_path, capsys):
    (tmp_path / "m.quantized.h5").write_bytes(b"precious")
    rc, _, err = run(["compress", tiny_mlp_model, "--out", tmp_path / "m.dc.h5", "--keep",
                      "--config", compressed[1], "--data", tiny_mnist, "--no-progress"], capsys)
    assert rc == 2 and "m.quantized.h5" in one_line_error(err, "compress")
    assert (tmp_path / "m.quantized.h5").read_bytes() == b"precious"
    assert not (tmp_path / "m.dc.h5").exists()


def test_encode_reproduces_the_compressed_file(compressed, tmp_path, capsys):
    """Stage 3 alone on the kept quantized model, same [encode] table: the same bytes."""
    folder, config, _, _ = compressed
    out = tmp_path / "again.dc.h5"
    rc, text, _ = run(["encode", folder / "mlp.quantized.h5", "--out", out, "--config", config],
                      capsys)
    assert rc == 0
    assert "P+Q+H" in text and "file on disk" in text
    assert out.read_bytes() == (folder / "mlp.dc.h5").read_bytes()
    assert (tmp_path / "again.sizes.json").is_file() and (tmp_path / "again.sizes.png").is_file()
    rc, _, err = run(["encode", folder / "mlp.quantized.h5", "--out", out], capsys)
    assert rc == 2 and "--force" in one_line_error(err, "encode")


def test_encode_json_with_auto_index_bits(compressed, tmp_path, capsys):
    config = tmp_path / "auto.toml"
    config.write_text('[encode]\nindex_bits = "auto"\n')
    out = tmp_path / "auto.dc.h5"
    rc, text, _ = run(["encode", compressed[0] / "mlp.quantized.h5", "--out", out, "--config",
                       config, "--json", "--report-dir", tmp_path / "reports"], capsys)
    assert rc == 0
    report = json.loads(text)
    assert report["config"]["index_bits"] == "auto"
    assert report["totals"]["file_bytes"] == out.stat().st_size
    assert (tmp_path / "reports" / "auto.sizes.json").is_file()
    fixed = json.loads((compressed[0] / "mlp.sizes.json").read_text())
    assert report["totals"]["compressed_bytes"] <= fixed["totals"]["compressed_bytes"]


def test_encode_refuses_a_dense_model(tiny_mlp_model, tmp_path, capsys):
    out = tmp_path / "dense.dc.h5"
    rc, _, err = run(["encode", tiny_mlp_model, "--out", out], capsys)
    assert rc == 2
    err = one_line_error(err, "encode")
    assert "not quantized" in err and "dc-engine quantize" in err
    assert os.listdir(tmp_path) == []


def test_encode_and_inspect_a_model_without_weights(tmp_path, capsys):
    """Nothing to encode is not an error: a file without payloads and an n/a size table."""
    dense = store.save(Model([Flatten()], input_shape=(1, 2, 2), name="nix"), tmp_path / "n.h5")
    out = tmp_path / "nix.dc.h5"
    rc, text, err = run(["encode", dense, "--out", out], capsys)
    assert rc == 0, err
    assert "n/a" in text and (tmp_path / "nix.sizes.png").is_file()
    rc, text, err = run(["inspect", out, "--json"], capsys)
    assert rc == 0, err
    report = json.loads(text)
    assert report["layers"] == [] and report["totals"]["file_bytes"] == out.stat().st_size


def test_inspect_json(compressed, capsys):
    folder = compressed[0]
    dc = folder / "mlp.dc.h5"
    rc, out, _ = run(["inspect", dc, "--json"], capsys)
    assert rc == 0 and out.count("\n") == 1
    report = json.loads(out)
    assert [l["name"] for l in report["layers"]] == ["ip1", "ip2", "ip3"]
    for layer in report["layers"]:
        assert LAYER_KEYS <= set(layer), LAYER_KEYS - set(layer)
    t = report["totals"]
    assert TOTAL_KEYS <= set(t), TOTAL_KEYS - set(t)
    assert t["file_bytes"] == dc.stat().st_size
    assert t["ratio_file"] == pytest.approx(t["original_bytes"] / t["file_bytes"])
    assert t["original_bytes"] == 4 * 266_610
    assert t["compressed_bytes"] == sum(l["bytes"] for l in report["layers"])
    assert report["architecture"] == "lenet-300-100" and report["input_shape"] == [1, 28, 28]
    # The file alone gives the numbers `compress` computed from the model.
    written = json.loads((folder / "mlp.sizes.json").read_text())
    assert report["layers"] == written["layers"] and report["totals"] == written["totals"]


def test_inspect_text(compressed, capsys):
    dc = compressed[0] / "mlp.dc.h5"
    rc, out, _ = run(["inspect", dc], capsys)
    assert rc == 0
    assert "lenet-300-100" in out and "P+Q+H" in out and "file on disk" in out
    assert f"file: {dc.stat().st_size:,} bytes on disk" in out


def test_inspect_rejects_a_dense_file(tiny_mlp_model, capsys):
    rc, out, err = run(["inspect", tiny_mlp_model], capsys)
    assert rc == 2 and out == ""
    err = one_line_error(err, "inspect")
    assert "not a compressed model file" in err and "dense" in err


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_compressed_file(compressed, tiny_mnist, tmp_path, capsys, damage):
    raw = (compressed[0] / "mlp.dc.h5").read_bytes()
    bad = tmp_path / "bad.dc.h5"
    if damage == "truncate":
        bad.write_bytes(raw[:len(raw) // 2])
    else:
        with h5py.File(compressed[0] / "mlp.dc.h5", "r") as f:
            offset = f["payload"].id.get_offset()  # None for the compact layout
        data = bytearray(raw)
        data[len(raw) // 2 if offset is None else offset + 100] ^= 0x20
        bad.write_bytes(bytes(data))
    rc, out, err = run(["inspect", bad], capsys)
    assert rc == 2 and out == ""
    assert str(bad) in one_line_error(err, "inspect")
    rc, out, err = run(["eval", bad, "--data", tiny_mnist], capsys)
    assert rc == 2 and out == ""
    assert str(bad) in one_line_error(err, "eval")


def test_inspect_missing_file(tmp_path, capsys):
    rc, _, err = run(["inspect", tmp_path / "nope.dc.h5"], capsys)
    assert rc == 2 and "not found" in one_line_error(err, "inspect")


def test_help_of_the_stage_3_commands(capsys):
    for command in ("compress", "encode", "inspect"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        assert "dc.h5" in capsys.readouterr().out


def test_in_memory_compress_is_what_the_command_writes(compressed, tiny_mnist, tiny_mlp_model,
                                                       tmp_path):
    """dc_engine.compress(model, data, config) + dc_engine.save give the very file that
    `dc-engine compress` wrote (the command is a wrapper over them); the input model is not
    changed, and the intermediate models are the ones --keep saved."""
    import dc_engine
    from dc_engine.io.data import load_mnist

    folder, config, _, _ = compressed
    dense = dc_engine.load(tiny_mlp_model)
    before = {l.name: np.array(l.params["W"]) for l in dense.weighted_layers()}
    model, report = dc_engine.compress(dense, load_mnist(tiny_mnist), config, threads=1,
                                       progress=False)
    assert type(model) is Model and model.compressed and not dense.compressed
    for name, w in before.items():
        assert np.array_equal(dense[name].params["W"], w)  # ran on a copy
    out = dc_engine.save(model, tmp_path / "mlp.dc.h5")
    assert out.read_bytes() == (folder / "mlp.dc.h5").read_bytes()
    kept = dc_engine.load(folder / "mlp.quantized.h5")
    for layer in report["models"]["quantized"].weighted_layers():
        assert np.array_equal(layer.params["W"], kept[layer.name].params["W"])
    assert report["sizes"]["totals"]["compressed_bytes"] == \
        json.loads((folder / "mlp.report.json").read_text())["sizes"]["totals"][
            "compressed_bytes"]
    assert report["test_error_compressed"] == report["test_error_quantized"]


def test_in_memory_compress_refuses_bad_input(tiny_mlp_model):
    import dc_engine

    dense = dc_engine.load(tiny_mlp_model)
    data = (np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)) * 2
    with pytest.raises(dc_engine.ConfigError, match="no \\[quantize\\] table"):
        dc_engine.compress(dense, data, {"prune": {}})
    with pytest.raises(TypeError, match="data must be a dc_engine Dataset"):
        dc_engine.compress(dense, "data/mnist", None, progress=False)
    with pytest.raises(ValueError, match="already compressed"):
        dc_engine.compress(dc_engine.load("data/models/lenet-300-100.dc.h5"), data)


def test_in_memory_compress_refuses_what_stage_3_would_refuse_before_training(tiny_mlp_model):
    """A config without bits for some weighted layer, an [encode.layers] name the model lacks,
    or a float64 model fail at once, not after pruning and quantization have run."""
    import dc_engine
    from dc_engine.stages.pipeline import CompressConfig

    dense = dc_engine.load(tiny_mlp_model)
    data = (np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)) * 2
    tables = {"prune": {"layers": {"ip1": {"kept": 0.5}}, "val_size": 2},
              "quantize": {"bits": {"ip1": 4, "ip2": 4}, "val_size": 2}}
    with pytest.raises(dc_engine.ConfigError, match=r"no width for \['ip3'\]"):
        dc_engine.compress(dense, data, CompressConfig.from_dict(tables))
    tables["quantize"]["bits"]["ip3"] = 4
    tables["encode"] = {"layers": {"ip9": {"index_bits": 3}}}
    with pytest.raises(dc_engine.ConfigError, match=r"\[encode.layers\] names \['ip9'\]"):
        dc_engine.compress(dense, data, tables)
    del tables["encode"]
    with pytest.raises(TypeError, match="float32"):
        dc_engine.compress(dense.astype(np.float64), data, tables)


def test_inspect_of_a_corrupt_payload_names_the_file(compressed, tmp_path, capsys):
    folder, _, _, _ = compressed
    bad = tmp_path / "bad.dc.h5"
    bad.write_bytes((folder / "mlp.dc.h5").read_bytes())
    with h5py.File(bad, "r+") as f:
        data = f["payload"][()]
        data[40] ^= 0xFF
        f["payload"][...] = data
    rc, _, err = run(["inspect", bad], capsys)
    msg = one_line_error(err, "inspect")
    assert rc == 2 and str(bad) in msg and "CRC mismatch" in msg


def test_train_table_gives_the_recipe_of_a_model_without_one(tiny_mlp_model):
    """An imported model has no recipe: the config's [train] table gives it (and beats the
    model's own); a bad [train] table is refused before any work, naming the table."""
    import dc_engine
    from dc_engine.stages.inputs import training_recipe
    from dc_engine.stages.pipeline import CompressConfig

    dense = dc_engine.load(tiny_mlp_model)
    dense.metadata = {}
    dense.name = "imported"
    data = (np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)) * 2
    tables = {"prune": {"layers": {"ip1": {"kept": 0.5}}, "val_size": 2, "retrain": {
        "epochs": 0}}, "quantize": {"bits": {"ip1": 4, "ip2": 4, "ip3": 4}, "val_size": 2,
                                    "finetune": {"epochs": 0}}}
    with pytest.raises(dc_engine.ConfigError, match=r"add a \[train\] table"):
        dc_engine.compress(dense, data, tables)
    with pytest.raises(dc_engine.ConfigError, match=r"\[train\].*lrr"):
        CompressConfig.from_dict(dict(tables, train={"lrr": 0.1}), "my.toml")
    with pytest.raises(dc_engine.ConfigError, match=r"\[train\].*lr must be"):
        CompressConfig.from_dict(dict(tables, train={"lr": -1.0}), "my.toml")
    config = CompressConfig.from_dict(dict(tables, train={"lr": 0.05, "batch_size": 2}))
    assert config.to_dict()["train"] == {"lr": 0.05, "batch_size": 2}
    compressed, report = dc_engine.compress(dense, data, config, progress=False)
    assert compressed.compressed
    assert report["prune"]["train_config"]["lr"] == pytest.approx(0.05 * 0.1)
    dense.metadata = {"train_config": {"lr": 0.3}}
    assert training_recipe(dense, config.train)["lr"] == 0.05


def test_starter_config_fits_the_model_it_was_written_for(tiny_mlp_model, tmp_path):
    import dc_engine
    from dc_engine.app.jobs import starter_config
    from dc_engine.stages.pipeline import CompressConfig

    model = dc_engine.load(tiny_mlp_model)
    path = tmp_path / "c.toml"
    path.write_text(starter_config(model, "m.onnx"))
    config = CompressConfig.from_toml(path)
    config.prune.check_model(model)
    config.quantize.check_model(model)
    assert sorted(config.prune.layers) == sorted(config.quantize.bits) == sorted(
        l.name for l in model.weighted_layers())
    assert config.train["lr"] > 0
