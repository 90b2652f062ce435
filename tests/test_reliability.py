"""Hostile input, one class at a time (README, "Reliability"): special files are refused before
they are opened, declared sizes are bounded by the limits before anything is allocated, every
CLI input problem ends in one line and exit status 2, and writes leave no temporary files."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import dc_engine
from dc_engine import _files as files
from dc_engine.app import jobs
from dc_engine.app.cli import main
from dc_engine.codecs.payload import encode_layer, header_size
from dc_engine.config import load_toml
from dc_engine.core.layers import Flatten, MaxPool2D
from dc_engine.core.model import Model
from dc_engine.errors import ConfigError, DatasetError, DCFormatError, one_line
from dc_engine.io import compressed as container
from dc_engine.io.compressed import LayerRecord
from dc_engine.io.data import load_mnist, read_idx
from dc_engine.limits import ENV_VARS, LIMITS, limit, limits_set, set_limits

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "data" / "models"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def one_error_line(err: str, command: str) -> str:
    """The CLI's stderr for an input problem: exactly one line, no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dc-engine {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------------------------
# Special files: refused before anything opens them
# --------------------------------------------------------------------------------------------


@pytest.fixture
def specials(tmp_path):
    """A FIFO, a UNIX socket, a directory and a character device, by name."""
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.h5"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    yield {"FIFO": fifo, "socket": sock_path, "directory": folder, "device": Path("/dev/zero")}
    sock.close()


@pytest.mark.parametrize("kind, match", [("FIFO", "a FIFO"), ("socket", "a socket"),
                                         ("device", "a character device"),
                                         ("directory", "found a directory")])
def test_model_config_and_dataset_paths_refuse_special_files(specials, tmp_path, kind, match):
    path = specials[kind]
    with pytest.raises((DCFormatError, IsADirectoryError), match=match):
        dc_engine.load(path)
    with pytest.raises(ConfigError, match=match):
        load_toml(path)
    with pytest.raises(DatasetError, match=match):
        read_idx(path)
    data = tmp_path / "data"
    shutil.copytree(REPO / "data" / "mnist", data)
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    os.symlink(path, data / "t10k-labels-idx1-ubyte.gz")  # through a symlink, too
    with pytest.raises(DatasetError, match=match):
        load_mnist(data)


def test_a_fifo_given_to_the_cli_ends_in_one_line_not_a_hang(tmp_path):
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    for argv in (["eval", str(fifo)], ["inspect", str(fifo)],
                 ["eval", str(MODELS / "lenet-5.dc.h5"), "--data", str(tmp_path)],
                 ["encode", str(MODELS / "lenet-5.quantized.h5"), "--config", str(fifo),
                  "--out", str(tmp_path / "x.dc.h5")]):
        res = subprocess.run([sys.executable, "-m", "dc_engine.app.cli", *argv],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (argv, res.stderr)
        one_error_line(res.stderr, argv[0])


@pytest.mark.parametrize("kind", ["FIFO", "device", "directory"])
def test_outputs_never_replace_a_special_file(specials, kind):
    target = specials[kind]
    with pytest.raises(OSError, match="replaces only regular files|found a directory"):
        files.write_text(target, "x")
    assert target.exists() and not target.is_file()


# --------------------------------------------------------------------------------------------
# Declared sizes: bounded before reading (datasets) or before running (models)
# --------------------------------------------------------------------------------------------


def _idx_header(dims, code=0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def test_a_gzip_bomb_is_refused_before_it_is_read(tmp_path):
    # 1 MiB of zeros that declares 4 billion 28x28 images: refused from the header alone
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_header([2**32 - 1, 28, 28]) + bytes(2**20)))
    with pytest.raises(DatasetError, match=r"above the limit of 1,073,741,824 bytes.*"
                                           r"DC_ENGINE_MAX_DATASET_BYTES"):
        read_idx(p)


def test_the_dataset_limit_bounds_what_a_gzip_stream_may_deliver(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(_idx_header([1000, 28, 28]) + bytes(1000 * 784)))
    assert read_idx(p).shape == (1000, 28, 28)
    with limits_set(dataset_bytes=100_000):
        with pytest.raises(DatasetError, match="784,000 bytes, above the limit of 100,000"):
            read_idx(p)
    assert limit("dataset_bytes") == LIMITS["dataset_bytes"]  # restored


