"""Training speed: epoch time of dc-engine against PyTorch (CPU) on the same run.

Both engines train the same network (LeNet-300-100 or LeNet-5) on the same MNIST images, batch
size, SGD settings (momentum 0.9, weight decay 5e-4, lr 0.01) and thread count, for a few epochs;
we report the median epoch time of each and the ratio dc-engine / PyTorch (below 1.0: we are
faster). The first epoch of each engine is a warm-up (Numba compilation, allocator) and is not
counted. PyTorch is optional: without it only our times are printed.

Usage::

    python bench/bench_train_speed.py [--epochs 4] [--images 60000] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from dc_engine.core import zoo
from dc_engine.core.train import TrainConfig, fit
from dc_engine.io.data import load_mnist

from _common import environment, median, write_json


def ours(arch: str, x, y, epochs: int, batch: int) -> list[float]:
    model = zoo.ARCHITECTURES[arch](seed=0)
    cfg = TrainConfig(epochs=epochs + 1, batch_size=batch, lr=0.01, lr_policy="fixed",
                      momentum=0.9, weight_decay=5e-4, seed=0)
    hist = fit(model, x, y, cfg, progress=False)
    return [r["seconds"] for r in hist.epochs[1:]]


def torch_net(arch: str):
    import torch.nn as nn
    if arch == "lenet-300-100":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                             nn.ReLU(), nn.Linear(100, 10))
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                         nn.Linear(500, 10))


def theirs(arch: str, x, y, epochs: int, batch: int) -> list[float]:
    import torch
    torch.manual_seed(0)
    net = torch_net(arch)
    # Caffe-style decay on weights only, like dc-engine's default.
    decay = [p for n, p in net.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in net.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": rest, "weight_decay": 0.0}], lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4, help="timed epochs per engine (default 4)")
    ap.add_argument("--images", type=int, default=60000, help="training images (default 60000)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for PyTorch; dc-engine uses the BLAS default (all cores)")
    ap.add_argument("--arch", nargs="+", default=["lenet-300-100", "lenet-5"],
                    choices=sorted(zoo.ARCHITECTURES))
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    ds = load_mnist()
    x, y = ds.x_train[:args.images], ds.y_train[:args.images]
    try:
        import torch
        torch.set_num_threads(args.threads)
        have_torch = True
    except ImportError:
        have_torch = False
    rows = []
    for arch in args.arch:
        row = {"arch": arch, "images": len(x), "batch_size": args.batch_size}
        t = ours(arch, x, y, args.epochs, args.batch_size)
        row["dc_engine_epoch_s"] = median(t)
        row["dc_engine_epochs_s"] = t
        if have_torch:
            tt = theirs(arch, x, y, args.epochs, args.batch_size)
            row["torch_epoch_s"] = median(tt)
            row["torch_epochs_s"] = tt
            row["ratio"] = row["dc_engine_epoch_s"] / row["torch_epoch_s"]
        rows.append(row)
    env = environment(args.threads, seed=0)
    print(f"# train_speed: {env['cpu']}, {env['cores']} cores, threads={args.threads}, "
          f"numpy {env['numpy']}, numba {env['numba']}, torch {env['torch']}")
    print(f"# median epoch over {args.epochs} timed epochs (first epoch not counted), "
          f"{len(x)} images, batch {args.batch_size}")
    print("| net | dc-engine s/epoch | PyTorch s/epoch | ratio (ours / torch) |")
    print("|---|---|---|---|")
    for r in rows:
        tt = f"{r['torch_epoch_s']:.2f}" if have_torch else "n/a"
        ratio = f"{r['ratio']:.2f}x" if have_torch else "n/a"
        print(f"| {r['arch']} | {r['dc_engine_epoch_s']:.2f} | {tt} | {ratio} |")
    write_json(args.json, {"env": env, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
