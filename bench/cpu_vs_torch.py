#!/usr/bin/env python3
"""nasrs' CPU backend against PyTorch on the same DARTS search steps, side by side in one run on
one box (issue 16): `nasrs bench darts --device cpu` and `bench/torch_reference.py --device cpu`
at the same configuration and thread count, and the ratios the issue sets goals for.

For each configuration and round, both programs run one after the other (the order flips
every round, so a load that drifts during the run does not favour one side); the step time
of each phase is the median of all its timed samples over the rounds, and the peak memory
is the largest resident set either program reached. The weight step's `floor_ratio` (median
step time over the counted bytes at the measured copy bandwidth) comes from nasrs' own run.

Usage:
  python3 bench/cpu_vs_torch.py [--nasrs target/release/nasrs] [--configs c16l8,c8l5]
                                [--rounds 1] [--steps N --warmup W] [--json OUT.json]
Run it with the Python that has torch (its own interpreter runs torch_reference.py).
Configurations: c16l8 = C16 L8 batch 64 32x32 (2 steps after 1 warm-up),
c8l5 = C8 L5 batch 16 16x16 (10 steps after 3 warm-ups); --steps/--warmup override both.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "c16l8": dict(channels=16, layers=8, batch=64, size=32, steps=2, warmup=1),
    "c8l5": dict(channels=8, layers=5, batch=16, size=16, steps=10, warmup=3),
}
# (torch_reference phase, nasrs phase, label)
PHASES = [("weight", "weight_step", "weight step"),
          ("first", "first_order_iteration", "first-order iteration"),
          ("second", "second_order_iteration", "second-order iteration")]
TIME_GOAL, MEMORY_GOAL, FLOOR_GOAL = 0.5, 0.5, 5.0
MIB = float(1 << 20)


def run_json(cmd):
    """Runs `cmd` and parses its standard output as one JSON object; exits naming the command
    and its error output when it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited with {p.returncode}:\n{p.stderr.strip()}")
    try:
        return json.loads(p.stdout)
    except ValueError as e:
        sys.exit(f"error: {' '.join(cmd)} printed no JSON object ({e})")


def size_args(c, steps, warmup):
    return ["--channels", str(c["channels"]), "--layers", str(c["layers"]),
            "--batch", str(c["batch"]), "--size", str(c["size"]),
            "--steps", str(steps), "--warmup", str(warmup)]


def measure(args, name):
    c = CONFIGS[name]
    steps = args.steps if args.steps is not None else c["steps"]
    warmup = args.warmup if args.warmup is not None else c["warmup"]
    common = size_args(c, steps, warmup)
    nasrs_cmd = [args.nasrs, "bench", "darts", "--device", "cpu", "--threads", str(args.threads),
                 "--json"] + common
    torch_cmd = [sys.executable, os.path.join(HERE, "torch_reference.py"), "--device", "cpu",
                 "--threads", str(args.threads), "--json"] + common
    ours = {p: [] for _, p, _ in PHASES}
    theirs = {p: [] for p, _, _ in PHASES}
    peaks = {"nasrs": 0, "torch": 0}
    floor_ratio, loads = None, []
    for r in range(args.rounds):
        # Only the first nasrs run measures the copy bandwidth the floors are taken at.
        copy = ["--copy-mib", "256" if r == 0 else "0"]
        order = [("nasrs", nasrs_cmd + copy), ("torch", torch_cmd)]
        for who, cmd in (order if r % 2 == 0 else order[::-1]):
            print(f"[{name} round {r + 1}/{args.rounds}] {who} ...", file=sys.stderr, flush=True)
            out = run_json(cmd)
            if who == "nasrs":
                for ph in out["phases"]:
                    ours[ph["name"]] += [s * 1e3 for s in ph["samples"]]
                    if ph["name"] == "weight_step" and ph.get("floor_ratio") is not None:
                        floor_ratio = ph["floor_ratio"]
                peaks["nasrs"] = max(peaks["nasrs"], out["peak_rss_bytes"] or 0)
            else:
                for p, ph in out["phases"].items():
                    theirs[p] += ph["samples_ms"]
                    peaks["torch"] = max(peaks["torch"], ph["peak_bytes"])
                loads += [out["loadavg_start"][0], out["loadavg_end"][0]]
    rows = []
    for tp, npn, label in PHASES:
        a, b = statistics.median(ours[npn]), statistics.median(theirs[tp])
        rows.append(dict(phase=label, nasrs_ms=a, torch_ms=b, ratio=a / b))
    return dict(config=name, **{**c, "steps": steps, "warmup": warmup}, rounds=args.rounds,
                threads=args.threads, phases=rows,
                peak_nasrs_bytes=peaks["nasrs"], peak_torch_bytes=peaks["torch"],
                peak_ratio=peaks["nasrs"] / peaks["torch"] if peaks["torch"] else None,
                weight_floor_ratio=floor_ratio, torch_loadavg=loads)


