// The simulator's own proof (run by selfcheck.sh, no cargo): real kernels from kernels/*.cu,
// compiled exactly as the simulation build compiles them, checked against host loops, then the
// cases the simulator exists for: a missing barrier gives a wrong answer, a bad access, a bad
// warp sync or a deadlock fails the launch with a message (never a hang or a crash), and the
// thread is usable again afterwards. Ends with launch timings.
//
// Host references model the device's fixed reduction tree (block_sum) where the kernels use
// it, so every comparison is exact unless it says otherwise.
#include "elementwise.cu"
#include "mixed_op.cu"
#include "norm.cu"
#include "conv.cu"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

// ---- harness ----------------------------------------------------------------------------------

static std::atomic<int> g_failures{0}, g_checks{0};
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

static bool contains(const char* s, const char* part) { return strstr(s, part) != nullptr; }

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
static int launch(const char* name, dim3 grid, dim3 block, unsigned shm, F&& f) {
    return nasrs_sim_launch(name, grid, block, shm, f);
}

static bool same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }
static bool same_bits(double a, double b) { return memcmp(&a, &b, 8) == 0; }

// block_sum's tree: per warp, v += shfl_down(v, o) for o = 16..1 (a lane past the warp's end
// reads itself), then warp 0 does the same over the warp sums.
template <typename T>
static T model_warp_tree(T a[32]) {
    for (int o = 16; o > 0; o >>= 1) {
        T b[32];
        for (int l = 0; l < 32; ++l) b[l] = a[l];
        for (int l = 0; l < 32; ++l) a[l] = b[l] + (l + o < 32 ? b[l + o] : b[l]);
    }
    return a[0];
}
template <typename T>
static T model_block_sum(const std::vector<T>& v) {
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

static std::vector<float> random_floats(size_t n, unsigned seed, float lo = -2.0f, float hi = 2.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// ---- test kernels -----------------------------------------------------------------------------

// (a) block_sum with its second __syncthreads removed: warp 0 reads warp_sums before the other
// warps have written them.
template <typename T>
__device__ __forceinline__ T block_sum_missing_sync(T v) {
    __shared__ T warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_sums[warp] = v;
    const int nwarps = (blockDim.x + 31) >> 5;
    T s = 0;
    if (warp == 0) {
        s = lane < nwarps ? warp_sums[lane] : T(0);
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) warp_sums[0] = s;
    }
    __syncthreads();
    return warp_sums[0];
}
__global__ void sum_blocks(int broken, const double* x, double* out) {
    double v = x[blockIdx.x * blockDim.x + threadIdx.x];
    v = broken ? block_sum_missing_sync(v) : block_sum(v);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}

// The same pair on STATIC_SHARED (NaN-filled per block), the form common.cuh could adopt.
template <typename T>
__device__ __forceinline__ T block_sum_static(T v, bool broken) {
    STATIC_SHARED(T, warp_sums, 32);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_sums[warp] = v;
    if (!broken) __syncthreads();
    const int nwarps = (blockDim.x + 31) >> 5;
    T s = 0;
    if (warp == 0) {
        s = lane < nwarps ? warp_sums[lane] : T(0);
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) warp_sums[0] = s;
    }
    __syncthreads();
    return warp_sums[0];
}
__global__ void sum_blocks_static(int broken, const double* x, double* out) {
    double v = block_sum_static(x[blockIdx.x * blockDim.x + threadIdx.x], broken != 0);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}
__global__ void static_shared_oob(int index) {
    STATIC_SHARED(float, a, 64);
    STATIC_SHARED(int, b, 10);
    a[threadIdx.x] = 1.0f;
    if (threadIdx.x == 3) b[index] = 7;
}
__global__ void static_shared_huge() {
    STATIC_SHARED(float, big, 10000);
    big[threadIdx.x] = 0.0f;
}

// Shared memory across a 2-D block: write, barrier, read a neighbour's slot.
__global__ void shared_rotate(float* out) {
    __shared__ float tile[8][16];
    const unsigned tx = threadIdx.x, ty = threadIdx.y;
    const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    tile[ty][tx] = (float)(b * 1000 + ty * 16 + tx);
    __syncthreads();
    const float v = tile[(ty + 1) % 8][(tx + 3) % 16];
    __syncthreads();  // tile is rewritten below
    tile[ty][tx] = v * 2.0f;
    __syncthreads();
    out[b * 128 + ty * 16 + tx] = tile[ty][15 - tx];
}

// Threads that exit before a barrier count as arrived; __syncthreads_count/and/or.
__global__ void barrier_votes(int* out) {
    const unsigned t = threadIdx.x;
    if (t % 5 == 4) return;  // 1 in 5 leaves early
    const int c = __syncthreads_count(t % 3 == 0);
    const int a = __syncthreads_and(t < 1000);
    const int o = __syncthreads_or(t == 7);
    const int none = __syncthreads_or(0);
    out[t] = c * 1000 + a * 100 + o * 10 + none;
}

template <typename T>
__global__ void shfl_kernel(int op, int param, int width, const T* in, T* out) {
    const unsigned t = threadIdx.x;
    const T v = in[t];
    T r = v;
    switch (op) {
        case 0: r = __shfl_sync(0xffffffffu, v, param, width); break;
        case 1: r = __shfl_up_sync(0xffffffffu, v, (unsigned)param, width); break;
        case 2: r = __shfl_down_sync(0xffffffffu, v, (unsigned)param, width); break;
        case 3: r = __shfl_xor_sync(0xffffffffu, v, param, width); break;
    }
    out[t] = r;
}

// Two disjoint half-warp groups shuffle at once with their own masks and different ops, then the
// whole warp twice in a row (consecutive shuffles must not clobber each other).
__global__ void shfl_halves(const int* in, int* out) {
    const unsigned t = threadIdx.x, lane = t & 31;
    int v = in[t];
    if (lane < 16) v = __shfl_xor_sync(0x0000ffffu, v, 1, 16);
    else v = __shfl_down_sync(0xffff0000u, v, 2, 16);
    v = __shfl_sync(0xffffffffu, v, (int)(31 - lane)) * 10;
    v += __shfl_sync(0xffffffffu, v, 0);
    out[t] = v;
}

__global__ void votes(const int* in, unsigned* out) {
    const unsigned t = threadIdx.x, lane = t & 31;
    const int p = in[t] % 3 == 0;
    out[t * 6 + 0] = __ballot_sync(0xffffffffu, p);
    out[t * 6 + 1] = (unsigned)__any_sync(0xffffffffu, p);
    out[t * 6 + 2] = (unsigned)__all_sync(0xffffffffu, in[t] >= 0);
    out[t * 6 + 3] = (unsigned)__all_sync(0xffffffffu, p);
    out[t * 6 + 4] = (lane & 1) ? __ballot_sync(0xaaaaaaaau, p) : 0u;
    __syncwarp();
    out[t * 6 + 5] = 0;
    if (lane >= 20) return;
    __syncthreads();  // lanes 20..31 have exited by the time it releases
    out[t * 6 + 5] = __activemask();
}
// __activemask in divergent code: each branch sees its own group, as converged lanes would.
__global__ void active_groups(unsigned* out) {
    const unsigned lane = threadIdx.x & 31;
    if (lane % 3 == 0) out[threadIdx.x] = __activemask();
    else if (lane < 20) out[threadIdx.x] = __shfl_sync(0x000fffffu & ~0x49249249u, __activemask(), (int)lane);
    else __syncthreads();
    if (lane % 3 == 0 || lane < 20) __syncthreads();
}

__global__ void copy_f32(int n, const float* x, float* y) { GRID_STRIDE(i, n) y[i] = x[i]; }
__global__ void copy_f64(int n, const double* x, double* y) { GRID_STRIDE(i, n) y[i] = x[i]; }
__global__ void read_at(const float* x, long long offset, float* y) {
    if (threadIdx.x == 3) y[0] = x[offset];
}
__global__ void oob_write(int n, float* y) {
    GRID_STRIDE(i, n + 1) y[i] = 1.0f;  // one element past the end
}
__global__ void atomics(int* counter, unsigned* mx, float* fsum, int* cas_slot) {
    atomicAdd(counter, 1);
    atomicMax(mx, blockIdx.x * 1000u + threadIdx.x);
    atomicAdd(fsum, 0.5f);
    int old = *cas_slot, assumed;
    do {
        assumed = old;
        old = atomicCAS(cas_slot, assumed, assumed + 2);
    } while (old != assumed);
}
__global__ void racy(int* out) {
    __shared__ int slot;
    slot = (int)threadIdx.x;  // every thread writes, nobody waits: the last writer wins
    out[threadIdx.x] = slot;
}

