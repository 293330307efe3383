#!/usr/bin/env bash
# Builds and runs the CUDA simulator's self-check with g++ alone (no cargo, no CUDA):
#  1. every kernels/*.cu (and kernels/sim/*.cu, the simulation-only kernels) compiles against
#     cuda_sim.h as its own unit, as build.rs compiles it, and all of them link together with
#     runtime.cpp (no duplicate symbols);
#  2. runtime.cpp compiles both plain and the way build.rs builds it (kernel flags, -fPIC,
#     cuda_sim.h force-included);
#  3. selfcheck.cpp runs against the asm context switch (with timings), then against the
#     ucontext fallback and against a _FORTIFY_SOURCE build (checks only).
# Build products go to a temporary directory. Usage: kernels/sim/selfcheck.sh [--no-bench]
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX=${CXX:-g++}
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/nasrs-sim-selfcheck.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
FLAGS=(-std=c++17 -O2 -ffp-contract=off -fwrapv -fno-strict-aliasing -DNASRS_CUDA_SIM -Ikernels/sim -Ikernels)
SIM=(-include kernels/sim/cuda_sim.h)

echo "== kernels/*.cu kernels/sim/*.cu, one unit each"
objs=()
failed=0
for cu in kernels/*.cu kernels/sim/*.cu; do
    [ -e "$cu" ] || continue
    o="$BUILD/$(basename "$cu" .cu).o"
    if "$CXX" "${FLAGS[@]}" "${SIM[@]}" -fPIC -x c++ -c "$cu" -o "$o"; then
        objs+=("$o")
        echo "   ok   $cu"
    else
        echo "   FAIL $cu"
        failed=1
    fi
done

echo "== runtime.cpp"
"$CXX" -std=c++17 -O2 -Wall -Wextra -Werror -pthread -c kernels/sim/runtime.cpp -o "$BUILD/runtime_plain.o"
"$CXX" "${FLAGS[@]}" "${SIM[@]}" -fPIC -Wall -Wextra -c kernels/sim/runtime.cpp -o "$BUILD/runtime.o"
"$CXX" "${FLAGS[@]}" "${SIM[@]}" -DNASRS_SIM_FORCE_UCONTEXT -c kernels/sim/runtime.cpp -o "$BUILD/runtime_uc.o"
"$CXX" "${FLAGS[@]}" "${SIM[@]}" -D_FORTIFY_SOURCE=2 -c kernels/sim/runtime.cpp -o "$BUILD/runtime_fort.o"

echo "== link: every kernel unit + runtime"
echo 'int main() { return 0; }' > "$BUILD/stub.cpp"
"$CXX" -pthread "$BUILD/stub.cpp" "${objs[@]}" "$BUILD/runtime.o" -o "$BUILD/link_check"
echo "   ok   ${#objs[@]} units"

echo "== selfcheck"
"$CXX" "${FLAGS[@]}" "${SIM[@]}" -Wall -pthread -c kernels/sim/selfcheck.cpp -o "$BUILD/selfcheck.o"
"$CXX" "${FLAGS[@]}" "${SIM[@]}" -D_FORTIFY_SOURCE=2 -pthread -c kernels/sim/selfcheck.cpp -o "$BUILD/selfcheck_fort.o"
"$CXX" -pthread "$BUILD/selfcheck.o" "$BUILD/runtime.o" -o "$BUILD/selfcheck"
"$CXX" -pthread "$BUILD/selfcheck.o" "$BUILD/runtime_uc.o" -o "$BUILD/selfcheck_uc"
"$CXX" -pthread "$BUILD/selfcheck_fort.o" "$BUILD/runtime_fort.o" -o "$BUILD/selfcheck_fort"

echo "---- asm context switch"
"$BUILD/selfcheck" "$@"
echo "---- ucontext fallback"
"$BUILD/selfcheck_uc" --no-bench | tail -n 1
echo "---- _FORTIFY_SOURCE=2"
"$BUILD/selfcheck_fort" --no-bench | tail -n 1
if [ "$failed" -ne 0 ]; then
    echo "some kernels/*.cu did not compile under the simulation header"
    exit 1
fi
