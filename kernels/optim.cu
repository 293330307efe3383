// Fused optimizer updates, PyTorch semantics. CPU twin: sgd_step / adam_step in
// src/backend/cpu/mod.rs (same float arithmetic; bias corrections come from the host).
#include "common.cuh"

// SGD with momentum (dampening 0, no Nesterov) and L2 weight decay. `grad_scale`, when not
// null, multiplies the gradient first: the clip coefficient, read on the device.
extern "C" __global__ void sgd_step_f32(int n, float lr, float momentum, float wd, const float* grad_scale,
                                        float* param, const float* grad, float* buf) {
    const float gs = grad_scale ? grad_scale[0] : 1.0f;
    GRID_STRIDE(i, n) {
        const float d = gs * grad[i] + wd * param[i];
        const float b = momentum * buf[i] + d;
        buf[i] = b;
        param[i] -= lr * b;
    }
}

// Adam: step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), computed on the host.
extern "C" __global__ void adam_step_f32(int n, float beta1, float beta2, float wd, float eps, float step_size,
                                         float bc2_sqrt, float* param, const float* grad, float* m, float* v) {
    GRID_STRIDE(i, n) {
        const float g = grad[i] + wd * param[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

// ---- multi-tensor updates (sgd_step_many / adam_step_many) ----------------------------------
// The table of tensors is a kernel argument built on the host at each call: nothing is
// uploaded, so a captured graph holds it by value and replays it. At most *_MANY_TENSORS
// tensors per launch keep the arguments under the 4 KB limit every driver accepts. Block b
// updates chunk (b - block_start[t]) of MANY_CHUNK elements of tensor t, with the per-element
// arithmetic of sgd_step_f32 / adam_step_f32. Rust twins: SgdTable / AdamTable and the
// constants in src/backend/cuda/optim.rs (same field order).
#define MANY_CHUNK 2048
#define SGD_MANY_TENSORS 120
#define ADAM_MANY_TENSORS 96

struct SgdTable {
    float* param[SGD_MANY_TENSORS];
    const float* grad[SGD_MANY_TENSORS];
    float* buf[SGD_MANY_TENSORS];
    int len[SGD_MANY_TENSORS];
    int block_start[SGD_MANY_TENSORS + 1];
    int count;
};

struct AdamTable {
    float* param[ADAM_MANY_TENSORS];
    const float* grad[ADAM_MANY_TENSORS];
    float* m[ADAM_MANY_TENSORS];
    float* v[ADAM_MANY_TENSORS];
    int len[ADAM_MANY_TENSORS];
    int block_start[ADAM_MANY_TENSORS + 1];
    int count;
};

// __grid_constant__: the table is read in place from the argument space, never copied to a
// per-thread stack.
extern "C" __global__ void sgd_step_many_f32(const __grid_constant__ SgdTable table, float lr, float momentum,
                                             float wd, const float* grad_scale) {
    const int t = table_tensor(table.block_start, table.count, blockIdx.x);
    const int start = (blockIdx.x - table.block_start[t]) * MANY_CHUNK;
    const int end = min(table.len[t], start + MANY_CHUNK);
    float* param = table.param[t];
    const float* grad = table.grad[t];
    float* buf = table.buf[t];
    const float gs = grad_scale ? grad_scale[0] : 1.0f;
    for (int i = start + threadIdx.x; i < end; i += blockDim.x) {
        const float d = gs * grad[i] + wd * param[i];
        const float b = momentum * buf[i] + d;
        buf[i] = b;
        param[i] -= lr * b;
    }
}

extern "C" __global__ void adam_step_many_f32(const __grid_constant__ AdamTable table, float beta1, float beta2,
                                              float wd, float eps, float step_size, float bc2_sqrt) {
    const int t = table_tensor(table.block_start, table.count, blockIdx.x);
    const int start = (blockIdx.x - table.block_start[t]) * MANY_CHUNK;
    const int end = min(table.len[t], start + MANY_CHUNK);
    float* param = table.param[t];
    const float* grad = table.grad[t];
    float* m = table.m[t];
    float* v = table.v[t];
    for (int i = start + threadIdx.x; i < end; i += blockDim.x) {
        const float g = grad[i] + wd * param[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}
