// Elementwise ops and the two host-scalar reductions (sum_squares, dot). CPU twin:
// src/backend/cpu/mod.rs. Reductions accumulate in double, like the CPU's f64 sums: each
// block writes one partial, `reduce_finish_f64` adds the partials in a fixed order.
#include "common.cuh"
#include <cuda_bf16.h>

extern "C" __global__ void add_f32(int n, const float* a, const float* b, float* y) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void scale_f32(int n, float s, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] = x[i] * s;
}

extern "C" __global__ void axpy_f32(int n, float a, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] += a * x[i];
}

// y += a * s[0] * x, with s a scalar the device computed (a norm, a step size): no host
// round trip, so a captured step can use it.
extern "C" __global__ void axpy_scaled_f32(int n, float a, const float* s, const float* x, float* y) {
    const float c = a * s[0];
    GRID_STRIDE(i, n) y[i] += c * x[i];
}

extern "C" __global__ void fill_f32(int n, float value, float* y) {
    GRID_STRIDE(i, n) y[i] = value;
}

extern "C" __global__ void scale_assign_f32(int n, float s, float* x) {
    GRID_STRIDE(i, n) x[i] *= s;
}

// NaN stays NaN (PyTorch): `v <= 0` selects the zero, where `v > 0 ? v : 0` or
// fmaxf(v, 0) would map a NaN to 0.
extern "C" __global__ void relu_fwd_f32(int n, const float* x, float* y) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        y[i] = v <= 0.0f ? 0.0f : v;
    }
}

// threshold_backward(dy, y, 0): a NaN output passes its gradient, as in PyTorch.
extern "C" __global__ void relu_bwd_f32(int n, const float* y, const float* dy, float* dx) {
    GRID_STRIDE(i, n) dx[i] = y[i] <= 0.0f ? 0.0f : dy[i];
}

// The LSTM controller's and MBConv's activations. Backward of sigmoid and tanh reads the
// output (all their derivative needs); SiLU's reads the input, as PyTorch's silu_backward.
// Full-precision expf / tanhf and IEEE division (not __expf / __fdividef): NaN in, NaN out,
// a few ulp from the CPU's.
extern "C" __global__ void sigmoid_fwd_f32(int n, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

extern "C" __global__ void sigmoid_bwd_f32(int n, const float* y, const float* dy, float* dx) {
    GRID_STRIDE(i, n) {
        const float v = y[i];
        dx[i] = dy[i] * v * (1.0f - v);
    }
}

extern "C" __global__ void tanh_fwd_f32(int n, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] = tanhf(x[i]);
}

extern "C" __global__ void tanh_bwd_f32(int n, const float* y, const float* dy, float* dx) {
    GRID_STRIDE(i, n) {
        const float v = y[i];
        dx[i] = dy[i] * (1.0f - v * v);
    }
}

// PyTorch's x / (1 + exp(-x)), not x * sigmoid(x): the same NaN for -inf on both devices.
extern "C" __global__ void silu_fwd_f32(int n, const float* x, float* y) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        y[i] = v / (1.0f + expf(-v));
    }
}

extern "C" __global__ void silu_bwd_f32(int n, const float* x, const float* dy, float* dx) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        const float s = 1.0f / (1.0f + expf(-v));
        dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
    }
}

