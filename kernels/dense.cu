// Linear-layer helpers around cuBLAS (bias broadcast and bias gradient) and the mean softmax
// cross-entropy. CPU twin: src/backend/cpu/dense.rs (same f64 log-sum-exp, same row order).
#include "common.cuh"

// y [n][out] = b broadcast over rows (the GEMM then adds x W^T with beta = 1).
extern "C" __global__ void linear_bias_fwd_f32(int n, int out, const float* b, float* y) {
    GRID_STRIDE(i, n * out) y[i] = b[i % out];
}

// db[j] = sum over rows of dy[r][j], rows in order (as the CPU twin).
extern "C" __global__ void linear_bias_bwd_f32(int n, int out, const float* dy, float* db) {
    GRID_STRIDE(j, out) {
        float s = 0.0f;
        for (int r = 0; r < n; ++r) s += dy[(size_t)r * out + j];
        db[j] = s;
    }
}

// One thread per row: probabilities and the row's loss (double) into row_loss[n].
extern "C" __global__ void softmax_cross_entropy_fwd_f32(int n, int k, const float* logits, const unsigned* labels,
                                                         float* probs, double* row_loss) {
    GRID_STRIDE(r, n) {
        const float* row = logits + (size_t)r * k;
        double m = -INFINITY;
        for (int j = 0; j < k; ++j) m = max_nan(m, (double)row[j]);  // a NaN logit: NaN loss
        double sum = 0.0;
        for (int j = 0; j < k; ++j) sum += exp((double)row[j] - m);
        for (int j = 0; j < k; ++j) probs[(size_t)r * k + j] = (float)(exp((double)row[j] - m) / sum);
        row_loss[r] = m + log(sum) - (double)row[labels[r]];
    }
}

// loss[0] = mean of row_loss, summed in row order by one thread (n is a batch size).
extern "C" __global__ void softmax_cross_entropy_finish_f32(int n, const double* row_loss, float* loss) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double total = 0.0;
    for (int r = 0; r < n; ++r) total += row_loss[r];
    loss[0] = (float)(total / n);
}

// out[0] = rows whose first maximum is at the label (the host rule, PyTorch's argmax: a NaN
// is the maximum, a later equal value does not win). One block; integer counts, so the sum
// is exact and deterministic.
extern "C" __global__ void count_correct_f32(int n, int k, const float* logits, const unsigned* labels, float* out) {
    int hits = 0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const float* row = logits + (size_t)r * k;
        int best = 0;
        for (int j = 1; j < k; ++j) {
            const float v = row[j], b = row[best];
            if (v > b || (v != v && b == b)) best = j;
        }
        hits += (unsigned)best == labels[r];
    }
    hits = block_sum(hits);
    if (threadIdx.x == 0) out[0] = (float)hits;
}

// dlogits = dloss * (probs - onehot) / n, with dloss read from the device.
extern "C" __global__ void softmax_cross_entropy_bwd_f32(int n, int k, const float* probs, const float* dloss,
                                                         const unsigned* labels, float* dlogits) {
    const float s = dloss[0] / (float)n;
    GRID_STRIDE(i, n * k) {
        const int r = i / k, j = i % k;
        float d = probs[i] * s;
        if ((unsigned)j == labels[r]) d -= s;
        dlogits[i] = d;
    }
}
