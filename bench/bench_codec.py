"""Huffman codec: throughput and coded size against entropy, zlib, lzma and dahuffman.

Streams: for every weighted layer of the quantized LeNet-300-100 and LeNet-5, the code stream
and the gap stream of ``encode_sparse(tie.idx.ravel(), index_bits=5)`` (entries include the
fillers), plus one seeded synthetic stream (truncated geometric over 32 symbols, p_k ~ 0.75**k;
10M symbols, 1M with ``--quick``).

For each stream we report its zero-order Shannon entropy and the Huffman bits/symbol
(max_len 15), the encode and decode throughput in M symbols/s -- both of the bare Numba kernels
(``kernels.huffman_encode`` / ``kernels.huffman_decode`` on preallocated buffers and tables) and
of the full Python calls ``dc_engine.codecs.huffman.encode`` / ``decode`` (validation, counts,
package-merge, table build, allocation) -- and the sizes in bytes of: fixed-width packing
(``ceil(n * bits / 8)``; bits = the layer's index width for codes, 5 for gaps and for the
synthetic stream), the Huffman payload (the lengths table is not counted), and raw DEFLATE
level 9 and raw LZMA2 preset 9 of the same symbols stored one byte per symbol (container
headers excluded, like the Huffman lengths table). Every time is the median of ``--repeats``
samples; a sample of a short stream loops the call until it lasts >= ``--min-time`` and
divides. Each kernel and call is run once before timing (Numba compilation / cache load).
Every stream is checked to round-trip.

If the pure-Python ``dahuffman`` package is installed, it encodes / decodes a 200k-symbol
prefix of the synthetic stream (it is too slow for 10M) and we print the speed ratio of ours.
It is not a project dependency.

Goal: decode >= 100M symbols/s on one core, judged on the synthetic stream, kernel
only. Cycles/symbol use the nominal clock from /proc/cpuinfo (``--ghz`` overrides).

Usage::

    python bench/bench_codec.py [--quick] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import lzma
import sys
import zlib
from pathlib import Path

import numpy as np

from dc_engine import kernels, load
from dc_engine.codecs import huffman
from dc_engine.codecs.relindex import encode_sparse

from _common import environment, timeit, write_json

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["lenet-300-100", "lenet-5"]
INDEX_BITS = 5
MAX_LEN = 15
SYNTH_SYMBOLS = 32
SYNTH_RATIO = 0.75
DAHUFFMAN_SLICE = 200_000
GOAL_MSYM_S = 100.0


def clock_ghz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        pass
    return None


def entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def synthetic(n: int, seed: int) -> np.ndarray:
    p = SYNTH_RATIO ** np.arange(SYNTH_SYMBOLS)
    rng = np.random.default_rng(seed)
    return rng.choice(SYNTH_SYMBOLS, size=n, p=p / p.sum()).astype(np.uint16)


def lenet_streams() -> list[dict]:
    streams = []
    for arch in MODELS:
        model = load(ROOT / "data" / "models" / f"{arch}.quantized.h5")
        for layer in model.layers:
            ties = getattr(layer, "ties", None) or {}
            if "W" not in ties:
                continue
            tie = ties["W"]
            idx = tie.idx.ravel()
            gaps, codes = encode_sparse(idx, index_bits=INDEX_BITS)
            layer_info = {"weights": int(idx.size), "nonzeros": int(np.count_nonzero(idx)),
                          "entries": int(gaps.size), "fillers": int(np.count_nonzero(codes == 0)),
                          "index_bits_weight": int(tie.bits), "index_bits_gap": INDEX_BITS}
            name = f"{arch}/{layer.name}"
            streams.append({"name": f"{name} codes", "symbols": codes,
                            "n_symbols": 1 << tie.bits, "fixed_bits": int(tie.bits),
                            "layer": layer_info})
            streams.append({"name": f"{name} gaps", "symbols": gaps,
                            "n_symbols": 1 << INDEX_BITS, "fixed_bits": INDEX_BITS,
                            "layer": layer_info})
    return streams


def measure(stream: dict, repeats: int, min_time: float, ghz: float | None) -> dict:
    sym = np.ascontiguousarray(stream["symbols"], dtype=np.uint16)
    n, n_symbols = int(sym.size), int(stream["n_symbols"])
    counts = np.bincount(sym, minlength=n_symbols)
    data, lengths, n_bits = huffman.encode(sym, n_symbols, MAX_LEN)
    back = huffman.decode(data, lengths, n, n_bits)
    assert np.array_equal(back, sym), f"{stream['name']}: round trip failed"

    # Kernel-only inputs, prepared outside the timed region.
    codes = huffman.canonical_codes(lengths)
    enc_out = np.empty_like(data)
    max_len = int(lengths.max())
    table_sym, table_len = huffman.decode_table(lengths, max_len)
    dec_out = np.empty(n, dtype=np.uint16)

    def k_enc():
        kernels.huffman_encode(sym, codes, lengths, enc_out)

    def k_dec():
        st = kernels.huffman_decode(data, n_bits, n, table_sym, table_len, max_len, dec_out)
        assert st == 0

    t_kenc = timeit(k_enc, repeats, min_time)
    t_kdec = timeit(k_dec, repeats, min_time)
    assert np.array_equal(enc_out, data) and np.array_equal(dec_out, sym)
    t_enc = timeit(lambda: huffman.encode(sym, n_symbols, MAX_LEN), repeats, min_time)
    t_dec = timeit(lambda: huffman.decode(data, lengths, n, n_bits), repeats, min_time)

    raw = sym.astype(np.uint8).tobytes()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    zlib_size = len(deflate.compress(raw) + deflate.flush())
    lzma_size = len(lzma.compress(raw, format=lzma.FORMAT_RAW,
                                  filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}]))
    msym = lambda t: n / t / 1e6  # noqa: E731
    row = {
        "stream": stream["name"], "n": n, "alphabet": n_symbols,
        "symbols_used": int(np.count_nonzero(counts)),
        "entropy_bits_per_symbol": entropy_bits(counts),
        "huffman_bits_per_symbol": n_bits / n, "huffman_max_code_len": max_len,
        "encode_kernel_s": t_kenc, "decode_kernel_s": t_kdec,
        "encode_call_s": t_enc, "decode_call_s": t_dec,
        "encode_kernel_msym_s": msym(t_kenc), "decode_kernel_msym_s": msym(t_kdec),
        "encode_call_msym_s": msym(t_enc), "decode_call_msym_s": msym(t_dec),
        "decode_kernel_coded_mb_s": data.size / t_kdec / 1e6,
        "decode_kernel_cycles_per_symbol": (ghz * 1e9 * t_kdec / n) if ghz else None,
        "encode_kernel_cycles_per_symbol": (ghz * 1e9 * t_kenc / n) if ghz else None,
        "fixed_bits": stream["fixed_bits"],
        "fixed_bytes": -(-n * stream["fixed_bits"] // 8), "huffman_bytes": int(data.size),
        "huffman_lengths_table_bytes": n_symbols,
        "zlib9_bytes": zlib_size, "lzma9_bytes": lzma_size,
    }
    if "layer" in stream:
        row["layer"] = stream["layer"]
    return row, sym


def dahuffman_compare(sym: np.ndarray, ours: dict, repeats: int) -> dict | None:
    try:
        from dahuffman import HuffmanCodec
    except ImportError:
        return None
    part = sym[:DAHUFFMAN_SLICE].tolist()
    codec = HuffmanCodec.from_data(part)
    blob = codec.encode(part)
    assert codec.decode(blob) == part
    t_enc = timeit(lambda: codec.encode(part), repeats, 0.0)
    t_dec = timeit(lambda: codec.decode(blob), repeats, 0.0)
    n = len(part)
    res = {"symbols": n, "note": f"pure Python; first {n} symbols of the synthetic stream "
                                 "(list of ints), code table built outside the timing",
           "encode_msym_s": n / t_enc / 1e6, "decode_msym_s": n / t_dec / 1e6,
           "bits_per_symbol": 8 * len(blob) / n}
    for k in ("encode", "decode"):
        res[f"ours_{k}_kernel_speedup"] = ours[f"{k}_kernel_msym_s"] / res[f"{k}_msym_s"]
        res[f"ours_{k}_call_speedup"] = ours[f"{k}_call_msym_s"] / res[f"{k}_msym_s"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1M-symbol synthetic stream (smoke run)")
    ap.add_argument("--repeats", type=int, default=7, help="timed samples per median (>= 5)")
    ap.add_argument("--min-time", type=float, default=0.02,
                    help="seconds per sample; short streams loop the call (default 0.02)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ghz", type=float, default=None,
                    help="clock for cycles/symbol (default: 'cpu MHz' of /proc/cpuinfo)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    import numba
    numba.set_num_threads(1)  # the Huffman kernels are serial; make it explicit
    ghz = args.ghz or clock_ghz()
    n_synth = 1_000_000 if args.quick else 10_000_000

    rows = []
    for s in lenet_streams():
        rows.append(measure(s, args.repeats, args.min_time, ghz)[0])
    synth_name = f"synthetic geometric({SYNTH_RATIO}) /{SYNTH_SYMBOLS}"
    synth_row, synth = measure({"name": synth_name, "symbols": synthetic(n_synth, args.seed),
                                "n_symbols": SYNTH_SYMBOLS, "fixed_bits": 5},
                               args.repeats, args.min_time, ghz)
    rows.append(synth_row)
    dah = dahuffman_compare(synth, synth_row, args.repeats)
    goal_met = synth_row["decode_kernel_msym_s"] >= GOAL_MSYM_S

    env = environment(1, seed=args.seed)
    env["clock_ghz_for_cycles"] = ghz
    print(f"# codec: {env['cpu']}, {env['cores']} cores, threads=1, numpy {env['numpy']}, "
          f"numba {env['numba']}, python {env['python']}; clock {ghz} GHz (nominal)")
    print(f"# median of {args.repeats} samples (>= {args.min_time}s each), max_len {MAX_LEN}; "
          "M sym/s; kernel = Numba kernel on preallocated buffers, call = dc_engine.codecs.huffman "
          "encode/decode; sizes in bytes, symbols one byte each for zlib/lzma (raw, no header)")
    print("| stream | n | alph (used) | H b/sym | Huff b/sym | enc kern | enc call | dec kern | "
          "dec call | fixed B | Huff B | zlib-9 B | lzma-9 B |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stream']} | {r['n']} | {r['alphabet']} ({r['symbols_used']}) | "
              f"{r['entropy_bits_per_symbol']:.3f} | {r['huffman_bits_per_symbol']:.3f} | "
              f"{r['encode_kernel_msym_s']:.1f} | {r['encode_call_msym_s']:.1f} | "
              f"{r['decode_kernel_msym_s']:.1f} | {r['decode_call_msym_s']:.1f} | "
              f"{r['fixed_bytes']} | {r['huffman_bytes']} | {r['zlib9_bytes']} | "
              f"{r['lzma9_bytes']} |")
    print()
    print("| layer | weights | nonzeros | entries (incl. fillers) | fillers |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "layer" in r and r["stream"].endswith("codes"):
            L = r["layer"]
            print(f"| {r['stream'][:-6]} | {L['weights']} | {L['nonzeros']} | {L['entries']} | "
                  f"{L['fillers']} |")
    print()
    s = synth_row
    cyc = (f", {s['decode_kernel_cycles_per_symbol']:.1f} cycles/symbol"
           if s["decode_kernel_cycles_per_symbol"] else "")
    print(f"# synthetic {s['n']} symbols: decode kernel {s['decode_kernel_msym_s']:.1f} M sym/s "
          f"({s['decode_kernel_coded_mb_s']:.1f} MB/s of coded input{cyc}); "
          f"full decode call {s['decode_call_msym_s']:.1f} M sym/s")
    print(f"# GOAL decode >= {GOAL_MSYM_S:.0f}M symbols/s on one core (synthetic, kernel only): "
          f"{'MET' if goal_met else 'NOT MET'} ({s['decode_kernel_msym_s']:.1f} M sym/s)")
    if dah is None:
        print("# dahuffman: not installed, skipped")
    else:
        print(f"# dahuffman ({dah['note']}): encode {dah['encode_msym_s']:.3f} M sym/s, decode "
              f"{dah['decode_msym_s']:.3f} M sym/s, {dah['bits_per_symbol']:.3f} bits/sym; ours "
              f"is {dah['ours_encode_kernel_speedup']:.0f}x / "
              f"{dah['ours_decode_kernel_speedup']:.0f}x faster (kernel enc/dec), "
              f"{dah['ours_encode_call_speedup']:.0f}x / "
              f"{dah['ours_decode_call_speedup']:.0f}x (full call)")
    write_json(args.json, {"env": env, "max_len": MAX_LEN, "index_bits": INDEX_BITS,
                           "repeats": args.repeats, "min_time_s": args.min_time,
                           "synthetic": {"n": n_synth, "distribution":
                                         f"p_k ~ {SYNTH_RATIO}**k, k < {SYNTH_SYMBOLS}",
                                         "seed": args.seed},
                           "goal_decode_msym_s": GOAL_MSYM_S, "goal_met": goal_met,
                           "results": rows, "dahuffman": dah})
    return 0


if __name__ == "__main__":
    sys.exit(main())