extern "C" __global__ void mul_f32(int n, const float* a, const float* b, float* y) {
    GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

// bf16 storage of saved activations: round to nearest even on the way in, exact widening on
// the way out (the CPU twin uses the `half` crate's conversions, which round the same way).
extern "C" __global__ void to_bf16_f32(int n, const float* x, __nv_bfloat16* y) {
    GRID_STRIDE(i, n) y[i] = __float2bfloat16_rn(x[i]);
}

extern "C" __global__ void from_bf16_f32(int n, const __nv_bfloat16* x, float* y) {
    GRID_STRIDE(i, n) y[i] = __bfloat162float(x[i]);
}

// y[s, ...] = x[s, ...] * scale[s] with `per` elements per sample.
extern "C" __global__ void drop_path_f32(int n, int per, const float* x, const float* scale, float* y) {
    GRID_STRIDE(i, n) y[i] = x[i] * scale[i / per];
}

// Squeeze-and-excitation's channel scale: y = x * s[plane], `plane_len` = H * W elements per
// (sample, channel) plane.
extern "C" __global__ void channel_scale_fwd_f32(int n, int plane_len, const float* x, const float* s, float* y) {
    GRID_STRIDE(i, n) y[i] = x[i] * s[i / plane_len];
}

// Its backward fused in one pass over dy and x: one block per plane writes dx = dy * s and
// reduces ds = sum(dy * x) (block_sum's fixed tree: deterministic).
extern "C" __global__ void channel_scale_bwd_f32(int plane_len, const float* x, const float* s,
                                                 const float* dy, float* dx, float* ds) {
    const size_t base = (size_t)blockIdx.x * plane_len;
    const float sc = s[blockIdx.x];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < plane_len; i += blockDim.x) {
        const float g = dy[base + i];
        dx[base + i] = g * sc;
        acc += g * x[base + i];
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) ds[blockIdx.x] = acc;
}

// One double partial of sum(a[i] * b[i]) per block (b == a gives sum_squares).
extern "C" __global__ void dot_f32(int n, const float* a, const float* b, double* partials) {
    double acc = 0.0;
    GRID_STRIDE(i, n) acc += (double)a[i] * (double)b[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// The squared-norm partials of many buffers in one launch (sum_squares_many,
// grad_norm_scalars): buffer t gets the blocks dot_f32 would get on it alone
// (block_start[t + 1] - block_start[t] = min(ceil(len / BLOCK), 1024), set by the host) and
// each of its blocks sums the very elements, in the very order, dot_f32's block does, into
// partials[base + blockIdx.x]: the per-buffer layout, so the finish adds the same numbers.
// The table is a kernel argument (no upload; capturable), at most NORM_MANY_TENSORS buffers
// per launch (4 KB argument limit). Rust twin: NormTable in src/backend/cuda/elementwise.rs.
#define NORM_MANY_TENSORS 240

struct NormTable {
    const float* x[NORM_MANY_TENSORS];
    int len[NORM_MANY_TENSORS];
    int block_start[NORM_MANY_TENSORS + 1];
    int count;
    int base;
};

extern "C" __global__ void square_partials_f32(const __grid_constant__ NormTable table, double* partials) {
    const int t = table_tensor(table.block_start, table.count, blockIdx.x);
    const int first = table.block_start[t];
    const int blocks = table.block_start[t + 1] - first;
    const int n = table.len[t];
    const float* x = table.x[t];
    double acc = 0.0;
    for (int i = (blockIdx.x - first) * blockDim.x + threadIdx.x; i < n; i += blockDim.x * blocks)
        acc += (double)x[i] * (double)x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[table.base + blockIdx.x] = acc;
}

// Sums `count` doubles with one block (fixed assignment and tree: deterministic).
extern "C" __global__ void reduce_finish_f64(int count, const double* partials, double* out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[0] = acc;
}

// Sums the squared-norm partials like reduce_finish_f64, then writes the norm scalars
// (`norm_scalars` in src/backend/mod.rs): norm, 1 / norm (0 for a zero norm) and the clip
// coefficient min(1, max_norm / (norm + 1e-6)), as `norm_scalar_values` computes them: a
// NaN norm gives NaN for all three.
extern "C" __global__ void norm_scalars_finish_f32(int count, const double* partials, double max_norm, float* out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        const double norm = sqrt(acc);
        out[0] = (float)norm;
        out[1] = norm == 0.0 ? 0.0f : (float)(1.0 / norm);
        // Not fmin, which would turn a NaN coefficient into 1 (PyTorch's clamp keeps it).
        const double coef = max_norm / (norm + 1e-6);
        out[2] = (float)(coef > 1.0 ? 1.0 : coef);
    }
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
