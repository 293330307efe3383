// Max / average pooling and global average pooling. CPU twin: src/backend/cpu/pool.rs.
// Backwards are gathers per input pixel that visit the windows covering it in the CPU's
// scatter order (oh, then ow ascending), so sums match it and no atomics are needed.
#include "common.cuh"

// The in-bounds window of output (oh, ow): rows [*h0, *h1), columns [*w0, *w1).
__device__ __forceinline__ void window(const Geom& g, int oh, int ow, int* h0, int* h1, int* w0, int* w1) {
    const int hs = oh * g.stride - g.pad, ws = ow * g.stride - g.pad;
    *h0 = max(hs, 0);
    *w0 = max(ws, 0);
    *h1 = min(hs + g.k, g.h);
    *w1 = min(ws + g.k, g.w);
}

// Output rows [*lo, *hi) whose window covers input row `i` (same for columns).
__device__ __forceinline__ void covering(int i, int k, int stride, int pad, int out, int* lo, int* hi) {
    // oh*stride - pad <= i < oh*stride - pad + k
    const int a = i + pad - k + 1;
    *lo = a <= 0 ? 0 : (a + stride - 1) / stride;
    *hi = min((i + pad) / stride + 1, out);
}

extern "C" __global__ void max_pool2d_fwd_f32(Geom g, const float* x, float* y) {
    const int total = g.n * g.c * g.ho * g.wo;
    GRID_STRIDE(i, total) {
        const int ow = i % g.wo, oh = (i / g.wo) % g.ho, plane = i / (g.wo * g.ho);
        const float* xp = x + (size_t)plane * g.h * g.w;
        int h0, h1, w0, w1;
        window(g, oh, ow, &h0, &h1, &w0, &w1);
        float m = xp[h0 * g.w + w0];
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) {
                const float v = xp[ih * g.w + iw];
                if (v > m || v != v) m = v;  // a NaN is the maximum (PyTorch)
            }
        y[i] = m;
    }
}

// dx[p] = sum of dy over the windows whose first maximum (window order), or last NaN (as
// PyTorch), is p (`accumulate`, max_pool2d_bwd_into: dx[p] += that sum).
extern "C" __global__ void max_pool2d_bwd_f32(Geom g, int accumulate, const float* x, const float* dy,
                                              float* dx) {
    const int total = g.n * g.c * g.h * g.w;
    GRID_STRIDE(i, total) {
        const int iw = i % g.w, ih = (i / g.w) % g.h, plane = i / (g.w * g.h);
        const float* xp = x + (size_t)plane * g.h * g.w;
        const float* dyp = dy + (size_t)plane * g.ho * g.wo;
        const int me = ih * g.w + iw;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        covering(ih, g.k, g.stride, g.pad, g.ho, &oh_lo, &oh_hi);
        covering(iw, g.k, g.stride, g.pad, g.wo, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (int oh = oh_lo; oh < oh_hi; ++oh)
            for (int ow = ow_lo; ow < ow_hi; ++ow) {
                int h0, h1, w0, w1;
                window(g, oh, ow, &h0, &h1, &w0, &w1);
                int best = h0 * g.w + w0;
                for (int r = h0; r < h1; ++r)
                    for (int q = w0; q < w1; ++q) {
                        const float v = xp[r * g.w + q];
                        if (v > xp[best] || v != v) best = r * g.w + q;
                    }
                if (best == me) acc += dyp[oh * g.wo + ow];
            }
        dx[i] = accumulate ? dx[i] + acc : acc;
    }
}

// Average over the in-bounds part of the window (count_include_pad = False).
extern "C" __global__ void avg_pool2d_fwd_f32(Geom g, const float* x, float* y) {
    const int total = g.n * g.c * g.ho * g.wo;
    GRID_STRIDE(i, total) {
        const int ow = i % g.wo, oh = (i / g.wo) % g.ho, plane = i / (g.wo * g.ho);
        const float* xp = x + (size_t)plane * g.h * g.w;
        int h0, h1, w0, w1;
        window(g, oh, ow, &h0, &h1, &w0, &w1);
        float s = 0.0f;
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) s += xp[ih * g.w + iw];
        y[i] = s / (float)((h1 - h0) * (w1 - w0));
    }
}

// `accumulate` (avg_pool2d_bwd_into): dx += the gradient instead of dx = it.
extern "C" __global__ void avg_pool2d_bwd_f32(Geom g, int accumulate, const float* dy, float* dx) {
    const int total = g.n * g.c * g.h * g.w;
    GRID_STRIDE(i, total) {
        const int iw = i % g.w, ih = (i / g.w) % g.h, plane = i / (g.w * g.h);
        const float* dyp = dy + (size_t)plane * g.ho * g.wo;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        covering(ih, g.k, g.stride, g.pad, g.ho, &oh_lo, &oh_hi);
        covering(iw, g.k, g.stride, g.pad, g.wo, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (int oh = oh_lo; oh < oh_hi; ++oh)
            for (int ow = ow_lo; ow < ow_hi; ++ow) {
                int h0, h1, w0, w1;
                window(g, oh, ow, &h0, &h1, &w0, &w1);
                acc += dyp[oh * g.wo + ow] / (float)((h1 - h0) * (w1 - w0));
            }
        dx[i] = accumulate ? dx[i] + acc : acc;
    }
}

// One block per (n, c) plane: y = mean of the plane.
extern "C" __global__ void global_avg_pool_fwd_f32(int plane_len, const float* x, float* y) {
    const float* xp = x + (size_t)blockIdx.x * plane_len;
    float acc = 0.0f;
    for (int i = threadIdx.x; i < plane_len; i += blockDim.x) acc += xp[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) y[blockIdx.x] = acc * (float)(1.0 / (double)plane_len);
}

extern "C" __global__ void global_avg_pool_bwd_f32(int total, int plane_len, const float* dy, float* dx) {
    const float inv = (float)(1.0 / (double)plane_len);
    GRID_STRIDE(i, total) dx[i] = dy[i / plane_len] * inv;
}
