// The cases the simulator exists for, (a) to (f): a missing barrier gives a wrong answer (and
// STATIC_SHARED fails it in every block), an out-of-bounds write fails the launch naming the
// kernel, a fresh allocation reads NaN, a shuffle after lanes exited and a deadlock are errors
// rather than hangs, and the thread launches normally after a fault.
#include "selfcheck.h"

#include <cmath>

// ---- test kernels -----------------------------------------------------------------------------

// (a) block_sum with its second __syncthreads removed: warp 0 reads warp_sums before the other
// warps have written them.
template <typename T>
__device__ __forceinline__ T block_sum_missing_sync(T v) {
    __shared__ T warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_sums[warp] = v;
    const int nwarps = (blockDim.x + 31) >> 5;
    T s = 0;
    if (warp == 0) {
        s = lane < nwarps ? warp_sums[lane] : T(0);
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) warp_sums[0] = s;
    }
    __syncthreads();
    return warp_sums[0];
}
__global__ void sum_blocks(int broken, const double* x, double* out) {
    double v = x[blockIdx.x * blockDim.x + threadIdx.x];
    v = broken ? block_sum_missing_sync(v) : block_sum(v);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}

// The same pair on STATIC_SHARED (NaN-filled per block), the form common.cuh could adopt.
template <typename T>
__device__ __forceinline__ T block_sum_static(T v, bool broken) {
    STATIC_SHARED(T, warp_sums, 32);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_sums[warp] = v;
    if (!broken) __syncthreads();
    const int nwarps = (blockDim.x + 31) >> 5;
    T s = 0;
    if (warp == 0) {
        s = lane < nwarps ? warp_sums[lane] : T(0);
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) warp_sums[0] = s;
    }
    __syncthreads();
    return warp_sums[0];
}
__global__ void sum_blocks_static(int broken, const double* x, double* out) {
    double v = block_sum_static(x[blockIdx.x * blockDim.x + threadIdx.x], broken != 0);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}

__global__ void copy_f32(int n, const float* x, float* y) { GRID_STRIDE(i, n) y[i] = x[i]; }
__global__ void copy_f64(int n, const double* x, double* y) { GRID_STRIDE(i, n) y[i] = x[i]; }
__global__ void oob_write(int n, float* y) {
    GRID_STRIDE(i, n + 1) y[i] = 1.0f;  // one element past the end
}

// Proof cases for warp syncs.
__global__ void shfl_after_exit(int early_high, int* out) {
    const unsigned lane = threadIdx.x & 31;
    if (early_high ? lane >= 16 : lane < 16) return;
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)lane, 1);
}
__global__ void deadlock_kernel(int* out) {
    if (threadIdx.x == 0) out[0] = __shfl_sync(0xffffffffu, 1, 0);
    else __syncthreads();
}

// ---- proof cases ------------------------------------------------------------------------------

void proof_a_missing_sync() {
    printf("(a) block_sum without its second __syncthreads gives a wrong sum\n");
    const int blocks = 4, threads = 256;
    Dev<double> x(blocks * threads), out(blocks);
    for (int i = 0; i < blocks * threads; ++i) x[i] = 1.0 + i / threads;  // block b sums to 256 (b + 1)
    int rc = launch("sum_blocks", dim3(blocks), dim3(threads), 0, [&] { sum_blocks(0, x.p, out.p); });
    int right = 0;
    for (int b = 0; b < blocks; ++b) right += out[b] == 256.0 * (b + 1);
    CHECK(rc == 0 && right == blocks, "the real block_sum: %d of %d right", right, blocks);
    rc = launch("sum_blocks", dim3(blocks), dim3(threads), 0, [&] { sum_blocks(1, x.p, out.p); });
    int wrong = 0;
    for (int b = 0; b < blocks; ++b) wrong += out[b] != 256.0 * (b + 1);
    CHECK(rc == 0 && wrong == blocks, "the broken copy: %d of %d wrong", wrong, blocks);
    printf("    -> block 0: %g (want 256), block 3: %g (want 1024)\n", out[0], out[3]);

    // With every block summing to the same value, plain __shared__ (a thread-local static that keeps
    // the previous block's values) lets the broken copy pass from the second block on; STATIC_SHARED,
    // NaN-filled per block, fails it in every block of every launch.
    for (int i = 0; i < blocks * threads; ++i) x[i] = 1.0;
    for (int rep = 0; rep < 2; ++rep) {
        rc = launch("sum_blocks", dim3(blocks), dim3(threads), 0, [&] { sum_blocks(1, x.p, out.p); });
        wrong = 0;
        for (int b = 0; b < blocks; ++b) wrong += out[b] != 256.0;
        printf("    -> uniform data, __shared__, launch %d: %d of %d blocks wrong\n", rep, wrong, blocks);
        rc = launch("sum_blocks_static", dim3(blocks), dim3(threads), 0, [&] { sum_blocks_static(0, x.p, out.p); });
        right = 0;
        for (int b = 0; b < blocks; ++b) right += out[b] == 256.0;
        CHECK(rc == 0 && right == blocks, "STATIC_SHARED block_sum: rc %d, %d of %d right", rc, right, blocks);
        rc = launch("sum_blocks_static", dim3(blocks), dim3(threads), 0, [&] { sum_blocks_static(1, x.p, out.p); });
        int nans = 0;
        for (int b = 0; b < blocks; ++b) nans += std::isnan(out[b]);
        CHECK(rc == 0 && nans == blocks, "STATIC_SHARED broken copy, launch %d: %d of %d blocks NaN", rep, nans, blocks);
    }
}

