// The self-check's execution model: __syncthreads and its _count/_and/_or forms in 2-D blocks
// with exited threads, shared memory, every shuffle at every width and type, votes, __syncwarp,
// __activemask in divergent code, atomics, a racy kernel's determinism, and the fixed order the
// scheduler runs threads in.
#include "selfcheck.h"

// ---- test kernels -----------------------------------------------------------------------------

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

void test_shared_and_barriers() {
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

void test_shuffles() {
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

void test_votes() {
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

// The order the simulator's scheduler runs threads in is part of its contract (results of racy
// kernels, which thread an error names): this pins it to the one recorded from the scheduler it
// was first written with (a linear scan for the next runnable thread). A change that means to
// alter the order updates the digest; one that does not must keep it.
#define SCHED_TOTAL 21340u
#define SCHED_DIGEST 0x4331bcba62c48aadull
void test_schedule_order() {
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

void test_atomics_and_determinism() {
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
