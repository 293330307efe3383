// Elementwise ops and the two host-scalar reductions (sum_squares, dot). CPU twin:
// src/backend/cpu/mod.rs. Reductions accumulate in double, like the CPU's f64 sums: each
// block writes one partial, `reduce_finish_f64` adds the partials in a fixed order.
#include "common.cuh"

extern "C" __global__ void add_f32(int n, const float* a, const float* b, float* y) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void scale_f32(int n, float s, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] = x[i] * s;
}

extern "C" __global__ void axpy_f32(int n, float a, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] += a * x[i];
}

extern "C" __global__ void scale_assign_f32(int n, float s, float* x) {
    GRID_STRIDE(i, n) x[i] *= s;
}

extern "C" __global__ void relu_fwd_f32(int n, const float* x, float* y) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

extern "C" __global__ void relu_bwd_f32(int n, const float* y, const float* dy, float* dx) {
    GRID_STRIDE(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// y[s, ...] = x[s, ...] * scale[s] with `per` elements per sample.
extern "C" __global__ void drop_path_f32(int n, int per, const float* x, const float* scale, float* y) {
    GRID_STRIDE(i, n) y[i] = x[i] * scale[i / per];
}

// One double partial of sum(a[i] * b[i]) per block (b == a gives sum_squares).
extern "C" __global__ void dot_f32(int n, const float* a, const float* b, double* partials) {
    double acc = 0.0;
    GRID_STRIDE(i, n) acc += (double)a[i] * (double)b[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Sums `count` doubles with one block (fixed assignment and tree: deterministic).
extern "C" __global__ void reduce_finish_f64(int count, const double* partials, double* out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[0] = acc;
}

// out[j] = sum over b of parts[b * m + j]: sums per-sample partials (conv weight gradients)
// in sample order, so the result does not depend on scheduling.
extern "C" __global__ void sum_batches_f32(int batches, int m, const float* parts, float* out) {
    GRID_STRIDE(j, m) {
        float s = 0.0f;
        for (int b = 0; b < batches; ++b) s += parts[(size_t)b * m + j];
        out[j] = s;
    }
}
