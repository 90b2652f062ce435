"""PNG figures of the reports (matplotlib, the optional ``plot`` extra).

Every function returns the path it wrote, or ``None`` with a warning when matplotlib is not
installed: a missing plot never stops a compression run.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from .._files import atomic_write

log = logging.getLogger(__name__)
_warned = False  # the missing-matplotlib warning is given once per process


def _pyplot():
    global _warned
    try:
        import matplotlib
    except ImportError:
        if not _warned:
            _warned = True
            warnings.warn("matplotlib is not installed, so no PNG figures are written; install "
                          "the 'plot' extra: pip install 'dc-engine[plot]'", stacklevel=3)
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _layer_axes(plt, n: int):
    """A figure with one full-width panel per layer; axes of shape (n, 1)."""
    return plt.subplots(n, 1, figsize=(6.4, 2.0 * n + 0.6), dpi=120, squeeze=False)


def _save(plt, fig, path) -> Path:
    """Save ``fig`` as a PNG, atomically (a kill leaves the old figure or none)."""
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), "figure")
    finally:
        plt.close(fig)
    return Path(path)


def sensitivity_plot(scan: dict, path) -> Path | None:
    """Validation error against kept-fraction, one line per layer (LWC Fig. 6)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    fr = np.asarray(scan["fractions"])
    for name, errs in scan["errors"].items():
        ax.plot(100 * fr, 100 * np.asarray(errs), marker="o", label=name)
    ax.axhline(100 * scan["baseline"], color="grey", ls="--", lw=1, label="dense")
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 30, 20, 10, 5, 3, 2, 1, 0.5, 0.2, 0.1)
             if 100 * fr.min() <= t <= 100 * fr.max()]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("weights kept in that layer alone (%)")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"Pruning sensitivity, no retraining ({scan.get('architecture', '')})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def weight_histograms(before: dict, after: dict, path, title: str = "") -> Path | None:
    """Per layer, the histogram of weights before pruning and of the kept weights after
    (LWC Fig. 4)."""
    plt = _pyplot()
    if plt is None:
        return None
    names = list(before)
    fig, axes = _layer_axes(plt, len(names))
    for ax, name in zip(axes[:, 0], names):
        w0 = np.asarray(before[name]).ravel()
        w1 = np.asarray(after[name]).ravel()
        w1 = w1[w1 != 0]
        lim = float(np.max(np.abs(w0))) if w0.size else 1.0
        bins = np.linspace(-lim, lim, 121)
        ax.hist(w0, bins=bins, color="tab:blue", alpha=0.5, label=f"dense ({w0.size:,})")
        ax.hist(w1, bins=bins, color="tab:red", alpha=0.7,
                label=f"kept after retraining ({w1.size:,})")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("weight value")
    fig.suptitle(title or "Weight distribution before and after pruning")
    return _save(plt, fig, path)


def codebook_plot(weights: dict, clustered: dict, finetuned: dict, path,
                  title: str = "") -> Path | None:
    """Per layer: the distribution of the non-zero weights with the shared centroids after
    clustering and after fine-tuning (like Deep Compression Fig. 5)."""
    plt = _pyplot()
    if plt is None:
        return None
    names = list(weights)
    fig, axes = _layer_axes(plt, len(names))
    for ax, name in zip(axes[:, 0], names):
        w = np.asarray(weights[name]).ravel()
        w = w[w != 0]
        ax.hist(w, bins=120, color="tab:blue", alpha=0.5)
        top = ax.get_ylim()[1]
        c0 = np.asarray(clustered[name][1:])
        c1 = np.asarray(finetuned[name][1:])
        ax.plot(c0, np.full(c0.shape, 0.55 * top), "g+", ms=6, label="centroids, clustered")
        ax.plot(c1, np.full(c1.shape, 0.45 * top), "r.", ms=4, label="after fine-tuning")
        ax.set_title(f"{name} ({len(c0) + 1} codes)", fontsize=9)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("weight value")
    fig.suptitle(title or "Weights and shared centroids")
    return _save(plt, fig, path)


