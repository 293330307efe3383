// Channel concat / split and FactorizedReduce's shift-crop. CPU twin: src/backend/cpu/mod.rs.
#include "common.cuh"

// Copies part [n][cp][plane] into y [n][ctotal][plane] at channel offset `coff`.
extern "C" __global__ void concat_channels_f32(int n, int cp, int ctotal, int coff, int plane, const float* part, float* y) {
    const int total = n * cp * plane;
    GRID_STRIDE(i, total) {
        const int s = i / (cp * plane), r = i % (cp * plane);
        y[((size_t)s * ctotal + coff) * plane + r] = part[i];
    }
}

// The reverse: part [n][cp][plane] = dy [n][ctotal][plane] channels coff..coff+cp.
extern "C" __global__ void split_channels_f32(int n, int cp, int ctotal, int coff, int plane, const float* dy, float* part) {
    const int total = n * cp * plane;
    GRID_STRIDE(i, total) {
        const int s = i / (cp * plane), r = i % (cp * plane);
        part[i] = dy[((size_t)s * ctotal + coff) * plane + r];
    }
}

// y [planes][h-1][w-1] = x [planes][h][w] from row 1, column 1.
extern "C" __global__ void shift_crop_fwd_f32(int planes, int h, int w, const float* x, float* y) {
    const int ho = h - 1, wo = w - 1;
    const int total = planes * ho * wo;
    GRID_STRIDE(i, total) {
        const int q = i % wo, r = (i / wo) % ho, p = i / (wo * ho);
        y[i] = x[((size_t)p * h + r + 1) * w + q + 1];
    }
}

// dx [planes][h][w]: dy in rows/columns >= 1, zero in row 0 and column 0.
extern "C" __global__ void shift_crop_bwd_f32(int planes, int h, int w, const float* dy, float* dx) {
    const int ho = h - 1, wo = w - 1;
    const int total = planes * h * w;
    GRID_STRIDE(i, total) {
        const int q = i % w, r = (i / w) % h, p = i / (w * h);
        dx[i] = (r > 0 && q > 0) ? dy[((size_t)p * ho + r - 1) * wo + q - 1] : 0.0f;
    }
}
