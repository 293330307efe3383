// Shared by every kernels/*.cu: the geometry struct passed by value (its Rust twin is
// generated from it by build.rs, layout asserted on both sides), shared-memory declarations
// that also work in the host simulation, block reductions, the NaN-keeping max, the
// grid-stride loop, and launch sizes.
#pragma once
#include <stdint.h>

// Threads per block for 1-D kernels; the Rust launcher uses the same figure (BLOCK).
#define BLOCK 256
// Largest K the fused MixedOp accepts (the Rust side checks before launching).
#define MAX_K 16

// The geometry of a windowed op (conv or pool) on NCHW tensors: input n, c, h, w; output
// ho, wo; square kernel k with stride, padding and dilation.
struct Geom {
    int n, c, h, w;
    int ho, wo;
    int k, stride, pad, dil;
};

// The block's dynamic shared memory (the launch's shared_mem_bytes) as `T name[]`. The
// host simulation has no `extern __shared__`; it hands out a guarded per-block buffer.
// STATIC_SHARED(T, name, count) is `__shared__ T name[count]`; the simulation gives each
// block a fresh NaN-filled, guarded copy (a plain `__shared__` there would keep the previous
// block's values, hiding a read before the barrier that makes it valid).
#ifdef NASRS_CUDA_SIM
#define DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(nasrs_sim_dynamic_shared())
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define STATIC_SHARED(T, name, count) __shared__ T name[count]
#endif

// Sums `v` over the block (any blockDim.x that is a multiple of 32, at most 1024).
// Fixed tree order, so the result is deterministic. Every thread receives the sum.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
    STATIC_SHARED(T, warp_sums, 32);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
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

// The larger of a and b with PyTorch's NaN rule: a NaN is the maximum (max reductions; CPU
// twin `Element::max`). Not fmax / fmaxf, which return the other operand and so hide a NaN.
__device__ __forceinline__ double max_nan(double a, double b) { return (a != a || a > b) ? a : b; }

// Grid-stride loop over [0, n), n an int. The counter is 64-bit: an int one wraps when
// n + gridDim.x * blockDim.x passes 2^31 (n > 2^31 - 2^24 at our largest grids) and the loop
// then never ends or skips work. The body still sees an int `i` (i < n fits), so its index
// arithmetic stays 32-bit.
#define GRID_STRIDE(i, n)                                                                   \
    for (long long i##_64 = (long long)blockIdx.x * blockDim.x + threadIdx.x; i##_64 < (n); \
         i##_64 += (long long)blockDim.x * gridDim.x)                                       \
        if (const int i = (int)i##_64; true)

// The tensor of block `b` in a multi-tensor launch: the last t in [0, count) with
// block_start[t] <= b (block_start ascending, empty tensors left out by the host). The search
// is uniform across the block, so every thread reads the same argument words.
__device__ __forceinline__ int table_tensor(const int* block_start, int count, int b) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (block_start[mid] <= b) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}
