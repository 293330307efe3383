#!/usr/bin/env bash
# Builds and runs the CUDA simulator's self-check with g++ alone (no cargo, no CUDA):
#  1. every kernels/*.cu (and kernels/sim/*.cu, the simulation-only kernels) compiles against
#     cuda_sim.h as its own unit, as build.rs compiles it, and all of them link together with
#     the runtime's units, kernels/sim/runtime*.cpp (no duplicate symbols);
#  2. each runtime unit compiles both plain and the way build.rs builds it (kernel flags, -fPIC,
#     cuda_sim.h force-included), and the units export runtime.h's names only (their shared
#     state, runtime_internal.h, stays hidden);
#  3. the self-check, kernels/sim/selfcheck*.cpp, runs against the asm context switch (with
#     timings), then against the ucontext fallback and against a _FORTIFY_SOURCE build (checks
#     only).
# Build products go to a temporary directory. Usage: kernels/sim/selfcheck.sh [--no-bench]
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX=${CXX:-g++}
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/nasrs-sim-selfcheck.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
FLAGS=(-std=c++17 -O2 -ffp-contract=off -fwrapv -fno-strict-aliasing -DNASRS_CUDA_SIM -Ikernels/sim -Ikernels)
SIM=(-include kernels/sim/cuda_sim.h)
RUNTIME=(kernels/sim/runtime*.cpp)
SELFCHECK=(kernels/sim/selfcheck*.cpp)

echo "== kernels/*.cu kernels/sim/*.cu, one unit each"
mkdir "$BUILD/kernels" "$BUILD/runtime" "$BUILD/selfcheck"
objs=()
failed=0
for cu in kernels/*.cu kernels/sim/*.cu; do
    [ -e "$cu" ] || continue
    o="$BUILD/kernels/$(basename "$cu" .cu).o"
    if "$CXX" "${FLAGS[@]}" "${SIM[@]}" -fPIC -x c++ -c "$cu" -o "$o"; then
        objs+=("$o")
        echo "   ok   $cu"
    else
        echo "   FAIL $cu"
        failed=1
    fi
done

echo "== runtime: ${RUNTIME[*]}"
rt=()
rt_uc=()
rt_fort=()
for cpp in "${RUNTIME[@]}"; do
    o="$BUILD/runtime/$(basename "$cpp" .cpp)"
    "$CXX" -std=c++17 -O2 -Wall -Wextra -Werror -pthread -c "$cpp" -o "$o.plain.o"
    "$CXX" "${FLAGS[@]}" "${SIM[@]}" -fPIC -Wall -Wextra -c "$cpp" -o "$o.o"
    "$CXX" "${FLAGS[@]}" "${SIM[@]}" -DNASRS_SIM_FORCE_UCONTEXT -c "$cpp" -o "$o.uc.o"
    "$CXX" "${FLAGS[@]}" "${SIM[@]}" -D_FORTIFY_SOURCE=2 -c "$cpp" -o "$o.fort.o"
    rt+=("$o.o")
    rt_uc+=("$o.uc.o")
    rt_fort+=("$o.fort.o")
done

echo "== runtime exports: runtime.h's names only"
exported=$(readelf -sW "${rt[@]}" |
    awk '$7 != "UND" && ($5 == "GLOBAL" || $5 == "WEAK" || $5 == "UNIQUE") && $6 == "DEFAULT" { print $8 }' | sort -u)
api=$(grep -o 'nasrs_sim_[A-Za-z0-9_]*' kernels/sim/runtime.h | sort -u)
leaked=$(comm -23 <(echo "$exported") <(echo "$api"))
if [ -n "$leaked" ]; then
    echo "   the runtime's units export names runtime.h does not declare (put them in"
    echo "   runtime_internal.h's hidden namespace, or an anonymous one):"
    echo "$leaked" | sed 's/^/     /'
    exit 1
fi
echo "   ok   $(echo "$exported" | wc -l) names"

echo "== link: every kernel unit + runtime"
echo 'int main() { return 0; }' > "$BUILD/stub.cpp"
"$CXX" -pthread "$BUILD/stub.cpp" "${objs[@]}" "${rt[@]}" -o "$BUILD/link_check"
echo "   ok   ${#objs[@]} units"

echo "== selfcheck: ${SELFCHECK[*]}"
sc=()
sc_fort=()
for cpp in "${SELFCHECK[@]}"; do
    o="$BUILD/selfcheck/$(basename "$cpp" .cpp)"
    "$CXX" "${FLAGS[@]}" "${SIM[@]}" -Wall -pthread -c "$cpp" -o "$o.o"
    "$CXX" "${FLAGS[@]}" "${SIM[@]}" -D_FORTIFY_SOURCE=2 -pthread -c "$cpp" -o "$o.fort.o"
    sc+=("$o.o")
    sc_fort+=("$o.fort.o")
done
"$CXX" -pthread "${sc[@]}" "${rt[@]}" -o "$BUILD/selfcheck/selfcheck"
"$CXX" -pthread "${sc[@]}" "${rt_uc[@]}" -o "$BUILD/selfcheck/selfcheck_uc"
"$CXX" -pthread "${sc_fort[@]}" "${rt_fort[@]}" -o "$BUILD/selfcheck/selfcheck_fort"

echo "---- asm context switch"
"$BUILD/selfcheck/selfcheck" "$@"
echo "---- ucontext fallback"
"$BUILD/selfcheck/selfcheck_uc" --no-bench | tail -n 1
echo "---- _FORTIFY_SOURCE=2"
"$BUILD/selfcheck/selfcheck_fort" --no-bench | tail -n 1
if [ "$failed" -ne 0 ]; then
    echo "some kernels/*.cu did not compile under the simulation header"
    exit 1
fi
