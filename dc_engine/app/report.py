"""Text tables of the stages' reports, as the command line prints them (and markdown for
the studies). Pure functions of the JSON-able reports: no computing, no files."""

from __future__ import annotations


def _pct(error) -> str:
    return "n/a" if error is None else f"{100 * error:.2f}%"


def _width(layers) -> int:
    """The layer-name column's width: 8 (the LeNets' tables as before), wider for longer
    names (imported networks: ``conv_3_c1``, ``res2a_branch2a``)."""
    return max([8, *(len(l["name"]) for l in layers)])


def compress_table(report: dict) -> str:
    """The whole job's summary: the stage tables, the size table, the errors."""
    parts = ["== stage 1: pruning", prune_table(report["prune"]),
             "== stage 2: trained quantization", quantize_table(report["quantize"]),
             "== stage 3: Huffman coding", size_table(report["sizes"])]
    errs = (f"test error: dense {_pct(report['test_error_dense'])} -> pruned "
            f"{_pct(report['test_error_pruned'])} -> quantized "
            f"{_pct(report['test_error_quantized'])} -> compressed file "
            f"{_pct(report['test_error_compressed'])}   ({report['seconds']:.0f} s)")
    return "\n".join(parts) + errs + "\n"


def auto_table(report: dict) -> str:
    """What the automatic settings chose (a compress report's ``"auto"``) as text: per layer
    the scan's pruning target, the kept fraction applied and the bits; then the validation
    errors against the budget."""
    names = list(report["scales"])
    w = max(5, *(len(n) for n in names))
    lines = [f"{'layer':<{w}} {'scan target':>11} {'kept':>8} {'bits':>5}"]
    for n in names:
        lines.append(f"{n:<{w}} {100 * report['targets'][n]:>10.1f}% "
                     f"{100 * report['kept'][n]:>7.2f}% {report['bits'][n]:>5}")
    lines.append(f"validation error: dense {_pct(report['val_error_dense'])}, limit "
                 f"{_pct(report['val_error_limit'])}, compressed "
                 f"{_pct(report['quantize_attempts'][-1]['val_error_finetuned'])} "
                 f"({'within' if report['within_budget'] else 'OVER'} the budget)")
    return "\n".join(lines) + "\n"


def guard_table(report: dict) -> str:
    """The validation guard's attempts (a compress report's ``"guard"``) as text: rounds,
    widths, validation error of each and its difference from the dense model's with the
    difference's standard error (reports before it was recorded: without), the one taken
    marked."""
    lines = [f"{'attempt':<8} {'rounds':>6} {'bits':>5} {'val error':>9} "
             f"{'vs dense (s.e.)':>16}"]
    for i, a in enumerate(report["attempts"]):
        extra = f"+{a['extra_bits']}" if a["extra_bits"] else "as set"
        mark = "  <- taken" if i == report["taken"] else ""
        diff = 100 * (a["val_error"] - report["val_error_dense"])
        se = a.get("val_difference_se")
        vs = f"{diff:+.2f}" + ("" if se is None else f" ({100 * se:.2f})")
        lines.append(f"{i + 1:<8} {a['rounds']:>6} {extra:>5} {_pct(a['val_error']):>9} "
                     f"{vs:>16}{mark}")
    lines.append(f"validation error: dense {_pct(report['val_error_dense'])}, limit "
                 f"{_pct(report['val_error_limit'])} "
                 f"({'within' if report['within_budget'] else 'OVER'} the budget)")
    return "\n".join(lines) + "\n"


