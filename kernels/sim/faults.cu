// Deliberately wrong kernels, built only into the host simulation (feature cuda-sim), never
// into the GPU fatbin. Each is a copy of a real kernel in kernels/*.cu with ONE defect of a
// kind that happens in real CUDA code; src/backend/cuda/sim_faults.rs launches each through
// its generated launcher and proves the simulation catches it (a parity check fails, or
// the launch fails naming the kernel). If a future change to the simulation stopped
// catching one of these, those tests fail: the simulation is not a no-op.
#include "../common.cuh"

// shift_crop_fwd_f32 with a wrong index: the row offset (+1) is missing, so every output
// reads the row above the one it should. In bounds, so only parity can catch it.
extern "C" __global__ void faulty_shift_crop_fwd_f32(int planes, int h, int w, const float* x, float* y) {
    const int ho = h - 1, wo = w - 1;
    const int total = planes * ho * wo;
    GRID_STRIDE(i, total) {
        const int q = i % wo, r = (i / wo) % ho, p = i / (wo * ho);
        y[i] = x[((size_t)p * h + r) * w + q + 1];
    }
}

// block_sum without its second __syncthreads: warp 0 reads the per-warp sums before the
// other warps have written them (a race the GPU may or may not show on a given run).
template <typename T>
__device__ __forceinline__ T block_sum_missing_sync(T v) {
    STATIC_SHARED(T, warp_sums, 32);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_sums[warp] = v;
    // (the __syncthreads() that belongs here is missing)
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

// dot_f32 on the racy reduction.
extern "C" __global__ void faulty_dot_f32(int n, const float* a, const float* b, double* partials) {
    double acc = 0.0;
    GRID_STRIDE(i, n) acc += (double)a[i] * (double)b[i];
    acc = block_sum_missing_sync(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// fill_f32 off by one: writes y[1..n], the last write one element past the buffer.
extern "C" __global__ void faulty_fill_f32(int n, float value, float* y) {
    GRID_STRIDE(i, n) y[i + 1] = value;
}

// relu_bwd_f32 that accumulates into dx instead of writing it: reads an output nobody
// wrote (fresh device memory).
extern "C" __global__ void faulty_relu_bwd_f32(int n, const float* y, const float* dy, float* dx) {
    GRID_STRIDE(i, n) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}
