// The CUDA execution-model simulator's runtime, described here for all of its units (listed at the
// end of this comment). This unit owns the launch (nasrs_sim_run), each OS thread's simulator state
// and the built-ins.
//
// The runtime: the scheduler that runs a launch's whole grid on the calling OS thread, the fibers
// that carry the simulated threads, the block barrier and warp syncs, guarded "device" memory, and
// the fault handler that turns a bad access into a failed launch. The C ABI is in runtime.h; the
// device language that calls into it is cuda_sim.h.
//
// Model (deterministic, so a run is reproducible bit for bit):
// - blocks run one after another in order (x fastest, then y, then z), all on the calling OS
//   thread; inside a block every thread is a fiber, run in linear thread order (tid = x + y*bx
//   + z*bx*by) until it finishes or blocks, then the next runnable one, cyclically;
// - __syncthreads waits until every thread that has not exited is waiting at a block barrier
//   (exited threads count as arrived, as on sm_70+); the last arriver releases the others and
//   goes on without a switch;
// - a warp operation synchronises only the lanes its mask names (warp = tid / 32): each lane
//   deposits its value and waits; the lane that completes the set computes every lane's result
//   into that lane's own slot, which nobody touches again before the lane has read it;
// - anything the device would hang on or leave undefined (a mask naming an exited or absent lane,
//   lanes meeting with different masks or ops, a shuffle reading a lane outside the mask,
//   deadlock) fails the launch with a message naming the kernel, block and thread.
//
// Cost: launches are many and grids large, so the hot path is a few dozen instructions. A thread
// that never blocks costs no switch at all (its fiber, finished, becomes the next fresh thread on
// the same stack); a blocking one costs one switch, straight to the next runnable fiber (the
// scheduler is only re-entered when none is runnable). The bookkeeping is O(1) per sync
// operation: bitmaps per warp (waiting, at the barrier, exited, runnable) and counters, the next
// runnable thread in the fixed order found with two find-first-set steps, no scan of a warp's
// lanes or the block's threads except where a warp operation completes (its lanes' results) or a
// barrier releases. The switch itself (see NASRS_SIM_STUB) is the kernel's call of the
// intrinsic: a blocked fiber is resumed by popping six registers and jumping back into its
// kernel, and the next fiber's frames are prefetched while the current one runs.
//
// Per-OS-thread state (ThreadState) holds the fibers, a pool of up to 1024 fiber stacks (64 KiB
// usable each, a 64 KiB guard below, made lazily and reused across launches), the guarded
// dynamic-shared and STATIC_SHARED regions and the sigsetjmp target of the launch in progress; nothing is allocated per simulated
// thread. A fault inside a launch is caught by a process-wide SIGSEGV/SIGBUS/SIGFPE/SIGILL
// handler running on the thread's sigaltstack, which siglongjmps back into nasrs_sim_run;
// outside a launch the handler restores the previous action and returns, so that handler sees
// the re-executed fault.
//
// Plain C++17; every unit also compiles with cuda_sim.h force-included and the kernels' flags
// (build.rs builds them that way, in the same library as the kernels), so none names the header's
// macros (threadIdx & co.). A fortified build (_FORTIFY_SOURCE) is fine: its siglongjmp check
// allows leaving the signal stack, which is the only jump the runtime makes.
//
// The units, each with one job, sharing runtime_internal.h (the state, the limits, what one unit
// uses from another; all hidden) and runtime_fiber.h (the inline hot path of a switch):
// - runtime.cpp: the built-ins, each OS thread's state, and the launch (nasrs_sim_run:
//   validation, the device's floating-point mode, the grid loop under the fault handler's
//   sigsetjmp);
// - runtime_fiber.cpp: the asm context switch, the fiber stacks, a fiber's life and the scheduler
//   of one block;
// - runtime_sync.cpp: the block barrier and the warp operations (the blocking intrinsics);
// - runtime_memory.cpp: guarded allocations and the blocks' shared memory;
// - runtime_fault.cpp: the fault handler and every failure's message.
#include "runtime_internal.h"

#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>

#include <new>

