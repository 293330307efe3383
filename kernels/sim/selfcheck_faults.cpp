// The self-check's failures beyond the proofs: a fault outside a launch reaches the previous
// handler; dynamic shared memory and STATIC_SHARED are NaN-filled per block and fault at their
// ends; invalid warp syncs, launch limits, bad reads, use after free, null and wild pointers,
// stack overflow, SIGFPE, SIGILL, __trap and nested launches each fail the launch with their
// message; launches on several OS threads keep their state and their faults to themselves.
#include "selfcheck.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

// ---- test kernels -----------------------------------------------------------------------------

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

__global__ void read_at(const float* x, long long offset, float* y) {
    if (threadIdx.x == 3) y[0] = x[offset];
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

// Invalid warp syncs.
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
__global__ void nested(int* out) {
    if (threadIdx.x == 0) out[0] = nasrs_sim_launch("inner", dim3(1), dim3(1), 0, [] {});
}

// ---- tests --------------------------------------------------------------------------------------

// Runs first, in a child, before anything installs the simulator's handler: a previous SIGSEGV
// handler must still see faults outside launches.
void test_fault_outside_run_chains() {
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

void test_dynamic_shared() {
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

void test_more_errors() {
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
void test_parallel_threads() {
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