def prune_table(report: dict) -> str:
    """The per-layer pruning report as text (paper-style)."""
    rounds = report["rounds"]
    w = _width(report["layers"])
    lines = [f"{'layer':<{w}} {'#weights':>9} {'kept':>8} {'kept %':>7}"]
    for s in report["layers"]:
        lines.append(f"{s['name']:<{w}} {s['weights']:>9,} {s['kept']:>8,} "
                     f"{100 * s['kept_fraction']:>6.2f}%")
    lines.append(f"{'total':<{w}} {report['weights']:>9,} {report['kept']:>8,} "
                 f"{100 * report['kept_fraction']:>6.2f}%  "
                 f"({report['weights'] / max(report['kept'], 1):.1f}x fewer weights)")
    lines.append("")
    lines.append(f"{'round':<6} {'val error after pruning':>24} {'after retraining':>17}")
    dense = report.get("val_error_dense")
    if dense is not None:
        lines.append(f"{'dense':<6} {100 * dense:>23.2f}%")
    def pct(e, width):
        return f"{'n/a':>{width + 1}}" if e is None else f"{100 * e:>{width}.2f}%"

    for r in rounds:
        # an automatic search's rounds: tried halfway after one over the budget, or undone
        note = ("  (halfway)" if r.get("attempt") == "halfway" else "") + \
            ("  undone: over the budget" if r.get("accepted") is False else "")
        lines.append(f"{r['round']:<6} {pct(r['val_error_pruned'], 23)} "
                     f"{pct(r['val_error_retrained'], 16)}{note}")
    lines.append("")
    lines.append(f"test error: dense {_pct(report['test_error_dense'])} -> pruned "
                 f"{_pct(report['test_error'])}   ({report['seconds']:.0f} s)")
    return "\n".join(lines) + "\n"


def quantize_table(report: dict) -> str:
    """The per-layer quantization report as text."""
    w = _width(report["layers"])
    lines = [f"{'layer':<{w}} {'bits':>4} {'#weights':>9} {'non-zero':>9} {'distinct':>8} "
             f"{'largest cluster':>15} {'empty clusters':>14}"]
    for l in report["layers"]:
        pops = l["populations"][1:]
        lines.append(f"{l['name']:<{w}} {l['bits']:>4} {l['weights']:>9,} {l['nonzero']:>9,} "
                     f"{l['distinct_nonzero']:>8} {max(pops, default=0):>15,} "
                     f"{sum(1 for p in pops if p == 0):>14}")
    lines.append("")
    lines.append(f"validation error: before {100 * report['val_error_before']:.2f}%  after "
                 f"clustering {100 * report['val_error_clustered']:.2f}%  after fine-tuning "
                 f"{100 * report['val_error_finetuned']:.2f}%")
    lines.append(f"test error: before {_pct(report['test_error_before'])} -> quantized "
                 f"{_pct(report['test_error'])}   ({report['seconds']:.0f} s)")
    return "\n".join(lines) + "\n"


def size_table(report: dict) -> str:
    """The size report (:mod:`dc_engine.stages.sizes`) as text: DC Table 2's columns per layer,
    then the size after each stage and, for a file, its container (the file minus the
    payloads)."""
    w = _width(report["layers"])
    head = (f"{'layer':<{w}} {'#weights':>9} {'kept':>6} {'weight bits':>13} {'index bits':>13} "
            f"{'compress rate':>17}\n"
            f"{'':<{w}} {'':>9} {'':>6} {'P+Q':>5} {'P+Q+H':>7} {'P+Q':>5} {'P+Q+H':>7} "
            f"{'P+Q':>8} {'P+Q+H':>8}")
    lines = [head]
    for l in report["layers"]:
        lines.append(f"{l['name']:<{w}} {l['weights']:>9,} {100 * l['kept']:>5.1f}% "
                     f"{l['weight_bits']:>5} {l['coded_weight_bits']:>7.2f} "
                     f"{l['index_bits']:>5} {l['coded_index_bits']:>7.2f} "
                     f"{100 * l['cr_pq']:>7.2f}% {100 * l['cr_pqh']:>7.2f}%")
    t = report["totals"]

    def rate(ratio) -> str:  # None: a model without weights
        return f"{'n/a':>8}" if not ratio else f"{100 / ratio:>7.2f}%"

    lines.append(f"{'total':<{w}} {t['weights']:>9,} {100 * t['kept']:>5.1f}% {'':>5} "
                 f"{t['coded_weight_bits']:>7.2f} {'':>5} {t['coded_index_bits']:>7.2f} "
                 f"{rate(t['ratio_pq'])} {rate(t['ratio_payload'])}")
    lines.append("(per-layer rates: weights, codebook and index over 4 bytes per weight; the "
                 "total row and the sizes below include biases)")
    lines.append("")
    stages = [("original (float32)", t["original_bytes"]),
              ("pruned (P)", t["pruned_bytes"]), ("pruned + quantized (P+Q)", t["pq_bytes"]),
              ("+ Huffman (P+Q+H, payload)", t["compressed_bytes"])]
    if t.get("file_bytes"):
        stages.append(("file on disk", t["file_bytes"]))
    for label, b in stages:
        ratio = f"{t['original_bytes'] / b:>6.1f}x" if b else f"{'n/a':>7}"
        lines.append(f"{label:<28} {round(b):>10,} bytes  {ratio}")
    if t.get("file_bytes"):  # what the file costs beyond its payloads
        label = "container (HDF5 + architecture)"
        lines.append(f"{label} {t['file_bytes'] - t['compressed_bytes']:>{38 - len(label)},} "
                     f"bytes")
    return "\n".join(lines) + "\n"