def test_limits_come_from_the_environment_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv(ENV_VARS["sample_elements"], "1_000")
    assert limit("sample_elements") == 1000
    set_limits(sample_elements=7)
    try:
        assert limit("sample_elements") == 7  # Python wins over the environment
    finally:
        set_limits(sample_elements=None)
    monkeypatch.setenv(ENV_VARS["sample_elements"], "lots")
    with pytest.raises(ValueError, match="DC_ENGINE_MAX_SAMPLE_ELEMENTS must be a positive"):
        limit("sample_elements")
    with pytest.raises(ValueError, match="positive integer"):
        set_limits(dataset_bytes=0)
    with pytest.raises(TypeError, match="unknown limit"):
        set_limits(bytes=1)


def _conv_record(name, cin, cout, k, padding, rng) -> LayerRecord:
    codes = rng.integers(0, 4, size=(cout, cin, k, k)).astype(np.uint8)
    codebook = np.r_[0.0, 0.5, -0.5, 1.0].astype(np.float32)
    payload = encode_layer(codes, codebook, np.zeros(cout, np.float32), index_bits=3,
                           name=name)
    return LayerRecord(name, "Conv2D", {"in_channels": cin, "out_channels": cout,
                                        "kernel_size": k, "stride": 1, "padding": padding},
                       payload)


@pytest.mark.parametrize("k, padding, needs", [
    (1, 2**30, f"{(28 + 2**31) ** 2:,}"),  # one weight, an output plane of 2**31 x 2**31
    (1024, 512, f"{1024 * 1024 * 29 * 29:,}"),  # a 1024 x 1024 kernel on 28 x 28: its patches
])
def test_absurd_work_is_refused_when_a_compressed_file_loads(tmp_path, rng, k, padding, needs):
    path = tmp_path / "absurd.dc.h5"
    container.write(path, "absurd", (1, 28, 28), [_conv_record("conv", 1, 1, k, padding, rng)])
    with pytest.raises(DCFormatError, match=rf"too much work per sample: layer 'conv' needs "
                                            rf"{needs} values.*DC_ENGINE_MAX_SAMPLE_ELEMENTS"):
        dc_engine.load(path)
    with pytest.raises(DCFormatError, match="too much work"):  # inspect shows no table for it
        jobs.inspect(path)


def test_absurd_work_is_refused_when_a_dense_file_loads(tmp_path):
    model = Model([MaxPool2D(2**14, stride=1, padding=2**14 - 1, name="pool"), Flatten()],
                  (1, 28, 28))
    dc_engine.save(model, tmp_path / "pool.h5")  # a model is data: saving it does no work
    with pytest.raises(DCFormatError, match=r"layer 'pool' needs .* values per sample"):
        dc_engine.load(tmp_path / "pool.h5")
    with limits_set(sample_elements=2**60):  # raised on purpose: it loads
        work = dc_engine.load(tmp_path / "pool.h5").sample_work()["pool"]
    assert work == (28 + 2**14 - 1) ** 2 * 2**28  # every window's reads


def test_the_shipped_models_need_little_work_per_sample():
    work = dc_engine.load(MODELS / "lenet-5.dc.h5").sample_work()
    assert work["conv2"] == 20 * 5 * 5 * 8 * 8  # the patch matrix of conv2
    assert max(work.values()) < LIMITS["sample_elements"] // 1000


def test_inspect_validates_what_it_shows(tmp_path, rng):
    # a payload with a valid CRC whose codebook holds NaN: load refuses it, so inspect must
    p = encode_layer(np.array([[1, 0, 2]], np.uint8), np.r_[0.0, 0.5, -0.5, 1.0].astype(
        np.float32), None, index_bits=2)
    body = bytearray(p[:-4])
    off = header_size(2) + 2 + 2  # after the code-length and gap-length tables
    body[off:off + 4] = np.float32(np.nan).tobytes()
    bad = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    path = tmp_path / "nan.dc.h5"
    container.write(path, "nan", (3,), [LayerRecord("fc", "Dense", {"in_features": 3,
                                                                   "out_features": 1}, bad)])
    with pytest.raises(DCFormatError, match="non-finite"):
        jobs.inspect(path)
    assert main(["inspect", str(path)]) == 2


