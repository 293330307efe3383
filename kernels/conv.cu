// Convolution kernels. CPU twin: src/backend/cpu/conv.rs.
// - Depthwise (groups == in == out channels): `dwconv2d_fwd_f32` tiles the output plane and
//   stages the input tile plus halo in shared memory (every input value is read by up to
//   k*k outputs); `dwconv2d_bwd_data_f32` gathers per input pixel (no atomics, so it is
//   deterministic); `dwconv2d_bwd_weight_f32` gives one block per (channel, tap).
// - Everything else goes through cuBLAS on the Rust side; `im2col_f32` / `col2im_f32` lay
//   the windows out as GEMM columns and fold them back.
// `relu` (Conv2dSpec::relu_input, a ReLU fused into the conv): every kernel that reads x
// reads relu(x) (`pre`), and the data-gradient kernels write 0 where x <= 0, so no ReLU
// output is ever stored. A NaN x stays NaN forward and passes its gradient backward
// (PyTorch's ReLU), hence `x <= 0` tests, never `!(x > 0)` or fmaxf(x, 0).
#include "common.cuh"

// The fused ReLU as an input is read (relu_fwd_f32's rule: negatives give 0, NaN stays).
__device__ __forceinline__ float pre(float v, int relu) { return (relu && v <= 0.0f) ? 0.0f : v; }

// Output tile per block of the tiled depthwise forward (block is TILE x TILE threads).
#define TILE 16

// grid (ceil(wo/TILE), ceil(ho/TILE), n*c); dynamic shared memory: the input tile
// (in_h * in_w floats, in_x = (TILE-1)*stride + (k-1)*dil + 1) then k*k weights.
extern "C" __global__ void dwconv2d_fwd_f32(Geom g, int relu, const float* x, const float* w, float* y) {
    DYNAMIC_SHARED(float, smem);
    const int in_h = (TILE - 1) * g.stride + (g.k - 1) * g.dil + 1;
    const int in_w = in_h;
    float* tile = smem;
    float* wk = smem + in_h * in_w;
    const int plane = blockIdx.z;  // n * c + channel
    const int ch = plane % g.c;
    const int oh0 = blockIdx.y * TILE, ow0 = blockIdx.x * TILE;
    const int ih0 = oh0 * g.stride - g.pad, iw0 = ow0 * g.stride - g.pad;
    const float* xp = x + (size_t)plane * g.h * g.w;
    const int tid = threadIdx.y * TILE + threadIdx.x;
    for (int t = tid; t < in_h * in_w; t += TILE * TILE) {
        const int r = t / in_w, q = t % in_w;
        const int ih = ih0 + r, iw = iw0 + q;
        tile[t] = (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) ? pre(xp[ih * g.w + iw], relu) : 0.0f;
    }
    for (int t = tid; t < g.k * g.k; t += TILE * TILE) wk[t] = w[ch * g.k * g.k + t];
    __syncthreads();
    const int oh = oh0 + threadIdx.y, ow = ow0 + threadIdx.x;
    if (oh >= g.ho || ow >= g.wo) return;
    const int r0 = threadIdx.y * g.stride, q0 = threadIdx.x * g.stride;
    float acc = 0.0f;
    // Tap order kh, kw as the CPU twin; padding contributes exact zeros.
    for (int kh = 0; kh < g.k; ++kh) {
        const float* row = tile + (r0 + kh * g.dil) * in_w + q0;
        for (int kw = 0; kw < g.k; ++kw) acc += wk[kh * g.k + kw] * row[kw * g.dil];
    }
    y[(size_t)plane * g.ho * g.wo + oh * g.wo + ow] = acc;
}

// One thread per input element: dx = sum over taps whose output position exists; with the
// fused ReLU, 0 where x <= 0 (the sum is skipped there; a NaN x keeps it). `x` is read only
// when `relu`.
// `accumulate` (conv2d_bwd_data_into): dx += that sum instead, the mask on the sum only.
extern "C" __global__ void dwconv2d_bwd_data_f32(Geom g, int relu, int accumulate, const float* x,
                                                 const float* dy, const float* w, float* dx) {
    const int total = g.n * g.c * g.h * g.w;
    GRID_STRIDE(i, total) {
        if (relu && x[i] <= 0.0f) {
            if (!accumulate) dx[i] = 0.0f;
            continue;
        }
        const int iw = i % g.w;
        const int ih = (i / g.w) % g.h;
        const int plane = i / (g.w * g.h);
        const int ch = plane % g.c;
        const float* dyp = dy + (size_t)plane * g.ho * g.wo;
        const float* wc = w + ch * g.k * g.k;
        float acc = 0.0f;
        for (int kh = 0; kh < g.k; ++kh) {
            const int th = ih + g.pad - kh * g.dil;
            if (th < 0 || th % g.stride) continue;
            const int oh = th / g.stride;
            if (oh >= g.ho) continue;
            for (int kw = 0; kw < g.k; ++kw) {
                const int tw = iw + g.pad - kw * g.dil;
                if (tw < 0 || tw % g.stride) continue;
                const int ow = tw / g.stride;
                if (ow >= g.wo) continue;
                acc += wc[kh * g.k + kw] * dyp[oh * g.wo + ow];
            }
        }
        dx[i] = accumulate ? dx[i] + acc : acc;
    }
}