def mark(ok):
    return "met" if ok else "NOT met"


def report(res):
    c = res
    print(f"\n{c['config']}: C{c['channels']} L{c['layers']} batch {c['batch']} {c['size']}x{c['size']}, "
          f"{c['threads']} threads, {c['steps']} steps after {c['warmup']} warm-up x {c['rounds']} round(s); "
          f"load average seen by torch: {', '.join(f'{v:.1f}' for v in c['torch_loadavg'])}")
    print(f"{'':24} {'nasrs':>12} {'PyTorch':>12} {'ratio':>7}  goal")
    for r in c["phases"]:
        print(f"{r['phase']:24} {r['nasrs_ms']:>9.1f} ms {r['torch_ms']:>9.1f} ms {r['ratio']:>7.2f}  "
              f"<= {TIME_GOAL} {mark(r['ratio'] <= TIME_GOAL)}")
    if c["peak_ratio"] is not None:
        print(f"{'peak memory (max RSS)':24} {c['peak_nasrs_bytes'] / MIB:>8.0f} MiB {c['peak_torch_bytes'] / MIB:>8.0f} MiB "
              f"{c['peak_ratio']:>7.2f}  <= {MEMORY_GOAL} {mark(c['peak_ratio'] <= MEMORY_GOAL)}")
    if c["weight_floor_ratio"] is not None:
        f = c["weight_floor_ratio"]
        print(f"{'weight step floor_ratio':24} {f:>12.1f} {'':>12} {'':>7}  <= {FLOOR_GOAL} {mark(f <= FLOOR_GOAL)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nasrs", default=os.path.join(HERE, "..", "target", "release", "nasrs"),
                    help="the nasrs binary (default: target/release/nasrs)")
    ap.add_argument("--configs", default="c16l8,c8l5", help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--rounds", type=int, default=1, help="runs of each program per configuration")
    ap.add_argument("--threads", type=int, default=2, help="threads for both (default 2, this box's cores)")
    ap.add_argument("--steps", type=int, help="timed steps per phase (overrides the configuration's)")
    ap.add_argument("--warmup", type=int, help="untimed steps per phase (overrides the configuration's)")
    ap.add_argument("--json", metavar="OUT", help="also write the results to this file (temp file + rename)")
    args = ap.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        ap.error(f"--configs {args.configs!r}: choose from {', '.join(CONFIGS)}")
    if args.rounds < 1 or args.threads < 1 or (args.steps is not None and args.steps < 1) \
            or (args.warmup is not None and args.warmup < 0):
        ap.error("--rounds, --threads and --steps must be >= 1, --warmup >= 0")
    if not os.access(args.nasrs, os.X_OK):
        ap.error(f"--nasrs {args.nasrs}: not an executable (build it: cargo build --release)")
    if args.json and os.path.exists(args.json):
        ap.error(f"--json {args.json}: exists; not writing over a file this run did not create")
    results = [measure(args, n) for n in names]
    for r in results:
        report(r)
    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".cpu_vs_torch.")
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