// ---- the built-ins cuda_sim.h reads -------------------------------------------------------
__thread nasrs_sim_dim3 nasrs_sim_thread_idx NASRS_SIM_TLS_MODEL;
__thread nasrs_sim_dim3 nasrs_sim_block_idx NASRS_SIM_TLS_MODEL;
__thread nasrs_sim_dim3 nasrs_sim_block_dim NASRS_SIM_TLS_MODEL;
__thread nasrs_sim_dim3 nasrs_sim_grid_dim NASRS_SIM_TLS_MODEL;

namespace nasrs_sim {
namespace __attribute__((visibility("hidden"))) detail {

// Each OS thread's state, and the same while its launch runs (runtime_internal.h).
__thread ThreadState* g_ts NASRS_SIM_TLS_MODEL;
__thread ThreadState* g_active NASRS_SIM_TLS_MODEL;

namespace {

// ---- per-thread state ---------------------------------------------------------------------

void destroy_thread_state(ThreadState* ts) {
    if (!ts) return;
    for (unsigned i = 0; i < ts->nstacks; ++i) munmap(ts->stacks[i].map, kFiberMap);
    for (unsigned i = 0; i < kMaxStaticShared; ++i)
        if (ts->sslots[i].map) munmap(ts->sslots[i].map, ts->sslots[i].map_len);
    if (ts->dyn_map) munmap(ts->dyn_map, ts->dyn_map_len);
    if (ts->altstack) {
        stack_t cur;
        if (sigaltstack(nullptr, &cur) == 0 && cur.ss_sp == ts->altstack) {
            stack_t off = {};
            off.ss_flags = SS_DISABLE;
            sigaltstack(&off, nullptr);
        }
        munmap(ts->altstack, ts->altstack_len);
    }
    delete ts;
}

// Releases the thread's stacks and regions when the OS thread exits (Rust test threads come and go).
struct ThreadReaper {
    bool armed = false;
    ~ThreadReaper() {
        ThreadState* ts = g_ts;
        g_ts = nullptr;
        destroy_thread_state(ts);
    }
};
thread_local ThreadReaper t_reaper;

ThreadState* thread_state() {
    ThreadState* ts = g_ts;
    if (__builtin_expect(ts != nullptr, 1)) return ts;
    ts = new (std::nothrow) ThreadState();
    if (!ts) return nullptr;
    ts->cur = -1;
    g_ts = ts;
    t_reaper.armed = true;  // odr-use: registers the thread-exit destructor
    return ts;
}

int validate(ThreadState* ts, const char* name, const nasrs_sim_launch_cfg* c) {
    const nasrs_sim_dim3 g = c->grid, b = c->block;
    const char* fmt = nullptr;
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z)
        fmt = "invalid launch configuration for %s: grid (%u,%u,%u) block (%u,%u,%u) has a zero dimension";
    else if (b.x > 1024 || b.y > 1024 || b.z > 64)
        fmt = "invalid launch configuration for %s: grid (%u,%u,%u) block (%u,%u,%u) exceeds the block limits "
              "(1024,1024,64)";
    else if ((uint64_t)b.x * b.y * b.z > kMaxBlockThreads)
        fmt = "invalid launch configuration for %s: grid (%u,%u,%u) block (%u,%u,%u) has more than 1024 threads";
    else if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
        fmt = "invalid launch configuration for %s: grid (%u,%u,%u) block (%u,%u,%u) exceeds the grid limits "
              "(2^31-1,65535,65535)";
    if (fmt) return set_error(ts, NASRS_SIM_ERR_LAUNCH, fmt, name, g.x, g.y, g.z, b.x, b.y, b.z);
    if (c->shared_mem_bytes > kMaxDynamicShared)
        return set_error(ts, NASRS_SIM_ERR_LAUNCH,
                         "invalid launch configuration for %s: %u bytes of dynamic shared memory (at most 49152)", name,
                         c->shared_mem_bytes);
    return 0;
}

// Every fiber runs in the device's floating-point mode whatever the host's: round to nearest,
// exceptions masked, no flush-to-zero or denormals-are-zero (nvcc's default -ftz=false): the
// default environment. Set once per launch (and only when the host's differs), not per switch.
void enter_device_fp(ThreadState* ts) {
#if defined(__x86_64__)
    uint32_t mxcsr;
    uint16_t cw;
    __asm__ __volatile__("stmxcsr %0" : "=m"(mxcsr));
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    ts->fp_switched = (mxcsr & ~0x3Fu) != 0x1F80u || cw != 0x037Fu;  // status flags (bits 0-5) aside
#else
    ts->fp_switched = true;
#endif
    if (ts->fp_switched) {
        fegetenv(&ts->host_fenv);
        fesetenv(FE_DFL_ENV);
    }
}

void leave_device_fp(ThreadState* ts) {
    if (ts->fp_switched) fesetenv(&ts->host_fenv);
    ts->fp_switched = false;
}

// The block loop, under the sigsetjmp the fault handler jumps back to. After a jump only the
// thread-local state is trusted (locals may be clobbered), so that branch starts from g_ts.
__attribute__((noinline)) int run_grid(ThreadState* ts) {
    if (sigsetjmp(ts->jb, 0)) {
        // A fault: the handler already cleared in_run and recorded what happened. The fibers of
        // this block are abandoned where they stood; their stacks go back to the pool.
        ThreadState* fts = g_ts;
        leave_device_fp(fts);
        const int rc = fault_error(fts);
        abandon_block(fts);
        return rc;
    }
    set_in_run(ts, true);
    const nasrs_sim_dim3 grid = ts->grid;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                nasrs_sim_block_idx = nasrs_sim_dim3{x, y, z};
                if (ts->shared_bytes) poison(ts->dyn_ptr, ts->shared_bytes);
                ++ts->block_epoch;  // STATIC_SHARED arrays are NaN-filled again on first use
                if (int rc = run_block(ts)) {
                    set_in_run(ts, false);
                    leave_device_fp(ts);
                    abandon_block(ts);
                    return rc;
                }
            }
    set_in_run(ts, false);
    leave_device_fp(ts);
    ts->err[0] = 0;  // a nested launch attempt inside may have written one
    return 0;
}

}  // namespace
}  // namespace detail
}  // namespace nasrs_sim