void proof_b_oob_write() {
    printf("(b) writing one element past the end of an allocation fails the launch, naming the kernel\n");
    const int n = 1000;
    Dev<float> y(n);
    int rc = launch("oob_write", dim3(3), dim3(128), 0, [&] { oob_write(n, y.p); });
    const char* e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_FAULT && contains(e, "out-of-bounds write in kernel oob_write, block (1,0,0) thread (104,0,0)") &&
              contains(e, "0 bytes past the end of a 4000-byte allocation") && contains(e, "(offset 4000)"),
          "rc %d: %s", rc, e);
    printf("    -> %s\n", e);
    CHECK(y[n - 1] == 1.0f, "the writes before the fault happened");
}

void proof_c_fresh_nan() {
    printf("(c) a fresh allocation reads NaN (f32, f64, bf16)\n");
    const int n = 777;
    Dev<float> x(n), y(n);
    Dev<double> xd(n), yd(n);
    Dev<__nv_bfloat16> xh(n + 1);
    Dev<float> yh(n + 1);
    int rc = launch("copy_f32", dim3(2), dim3(BLOCK), 0, [&] { copy_f32(n, x.p, y.p); });
    rc |= launch("copy_f64", dim3(2), dim3(BLOCK), 0, [&] { copy_f64(n, xd.p, yd.p); });
    rc |= launch("from_bf16_f32", dim3(2), dim3(BLOCK), 0, [&] { from_bf16_f32(n + 1, xh.p, yh.p); });
    CHECK(rc == 0, "%s", nasrs_sim_last_error());
    int nan = 0;
    for (int i = 0; i < n; ++i) nan += std::isnan(y[i]) + std::isnan(yd[i]) + std::isnan(yh[i]);
    nan += std::isnan(yh[n]);
    CHECK(nan == 3 * n + 1, "%d of %d reads were NaN", nan, 3 * n + 1);
}

void proof_d_shuffle_after_exit() {
    printf("(d) a full-mask shuffle after some lanes returned is an error, not a hang\n");
    Dev<int> out(64);
    for (int early_high = 1; early_high >= 0; --early_high) {
        int rc = launch("shfl_after_exit", dim3(2), dim3(64), 0, [&] { shfl_after_exit(early_high, out.p); });
        const char* e = nasrs_sim_last_error();
        CHECK(rc == NASRS_SIM_ERR_SYNC && contains(e, "kernel shfl_after_exit, block (0,0,0) thread (") &&
                  contains(e, "__shfl_down_sync") && contains(e, "which has exited"),
              "rc %d: %s", rc, e);
        printf("    -> %s\n", e);
    }
}

void proof_e_deadlock() {
    printf("(e) deadlock (thread 0 in a warp shuffle, the rest at __syncthreads) is an error\n");
    Dev<int> out(1);
    int rc = launch("deadlock_kernel", dim3(1), dim3(64), 0, [&] { deadlock_kernel(out.p); });
    const char* e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_DEADLOCK && contains(e, "deadlock in kernel deadlock_kernel, block (0,0,0) thread (0,0,0)") &&
              contains(e, "63 at __syncthreads"),
          "rc %d: %s", rc, e);
    printf("    -> %s\n", e);
}

void proof_f_recovery() {
    printf("(f) after a faulting launch the next launch on the same thread works\n");
    const int n = 5000;
    Dev<float> y(n);
    int rc = launch("oob_write", dim3(8), dim3(BLOCK), 0, [&] { oob_write(n, y.p); });
    CHECK(rc == NASRS_SIM_ERR_FAULT, "rc %d", rc);
    const auto a = random_floats(n, 50), b = random_floats(n, 51);
    Dev<float> da(n), db(n), dy(n);
    da.fill(a);
    db.fill(b);
    rc = launch("add_f32", dim3(8), dim3(BLOCK), 0, [&] { add_f32(n, da.p, db.p, dy.p); });
    CHECK(rc == 0 && nasrs_sim_last_error()[0] == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += !same_bits(dy[i], a[i] + b[i]);
    CHECK(bad == 0, "%d elements differ after recovery", bad);
    // And a block_sum kernel (every fiber blocks) after a fault in the middle of a block.
    Dev<double> x(BLOCK * 3), out(3);
    for (int i = 0; i < BLOCK * 3; ++i) x[i] = 2.0;
    rc = launch("sum_blocks", dim3(3), dim3(BLOCK), 0, [&] { sum_blocks(0, x.p, out.p); });
    CHECK(rc == 0 && out[0] == 512.0 && out[2] == 512.0, "rc %d: %s", rc, nasrs_sim_last_error());
}
