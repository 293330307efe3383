#!/usr/bin/env python3
"""The side-by-side table of a GPU run (bench/gpu-run.sh): nasrs' DARTS step times and peak
memory against PyTorch eager / torch.compile / CUDA graphs on the same configuration, the
counted floor of each step at the measured copy bandwidth, and the issue's targets.

Usage: python3 bench/compare.py OUT_DIR
Reads OUT_DIR/nasrs-bench.json (`nasrs bench darts --json`), OUT_DIR/nasrs-bench-nographs.json
(the same with `--no-graphs`), OUT_DIR/nasrs-bench-bf16.json (`--activations bf16`) and
OUT_DIR/torch-{eager,compile,cudagraph}.json (`bench/torch_reference.py --json`); any that is
missing or unreadable shows as "-". Standard library only.
"""

import json
import os
import sys

PHASES = [("weight", "weight_step"), ("first", "first_order_iteration"),
          ("second", "second_order_iteration")]
MODES = ["eager", "compile", "cudagraph"]
MIB = float(1 << 20)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"note: {os.path.basename(path)}: {e}", file=sys.stderr)
        return None


def fmt(v, spec):
    """`v` formatted by `spec`; a missing value is "-" padded to the spec's width."""
    if v is not None:
        return format(v, spec)
    width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
    return format("-", ">" + width) if width else "-"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        return 2
    out = sys.argv[1]
    ours = load(os.path.join(out, "nasrs-bench.json"))
    # The same steps launched op by op (--no-graphs): what the CUDA graphs buy.
    direct = load(os.path.join(out, "nasrs-bench-nographs.json"))
    torch = {m: load(os.path.join(out, f"torch-{m}.json")) for m in MODES}
    direct_ph = {p["name"]: p for p in (direct or {}).get("phases", [])}

    ours_ph = {p["name"]: p for p in (ours or {}).get("phases", [])}
    floors = {p["name"]: p["floors"]["floor_s"] for p in (ours or {}).get("model", {}).get("phases", [])}

    def torch_ms(mode, short):
        t = torch.get(mode)
        ph = (t or {}).get("phases", {}).get(short)
        return ph["median_ms"] if ph else None

    def torch_peak(mode, short):
        t = torch.get(mode)
        ph = (t or {}).get("phases", {}).get(short)
        return ph["peak_bytes"] if ph else None

    if ours:
        c = ours["config"]
        print(f"DARTS search step: C={c['channels']} L={c['layers']} batch {c['batch']} "
              f"{c['in_channels']}x{c['size']}x{c['size']}, {c['classes']} classes")
        print(f"nasrs: {ours['device']} (timer {ours['timer']}, median of {c['steps']} after {c['warmup']} warm-up, "
              f"{'CUDA-graph replays' if ours.get('graphs_used') else 'launched op by op'}; "
              f"'op by op' column: --no-graphs)")
    for m in MODES:
        t = torch[m]
        if t:
            print(f"torch {m}: {t['torch']} on {t['device_name']} (median of {t['steps']} after {t['warmup']} warm-up)")
    params = {"nasrs": (ours or {}).get("weights")}
    params.update({m: (torch[m] or {}).get("params") for m in MODES})
    known = {v for v in params.values() if v is not None}
    counted = sum(v is not None for v in params.values())
    verdict = "" if counted < 2 else "  (match)" if len(known) == 1 else "  (MISMATCH)"
    print("weights: " + ", ".join(f"{k} {fmt(v, ',')}" for k, v in params.items()) + verdict)
    bw = (ours or {}).get("copy_bandwidth_bytes_per_s")
    if bw:
        print(f"measured copy bandwidth {bw / 1e9:.0f} GB/s; floor = max(tensor bytes / bandwidth, "
              f"FLOPs / {ours['model']['rates']['flops_per_s'] / 1e12:.0f} TFLOP/s)")
    kinds = {p["peak_memory"]["kind"] for p in ours_ph.values() if p.get("peak_memory")}
    tkinds = {ph.get("peak_kind") for ph in (torch["eager"] or {}).get("phases", {}).values()}
    if kinds or tkinds:
        print(f"peak memory: nasrs {', '.join(sorted(kinds)) or '-'}; torch eager {', '.join(sorted(k for k in tkinds if k)) or '-'}")
    print()

    head = (f"{'phase':<7} {'nasrs ms':>9} {'op by op':>9} {'eager ms':>9} {'compile':>9} {'cudagraph':>9} "
            f"{'x eager':>8} {'x comp':>7} {'x graph':>8} {'nasrs MiB':>10} {'eager MiB':>10} "
            f"{'mem/eag':>8} {'floor ms':>9} {'x floor':>8}")
    print(head)
    print("-" * len(head))
    verdicts = []
    for short, long in PHASES:
        p = ours_ph.get(long)
        ms = p["median_s"] * 1e3 if p else None
        dp = direct_ph.get(long)
        direct_ms = dp["median_s"] * 1e3 if dp else None
        peak = p["peak_memory"]["bytes"] if p and p.get("peak_memory") else None
        eager, comp, graph = (torch_ms(m, short) for m in MODES)
        epeak = torch_peak("eager", short)
        floor_ms = floors[long] * 1e3 if long in floors else None
        sp_e, sp_c, sp_g = ratio(eager, ms), ratio(comp, ms), ratio(graph, ms)
        mem, xfloor = ratio(peak, epeak), ratio(ms, floor_ms)
        print(f"{short:<7} {fmt(ms, '9.2f')} {fmt(direct_ms, '9.2f')} {fmt(eager, '9.2f')} {fmt(comp, '9.2f')} {fmt(graph, '9.2f')} "
              f"{fmt(sp_e, '8.2f')} {fmt(sp_c, '7.2f')} {fmt(sp_g, '8.2f')} "
              f"{fmt(peak and peak / MIB, '10.1f')} {fmt(epeak and epeak / MIB, '10.1f')} "
              f"{fmt(mem, '8.2f')} {fmt(floor_ms, '9.2f')} {fmt(xfloor, '8.2f')}")
        if short in ("weight", "first"):
            verdicts += [(f"{short}: >= 5x eager", sp_e, lambda v: v >= 5),
                         (f"{short}: >= 2x torch.compile", sp_c, lambda v: v >= 2),
                         (f"{short}: <= 0.5x eager peak memory", mem, lambda v: v <= 0.5),
                         (f"{short}: <= 2x the floor", xfloor, lambda v: v <= 2)]
    bf16 = load(os.path.join(out, "nasrs-bench-bf16.json"))
    if bf16:
        print()
        print("nasrs with bf16 saved activations (--activations bf16):")
        for short, long in PHASES:
            p = {q["name"]: q for q in bf16.get("phases", [])}.get(long)
            if not p:
                continue
            ms = p["median_s"] * 1e3
            peak = p["peak_memory"]["bytes"] if p.get("peak_memory") else None
            epeak = torch_peak("eager", short)
            print(f"  {short:<7} {ms:9.2f} ms  x eager {fmt(ratio(torch_ms('eager', short), ms), '.2f')}  "
                  f"peak {fmt(peak and peak / MIB, '.1f')} MiB  mem/eager {fmt(ratio(peak, epeak), '.2f')}")
    print()
    print("targets (issue #5):")
    for name, v, ok in verdicts:
        state = "n/a" if v is None else ("PASS" if ok(v) else "FAIL")
        print(f"  {state:<4} {name} ({fmt(v, '.2f')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