using namespace nasrs_sim::detail;

// ---- host side --------------------------------------------------------------------------------

extern "C" const char* nasrs_sim_last_error(void) {
    ThreadState* ts = g_ts;
    return ts ? ts->err : "";
}

extern "C" int nasrs_sim_run(const char* name, const nasrs_sim_launch_cfg* cfg, void (*body)(void* ctx), void* ctx) {
    ThreadState* ts = thread_state();
    if (!ts) return NASRS_SIM_ERR_LAUNCH;  // no memory even for the message
    ts->err[0] = 0;
    if (!name) name = "(unnamed kernel)";
    if (ts->in_run)
        return set_error(ts, NASRS_SIM_ERR_LAUNCH, "invalid launch of %s: launched from inside kernel %s", name, ts->name);
    if (!cfg || !body) return set_error(ts, NASRS_SIM_ERR_LAUNCH, "invalid launch of %s: null configuration or body", name);
    if (int rc = validate(ts, name, cfg)) return rc;
    install_handlers();
    if (!ensure_altstack(ts) || !ensure_dynamic_shared(ts))
        return set_error(ts, NASRS_SIM_ERR_LAUNCH,
                         "cannot launch %s: no memory for the simulator's signal stack or shared memory", name);

    ts->name = name;
    ts->body = body;
    ts->ctx = ctx;
    ts->grid = cfg->grid;
    ts->block = cfg->block;
    ts->shared_bytes = cfg->shared_mem_bytes;
    ts->dyn_ptr = ts->dyn_end - cfg->shared_mem_bytes;
    ts->nbound = 0;
    ts->static_bytes = 0;
    const unsigned bx = cfg->block.x, by = cfg->block.y;
    ts->nthreads = bx * by * cfg->block.z;
    ts->nwarps = (ts->nthreads + 31) / 32;
    for (unsigned t = 0; t < ts->nthreads; ++t) {
        ts->fibers[t].idx = nasrs_sim_dim3{t % bx, (t / bx) % by, t / (bx * by)};
        ts->fibers[t].stack = nullptr;
    }
    for (unsigned w = 0; w < ts->nwarps; ++w) {
        const unsigned lanes = ts->nthreads - w * 32;
        ts->warp_exists[w] = lanes >= 32 ? 0xffffffffu : (1u << lanes) - 1u;
    }
    nasrs_sim_block_dim = cfg->block;
    nasrs_sim_grid_dim = cfg->grid;
    ts->cur = -1;
    ts->failed = 0;
    enter_device_fp(ts);
    return run_grid(ts);
}
