// THE fused DARTS MixedOp. CPU twin: src/backend/cpu/mixed_op.rs.
// Forward: y = sum_k softmax(alpha)_k x_k in one pass over the K inputs. A null x_k is an
// all-zero input (the DARTS `none` op): it keeps its softmax weight but is never read, and
// its <dy, x_k> is 0, so its dalpha_k = -w_k sum_j w_j <dy, x_j>.
// Backward: one pass writes every requested dx_k = w_k dy and per-block partial dot products
// <dy, x_k> (double); a one-block finishing kernel adds the partials in block order
// (deterministic) and forms dalpha_k = w_k (<dy, x_k> - sum_j w_j <dy, x_j>).
#include "common.cuh"

// The K input pointers travel by value (Rust twin: MixedOpPtrs in src/backend/cuda/mixed_op.rs).
struct MixedOpPtrs {
    const float* x[MAX_K];  // null for an all-zero (absent) input
    float* dx[MAX_K];       // null where the gradient is not wanted (always for absent inputs)
};

// softmax(alpha) in double, computed by every block into shared memory.
__device__ void softmax_weights(int k, const float* alpha, double* w) {
    if (threadIdx.x == 0) {
        double m = -INFINITY;
        for (int j = 0; j < k; ++j) m = max_nan(m, (double)alpha[j]);  // NaN alpha: NaN weights
        double s = 0.0;
        for (int j = 0; j < k; ++j) {
            w[j] = exp((double)alpha[j] - m);
            s += w[j];
        }
        for (int j = 0; j < k; ++j) w[j] /= s;
    }
    __syncthreads();
}

extern "C" __global__ void mixed_op_fwd_f32(int len, int k, MixedOpPtrs p, const float* alpha, float* y) {
    STATIC_SHARED(double, w64, MAX_K);
    STATIC_SHARED(float, w, MAX_K);
    softmax_weights(k, alpha, w64);
    if (threadIdx.x < k) w[threadIdx.x] = (float)w64[threadIdx.x];  // the CPU rounds w to T too
    __syncthreads();
    GRID_STRIDE(i, len) {
        float acc = 0.0f;
        for (int j = 0; j < k; ++j)
            if (p.x[j]) acc += w[j] * p.x[j][i];
        y[i] = acc;
    }
}

// partials [gridDim.x][MAX_K]: this block's <dy, x_j>. Bit j of `acc_mask`
// (mixed_op_bwd_into): dx_j += w_j dy, adding into a pending gradient, instead of dx_j = w_j dy.
extern "C" __global__ void mixed_op_bwd_f32(int len, int k, MixedOpPtrs p, unsigned acc_mask, const float* alpha,
                                            const float* dy, double* partials) {
    STATIC_SHARED(double, w64, MAX_K);
    softmax_weights(k, alpha, w64);
    double acc[MAX_K];
#pragma unroll
    for (int j = 0; j < MAX_K; ++j) acc[j] = 0.0;
    GRID_STRIDE(i, len) {
        const float g = dy[i];
#pragma unroll
        for (int j = 0; j < MAX_K; ++j) {
            if (j < k) {
                if (p.x[j]) acc[j] += (double)g * (double)p.x[j][i];
                if (p.dx[j]) {
                    const float d = (float)w64[j] * g;
                    p.dx[j][i] = ((acc_mask >> j) & 1u) ? p.dx[j][i] + d : d;
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < MAX_K; ++j) {
        const double s = block_sum(acc[j]);
        if (threadIdx.x == 0 && j < k) partials[blockIdx.x * MAX_K + j] = s;
    }
}

// One block of MAX_K threads: dalpha [k] from the partials of `blocks` blocks.
extern "C" __global__ void mixed_op_bwd_finish_f32(int blocks, int k, const float* alpha, const double* partials,
                                                   float* dalpha) {
    STATIC_SHARED(double, w64, MAX_K);
    STATIC_SHARED(double, dots, MAX_K);
    softmax_weights(k, alpha, w64);
    const int j = threadIdx.x;
    if (j < k) {
        double d = 0.0;
        for (int b = 0; b < blocks; ++b) d += partials[b * MAX_K + j];
        dots[j] = d;
    }
    __syncthreads();
    if (j < k) {
        double mean = 0.0;
        for (int i = 0; i < k; ++i) mean += w64[i] * dots[i];
        dalpha[j] = (float)(w64[j] * (dots[j] - mean));
    }
}
