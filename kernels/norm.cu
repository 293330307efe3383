// Batch norm per channel over (N, H, W). CPU twin: src/backend/cpu/norm.rs.
// Statistics and the backward sums are accumulated in double (as the CPU twin), one block
// per channel with a fixed tree reduction (deterministic). The per-channel affine map
// y = x * a + b is computed in double and applied in float, as the CPU's `normalize`.
#include "common.cuh"

// Channel `ch` holds n planes of `plane` values at stride c * plane.
#define CHANNEL_LOOP(t, n, plane) for (int t = threadIdx.x; t < (n) * (plane); t += blockDim.x)
#define CHANNEL_AT(buf, t, ch, c, plane) (buf)[((size_t)((t) / (plane)) * (c) + (ch)) * (plane) + (t) % (plane)]

// grid (c): batch mean and biased variance (two passes), the saved (mean, invstd), the
// affine map ab[2c] = (a, b), and the running-stat update when `running_mean` is non-null.
extern "C" __global__ void batch_norm_train_fwd_f32(int n, int c, int plane, double eps, double momentum,
                                                    const float* x, const float* gamma, const float* beta,
                                                    float* running_mean, float* running_var,
                                                    float* saved_mean, float* saved_invstd, float* ab) {
    const int ch = blockIdx.x;
    const double count = (double)n * plane;
    double s = 0.0;
    CHANNEL_LOOP(t, n, plane) s += CHANNEL_AT(x, t, ch, c, plane);
    const double mean = block_sum(s) / count;
    double q = 0.0;
    CHANNEL_LOOP(t, n, plane) {
        const double d = CHANNEL_AT(x, t, ch, c, plane) - mean;
        q += d * d;
    }
    const double var = block_sum(q) / count;
    if (threadIdx.x != 0) return;
    const double invstd = 1.0 / sqrt(var + eps);
    if (running_mean) {
        const double unbias = count > 1.0 ? count / (count - 1.0) : 1.0;
        running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
        running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * var * unbias);
    }
    saved_mean[ch] = (float)mean;
    saved_invstd[ch] = (float)invstd;
    const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
    ab[ch] = (float)(invstd * g);
    ab[c + ch] = (float)(b - mean * invstd * g);
}

// The eval-mode affine map from the running statistics: ab[2c] = (a, b).
extern "C" __global__ void batch_norm_eval_fwd_f32(int c, double eps, const float* running_mean, const float* running_var,
                                                   const float* gamma, const float* beta, float* ab) {
    GRID_STRIDE(ch, c) {
        const double invstd = 1.0 / sqrt((double)running_var[ch] + eps);
        const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
        ab[ch] = (float)(invstd * g);
        ab[c + ch] = (float)(b - (double)running_mean[ch] * invstd * g);
    }
}

// y = x * a[ch] + b[ch] for every element (both modes).
extern "C" __global__ void batch_norm_apply_f32(int total, int c, int plane, const float* x, const float* ab, float* y) {
    GRID_STRIDE(i, total) {
        const int ch = (i / plane) % c;
        y[i] = x[i] * ab[ch] + ab[c + ch];
    }
}

// grid (c): sums[2c] = (sum dy, sum dy * xhat) in double; dgamma / dbeta when non-null.
extern "C" __global__ void batch_norm_bwd_f32(int n, int c, int plane, const float* x, const float* dy,
                                              const float* saved_mean, const float* saved_invstd,
                                              double* sums, float* dgamma, float* dbeta) {
    const int ch = blockIdx.x;
    const double m = saved_mean[ch], is = saved_invstd[ch];
    double sdy = 0.0, sdyx = 0.0;
    CHANNEL_LOOP(t, n, plane) {
        const double gy = CHANNEL_AT(dy, t, ch, c, plane);
        sdy += gy;
        sdyx += gy * ((CHANNEL_AT(x, t, ch, c, plane) - m) * is);
    }
    sdy = block_sum(sdy);
    sdyx = block_sum(sdyx);
    if (threadIdx.x != 0) return;
    sums[ch] = sdy;
    sums[c + ch] = sdyx;
    if (dgamma) {
        dgamma[ch] = (float)sdyx;
        dbeta[ch] = (float)sdy;
    }
}

// dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), in double per element.
extern "C" __global__ void batch_norm_bwd_data_f32(int total, int c, int plane, double count, const float* x,
                                                   const float* dy, const float* gamma, const float* saved_mean,
                                                   const float* saved_invstd, const double* sums, float* dx) {
    GRID_STRIDE(i, total) {
        const int ch = (i / plane) % c;
        const double m = saved_mean[ch], is = saved_invstd[ch];
        const double k = (gamma ? (double)gamma[ch] : 1.0) * is;
        const double xhat = ((double)x[i] - m) * is;
        dx[i] = (float)(k * ((double)dy[i] - sums[ch] / count - xhat * (sums[c + ch] / count)));
    }
}