# --------------------------------------------------------------------------------------------
# The command line: one line and exit status 2 for every input problem
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [MemoryError(), OverflowError("int too large to convert"),
                                 FloatingPointError("training diverged at epoch 3"),
                                 RecursionError()])
def test_resource_errors_end_in_one_line(monkeypatch, capsys, exc):
    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(jobs, "evaluate_file", boom)
    assert main(["eval", str(MODELS / "lenet-5.dc.h5")]) == 2
    one_error_line(capsys.readouterr().err, "eval")


@pytest.mark.parametrize("argv, match", [
    (["encode", str(MODELS / "lenet-5.dc.h5")], "is a compressed model; encode takes a "
                                                "quantized one"),
    (["encode", str(MODELS / "lenet-5.pruned.h5")], "are not quantized; encode takes a "
                                                    "quantized one"),
    (["quantize", str(MODELS / "lenet-5.dc.h5")], "is a compressed model; quantize takes a "
                                                  "dense"),
    (["prune", str(MODELS / "lenet-5.dc.h5")], "is a compressed model; prune takes a dense"),
    (["compress", str(MODELS / "lenet-5.dc.h5")], "is a compressed model; compress takes"),
    (["inspect", str(MODELS / "lenet-5.h5")], "not a compressed model file"),
    (["prune", str(MODELS / "lenet-5.quantized.h5")], "is a quantized model (layers ['conv1', "
                                                      "'conv2', 'ip1', 'ip2'] share weights); "
                                                      "prune takes a dense or pruned one"),
    (["inspect", str(MODELS / "lenet-5.dc.h5"), "--threads", "1"], "unrecognized arguments: "
                                                                   "--threads 1"),
])
def test_stage_inputs_of_the_wrong_kind_are_named(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert match in one_error_line(capsys.readouterr().err, argv[0])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [
    ["eval", "no\nsuch\x1b[31m.h5"],
    ["eval", str(MODELS / "lenet-5.dc.h5"), "--data", "a\nfolder"],
    ["encode", str(MODELS / "lenet-5.quantized.h5"), "--out", "/no/such\nfolder/x.dc.h5"],
])
def test_paths_with_newlines_are_shown_escaped(capsys, argv):
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err, argv[0])
    assert "\\n" in line


def test_a_symlink_loop_as_the_data_folder_is_a_missing_folder(tmp_path, capsys):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert main(["eval", str(MODELS / "lenet-5.dc.h5"), "--data", str(tmp_path / "loop")]) == 2
    assert "data folder not found" in one_error_line(capsys.readouterr().err, "eval")


@pytest.mark.parametrize("argv", [["eval"], ["eval", "x.h5", "--threads", "100000"],
                                  ["eval", "x.h5", "--threads", "0"],
                                  ["eval", "x.h5", "--batch-size", "ten"], ["nosuch"],
                                  ["train", "lenet-5", "--out", "a\nb.h5", "--epochs", "x"]])
def test_argument_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "error:" in err, err


def test_train_checks_its_output_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jobs, "train", lambda *a, **k: pytest.fail("trained"))
    folder = tmp_path / "out.h5"
    folder.mkdir()
    assert main(["train", "lenet-5", "--out", str(folder), "--force"]) == 2
    assert "found a directory" in one_error_line(capsys.readouterr().err, "train")
    if not IS_ROOT:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert main(["train", "lenet-5", "--out", str(ro / "m.h5")]) == 2
        assert "not writable" in one_error_line(capsys.readouterr().err, "train")


def test_threads_are_bounded_in_the_library_too():
    from dc_engine.threads import limit_threads, max_threads

    with pytest.raises(ValueError, match=rf"threads must be in 1..{max_threads()}"):
        with limit_threads(max_threads() + 1):
            pass


