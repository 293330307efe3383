#!/usr/bin/env bash
# Latency-aware search on the bundled MNIST (issue 15): one CPU latency table at the trials'
# own scale (batch 1, 28x28, one channel, width 0.25), then the same aging-evolution search
# (same seed, same budget, the same training trials) three times: accuracy only, MnasNet's
# soft reward at a target T, and the hard reward at T. T defaults to the median predicted
# latency of 200 random architectures (`nasrs latency predict`). Prints, per search: the best
# by its own objective with its accuracy and predicted latency, the share of its trials at or
# under T, and the size of its accuracy-latency Pareto front.
#
#   bench/latency_search.sh [OUT_DIR] [BUDGET] [EPOCHS] [TRAIN_LIMIT]
#   (TARGET_MS=... fixes T; NASRS_BIN=... uses that binary instead of building one)
#
# Writes OUT_DIR (default runs/latency-search), which must not exist.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/latency-search}"
budget="${2:-30}"
epochs="${3:-2}"
limit="${4:-2000}"
if [ -e "$out" ]; then
  echo "error: $out exists; give another OUT_DIR" >&2
  exit 2
fi
mkdir -p "$out"
# NASRS_BIN: a built binary to use (e.g. a copy, so that rebuilding meanwhile is safe).
if [ -n "${NASRS_BIN:-}" ]; then
  nasrs="$NASRS_BIN"
else
  cargo build --release -q
  nasrs=./target/release/nasrs
fi

$nasrs latency build --space mbconv --device cpu --batch 1 --size 28 --width-mult 0.25 \
  --in-channels 1 --classes 10 --warmup 3 --repeats 10 --out "$out/latency.json"
$nasrs latency predict --table "$out/latency.json" --samples 200 > "$out/spread.json"
target="${TARGET_MS:-$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["median_ms"], 4))' "$out/spread.json")}"
echo "target T = $target ms (spread of 200 random architectures: $(tr -d '\n ' < "$out/spread.json"))"

run() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  $nasrs search evolution --space mbconv --evaluator train --budget "$budget" \
    --population 10 --sample-size 3 --epochs "$epochs" --train-limit "$limit" --batch 32 \
    --device cpu --seed 1 --out "$out/$name" "$@" > "$out/$name.best.json" 2> "$out/$name.log"
  echo "$name: $(( $(date +%s) - t0 )) s"
}
run accuracy
# The accuracy-only run's latencies come from the same table, for the comparison below.
run soft --latency-table "$out/latency.json" --latency-target "$target" --latency-reward soft
run hard --latency-table "$out/latency.json" --latency-target "$target" --latency-reward hard

python3 - "$out" "$target" "$nasrs" <<'EOF'
import json, subprocess, sys
out, target, nasrs = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def predict(arch):
    r = subprocess.run([nasrs, "latency", "predict", "--table",
                        f"{out}/latency.json", "--arch", arch],
                       capture_output=True, text=True, check=True)
    return float(r.stdout.split()[0])
print(f"{'search':<9} {'best acc':>8} {'best ms':>8} {'trials<=T':>9} {'mean ms':>8} {'front':>5}  best arch")
for name in ["accuracy", "soft", "hard"]:
    best = json.load(open(f"{out}/{name}.best.json"))
    events = [json.loads(l) for l in open(f"{out}/{name}/journal.jsonl")]
    done = [e for e in events if e["event"] == "finished" and e.get("status") == "ok"]
    lat = [e.get("latency_ms") or predict(e["arch"]) for e in done]
    under = sum(1 for ms in lat if ms <= target)
    try:
        front = len(json.load(open(f"{out}/{name}/pareto.json"))["front"])
    except FileNotFoundError:
        front = "-"
    ms = best.get("latency_ms") or predict(best["arch"])
    print(f"{name:<9} {best['valid_acc']:>8.4f} {ms:>8.3f} {under:>4}/{len(done):<4} "
          f"{sum(lat) / len(lat):>8.3f} {front:>5}  {best['arch']}")
EOF
