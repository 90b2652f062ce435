"""Bring your own model, end to end: a residual CNN trained in PyTorch, compressed by dc-engine
through ONNX, and run back in onnxruntime.

1. Train a small ResNet-style network (BatchNorm, residual adds, stride-2 conv, max-pool, two
   fully connected layers) in PyTorch on the MNIST training images minus the 5,000-image
   validation split dc-engine uses (seed 0), and export it with ``torch.onnx.export``.
2. ``dc-engine import`` it (BatchNorm folds into the convolutions) and ``dc-engine eval``: the
   test error must equal PyTorch's.
3. ``dc-engine compress`` it with the starter config that ``import`` wrote, its ``[train]``
   table set to the recipe of step 1. With ``--auto``: with no config at all (the automatic
   settings, searched on the validation split under the default budget, retraining from the
   default recipe), on MNIST written as one ``.npz`` (uint8, channels last, as a Keras user
   would have it) instead of the IDX folder.
4. ``dc-engine export`` the compressed file to ONNX and run it in onnxruntime: the test error
   must equal dc-engine's on the compressed file.

Prints a summary and writes it as JSON. Needs torch, onnx and onnxruntime (test oracles and
peers, not dependencies of the package). It takes several minutes: it is an example and a
measurement, not a test.

Usage::

    python bench/byo_onnx_mnist.py [--epochs 2] [--out out/byo] [--threads 2] [--auto]
        [--json bench/results/byo_onnx_mnist.json (--auto: byo_onnx_mnist_auto.json)]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import environment, write_json

ROOT = Path(__file__).resolve().parents[1]


def build_net():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), Block(8),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        Block(16), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 128), nn.ReLU(),
        nn.Linear(128, 10))


def train_torch(epochs: int, recipe: dict, seed: int = 0):
    """The network trained on MNIST's training split (dc-engine's 5,000-image validation
    split held out); returns (net, test error, seconds)."""
    import torch

    import dc_engine
    from dc_engine.io.data import train_val_split

    torch.manual_seed(seed)
    ds = dc_engine.load_mnist(ROOT / "data" / "mnist")
    x_tr, y_tr, x_val, y_val = train_val_split(ds.x_train, ds.y_train, 5000, seed)
    net = build_net()
    opt = torch.optim.SGD(net.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                          weight_decay=recipe["weight_decay"])
    x_tr, y_tr = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(perm), recipe["batch_size"]):
            idx = perm[i:i + recipe["batch_size"]]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = (net(torch.from_numpy(x_val)).argmax(1).numpy() != y_val).mean()
        print(f"torch epoch {epoch + 1}/{epochs}: validation error {100 * val:.2f}%",
              flush=True)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        test = (net(torch.from_numpy(ds.x_test)).argmax(1).numpy() != ds.y_test).mean()
    return net, float(test), seconds


def ort_error(path: Path) -> float:
    import onnxruntime as ort

    import dc_engine

    ds = dc_engine.load_mnist(ROOT / "data" / "mnist")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: ds.x_test[i:i + 1000]})[0].argmax(1)
                           for i in range(0, len(ds.x_test), 1000)])
    return float((pred != ds.y_test).mean())


def write_npz(path: Path) -> Path:
    """MNIST as one .npz: uint8 images (N, 28, 28, 1), channels last, integer labels."""
    import dc_engine

    ds = dc_engine.load_mnist(ROOT / "data" / "mnist")
    u8 = lambda x: np.rint(x[:, 0, :, :, None] * 255).astype(np.uint8)  # noqa: E731
    np.savez(path, x_train=u8(ds.x_train), y_train=ds.y_train, x_test=u8(ds.x_test),
             y_test=ds.y_test)
    return path


def cli(*args: str) -> str:
    """Run ``dc-engine ARGS`` and return its stdout (its progress goes to our stderr)."""
    res = subprocess.run([sys.executable, "-m", "dc_engine.app.cli", *args],
                         stdout=subprocess.PIPE, text=True)
    sys.stdout.write(res.stdout)
    if res.returncode:
        raise SystemExit(f"dc-engine {args[0]} failed with status {res.returncode}")
    return res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2, help="PyTorch training epochs")
    ap.add_argument("--out", default="out/byo", help="folder for the files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--auto", action="store_true",
                    help="compress with no config (automatic settings) from an .npz of MNIST")
    ap.add_argument("--json", default=None, help="default: bench/results/byo_onnx_mnist"
                                                 "[_auto].json")
    args = ap.parse_args()
    args.json = args.json or f"bench/results/byo_onnx_mnist{'_auto' if args.auto else ''}.json"
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = {"lr": 0.05, "batch_size": 64, "momentum": 0.9, "weight_decay": 0.0005,
              "lr_policy": "fixed"}

    net, torch_error, torch_seconds = train_torch(args.epochs, recipe)
    onnx_path = out / "byo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(onnx_path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})

    threads = ["--threads", str(args.threads)]
    cli("import", str(onnx_path), "--out", str(out / "byo.h5"), "--force")
    dense = json.loads(cli("eval", str(out / "byo.h5"), "--json", *threads).splitlines()[-1])
    config = out / "byo.toml"
    if args.auto:
        npz = write_npz(out / "mnist.npz")
        settings = ["--data", str(npz)]  # no --config: the automatic settings
    else:
        text = config.read_text()
        for key, value in recipe.items():  # [train]: the recipe the network was trained with
            text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text, count=1)
        config.write_text(text)
        settings = ["--config", str(config)]
    t0 = time.perf_counter()
    cli("compress", str(out / "byo.h5"), "--out", str(out / "byo.dc.h5"), *settings,
        "--force", *threads)
    compress_seconds = time.perf_counter() - t0
    if args.auto:
        text = (out / "byo.auto.toml").read_text()
    comp = json.loads(cli("eval", str(out / "byo.dc.h5"), "--json", *threads)
                      .splitlines()[-1])
    cli("export", str(out / "byo.dc.h5"), "--out", str(out / "byo.small.onnx"), "--force")
    summary = {
        "epochs": args.epochs, "recipe": recipe,
        "settings": "automatic (no config), data from .npz" if args.auto else "starter config",
        "torch_train_seconds": torch_seconds,
        "torch_test_error": torch_error, "onnx_bytes": onnx_path.stat().st_size,
        "imported_test_error": dense["error"], "params": dense["params"],
        "compressed_test_error": comp["error"], "compressed_file_bytes": comp["bytes"],
        "compress_seconds": compress_seconds,
        "exported_onnxruntime_test_error": ort_error(out / "byo.small.onnx"),
        "ratio_vs_float32": 4 * dense["params"] / comp["bytes"],
        "config": text, "environment": environment(args.threads, 0),
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config", "environment")},
                     indent=1))
    write_json(args.json, summary)


if __name__ == "__main__":
    main()
