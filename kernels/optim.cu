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