def bits_plot(sweep: dict, path) -> Path | None:
    """Validation error against bits for each initialisation (like Deep Compression Fig. 8)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = {"linear": "tab:red", "density": "tab:blue", "random": "tab:green"}
    for init in sweep["clustered"]:
        c = colors.get(init)
        ax.plot(sweep["bits"], 100 * np.asarray(sweep["finetuned"][init]), "o-", color=c,
                label=f"{init}, fine-tuned")
        ax.plot(sweep["bits"], 100 * np.asarray(sweep["clustered"][init]), "x--", color=c,
                alpha=0.6, label=f"{init}, clustered only")
    ax.axhline(100 * sweep["baseline"], color="grey", ls=":", lw=1, label="pruned model")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("bits per weight (every layer)")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"Error vs bits by centroid initialisation ({sweep.get('architecture', '')})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


__all__ = ["sensitivity_plot", "weight_histograms", "codebook_plot", "bits_plot"]


def size_plot(report: dict, path, title: str = "") -> Path | None:
    """Bars of the model size after each stage, with the compression rate on each bar (like
    Deep Compression Fig. 1); ``report`` is a :func:`dc_engine.stages.sizes.size_report`."""
    plt = _pyplot()
    if plt is None:
        return None
    t = report["totals"]
    stages = [("original", t["original_bytes"]), ("pruned", t["pruned_bytes"]),
              ("pruned +\nquantized", t["pq_bytes"]), ("+ Huffman\n(payload)",
                                                         t["compressed_bytes"])]
    if t.get("file_bytes"):
        stages.append(("file on\ndisk", t["file_bytes"]))
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    labels = [s[0] for s in stages]
    kb = [s[1] / 1000 for s in stages]
    bars = ax.bar(labels, kb, color=["0.6"] + ["C0"] * (len(stages) - 2) + ["C3"])
    ax.set_yscale("log")
    ax.set_ylabel("size (KB, log scale)")
    for bar, (_, b) in zip(bars, stages):
        rate = f"{t['original_bytes'] / b:.1f}x" if b else "n/a"  # n/a: no weights
        ax.annotate(f"{b / 1000:,.1f} KB\n{rate}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylim(top=max(kb) * 4)
    ax.set_title(title or f"{report.get('architecture', '')}: size after each stage")
    return _save(plt, fig, path)


def frontier_plot(frontier: dict, path) -> Path | None:
    """Test error against bytes (log scale), one panel per network: our files (``points``,
    each ``{"label", "bytes", "test_error", "kind"}`` with kind "paper", "max" or
    "intermediate") and published results (``published``, each ``{"method", "bytes",
    "error", "counted"}``; "counted" other than "file" draws a hollow marker labelled "as
    published: parameters or bits, not files")."""
    plt = _pyplot()
    if plt is None:
        return None
    nets = frontier["nets"]
    fig, axes = plt.subplots(1, len(nets), figsize=(6.0 * len(nets), 5.4), dpi=120,
                             squeeze=False)
    styles = {"paper": dict(marker="s", color="tab:blue", s=70, zorder=4),
              "max": dict(marker="*", color="tab:red", s=220, zorder=5),
              "intermediate": dict(marker="o", color="tab:grey", s=22, alpha=0.7, zorder=3)}
    names = {"paper": "ours: paper preset (file on disk)", "max": "ours: max preset (file on disk)",
             "intermediate": "ours: settings tried on the way (file on disk)"}
    for ax, (arch, net) in zip(axes[0], nets.items()):
        for kind in ("intermediate", "paper", "max"):
            pts = [p for p in net["points"] if p["kind"] == kind]
            if pts:
                ax.scatter([p["bytes"] for p in pts], [100 * p["test_error"] for p in pts],
                           label=names[kind], **styles[kind])
        shown = False
        for pub in net["published"]:
            hollow = pub["counted"] != "file"
            ax.scatter([pub["bytes"]], [100 * pub["error"]], marker="D", s=45, zorder=4,
                       facecolors="none" if hollow else "k", edgecolors="k",
                       label=None if shown else
                       "as published: parameters or bits, not files")
            shown = shown or hollow
            ax.annotate(pub["method"], (pub["bytes"], 100 * pub["error"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
        if net.get("paper_error") is not None:
            ax.axhline(100 * net["paper_error"], color="grey", ls="--", lw=1,
                       label="Deep Compression's reference error")
        if net.get("size_goal") is not None:
            ax.axvline(net["size_goal"], color="tab:red", ls=":", lw=1,
                       label="size goal of the max preset")
        ax.set_xscale("log")
        ax.set_xlabel("bytes (log scale)")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{arch}: error against size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return _save(plt, fig, path)