// Dynamic shared memory: every block must see it NaN-filled first, whatever the last block left.
__global__ void dyn_shared_fresh(float* out) {
    DYNAMIC_SHARED(float, smem);
    if (threadIdx.x == 0) out[blockIdx.x] = smem[5];
    __syncthreads();
    smem[threadIdx.x] = 1.0f;
}
__global__ void dyn_shared_oob(int index) {
    DYNAMIC_SHARED(float, smem);
    if (threadIdx.x == 1) smem[index] = 2.0f;
}

// Proof cases for warp syncs.
__global__ void shfl_after_exit(int early_high, int* out) {
    const unsigned lane = threadIdx.x & 31;
    if (early_high ? lane >= 16 : lane < 16) return;
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)lane, 1);
}
__global__ void deadlock_kernel(int* out) {
    if (threadIdx.x == 0) out[0] = __shfl_sync(0xffffffffu, 1, 0);
    else __syncthreads();
}
__global__ void mismatched_masks(int* out) {
    const unsigned lane = threadIdx.x & 31;
    __syncwarp(lane == 5 ? 0x0000ffffu : 0xffffffffu);
    out[threadIdx.x] = 1;
}
__global__ void mixed_ops(int* out) {
    const unsigned lane = threadIdx.x & 31;
    out[threadIdx.x] = lane == 9 ? (int)__ballot_sync(0xffffffffu, 1) : __shfl_sync(0xffffffffu, 1, 0);
}
__global__ void full_mask_small_block(double* out) { out[threadIdx.x] = block_sum(1.0); }
__global__ void reads_outside_mask(int* out) {
    const unsigned lane = threadIdx.x & 31;
    if (lane < 16) out[lane] = __shfl_down_sync(0x0000ffffu, (int)lane, 8);
}

// More faults.
__device__ __noinline__ int deep(int d) {
    volatile char buf[1024];
    buf[0] = (char)d;
    buf[1023] = (char)d;
    if (d == 0) return buf[0];
    return deep(d - 1) + buf[1023];
}
__global__ void stack_hog(int depth, int* out) { out[threadIdx.x] = deep(depth); }
__global__ void divide(int d, int* out) { out[threadIdx.x] = 100 / d; }
__global__ void traps(int* out) {
    if (threadIdx.x == 5) __trap();
    out[threadIdx.x] = 1;
}
__global__ void ud2(int* out) {
    if (threadIdx.x == 2) __builtin_trap();
    out[threadIdx.x] = 1;
}
__global__ void noop() {}
__global__ void nested(int* out) {
    if (threadIdx.x == 0) out[0] = nasrs_sim_launch("inner", dim3(1), dim3(1), 0, [] {});
}

// The schedule itself: every thread logs (thread, step) as it starts each stretch of code
// between two sync points, and what each warp operation and barrier returned, over a fixed
// program mixing full- and half-warp shuffles, votes, __syncwarp, __syncthreads(_count),
// __activemask in divergent code, and threads leaving early; blocks of 3 full warps and of a
// partial one. Single-threaded, so a plain counter orders the log.
static unsigned* g_sched_log;
static unsigned g_sched_n, g_sched_cap;
static void sched_log(unsigned v) {
    if (g_sched_n < g_sched_cap) g_sched_log[g_sched_n] = v;
    ++g_sched_n;
}
__global__ void schedule_probe(int* shared_sink) {
    const unsigned t = threadIdx.x, lane = t & 31, warp = t >> 5, n = blockDim.x;
    const unsigned nw = (n + 31) / 32;
    const unsigned full = warp == nw - 1 && (n & 31) ? (1u << (n & 31)) - 1u : 0xffffffffu;
    unsigned live = full, v = t * 2654435761u + blockIdx.x;
    for (unsigned s = 0; s < 14; ++s) {
        sched_log(0x80000000u | t << 8 | s);
        const unsigned h = (t * 0x9e3779b9u) ^ (s * 0x85ebca6bu) ^ (v >> 7);
        switch (s % 7) {
            case 0:  // a full-warp shuffle while the warp is whole, else from its first live lane
                if (live == 0xffffffffu) v += __shfl_down_sync(live, v, 1 + s % 5);
                else v += __shfl_sync(live, v, __builtin_ctz(live));
                break;
            case 1: {  // two half-warp groups: a vote in the low half, a shuffle in the high one
                const unsigned lo = live & 0x0000ffffu, hi = live & 0xffff0000u;
                if (lane < 16) v ^= __ballot_sync(lo, h & 1);
                else v += __shfl_sync(hi, v, h & 1 ? (int)lane : __builtin_ctz(hi));  // per-lane sources
                break;
            }
            case 2: v += (unsigned)__syncthreads_count(h & 3); break;
            case 3:  // __activemask in divergent branches, then a barrier
                if (h % 3 == 0) v += __activemask();
                else if (h % 3 == 1) v ^= __activemask();
                __syncthreads();
                break;
            case 4: {  // some threads leave, before a barrier (the others see it in `live`)
                unsigned gone = 0;
                for (unsigned l = 0; l < 32; ++l)
                    if ((live >> l) & 1u && ((warp * 32 + l) * 7 + s) % 11 == 0) gone |= 1u << l;
                if ((gone >> lane) & 1u) return;
                live &= ~gone;
                __syncthreads();
                break;
            }
            case 5:
                shared_sink[t] = (int)v;
                __syncwarp(live);
                v += (unsigned)shared_sink[warp * 32 + (lane + 1) % 32 < n ? warp * 32 + (lane + 1) % 32 : t];
                break;
            default:
                v += (unsigned)__all_sync(live, h & 7);
                v += 2u * (unsigned)__any_sync(live, h & 1);
                break;
        }
        sched_log(v);
    }
    sched_log(0x40000000u | t);
}

// ---- tests --------------------------------------------------------------------------------------

