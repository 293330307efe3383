// The simulator self-check's harness, shared by its units (kernels/sim/selfcheck*.cpp; selfcheck.cpp
// says what the self-check proves and runs the groups): the CHECK counters, guarded device
// buffers, the launch helper, host models of the device's reduction tree, each unit's check
// groups, and the kernels one unit launches from another. Like every unit, it is compiled with
// cuda_sim.h force-included (selfcheck.sh).
#ifndef NASRS_SIM_SELFCHECK_H
#define NASRS_SIM_SELFCHECK_H

#include "common.cuh"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

// ---- harness ----------------------------------------------------------------------------------

// Checks run and failed, over every unit and OS thread (defined in selfcheck.cpp).
extern std::atomic<int> g_failures, g_checks;
#define CHECK(cond, ...)                                          \
    do {                                                          \
        ++g_checks;                                               \
        if (!(cond)) {                                            \
            ++g_failures;                                         \
            printf("  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                  \
            printf("\n");                                         \
        }                                                         \
    } while (0)

inline bool contains(const char* s, const char* part) { return strstr(s, part) != nullptr; }

// A device buffer: guarded, NaN-filled, freed at scope end.
template <typename T>
struct Dev {
    T* p;
    size_t n;
    explicit Dev(size_t count) : p(static_cast<T*>(nasrs_sim_alloc(count * sizeof(T)))), n(count) {
        if (!p) {
            printf("nasrs_sim_alloc(%zu) failed\n", count * sizeof(T));
            exit(2);
        }
    }
    ~Dev() { nasrs_sim_free(p); }
    Dev(const Dev&) = delete;
    T& operator[](size_t i) { return p[i]; }
    void fill(const std::vector<T>& v) { memcpy(p, v.data(), v.size() * sizeof(T)); }
};

template <typename F>
int launch(const char* name, dim3 grid, dim3 block, unsigned shm, F&& f) {
    return nasrs_sim_launch(name, grid, block, shm, f);
}

inline bool same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }
inline bool same_bits(double a, double b) { return memcmp(&a, &b, 8) == 0; }

// block_sum's tree: per warp, v += shfl_down(v, o) for o = 16..1 (a lane past the warp's end
// reads itself), then warp 0 does the same over the warp sums.
template <typename T>
T model_warp_tree(T a[32]) {
    for (int o = 16; o > 0; o >>= 1) {
        T b[32];
        for (int l = 0; l < 32; ++l) b[l] = a[l];
        for (int l = 0; l < 32; ++l) a[l] = b[l] + (l + o < 32 ? b[l + o] : b[l]);
    }
    return a[0];
}
template <typename T>
T model_block_sum(const std::vector<T>& v) {
    const size_t nw = (v.size() + 31) / 32;
    T sums[32];
    for (size_t w = 0; w < nw; ++w) {
        T a[32];
        for (int l = 0; l < 32; ++l) a[l] = v[w * 32 + l];
        sums[w] = model_warp_tree(a);
    }
    T a[32];
    for (size_t l = 0; l < 32; ++l) a[l] = l < nw ? sums[l] : T(0);
    return model_warp_tree(a);
}

inline std::vector<float> random_floats(size_t n, unsigned seed, float lo = -2.0f, float hi = 2.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// ---- the check groups, by unit (selfcheck.cpp's main runs them) --------------------------------

// selfcheck_faults.cpp: faults outside a launch, shared memory's guards, every other failure a
// launch reports, launches on several OS threads.
void test_fault_outside_run_chains();
void test_dynamic_shared();
void test_more_errors();
void test_parallel_threads();

// selfcheck_ops.cpp: the real kernels against host loops, and their timings.
void test_add();
void test_dot_and_finish();
void test_mixed_op();
void test_batch_norm();
void test_dwconv();
void test_dwconv_bwd_weight();
void test_bf16();
void timings();

// selfcheck_sync.cpp: barriers, shuffles, votes, atomics, the schedule's order.
void test_shared_and_barriers();
void test_shuffles();
void test_votes();
void test_atomics_and_determinism();
void test_schedule_order();

// selfcheck_proofs.cpp: the cases the simulator exists for, (a) to (f).
void proof_a_missing_sync();
void proof_b_oob_write();
void proof_c_fresh_nan();
void proof_d_shuffle_after_exit();
void proof_e_deadlock();
void proof_f_recovery();

// ---- kernels launched from another unit than their own ---------------------------------------

// kernels/elementwise.cu and kernels/conv.cu, compiled in selfcheck_ops.cpp (which sees these
// declarations next to the definitions, so a signature that drifts does not compile).
extern "C" void add_f32(int n, const float* a, const float* b, float* y);
extern "C" void from_bf16_f32(int n, const __nv_bfloat16* x, float* y);
extern "C" void dot_f32(int n, const float* a, const float* b, double* partials);
extern "C" void dwconv2d_bwd_weight_f32(Geom g, int relu, const float* x, const float* dy, float* dw);
// selfcheck_ops.cpp
__global__ void noop();
// selfcheck_proofs.cpp
__global__ void oob_write(int n, float* y);

#endif