// grid (c, k*k): block (ch, tap) sums dy * x over every sample and output position.
extern "C" __global__ void dwconv2d_bwd_weight_f32(Geom g, int relu, const float* x, const float* dy, float* dw) {
    const int ch = blockIdx.x, tap = blockIdx.y;
    const int kh = tap / g.k, kw = tap % g.k;
    const int per = g.ho * g.wo;
    float acc = 0.0f;
    for (int t = threadIdx.x; t < g.n * per; t += blockDim.x) {
        const int s = t / per, o = t % per;
        const int oh = o / g.wo, ow = o % g.wo;
        const int ih = oh * g.stride - g.pad + kh * g.dil;
        const int iw = ow * g.stride - g.pad + kw * g.dil;
        if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
        const size_t plane = (size_t)s * g.c + ch;
        acc += dy[plane * per + o] * pre(x[plane * g.h * g.w + ih * g.w + iw], relu);
    }
    const double total = block_sum((double)acc);
    if (threadIdx.x == 0) dw[ch * g.k * g.k + tap] = (float)total;
}

// col [n][c*k*k][ho*wo] from x [n][c][h][w]; `g.c` is the channel count of the whole input
// (all groups: the GEMM picks its group's rows). One thread per column entry; rectified as
// gathered with the fused ReLU (then it also serves 1x1 stride-1 convs).
extern "C" __global__ void im2col_f32(Geom g, int relu, const float* x, float* col) {
    const int per = g.ho * g.wo;
    const int kk = g.k * g.k;
    const int total = g.n * g.c * kk * per;
    GRID_STRIDE(i, total) {
        const int o = i % per;
        const int row = (i / per) % (g.c * kk);
        const int s = i / (per * g.c * kk);
        const int ch = row / kk, tap = row % kk;
        const int oh = o / g.wo, ow = o % g.wo;
        const int ih = oh * g.stride - g.pad + (tap / g.k) * g.dil;
        const int iw = ow * g.stride - g.pad + (tap % g.k) * g.dil;
        col[i] = (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w)
                     ? pre(x[(((size_t)s * g.c + ch) * g.h + ih) * g.w + iw], relu)
                     : 0.0f;
    }
}

// The adjoint of im2col, as a gather per input pixel (deterministic; taps in kh, kw order);
// with the fused ReLU, zero where x <= 0 as dx is written. `x` is read only when `relu`.
// `accumulate`: dx += the (masked) gather.
extern "C" __global__ void col2im_f32(Geom g, int relu, int accumulate, const float* x, const float* col,
                                      float* dx) {
    const int per = g.ho * g.wo;
    const int kk = g.k * g.k;
    const int total = g.n * g.c * g.h * g.w;
    GRID_STRIDE(i, total) {
        if (relu && x[i] <= 0.0f) {
            if (!accumulate) dx[i] = 0.0f;
            continue;
        }
        const int iw = i % g.w;
        const int ih = (i / g.w) % g.h;
        const int ch = (i / (g.w * g.h)) % g.c;
        const int s = i / (g.w * g.h * g.c);
        const float* cs = col + ((size_t)s * g.c + ch) * kk * per;
        float acc = 0.0f;
        for (int kh = 0; kh < g.k; ++kh) {
            const int th = ih + g.pad - kh * g.dil;
            if (th < 0 || th % g.stride) continue;
            const int oh = th / g.stride;
            if (oh >= g.ho) continue;
            for (int kw = 0; kw < g.k; ++kw) {
                const int tw = iw + g.pad - kw * g.dil;
                if (tw < 0 || tw % g.stride) continue;
                const int ow = tw / g.stride;
                if (ow >= g.wo) continue;
                acc += cs[(size_t)(kh * g.k + kw) * per + oh * g.wo + ow];
            }
        }
        dx[i] = accumulate ? dx[i] + acc : acc;
    }
}
