#!/usr/bin/env bash
# One call on the GPU machine: device facts, the CUDA self-test, the GPU tests, nasrs' DARTS
# benchmark, the PyTorch reference in eager / compile / cudagraph modes on the same
# configuration, and a comparison table printed last. Every log goes under $OUT.
#
# Here (a machine with cargo and nvcc, no GPU needed):
#   bench/gpu-run.sh --prepare      # builds with --features cuda, fills gpu-run/ (ignored)
# On the GPU machine (device tool: run(command="bash bench/gpu-run.sh", carry=["gpu-run"])):
#   bash bench/gpu-run.sh
# Knobs (environment): DEVICE (cuda; cpu runs the same flow without a GPU, for checking
# the script), STEPS (20), WARMUP (5), MODES ("eager compile cudagraph"),
# PHASES (weight,first,second), STEP_TIMEOUT (seconds per command, 300), and the benchmark
# size CHANNELS 16, LAYERS 8, BATCH 64, SIZE 32, IN_CHANNELS 3, CLASSES 10.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT="$ROOT/gpu-run"

prepare() {
    set -e
    cd "$ROOT"
    if [ -z "${NVCC:-}" ]; then
        echo "NVCC is not set; see the project's cuda-toolchain notes" >&2
        exit 2
    fi
    cargo build --release --features cuda
    # The test binaries' paths, from cargo's JSON messages.
    local tests
    tests=$(cargo test --release --features cuda --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])')
    rm -rf "$KIT"
    mkdir -p "$KIT/tests"
    strip -o "$KIT/nasrs" target/release/nasrs
    local t name
    for t in $tests; do
        name=$(basename "$t")
        # The device tests (test_device! bodies: each runs its cuda case on the GPU); the
        # end-to-end CLI tests are left out, they run the binary at its build path.
        case "${name%-*}" in
        cuda_parity | darts_staged | darts_second_order | search_model | mixed_op_none | \
            accumulate_grads | fused_relu_conv | bf16_activations | bad_input | train_eval_model)
            strip -o "$KIT/tests/${name%-*}" "$t" ;;
        esac
    done
    du -sh "$KIT"
    ls -l "$KIT" "$KIT/tests"
}

if [ "${1:-}" = "--prepare" ]; then
    prepare
    exit 0
fi

OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
MODES=${MODES:-eager compile cudagraph}
PHASES=${PHASES:-weight,first,second}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
SIZE_ARGS=(--channels "${CHANNELS:-16}" --layers "${LAYERS:-8}" --batch "${BATCH:-64}"
    --size "${SIZE:-32}" --in-channels "${IN_CHANNELS:-3}" --classes "${CLASSES:-10}")
STATUS="$OUT/status.txt"
: >"$STATUS"

# Runs a named step with a timeout, stdout and stderr to $OUT/<name>.log (or stdout to
# $OUT/<name>.json when the name ends in .json), and records its exit status.
step() {
    local name=$1
    shift
    local t0=$SECONDS rc
    echo "== $name: $*" >&2
    if [[ $name == *.json ]]; then
        timeout "$STEP_TIMEOUT" "$@" >"$OUT/$name" 2>"$OUT/${name%.json}.log"
    else
        timeout "$STEP_TIMEOUT" "$@" >"$OUT/$name.log" 2>&1
    fi
    rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" >>"$STATUS"
    return 0
}

PY=${PYTHON:-python3}
step nvidia-smi nvidia-smi
step nvidia-smi-query nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv

# cuBLAS ships inside the Python packages, off the loader path.
CUBLAS=$("$PY" - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for pat in ("nvidia/cu13/lib/libcublas.so*", "nvidia/cublas/lib/libcublas.so*"):
        hits = sorted(glob.glob(os.path.join(r, pat)))
        if hits:
            print(os.path.dirname(hits[0]))
            raise SystemExit
EOF
)
if [ -z "$CUBLAS" ]; then
    CUBLAS=$(dirname "$(find / -name 'libcublas.so*' -path '*nvidia*' 2>/dev/null | head -1)" 2>/dev/null)
fi
export LD_LIBRARY_PATH="${CUBLAS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "libcublas from: ${CUBLAS:-NOT FOUND}" | tee "$OUT/cublas.txt" >&2

BIN="$KIT/nasrs"
if [ ! -x "$BIN" ]; then
    echo "no $BIN: run bench/gpu-run.sh --prepare on the build machine and carry gpu-run/" | tee -a "$STATUS" >&2
else
    step selftest "$BIN" selftest --device "$DEVICE"
    if [ "$DEVICE" = cuda ]; then
        for t in "$KIT"/tests/*; do
            [ -x "$t" ] || continue
            step "test-$(basename "$t")" env NASRS_REQUIRE_GPU=1 "$t" --test-threads=1
        done
    fi
    step nasrs-bench.json "$BIN" bench darts --device "$DEVICE" --json --steps "$STEPS" --warmup "$WARMUP" "${SIZE_ARGS[@]}"
    # The same steps launched op by op: the effect of the CUDA graphs, measured.
    step nasrs-bench-nographs.json "$BIN" bench darts --device "$DEVICE" --json --no-graphs --copy-mib 0 \
        --steps "$STEPS" --warmup "$WARMUP" "${SIZE_ARGS[@]}"
    # bf16 saved activations: the memory mode (f32 arithmetic, weights and gradients).
    step nasrs-bench-bf16.json "$BIN" bench darts --device "$DEVICE" --json --activations bf16 --copy-mib 0 \
        --steps "$STEPS" --warmup "$WARMUP" "${SIZE_ARGS[@]}"
    step nasrs-model "$BIN" bench darts-model "${SIZE_ARGS[@]}"
fi

for mode in $MODES; do
    step "torch-$mode.json" "$PY" "$ROOT/bench/torch_reference.py" --device "$DEVICE" --mode "$mode" \
        --steps "$STEPS" --warmup "$WARMUP" --phases "$PHASES" --json "${SIZE_ARGS[@]}"
done

{
    echo "---- status (name rc seconds) ----"
    cat "$STATUS"
    echo "---- selftest tail ----"
    tail -n 5 "$OUT/selftest.log" 2>/dev/null
    for t in "$OUT"/test-*.log; do
        [ -f "$t" ] && { echo "---- $(basename "$t") ----"; grep -E '^test result|FAILED|panicked' "$t" | head -n 8; }
    done
    echo
    "$PY" "$ROOT/bench/compare.py" "$OUT"
} 2>&1 | tee "$OUT/summary.txt"