static void test_add() {
    printf("add_f32 (grid-stride, several elements per thread)\n");
    const int n = 100003;
    const auto a = random_floats(n, 1), b = random_floats(n, 2);
    Dev<float> da(n), db(n), dy(n);
    da.fill(a);
    db.fill(b);
    int rc = launch("add_f32", dim3(40), dim3(BLOCK), 0, [&] { add_f32(n, da.p, db.p, dy.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += !same_bits(dy[i], a[i] + b[i]);
    CHECK(bad == 0, "%d elements differ", bad);
}

static void test_dot_and_finish() {
    printf("dot_f32 + reduce_finish_f64 (block_sum with its warp-0 shuffle stage)\n");
    const int n = 1000007, blocks = 1024, threads = BLOCK;
    const auto a = random_floats(n, 3), b = random_floats(n, 4);
    Dev<float> da(n), db(n);
    Dev<double> partials(blocks), out(1);
    da.fill(a);
    db.fill(b);
    int rc = launch("dot_f32", dim3(blocks), dim3(threads), 0, [&] { dot_f32(n, da.p, db.p, partials.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    std::vector<double> want(blocks);
    for (int blk = 0; blk < blocks; ++blk) {
        std::vector<double> acc(threads, 0.0);
        for (int t = 0; t < threads; ++t)
            for (long long i = (long long)blk * threads + t; i < n; i += (long long)threads * blocks)
                acc[t] += (double)a[i] * (double)b[i];
        want[blk] = model_block_sum(acc);
    }
    int bad = 0;
    for (int blk = 0; blk < blocks; ++blk) bad += !same_bits(partials[blk], want[blk]);
    CHECK(bad == 0, "%d partials differ from the modelled tree", bad);

    const int fin_threads = 1024;
    rc = launch("reduce_finish_f64", dim3(1), dim3(fin_threads), 0,
                [&] { reduce_finish_f64(blocks, partials.p, out.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    std::vector<double> acc(fin_threads, 0.0);
    for (int t = 0; t < fin_threads; ++t)
        for (int i = t; i < blocks; i += fin_threads) acc[t] += want[i];
    const double total = model_block_sum(acc);
    CHECK(same_bits(out[0], total), "finish %.17g, modelled %.17g", out[0], total);
    double naive = 0.0;
    for (int i = 0; i < n; ++i) naive += (double)a[i] * (double)b[i];
    CHECK(std::fabs(out[0] - naive) <= 1e-9 * std::fabs(naive) + 1e-9, "finish %.17g vs naive %.17g", out[0], naive);
}

static void test_mixed_op() {
    printf("mixed_op_fwd_f32 / mixed_op_bwd_f32 / mixed_op_bwd_finish_f32\n");
    const int len = 3001, k = 5, blocks = 12, threads = BLOCK;
    const auto alpha_h = random_floats(k, 5, -1.0f, 1.0f);
    const auto dy_h = random_floats(len, 6);
    Dev<float> alpha(k), y(len), dy(len);
    alpha.fill(alpha_h);
    dy.fill(dy_h);
    std::vector<std::vector<float>> xs(k);
    std::vector<Dev<float>*> dx(k), dxv(k);
    MixedOpPtrs p;
    memset(&p, 0, sizeof p);
    for (int j = 0; j < k; ++j) {
        if (j == 2) continue;  // absent input (`none`)
        xs[j] = random_floats(len, 10 + j);
        dxv[j] = new Dev<float>(len);
        dxv[j]->fill(xs[j]);
        p.x[j] = dxv[j]->p;
        if (j != 4) {
            dx[j] = new Dev<float>(len);
            for (int i = 0; i < len; ++i) (*dx[j])[i] = 0.25f * i;  // pending gradient for acc_mask
            p.dx[j] = dx[j]->p;
        }
    }
    int rc = launch("mixed_op_fwd_f32", dim3(blocks), dim3(threads), 0,
                    [&] { mixed_op_fwd_f32(len, k, p, alpha.p, y.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    double w64[MAX_K], m = -INFINITY, s = 0.0;
    for (int j = 0; j < k; ++j) m = fmax(m, (double)alpha_h[j]);
    for (int j = 0; j < k; ++j) {
        w64[j] = exp((double)alpha_h[j] - m);
        s += w64[j];
    }
    for (int j = 0; j < k; ++j) w64[j] /= s;
    int bad = 0;
    for (int i = 0; i < len; ++i) {
        float acc = 0.0f;
        for (int j = 0; j < k; ++j)
            if (p.x[j]) acc += (float)w64[j] * xs[j][i];
        bad += !same_bits(y[i], acc);
    }
    CHECK(bad == 0, "fwd: %d elements differ", bad);

    const unsigned acc_mask = 0x2;  // dx_1 += ..., the others dx_j = ...
    Dev<double> partials(blocks * MAX_K);
    rc = launch("mixed_op_bwd_f32", dim3(blocks), dim3(threads), 0,
                [&] { mixed_op_bwd_f32(len, k, p, acc_mask, alpha.p, dy.p, partials.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    bad = 0;
    for (int j = 0; j < k; ++j) {
        if (!p.dx[j]) continue;
        for (int i = 0; i < len; ++i) {
            const float d = (float)w64[j] * dy_h[i];
            const float want = ((acc_mask >> j) & 1u) ? 0.25f * i + d : d;
            bad += !same_bits((*dx[j])[i], want);
        }
    }
    CHECK(bad == 0, "bwd dx: %d elements differ", bad);
    std::vector<double> want_partials(blocks * MAX_K);
    bad = 0;
    for (int b = 0; b < blocks; ++b)
        for (int j = 0; j < k; ++j) {
            std::vector<double> acc(threads, 0.0);
            for (int t = 0; t < threads; ++t)
                for (int i = b * threads + t; i < len; i += threads * blocks)
                    if (p.x[j]) acc[t] += (double)dy_h[i] * (double)xs[j][i];
            want_partials[b * MAX_K + j] = model_block_sum(acc);
            bad += !same_bits(partials[b * MAX_K + j], want_partials[b * MAX_K + j]);
        }
    CHECK(bad == 0, "bwd partials: %d differ", bad);

    Dev<float> dalpha(k);
    rc = launch("mixed_op_bwd_finish_f32", dim3(1), dim3(MAX_K), 0,
                [&] { mixed_op_bwd_finish_f32(blocks, k, alpha.p, partials.p, dalpha.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    double dots[MAX_K], mean = 0.0;
    for (int j = 0; j < k; ++j) {
        dots[j] = 0.0;
        for (int b = 0; b < blocks; ++b) dots[j] += want_partials[b * MAX_K + j];
    }
    for (int i = 0; i < k; ++i) mean += w64[i] * dots[i];
    bad = 0;
    for (int j = 0; j < k; ++j) bad += !same_bits(dalpha[j], (float)(w64[j] * (dots[j] - mean)));
    CHECK(bad == 0, "finish dalpha: %d differ", bad);
    for (int j = 0; j < k; ++j) {
        delete dx[j];
        delete dxv[j];
    }
}

static void test_batch_norm() {
    printf("batch_norm_train_fwd_f32 (two block_sums per block, early return after them)\n");
    const int n = 4, c = 3, plane = 77, threads = BLOCK;
    const double eps = 1e-5, momentum = 0.1;
    const auto x_h = random_floats((size_t)n * c * plane, 20);
    Dev<float> x(n * c * plane), gamma(c), beta(c), rm(c), rv(c), sm(c), si(c), ab(2 * c);
    x.fill(x_h);
    const std::vector<float> g_h = {1.5f, -0.5f, 2.0f}, b_h = {0.1f, 0.2f, -0.3f}, rm_h = {0.f, 1.f, 2.f},
                             rv_h = {1.f, 2.f, 3.f};
    gamma.fill(g_h);
    beta.fill(b_h);
    rm.fill(rm_h);
    rv.fill(rv_h);
    int rc = launch("batch_norm_train_fwd_f32", dim3(c), dim3(threads), 0, [&] {
        batch_norm_train_fwd_f32(n, c, plane, eps, momentum, x.p, gamma.p, beta.p, rm.p, rv.p, sm.p, si.p, ab.p);
    });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int ch = 0; ch < c; ++ch) {
        const double count = (double)n * plane;
        auto at = [&](int t) { return (double)x_h[((size_t)(t / plane) * c + ch) * plane + t % plane]; };
        std::vector<double> s(threads, 0.0), q(threads, 0.0);
        for (int t = 0; t < threads; ++t)
            for (int u = t; u < n * plane; u += threads) s[t] += at(u);
        const double mean = model_block_sum(s) / count;
        for (int t = 0; t < threads; ++t)
            for (int u = t; u < n * plane; u += threads) q[t] += (at(u) - mean) * (at(u) - mean);
        const double var = model_block_sum(q) / count;
        const double invstd = 1.0 / sqrt(var + eps), unbias = count / (count - 1.0);
        bad += !same_bits(rm[ch], (float)((1.0 - momentum) * rm_h[ch] + momentum * mean));
        bad += !same_bits(rv[ch], (float)((1.0 - momentum) * rv_h[ch] + momentum * var * unbias));
        bad += !same_bits(sm[ch], (float)mean);
        bad += !same_bits(si[ch], (float)invstd);
        bad += !same_bits(ab[ch], (float)(invstd * g_h[ch]));
        bad += !same_bits(ab[c + ch], (float)(b_h[ch] - mean * invstd * g_h[ch]));
    }
    CHECK(bad == 0, "%d outputs differ", bad);
}

static void test_dwconv() {
    printf("dwconv2d_fwd_f32 (2-D blocks, DYNAMIC_SHARED tile + halo, early return after the barrier)\n");
    Geom g = {2, 3, 21, 19, 0, 0, 3, 2, 1, 2};
    g.ho = (g.h + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    g.wo = (g.w + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    const auto x_h = random_floats((size_t)g.n * g.c * g.h * g.w, 30);
    const auto w_h = random_floats((size_t)g.c * g.k * g.k, 31);
    Dev<float> x(x_h.size()), w(w_h.size()), y((size_t)g.n * g.c * g.ho * g.wo);
    x.fill(x_h);
    w.fill(w_h);
    const int in_h = (TILE - 1) * g.stride + (g.k - 1) * g.dil + 1;
    const unsigned shm = (unsigned)((in_h * in_h + g.k * g.k) * sizeof(float));
    for (int relu = 0; relu < 2; ++relu) {
        const dim3 grid((g.wo + TILE - 1) / TILE, (g.ho + TILE - 1) / TILE, g.n * g.c);
        int rc = launch("dwconv2d_fwd_f32", grid, dim3(TILE, TILE), shm,
                        [&] { dwconv2d_fwd_f32(g, relu, x.p, w.p, y.p); });
        CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
        int bad = 0;
        for (int pl = 0; pl < g.n * g.c; ++pl)
            for (int oh = 0; oh < g.ho; ++oh)
                for (int ow = 0; ow < g.wo; ++ow) {
                    float acc = 0.0f;
                    for (int kh = 0; kh < g.k; ++kh)
                        for (int kw = 0; kw < g.k; ++kw) {
                            const int ih = oh * g.stride - g.pad + kh * g.dil, iw = ow * g.stride - g.pad + kw * g.dil;
                            float v = 0.0f;
                            if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
                                v = x_h[((size_t)pl * g.h + ih) * g.w + iw];
                                if (relu && !(v > 0.0f)) v = 0.0f;
                            }
                            acc += w_h[(pl % g.c) * g.k * g.k + kh * g.k + kw] * v;
                        }
                    bad += !same_bits(y[((size_t)pl * g.ho + oh) * g.wo + ow], acc);
                }
        CHECK(bad == 0, "relu %d: %d outputs differ", relu, bad);
    }
}

// The host model of dwconv2d_bwd_weight_f32's block (ch, tap): thread t accumulates (in float,
// in its loop order) the products of its positions t, t + 256, ...; then block_sum in double.
static float model_dw_bwd_weight(const Geom& g, int relu, const std::vector<float>& x, const std::vector<float>& dy,
                                 int ch, int tap) {
    const int kh = tap / g.k, kw = tap % g.k, per = g.ho * g.wo, threads = BLOCK;
    std::vector<double> acc(threads, 0.0);
    for (int t = 0; t < threads; ++t) {
        float a = 0.0f;
        for (int u = t; u < g.n * per; u += threads) {
            const int s = u / per, o = u % per, oh = o / g.wo, ow = o % g.wo;
            const int ih = oh * g.stride - g.pad + kh * g.dil, iw = ow * g.stride - g.pad + kw * g.dil;
            if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
            const size_t plane = (size_t)s * g.c + ch;
            float v = x[plane * g.h * g.w + ih * g.w + iw];
            if (relu && !(v > 0.0f)) v = 0.0f;
            a += dy[plane * per + o] * v;
        }
        acc[t] = (double)a;
    }
    return (float)model_block_sum(acc);
}

static void test_dwconv_bwd_weight() {
    printf("dwconv2d_bwd_weight_f32 (grid (C, k*k) x 256: a short loop, then block_sum)\n");
    Geom g = {3, 4, 9, 11, 0, 0, 3, 1, 1, 2};
    g.ho = (g.h + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    g.wo = (g.w + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    const auto x_h = random_floats((size_t)g.n * g.c * g.h * g.w, 32);
    const auto dy_h = random_floats((size_t)g.n * g.c * g.ho * g.wo, 33);
    Dev<float> x(x_h.size()), dy(dy_h.size()), dw((size_t)g.c * g.k * g.k);
    x.fill(x_h);
    dy.fill(dy_h);
    for (int relu = 0; relu < 2; ++relu) {
        int rc = launch("dwconv2d_bwd_weight_f32", dim3(g.c, g.k * g.k), dim3(BLOCK), 0,
                        [&] { dwconv2d_bwd_weight_f32(g, relu, x.p, dy.p, dw.p); });
        CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
        int bad = 0;
        for (int ch = 0; ch < g.c; ++ch)
            for (int tap = 0; tap < g.k * g.k; ++tap)
                bad += !same_bits(dw[ch * g.k * g.k + tap], model_dw_bwd_weight(g, relu, x_h, dy_h, ch, tap));
        CHECK(bad == 0, "relu %d: %d of %d weights differ from the modelled tree", relu, bad, g.c * g.k * g.k);
    }
}

static void test_shared_and_barriers() {
    printf("__syncthreads + __shared__ in 2-D blocks over a 3-D grid; exited threads at barriers; "
           "__syncthreads_count/and/or\n");
    const dim3 grid(3, 2, 2);
    const int blocks = 12;
    Dev<float> out(blocks * 128);
    int rc = launch("shared_rotate", grid, dim3(16, 8), 0, [&] { shared_rotate(out.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int b = 0; b < blocks; ++b)
        for (int ty = 0; ty < 8; ++ty)
            for (int tx = 0; tx < 16; ++tx) {
                const int sx = 15 - tx;  // the slot read back
                const float v = (float)(b * 1000 + ((ty + 1) % 8) * 16 + (sx + 3) % 16) * 2.0f;
                bad += out[b * 128 + ty * 16 + tx] != v;
            }
    CHECK(bad == 0, "%d elements differ", bad);

    const int threads = 200;  // not a multiple of 32: a partial last warp
    Dev<int> votes_out(threads);
    for (int t = 0; t < threads; ++t) votes_out[t] = -1;
    rc = launch("barrier_votes", dim3(1), dim3(threads), 0, [&] { barrier_votes(votes_out.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int count = 0;
    for (int t = 0; t < threads; ++t) count += (t % 5 != 4) && (t % 3 == 0);
    bad = 0;
    for (int t = 0; t < threads; ++t) {
        const int want = t % 5 == 4 ? -1 : count * 1000 + 100 + 10 + 0;
        bad += votes_out[t] != want;
    }
    CHECK(bad == 0, "%d threads saw wrong barrier results (count %d)", bad, count);
}

template <typename T>
static void shuffle_case(const char* tname, int op, int param, int width, int& bad) {
    const int threads = 64;
    Dev<T> in(threads), out(threads);
    for (int t = 0; t < threads; ++t) in[t] = (T)(t * 3 + 1);
    int rc = launch("shfl_kernel", dim3(1), dim3(threads), 0, [&] { shfl_kernel<T>(op, param, width, in.p, out.p); });
    if (rc != 0) {
        ++bad;
        printf("  %s op %d: rc %d: %s\n", tname, op, rc, nasrs_sim_last_error());
        return;
    }
    for (int t = 0; t < threads; ++t) {
        const int lane = t & 31, base = t & ~31, seg = lane / width * width;
        int src = lane;  // the CUDA programming guide's rules, written independently of PTX's
        if (op == 0) src = seg + ((param % width) + width) % width;
        if (op == 1 && lane % width >= param) src = lane - param;
        if (op == 2 && lane % width + param < width) src = lane + param;
        if (op == 3) src = (lane ^ param) < seg + width ? (lane ^ param) : lane;
        if (out[t] != in[base + src]) {
            if (bad < 5)
                printf("  %s op %d param %d width %d: thread %d got %g want %g\n", tname, op, param, width, t,
                       (double)out[t], (double)in[base + src]);
            ++bad;
        }
    }
}

static void test_shuffles() {
    printf("__shfl_sync / _up / _down / _xor, widths 1..32, int float double long long\n");
    int bad = 0, cases = 0;
    const int params[4][6] = {{0, 5, 31, 37, -3, 17}, {0, 1, 3, 16, 31, 7}, {0, 1, 3, 16, 31, 7}, {0, 1, 5, 16, 31, 12}};
    for (int op = 0; op < 4; ++op)
        for (int width = 1; width <= 32; width *= 2)
            for (int pi = 0; pi < 6; ++pi) {
                const int param = params[op][pi];
                shuffle_case<int>("int", op, param, width, bad);
                shuffle_case<float>("float", op, param, width, bad);
                shuffle_case<double>("double", op, param, width, bad);
                shuffle_case<long long>("long long", op, param, width, bad);
                cases += 4;
            }
    CHECK(bad == 0, "%d mismatches over %d cases", bad, cases);

    const int threads = 64;
    Dev<int> in(threads), out(threads);
    for (int t = 0; t < threads; ++t) in[t] = t + 100;
    int rc = launch("shfl_halves", dim3(1), dim3(threads), 0, [&] { shfl_halves(in.p, out.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    bad = 0;
    for (int t = 0; t < threads; ++t) {
        auto stage1 = [&](int u) {
            const int l = u & 31, b = u & ~31;
            if (l < 16) return in[b + (l ^ 1)];
            return (l % 16) + 2 < 16 ? in[b + l + 2] : in[u];
        };
        const int l = t & 31, b = t & ~31;
        const int v2 = stage1(b + 31 - l) * 10;
        const int v0 = stage1(b + 31) * 10;  // lane 0's value after the second step
        bad += out[t] != v2 + v0;
    }
    CHECK(bad == 0, "%d lanes differ", bad);
}

static void test_votes() {
    printf("__ballot_sync / __any_sync / __all_sync / partial-mask ballot / __syncwarp / __activemask\n");
    const int threads = 64;
    Dev<int> in(threads);
    Dev<unsigned> out(threads * 6);
    for (int t = 0; t < threads; ++t) in[t] = (t * 7) % 11;
    int rc = launch("votes", dim3(1), dim3(threads), 0, [&] { votes(in.p, out.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int t = 0; t < threads; ++t) {
        const int base = t & ~31, lane = t & 31;
        unsigned ballot = 0, odd = 0;
        for (int l = 0; l < 32; ++l) {
            const bool p = in[base + l] % 3 == 0;
            if (p) ballot |= 1u << l;
            if (p && (l & 1)) odd |= 1u << l;
        }
        bad += out[t * 6 + 0] != ballot;
        bad += out[t * 6 + 1] != (ballot != 0);
        bad += out[t * 6 + 2] != 1u;
        bad += out[t * 6 + 3] != (ballot == 0xffffffffu);
        bad += out[t * 6 + 4] != ((lane & 1) ? odd : 0u);
        bad += out[t * 6 + 5] != (lane < 20 ? 0x000fffffu : 0u);
    }
    CHECK(bad == 0, "%d vote results differ", bad);
    Dev<unsigned> groups(threads);
    rc = launch("active_groups", dim3(1), dim3(threads), 0, [&] { active_groups(groups.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    bad = 0;
    for (int t = 0; t < threads; ++t) {
        const int lane = t & 31;
        const unsigned want = lane % 3 == 0 ? 0x49249249u : lane < 20 ? (0x000fffffu & ~0x49249249u) : 0u;
        if (want) bad += groups[t] != want;
    }
    CHECK(bad == 0, "%d __activemask groups differ", bad);
}

static uint16_t ref_bf16(float f) {
    // Independent of the bit trick: pick the nearer of the two bf16 neighbours in double, ties to
    // the even one; NaN gives the device's canonical 0x7FFF.
    if (std::isnan(f)) return 0x7fff;
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint16_t lo = (uint16_t)(u >> 16);
    if ((u & 0xffff) == 0) return lo;
    const uint16_t hi = (uint16_t)(lo + 1);  // next magnitude up (same sign); 0x7F80 is inf
    auto val = [](uint16_t b) {
        const uint32_t v = (uint32_t)b << 16;
        float r;
        memcpy(&r, &v, 4);
        return (double)r;
    };
    double vhi = val(hi);
    if ((hi & 0x7fff) == 0x7f80) vhi = std::copysign(std::ldexp(1.0, 128), (double)f);  // rounding limit
    const double dlo = std::fabs((double)f - val(lo)), dhi = std::fabs((double)f - vhi);
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo & 1) ? hi : lo;
}

static void test_bf16() {
    printf("to_bf16_f32 / from_bf16_f32: ties to even, NaN -> 0x7FFF, inf, overflow, subnormals\n");
    const uint32_t specials[] = {
        0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0xbf808000, 0x3f80ffff, 0x7fc00000, 0xffc00001,
        0x7f800001, 0xff812345, 0x7f800000, 0xff800000, 0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0x00000000,
        0x80000000, 0x00012345, 0x00018000, 0x00028000, 0x807fffff, 0x00800000, 0x4b800001, 0x3e99999a};
    std::vector<float> xs;
    for (uint32_t s : specials) {
        float f;
        memcpy(&f, &s, 4);
        xs.push_back(f);
    }
    std::mt19937 rng(40);
    for (int i = 0; i < 20000; ++i) {
        const uint32_t u = rng();
        float f;
        memcpy(&f, &u, 4);
        xs.push_back(f);
    }
    const int n = (int)xs.size();
    Dev<float> x(n), back(n);
    Dev<__nv_bfloat16> h(n);
    x.fill(xs);
    int rc = launch("to_bf16_f32", dim3(8), dim3(BLOCK), 0, [&] { to_bf16_f32(n, x.p, h.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    rc = launch("from_bf16_f32", dim3(8), dim3(BLOCK), 0, [&] { from_bf16_f32(n, h.p, back.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int i = 0; i < n; ++i) {
        uint16_t got;
        memcpy(&got, &h[i], 2);
        if (got != ref_bf16(xs[i])) {
            if (bad < 5) printf("  %08x -> %04x, want %04x\n", (unsigned)0, got, ref_bf16(xs[i]));
            ++bad;
        }
        const uint32_t wide = (uint32_t)got << 16;
        float f;
        memcpy(&f, &wide, 4);
        bad += !same_bits(back[i], f);
    }
    CHECK(bad == 0, "%d conversions differ", bad);
    uint16_t b0, b1, b2, b6, b7, b10, b12;
    memcpy(&b0, &h[0], 2);
    memcpy(&b1, &h[1], 2);
    memcpy(&b2, &h[2], 2);
    memcpy(&b6, &h[6], 2);
    memcpy(&b7, &h[7], 2);
    memcpy(&b10, &h[10], 2);
    memcpy(&b12, &h[12], 2);
    CHECK(b0 == 0x3f80 && b1 == 0x3f80 && b2 == 0x3f82, "ties: %04x %04x %04x", b0, b1, b2);
    CHECK(b6 == 0x7fff && b7 == 0x7fff, "NaN: %04x %04x", b6, b7);
    CHECK(b10 == 0x7f80 && b12 == 0x7f80, "inf / overflow: %04x %04x", b10, b12);
}

// The order the simulator's scheduler runs threads in is part of its contract (results of racy
// kernels, which thread an error names): this pins it to the one recorded from the scheduler it
// was first written with (a linear scan for the next runnable thread). A change that means to
// alter the order updates the digest; one that does not must keep it.
#define SCHED_TOTAL 21340u
#define SCHED_DIGEST 0x4331bcba62c48aadull
static void test_schedule_order() {
    printf("schedule: the fixed order threads run in (shuffles, votes, half-warp groups, barriers, "
           "__activemask, early exits)\n");
    std::vector<unsigned> log(1 << 16);
    g_sched_log = log.data();
    g_sched_cap = (unsigned)log.size();
    Dev<int> sink(1024);
    uint64_t digest = 1469598103934665603ull;  // FNV-1a over every launch's log
    unsigned total = 0;
    for (unsigned threads : {96u, 50u, 256u}) {
        g_sched_n = 0;
        int rc = launch("schedule_probe", dim3(2), dim3(threads), 0, [&] { schedule_probe(sink.p); });
        CHECK(rc == 0, "%u threads: rc %d: %s", threads, rc, nasrs_sim_last_error());
        CHECK(g_sched_n <= g_sched_cap, "log overflow");
        for (unsigned i = 0; i < g_sched_n && i < g_sched_cap; ++i)
            for (int b = 0; b < 4; ++b) digest = (digest ^ ((log[i] >> (8 * b)) & 0xffu)) * 1099511628211ull;
        total += g_sched_n;
    }
    printf("    -> %u entries, digest %016llx\n", total, (unsigned long long)digest);
    CHECK(total == SCHED_TOTAL && digest == SCHED_DIGEST, "the schedule changed: %u entries, digest %016llx",
          total, (unsigned long long)digest);
}

static void test_atomics_and_determinism() {
    printf("atomics; a racy kernel gives the same answer every run\n");
    Dev<int> counter(1), cas(1);
    Dev<unsigned> mx(1);
    Dev<float> fsum(1);
    counter[0] = 0;
    cas[0] = 0;
    mx[0] = 0;
    fsum[0] = 0.0f;
    int rc = launch("atomics", dim3(7), dim3(96), 0, [&] { atomics(counter.p, mx.p, fsum.p, cas.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    CHECK(counter[0] == 7 * 96 && cas[0] == 2 * 7 * 96 && mx[0] == 6095 && fsum[0] == 336.0f,
          "counter %d cas %d max %u fsum %g", counter[0], cas[0], mx[0], fsum[0]);
    Dev<int> r1(128), r2(128);
    launch("racy", dim3(1), dim3(128), 0, [&] { racy(r1.p); });
    launch("racy", dim3(1), dim3(128), 0, [&] { racy(r2.p); });
    CHECK(memcmp(r1.p, r2.p, 128 * sizeof(int)) == 0 && r1[0] == 0 && r1[127] == 127,
          "racy results differ between runs (r1[0]=%d r1[127]=%d)", r1[0], r1[127]);
}

static void test_dynamic_shared() {
    printf("dynamic shared memory and STATIC_SHARED: NaN-filled at every block start; their ends fault\n");
    const int blocks = 5;
    Dev<float> out(blocks);
    int rc = launch("dyn_shared_fresh", dim3(blocks), dim3(64), 64 * sizeof(float), [&] { dyn_shared_fresh(out.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int nans = 0;
    for (int b = 0; b < blocks; ++b) nans += std::isnan(out[b]);
    CHECK(nans == blocks, "%d of %d blocks saw NaN", nans, blocks);
    rc = launch("dyn_shared_oob", dim3(2), dim3(32), 1024, [&] { dyn_shared_oob(256); });
    const char* e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_FAULT && contains(e, "out-of-bounds write in kernel dyn_shared_oob") &&
              contains(e, "0 bytes past the end of the 1024-byte dynamic shared memory") &&
              contains(e, "block (0,0,0) thread (1,0,0)"),
          "rc %d: %s", rc, e);
    printf("    -> %s\n", e);
    rc = launch("dyn_shared_oob", dim3(1), dim3(32), 0, [&] { dyn_shared_oob(0); });
    e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_FAULT && contains(e, "the 0-byte dynamic shared memory"), "rc %d: %s", rc, e);
    rc = launch("static_shared_oob", dim3(2), dim3(64), 0, [&] { static_shared_oob(9); });
    CHECK(rc == 0, "in bounds: %s", nasrs_sim_last_error());
    rc = launch("static_shared_oob", dim3(2), dim3(64), 0, [&] { static_shared_oob(10); });
    e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_FAULT &&
              contains(e, "out-of-bounds write in kernel static_shared_oob, block (0,0,0) thread (3,0,0)") &&
              contains(e, "0 bytes past the end of a 40-byte STATIC_SHARED array"),
          "rc %d: %s", rc, e);
    printf("    -> %s\n", e);
    rc = launch("static_shared_huge", dim3(1), dim3(32), 10 * 1024, [&] { static_shared_huge(); });
    e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_LAUNCH && contains(e, "static plus dynamic shared memory exceeds 48 KiB"), "rc %d: %s", rc, e);
    rc = launch("static_shared_huge", dim3(1), dim3(32), 0, [&] { static_shared_huge(); });
    CHECK(rc == 0, "40000 bytes alone fit: %s", nasrs_sim_last_error());
}

// ---- proof cases ------------------------------------------------------------------------------

static void proof_a_missing_sync() {
    printf("(a) block_sum without its second __syncthreads gives a wrong sum\n");
    const int blocks = 4, threads = 256;
    Dev<double> x(blocks * threads), out(blocks);
    for (int i = 0; i < blocks * threads; ++i) x[i] = 1.0 + i / threads;  // block b sums to 256 (b + 1)
    int rc = launch("sum_blocks", dim3(blocks), dim3(threads), 0, [&] { sum_blocks(0, x.p, out.p); });
    int right = 0;
    for (int b = 0; b < blocks; ++b) right += out[b] == 256.0 * (b + 1);
    CHECK(rc == 0 && right == blocks, "the real block_sum: %d of %d right", right, blocks);
    rc = launch("sum_blocks", dim3(blocks), dim3(threads), 0, [&] { sum_blocks(1, x.p, out.p); });
    int wrong = 0;
    for (int b = 0; b < blocks; ++b) wrong += out[b] != 256.0 * (b + 1);
    CHECK(rc == 0 && wrong == blocks, "the broken copy: %d of %d wrong", wrong, blocks);
    printf("    -> block 0: %g (want 256), block 3: %g (want 1024)\n", out[0], out[3]);

    // With every block summing to the same value, plain __shared__ (a thread-local static that keeps
    // the previous block's values) lets the broken copy pass from the second block on; STATIC_SHARED,
    // NaN-filled per block, fails it in every block of every launch.
    for (int i = 0; i < blocks * threads; ++i) x[i] = 1.0;
    for (int rep = 0; rep < 2; ++rep) {
        rc = launch("sum_blocks", dim3(blocks), dim3(threads), 0, [&] { sum_blocks(1, x.p, out.p); });
        wrong = 0;
        for (int b = 0; b < blocks; ++b) wrong += out[b] != 256.0;
        printf("    -> uniform data, __shared__, launch %d: %d of %d blocks wrong\n", rep, wrong, blocks);
        rc = launch("sum_blocks_static", dim3(blocks), dim3(threads), 0, [&] { sum_blocks_static(0, x.p, out.p); });
        right = 0;
        for (int b = 0; b < blocks; ++b) right += out[b] == 256.0;
        CHECK(rc == 0 && right == blocks, "STATIC_SHARED block_sum: rc %d, %d of %d right", rc, right, blocks);
        rc = launch("sum_blocks_static", dim3(blocks), dim3(threads), 0, [&] { sum_blocks_static(1, x.p, out.p); });
        int nans = 0;
        for (int b = 0; b < blocks; ++b) nans += std::isnan(out[b]);
        CHECK(rc == 0 && nans == blocks, "STATIC_SHARED broken copy, launch %d: %d of %d blocks NaN", rep, nans, blocks);
    }
}

static void proof_b_oob_write() {
    printf("(b) writing one element past the end of an allocation fails the launch, naming the kernel\n");
    const int n = 1000;
    Dev<float> y(n);
    int rc = launch("oob_write", dim3(3), dim3(128), 0, [&] { oob_write(n, y.p); });
    const char* e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_FAULT && contains(e, "out-of-bounds write in kernel oob_write, block (1,0,0) thread (104,0,0)") &&
              contains(e, "0 bytes past the end of a 4000-byte allocation") && contains(e, "(offset 4000)"),
          "rc %d: %s", rc, e);
    printf("    -> %s\n", e);
    CHECK(y[n - 1] == 1.0f, "the writes before the fault happened");
}

static void proof_c_fresh_nan() {
    printf("(c) a fresh allocation reads NaN (f32, f64, bf16)\n");
    const int n = 777;
    Dev<float> x(n), y(n);
    Dev<double> xd(n), yd(n);
    Dev<__nv_bfloat16> xh(n + 1);
    Dev<float> yh(n + 1);
    int rc = launch("copy_f32", dim3(2), dim3(BLOCK), 0, [&] { copy_f32(n, x.p, y.p); });
    rc |= launch("copy_f64", dim3(2), dim3(BLOCK), 0, [&] { copy_f64(n, xd.p, yd.p); });
    rc |= launch("from_bf16_f32", dim3(2), dim3(BLOCK), 0, [&] { from_bf16_f32(n + 1, xh.p, yh.p); });
    CHECK(rc == 0, "%s", nasrs_sim_last_error());
    int nan = 0;
    for (int i = 0; i < n; ++i) nan += std::isnan(y[i]) + std::isnan(yd[i]) + std::isnan(yh[i]);
    nan += std::isnan(yh[n]);
    CHECK(nan == 3 * n + 1, "%d of %d reads were NaN", nan, 3 * n + 1);
}

static void proof_d_shuffle_after_exit() {
    printf("(d) a full-mask shuffle after some lanes returned is an error, not a hang\n");
    Dev<int> out(64);
    for (int early_high = 1; early_high >= 0; --early_high) {
        int rc = launch("shfl_after_exit", dim3(2), dim3(64), 0, [&] { shfl_after_exit(early_high, out.p); });
        const char* e = nasrs_sim_last_error();
        CHECK(rc == NASRS_SIM_ERR_SYNC && contains(e, "kernel shfl_after_exit, block (0,0,0) thread (") &&
                  contains(e, "__shfl_down_sync") && contains(e, "which has exited"),
              "rc %d: %s", rc, e);
        printf("    -> %s\n", e);
    }
}

static void proof_e_deadlock() {
    printf("(e) deadlock (thread 0 in a warp shuffle, the rest at __syncthreads) is an error\n");
    Dev<int> out(1);
    int rc = launch("deadlock_kernel", dim3(1), dim3(64), 0, [&] { deadlock_kernel(out.p); });
    const char* e = nasrs_sim_last_error();
    CHECK(rc == NASRS_SIM_ERR_DEADLOCK && contains(e, "deadlock in kernel deadlock_kernel, block (0,0,0) thread (0,0,0)") &&
              contains(e, "63 at __syncthreads"),
          "rc %d: %s", rc, e);
    printf("    -> %s\n", e);
}

static void proof_f_recovery() {
    printf("(f) after a faulting launch the next launch on the same thread works\n");
    const int n = 5000;
    Dev<float> y(n);
    int rc = launch("oob_write", dim3(8), dim3(BLOCK), 0, [&] { oob_write(n, y.p); });
    CHECK(rc == NASRS_SIM_ERR_FAULT, "rc %d", rc);
    const auto a = random_floats(n, 50), b = random_floats(n, 51);
    Dev<float> da(n), db(n), dy(n);
    da.fill(a);
    db.fill(b);
    rc = launch("add_f32", dim3(8), dim3(BLOCK), 0, [&] { add_f32(n, da.p, db.p, dy.p); });
    CHECK(rc == 0 && nasrs_sim_last_error()[0] == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += !same_bits(dy[i], a[i] + b[i]);
    CHECK(bad == 0, "%d elements differ after recovery", bad);
    // And a block_sum kernel (every fiber blocks) after a fault in the middle of a block.
    Dev<double> x(BLOCK * 3), out(3);
    for (int i = 0; i < BLOCK * 3; ++i) x[i] = 2.0;
    rc = launch("sum_blocks", dim3(3), dim3(BLOCK), 0, [&] { sum_blocks(0, x.p, out.p); });
    CHECK(rc == 0 && out[0] == 512.0 && out[2] == 512.0, "rc %d: %s", rc, nasrs_sim_last_error());
}

static void test_more_errors() {
    printf("more errors: masks, ops, launch limits, reads, use after free, null, stack overflow, SIGFPE, "
           "__trap, nested launch\n");
    Dev<int> out(64);
    Dev<double> outd(64);
    struct Case {
        const char* what;
        int rc;
        std::vector<const char*> parts;
    };
    auto expect = [](const char* what, int rc, int want_rc, std::vector<const char*> parts) {
        const char* e = nasrs_sim_last_error();
        bool ok = rc == want_rc;
        for (const char* p : parts) ok = ok && contains(e, p);
        CHECK(ok, "%s: rc %d: %s", what, rc, e);
        printf("    -> %s\n", e);
    };
    int rc = launch("mismatched_masks", dim3(1), dim3(32), 0, [&] { mismatched_masks(out.p); });
    expect("masks", rc, NASRS_SIM_ERR_SYNC, {"sync with different masks", "lane 5"});
    rc = launch("mixed_ops", dim3(1), dim3(32), 0, [&] { mixed_ops(out.p); });
    expect("ops", rc, NASRS_SIM_ERR_SYNC, {"different warp operations", "__ballot_sync", "__shfl_sync"});
    rc = launch("full_mask_small_block", dim3(1), dim3(16), 0, [&] { full_mask_small_block(outd.p); });
    expect("absent lanes", rc, NASRS_SIM_ERR_SYNC, {"names lanes 0xffff0000 that do not exist"});
    rc = launch("reads_outside_mask", dim3(1), dim3(32), 0, [&] { reads_outside_mask(out.p); });
    expect("outside mask", rc, NASRS_SIM_ERR_SYNC, {"reads lane 16", "not in the mask 0x0000ffff"});

    auto cfg_error = [&](dim3 g, dim3 b, unsigned shm, const char* part) {
        int r = launch("noop", g, b, shm, [] { noop(); });
        expect("launch limits", r, NASRS_SIM_ERR_LAUNCH, {"invalid launch configuration for noop", part});
    };
    cfg_error(dim3(1), dim3(1025), 0, "exceeds the block limits");
    cfg_error(dim3(1), dim3(32, 32, 2), 0, "more than 1024 threads");
    cfg_error(dim3(1), dim3(1, 1, 65), 0, "exceeds the block limits");
    cfg_error(dim3(1, 65536), dim3(32), 0, "exceeds the grid limits");
    cfg_error(dim3(0), dim3(32), 0, "zero dimension");
    cfg_error(dim3(1), dim3(32), 49153, "49153 bytes of dynamic shared memory");
    rc = launch("noop", dim3(1), dim3(1024), 49152, [] { noop(); });
    CHECK(rc == 0, "the largest legal launch: %s", nasrs_sim_last_error());

    const size_t page_floats = (size_t)sysconf(_SC_PAGESIZE) / sizeof(float);
    Dev<float> page(page_floats), sink(1);
    rc = launch("read_at", dim3(1), dim3(32), 0, [&] { read_at(page.p, (long long)page_floats + 2, sink.p); });
    expect("read past end", rc, NASRS_SIM_ERR_FAULT,
           {"out-of-bounds read in kernel read_at, block (0,0,0) thread (3,0,0)", "8 bytes past the end"});
    rc = launch("read_at", dim3(1), dim3(32), 0, [&] { read_at(page.p, -1, sink.p); });
    expect("read before start", rc, NASRS_SIM_ERR_FAULT, {"out-of-bounds read", "4 bytes before the start", "(offset -4)"});
    float* freed = static_cast<float*>(nasrs_sim_alloc(4096));
    nasrs_sim_free(freed);
    rc = launch("read_at", dim3(1), dim3(32), 0, [&] { read_at(freed, 10, sink.p); });
    expect("use after free", rc, NASRS_SIM_ERR_FAULT, {"use-after-free read", "40 bytes into a 4096-byte allocation"});
    const float* volatile null_ptr = nullptr;  // opaque: a visible null would be compiled into ud2
    rc = launch("read_at", dim3(1), dim3(32), 0, [&] { read_at(null_ptr, 4, sink.p); });
    expect("null", rc, NASRS_SIM_ERR_FAULT, {"null-pointer read in kernel read_at"});
    rc = launch("read_at", dim3(1), dim3(32), 0, [&] { read_at((const float*)0x7f0000000000ull, 0, sink.p); });
    expect("wild", rc, NASRS_SIM_ERR_FAULT, {"wild-pointer read"});
    rc = launch("stack_hog", dim3(1), dim3(32), 0, [&] { stack_hog(500, out.p); });
    expect("stack overflow", rc, NASRS_SIM_ERR_FAULT, {"fiber stack overflow", "thread (0,0,0)"});
    rc = launch("stack_hog", dim3(1), dim3(32), 0, [&] { stack_hog(20, out.p); });
    CHECK(rc == 0, "a 20 KiB deep kernel fits: %s", nasrs_sim_last_error());
    const volatile int zero = 0;  // opaque: a visible 100 / 0 would be compiled into ud2
    rc = launch("divide", dim3(1), dim3(32), 0, [&] { divide(zero, out.p); });
    expect("SIGFPE", rc, NASRS_SIM_ERR_FAULT, {"integer division by zero", "kernel divide"});
    rc = launch("ud2", dim3(1), dim3(32), 0, [&] { ud2(out.p); });
    expect("SIGILL", rc, NASRS_SIM_ERR_FAULT, {"illegal instruction in kernel ud2, block (0,0,0) thread (2,0,0)"});
    rc = launch("traps", dim3(1), dim3(32), 0, [&] { traps(out.p); });
    expect("trap", rc, NASRS_SIM_ERR_TRAP, {"__trap()", "thread (5,0,0)"});
    out[0] = 0;
    rc = launch("nested", dim3(1), dim3(1), 0, [&] { nested(out.p); });
    CHECK(rc == 0 && out[0] == NASRS_SIM_ERR_LAUNCH, "nested launch: rc %d inner %d", rc, out[0]);
}

// Launches from several OS threads at once: each has its own fibers, stacks, shared memory and
// error state, and a fault on one does not disturb the others.
static void test_parallel_threads() {
    printf("launches on 4 OS threads at once (own state each, faults stay local, std::thread has no "
           "sigaltstack of its own)\n");
    const int n = 200000, blocks = 64;
    const auto a = random_floats(n, 60), b = random_floats(n, 61);
    Dev<float> da(n), db(n);
    da.fill(a);
    db.fill(b);
    Dev<double> ref_partials(blocks);
    launch("dot_f32", dim3(blocks), dim3(BLOCK), 0, [&] { dot_f32(n, da.p, db.p, ref_partials.p); });
    std::atomic<int> bad{0};
    std::vector<std::thread> pool;
    for (int w = 0; w < 4; ++w)
        pool.emplace_back([&, w] {
            Dev<double> partials(blocks);
            Dev<float> y(1000);
            Dev<int> o(32);
            for (int rep = 0; rep < 5; ++rep) {
                if (launch("dot_f32", dim3(blocks), dim3(BLOCK), 0, [&] { dot_f32(n, da.p, db.p, partials.p); }) != 0 ||
                    memcmp(partials.p, ref_partials.p, blocks * sizeof(double)) != 0)
                    ++bad;
                if (launch("oob_write", dim3(4), dim3(BLOCK), 0, [&] { oob_write(1000, y.p); }) != NASRS_SIM_ERR_FAULT ||
                    !contains(nasrs_sim_last_error(), "oob_write"))
                    ++bad;
                if (w == 0 && launch("stack_hog", dim3(1), dim3(32), 0, [&] { stack_hog(500, o.p); }) != NASRS_SIM_ERR_FAULT)
                    ++bad;
            }
        });
    for (auto& t : pool) t.join();
    CHECK(bad == 0, "%d mismatches or missing errors across threads", bad.load());
}

// Runs first, in a child, before anything installs the simulator's handler: a previous SIGSEGV
// handler must still see faults outside launches.
static void test_fault_outside_run_chains() {
    printf("a fault outside a launch reaches the previous SIGSEGV handler\n");
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = [](int) { _exit(42); };
        sigaction(SIGSEGV, &sa, nullptr);
        {
            Dev<float> y(10);
            if (launch("oob_write", dim3(1), dim3(32), 0, [&] { oob_write(10, y.p); }) != NASRS_SIM_ERR_FAULT) _exit(43);
        }
        volatile int* volatile p = nullptr;
        *p = 1;
        _exit(44);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 42, "child status 0x%x (42: the previous handler ran)", status);
}

// ---- timing -----------------------------------------------------------------------------------

// Thread CPU time of one launch, the best of `reps` after a warm-up launch (stacks and pages):
// steadier than wall time on a busy machine.
template <typename F>
static double time_launches(int reps, F&& f) {
    f();
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        timespec t0, t1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
        f();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
        best = std::min(best, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    }
    return best;
}

static void timings() {
    printf("timings (thread CPU time per launch: the best of 10 to 2000 launches after a warm-up one)\n");
    const int n = 1 << 20, blocks = 4096;
    const auto a = random_floats(n, 70), b = random_floats(n, 71);
    Dev<float> da(n), db(n), dy(n);
    Dev<double> partials(blocks);
    da.fill(a);
    db.fill(b);
    const int reps = 10;
    const double t_noop = time_launches(reps, [&] { launch("noop", dim3(blocks), dim3(BLOCK), 0, [] { noop(); }); });
    const double t_add =
        time_launches(reps, [&] { launch("add_f32", dim3(blocks), dim3(BLOCK), 0, [&] { add_f32(n, da.p, db.p, dy.p); }); });
    const double t_dot = time_launches(
        reps, [&] { launch("dot_f32", dim3(blocks), dim3(BLOCK), 0, [&] { dot_f32(n, da.p, db.p, partials.p); }); });
    const double t_small = time_launches(
        2000, [&] { launch("add_f32", dim3(4), dim3(BLOCK), 0, [&] { add_f32(1024, da.p, db.p, dy.p); }); });
    // Shaped like the DARTS step's dwconv2d_bwd_weight_f32 launches: grid (C, k*k) = 16 x 25 blocks of
    // 256 threads, each a 4-step loop (n * ho * wo = 1024 positions) then block_sum.
    Geom g = {4, 16, 16, 16, 16, 16, 5, 1, 2, 1};
    const auto x_h = random_floats((size_t)g.n * g.c * g.h * g.w, 72);
    const auto dy_h = random_floats((size_t)g.n * g.c * g.ho * g.wo, 73);
    Dev<float> x(x_h.size()), dyc(dy_h.size()), dw((size_t)g.c * g.k * g.k);
    x.fill(x_h);
    dyc.fill(dy_h);
    const unsigned dw_threads = (unsigned)(g.c * g.k * g.k) * BLOCK;
    const double t_dw = time_launches(4 * reps, [&] {
        launch("dwconv2d_bwd_weight_f32", dim3(g.c, g.k * g.k), dim3(BLOCK), 0,
               [&] { dwconv2d_bwd_weight_f32(g, 0, x.p, dyc.p, dw.p); });
    });
    printf("  noop      %8.2f ms/launch  %6.1f ns/thread (4096 blocks x 256 threads = 1M threads)\n", t_noop * 1e3,
           t_noop * 1e9 / n);
    printf("  add_f32   %8.2f ms/launch  %6.1f ns/thread (1M threads, 1M floats)\n", t_add * 1e3, t_add * 1e9 / n);
    printf("  dot_f32   %8.2f ms/launch  %6.1f ns/thread (1M threads; block_sum: 5 shuffles + 3 barriers a thread, "
           "warp 0 5 more)\n",
           t_dot * 1e3, t_dot * 1e9 / n);
    printf("  dw_bwd_w  %8.2f ms/launch  %6.1f ns/thread (dwconv2d_bwd_weight_f32: 16 x 25 blocks x 256, a 4-step loop "
           "+ block_sum)\n",
           t_dw * 1e3, t_dw * 1e9 / dw_threads);
    printf("  add_f32   %8.2f us/launch  (4 blocks x 256, 1024 floats)\n", t_small * 1e6);
}

int main(int argc, char** argv) {
    test_fault_outside_run_chains();
    test_add();
    test_dot_and_finish();
    test_mixed_op();
    test_batch_norm();
    test_dwconv();
    test_dwconv_bwd_weight();
    test_shared_and_barriers();
    test_shuffles();
    test_votes();
    test_bf16();
    test_atomics_and_determinism();
    test_schedule_order();
    test_dynamic_shared();
    proof_a_missing_sync();
    proof_b_oob_write();
    proof_c_fresh_nan();
    proof_d_shuffle_after_exit();
    proof_e_deadlock();
    proof_f_recovery();
    test_more_errors();
    test_parallel_threads();
    if (!(argc > 1 && strcmp(argv[1], "--no-bench") == 0)) timings();
    printf("%s: %d checks, %d failed\n", g_failures ? "FAILED" : "OK", g_checks.load(), g_failures.load());
    return g_failures ? 1 : 0;
}
