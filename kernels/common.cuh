// Shared by every kernels/*.cu: the geometry struct passed by value (its Rust twin is
// `Geom` in src/backend/cuda/mod.rs, same field order), block reductions, and launch sizes.
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

// Sums `v` over the block (any blockDim.x that is a multiple of 32, at most 1024).
// Fixed tree order, so the result is deterministic. Every thread receives the sum.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
    __shared__ T warp_sums[32];
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

// Grid-stride loop over [0, n).
#define GRID_STRIDE(i, n) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

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