_PART_COLUMNS = (("header", ("header", "crc")), ("tables", ("code_table", "gap_table",
                                                              "bias_table")),
                 ("codebook", ("codebook",)), ("bias", ("bias", "bias_stream")),
                 ("codes", ("code_stream",)), ("index", ("gap_stream",)))


def bytes_table(report: dict) -> str:
    """Where every byte of a compressed file goes: per layer, its payload's header and CRC,
    coder tables, codebook, bias (float32 values, or a shared bias's values and codes), coded
    weight codes and coded relative index; then the container, and the file."""
    w = max(_width(report["layers"]), len("container"))
    cols = [c for c, _ in _PART_COLUMNS]
    lines = [f"{'bytes':<{w}} " + " ".join(f"{c:>8}" for c in cols) + f" {'total':>8}  layout"]
    sums = dict.fromkeys(cols, 0)
    for l in report["layers"]:
        parts = l["parts"]
        row = {c: sum(parts.get(k, 0) for k in keys) for c, keys in _PART_COLUMNS}
        for c in cols:
            sums[c] += row[c]
        bias = "shared bias" if l.get("bias_coding") == "shared" else "float32 bias"
        lines.append(f"{l['name']:<{w}} " + " ".join(f"{row[c]:>8,}" for c in cols)
                     + f" {l['bytes']:>8,}  {l.get('order', 'rows')}, {bias}")
    t = report["totals"]
    lines.append(f"{'layers':<{w}} " + " ".join(f"{sums[c]:>8,}" for c in cols)
                 + f" {round(t['compressed_bytes']):>8,}")
    if t.get("file_bytes"):
        container = t["file_bytes"] - round(t["compressed_bytes"])
        lines.append(f"{'container':<{w}} " + " ".join(f"{'':>8}" for _ in cols)
                     + f" {container:>8,}  HDF5 + architecture")
        lines.append(f"{'file':<{w}} " + " ".join(f"{'':>8}" for _ in cols)
                     + f" {t['file_bytes']:>8,}")
    return "\n".join(lines) + "\n"


def sensitivity_table(scan: dict) -> str:
    """Markdown: one row per layer, validation error (%) at each kept-fraction."""
    head = "| layer | " + " | ".join(f"{100 * f:g}% kept" for f in scan["fractions"]) + " |"
    rows = [head, "|---" * (len(scan["fractions"]) + 1) + "|"]
    for name, errs in scan["errors"].items():
        rows.append(f"| {name} | " + " | ".join(f"{100 * e:.2f}" for e in errs) + " |")
    rows.append("")
    rows.append(f"Validation error of the dense model: {100 * scan['baseline']:.2f}%. Each "
                "layer is pruned alone by magnitude, without retraining.")
    return "\n".join(rows) + "\n"


def bits_table(sweep: dict) -> str:
    """Markdown: validation error (%) per init and bits, after clustering / after fine-tuning."""
    head = "| init | " + " | ".join(f"{b} bits" for b in sweep["bits"]) + " |"
    rows = [head, "|---" * (len(sweep["bits"]) + 1) + "|"]
    for init in sweep["clustered"]:
        cells = [f"{100 * c:.2f} / {100 * f:.2f}"
                 for c, f in zip(sweep["clustered"][init], sweep["finetuned"][init])]
        rows.append(f"| {init} | " + " | ".join(cells) + " |")
    rows.append("")
    rows.append(f"Validation error (%) after clustering / after {sweep['finetune_epochs']} "
                f"epoch(s) of centroid fine-tuning, every layer at the same width; pruned model: "
                f"{100 * sweep['baseline']:.2f}%.")
    return "\n".join(rows) + "\n"


__all__ = ["auto_table", "compress_table", "prune_table", "quantize_table", "size_table",
           "sensitivity_table", "bits_table"]