# --------------------------------------------------------------------------------------------
# Writes: atomic, and no temporary file outlives a killed writer
# --------------------------------------------------------------------------------------------


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid runs no more (and is not reused in this instant)
    target = tmp_path / "report.json"
    stale = tmp_path / f".report.json.{dead.pid}-abc123.tmp"
    live = tmp_path / f".report.json.{os.getppid()}-def456.tmp"  # a live writer's
    other = tmp_path / f".other.json.{dead.pid}-abc123.tmp"  # another target's
    for p in (stale, live, other):
        p.write_text("half")
    files.write_json(target, {"a": 1})
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, live.name, other.name])
    assert target.read_text() == '{\n "a": 1\n}\n'


def test_a_failed_report_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.sizes.json"
    files.write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        files.write_json(target, {"bad": object()})  # fails while writing
    assert target.read_text() == '{\n "ok": true\n}\n'
    assert os.listdir(tmp_path) == [target.name]


def test_one_line_escapes_every_control_character():
    assert one_line("a\nb\tc\x1b[0m\udcff") == "a\\nb\\tc\\x1b[0m\\udcff"
    assert one_line("Ωmega ok") == "Ωmega ok"
    assert str(DCFormatError("x\ny")) == "x\\ny"



def test_settings_that_imply_absurd_work_are_refused_up_front():
    from dc_engine.core.train import MAX_EPOCHS, TrainConfig
    from dc_engine.stages.prune import MAX_ROUNDS, PruneConfig

    with pytest.raises(ValueError, match="epochs must be at most 100,000"):
        TrainConfig(epochs=MAX_EPOCHS + 1)
    with pytest.raises(ValueError, match="rounds must be an integer in 1..1000"):
        PruneConfig(rounds=MAX_ROUNDS + 1)  # 10**11 rounds built a list of 10**11 first


def test_evaluation_batches_shrink_to_fit_the_sample_limit(monkeypatch):
    from dc_engine.core.train import evaluate

    model = dc_engine.load(MODELS / "lenet-5.dc.h5")
    x = np.zeros((50, 1, 28, 28), np.float32)
    y = np.zeros(50, np.int64)
    sizes = []
    forward = Model.forward
    monkeypatch.setattr(Model, "forward", lambda self, xb, train=False: (
        sizes.append(len(xb)), forward(self, xb, train))[1])
    evaluate(model, x, y, batch_size=20)
    assert sizes == [20, 20, 10]
    sizes.clear()
    with limits_set(sample_elements=3 * 32_000):  # conv2 needs 32,000 per sample
        evaluate(model, x, y, batch_size=20)
    assert set(sizes[:-1]) == {3}


@pytest.mark.parametrize("name", ["lenet-5.dc.h5", "lenet-300-100.dc.h5", "lenet-5.h5"])
def test_four_threads_on_one_model_agree_with_serial_runs(name):
    import threading

    model = dc_engine.load(MODELS / name)
    x = np.random.default_rng(0).random((32, *model.input_shape), dtype=np.float32)
    one = [model.forward(x[i:i + 1]) for i in range(len(x))]  # the batch-1 path
    batch = model.forward(x)
    bad = []

    def run(k: int) -> None:
        for r in range(64):
            i = (7 * k + r) % len(x)
            if not np.array_equal(model.forward(x[i:i + 1]), one[i]):
                bad.append((k, i))
            if r % 16 == 0 and not np.array_equal(model.forward(x), batch):
                bad.append((k, "batch"))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_evaluating_a_model_without_layers_still_works():
    from dc_engine.core.train import evaluate

    x = np.eye(4, dtype=np.float32)  # the inputs are the logits
    res = evaluate(Model([], (4,)), x, np.array([0, 1, 2, 0]))
    assert res["error"] == 0.25


def test_a_dense_file_holds_at_most_max_layers(tmp_path, monkeypatch):
    from dc_engine.core.layers import ReLU
    from dc_engine.io import dense
    from dc_engine.limits import MAX_LAYERS

    model = Model([ReLU() for _ in range(12)], (4,))
    dc_engine.save(model, tmp_path / "relu.h5")
    monkeypatch.setattr(dense, "MAX_LAYERS", 10)  # 100,000 layers took 100 s to load
    with pytest.raises(DCFormatError, match=r"too many layers: expected at most 10 .*found 12"):
        dc_engine.load(tmp_path / "relu.h5")
    with pytest.raises(ValueError, match="at most 10 layers"):
        dc_engine.save(model, tmp_path / "other.h5")
    assert MAX_LAYERS == 10_000
