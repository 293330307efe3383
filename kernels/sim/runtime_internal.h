// The CUDA simulator runtime's internal header, shared by its units (kernels/sim/runtime*.cpp,
// see runtime.cpp for the model and which unit owns what) and by nothing else: the limits, the
// per-OS-thread state a launch runs in (ThreadState), the record of a guarded allocation, and the
// functions and objects one unit uses from another, each declared under the unit that defines it.
// runtime_fiber.h adds the inline hot path of a fiber switch.
//
// Everything here is in nasrs_sim::detail, opened hidden in every unit (the runtime's only
// external names are runtime.h's C ABI, whatever library the units are linked into), and every
// object declared here has exactly one definition, in the unit named above it. A helper that one
// unit alone uses stays in that unit's anonymous namespace. selfcheck.sh checks that the units
// export nothing but runtime.h's names.
#ifndef NASRS_SIM_RUNTIME_INTERNAL_H
#define NASRS_SIM_RUNTIME_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "runtime.h"

#include <fenv.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <ucontext.h>

#include <map>
#include <mutex>

#if defined(__x86_64__) && !defined(NASRS_SIM_FORCE_UCONTEXT)
#define NASRS_SIM_ASM_SWITCH 1
#else
#define NASRS_SIM_ASM_SWITCH 0
#endif

// Where a fresh fiber starts: runs thread bodies until its thread blocks for good or the block is
// done (runtime_fiber.cpp).
extern "C" [[noreturn]] __attribute__((visibility("hidden"))) void nasrs_sim_fiber_main() noexcept;

// The blocking intrinsics' bodies (runtime.h's entry points, plus the stack pointer their stub
// saved the caller's registers at; null without the asm switch).
extern "C" __attribute__((visibility("hidden"))) uint64_t nasrs_sim_warp_impl(unsigned opsz, unsigned mask,
                                                                              uint64_t value, int param, int width,
                                                                              void* saved);
extern "C" __attribute__((visibility("hidden"))) int nasrs_sim_syncthreads_impl(int op, int pred, void* saved);
extern "C" __attribute__((visibility("hidden"))) unsigned nasrs_sim_activemask_impl(const void* site, void* saved);

// Error paths live out of line: their message buffers would otherwise sit in the hot functions'
// frames, i.e. on every blocked fiber's stack, and cost cache misses at every switch.
#define NASRS_SIM_COLD __attribute__((cold, noinline))

// Marks what leaves the running fiber: for good with the asm switch (a blocked fiber is resumed
// straight into its kernel, never back here), until it is resumed with ucontext.
#if NASRS_SIM_ASM_SWITCH
#define NASRS_SIM_LEAVES [[noreturn]]
#else
#define NASRS_SIM_LEAVES
#endif

namespace nasrs_sim {
namespace __attribute__((visibility("hidden"))) detail {

constexpr unsigned kMaxBlockThreads = 1024;
constexpr unsigned kMaxWarps = kMaxBlockThreads / 32;
constexpr unsigned kMaxDynamicShared = 48u * 1024u;
// Kernels use tiny frames (the largest is a by-value 4 KB argument table); the guard is as large
// as the stack so that no single frame can step over it into a neighbour. Stack i starts
// fiber_color(i) below its top (the usable depth stays >= kFiberStack): 1024 stacks at the same
// alignment would put every fiber's hot frames in the same L1/L2 cache sets. Address space only:
// untouched pages cost nothing.
constexpr size_t kFiberStack = 64 * 1024;
constexpr size_t kFiberGuard = 64 * 1024;
constexpr size_t kFiberColorSpan = 64 * 1024;
constexpr size_t kFiberMap = kFiberGuard + kFiberStack + kFiberColorSpan;
constexpr size_t fiber_color(unsigned i) { return (size_t)(i * 17u % 1024u) * 64u; }
constexpr size_t kAltStack = 64 * 1024;
constexpr uintptr_t kNullPageLimit = 64 * 1024;
constexpr unsigned kMaxStaticShared = 32;  // STATIC_SHARED arrays per launch
constexpr unsigned kFreedHistory = 4096;

struct Stack {
    char* map;  // guard (kFiberGuard), then the stack up to `hi`
    char* lo;   // lowest usable byte
    char* hi;   // initial stack top (coloured)
};

// One STATIC_SHARED array: its own guarded mapping, the array flush against the end, kept across
// launches and rebound to a new call site at each launch.
struct SharedSlot {
    const void* site;  // the STATIC_SHARED expansion it serves this launch
    size_t bytes;
    unsigned epoch;    // the block it was last NaN-filled for
    char* map;
    size_t map_len;
    char* end;
    char* ptr;
};

// A simulated thread's fiber. What it waits on and its pending warp operation live in the
// per-warp bitmaps and LaneSlots of ThreadState, so this stays small (a switch reads only `sp`
// and `idx`).
struct Fiber {
#if NASRS_SIM_ASM_SWITCH
    void* sp;  // while switched out (see nasrs_sim_switch_ctx)
#endif
    Stack* stack;
    nasrs_sim_dim3 idx;
#if !NASRS_SIM_ASM_SWITCH
    ucontext_t uc;
#endif
};

// The threads' pending warp operations, laid out by field so that the lane completing an
// operation reads and writes a few cache lines, not 32 fibers. Thread t's entries are valid while
// it waits in a warp operation (its bit of warp_waiting); `value` holds the call site while it
// waits in __activemask, `arg` its op while it waits at a barrier; `result` is what its
// intrinsic returns once released, valid until it has resumed with it.
struct LaneSlots {
    uint64_t value[kMaxBlockThreads];
    uint64_t result[kMaxBlockThreads];
    uint64_t key[kMaxBlockThreads];  // mask | (uint16_t)opsz << 32: the lanes meeting in an operation agree on it
    uint64_t arg[kMaxBlockThreads];  // (uint32_t)param | (uint64_t)(uint32_t)width << 32 (shuffles)
};
// One warp's part of LaneSlots, indexed by lane.
struct WarpSlots {
    uint64_t *value, *result, *key, *arg;
};
inline uint64_t warp_key(unsigned opsz, unsigned mask) { return (uint64_t)(uint16_t)opsz << 32 | mask; }
inline unsigned key_mask(uint64_t key) { return (unsigned)key; }
inline unsigned key_opsz(uint64_t key) { return (unsigned)(key >> 32); }

struct ThreadState {
    // The launch in progress.
    const char* name;
    void (*body)(void*);
    void* ctx;
    nasrs_sim_dim3 grid, block;
    unsigned shared_bytes;
    unsigned nthreads, nwarps;
    volatile bool in_run;  // read by the signal handler
    int cur;               // running fiber, -1 while the scheduler runs
    int failed;            // set by a fiber that fails the launch
    bool fp_switched;      // the host's FP mode differed from the device's: restore host_fenv
    fenv_t host_fenv;

    // The block in progress.
    // bar_pending counts true predicates of the barrier being filled; at release it moves to
    // bar_count, which (with bar_participants) stays put until the next release: that needs every
    // live thread to arrive again, i.e. to have read it first.
    unsigned alive, at_barrier, bar_pending, bar_count, bar_participants;
    // A thread waits at the barrier being filled with __syncthreads_count/and/or (not plain): its
    // result is worked out at the release (plain waiters' is 0, set as they arrive).
    bool bar_ops;
    // What each thread is doing, one bit per lane of each warp (thread t = lane t % 32 of warp
    // t / 32), so that every sync operation updates O(1) words: a thread is fresh (not started:
    // t >= nstarted, see below), runnable (running or ready to run: its bit in `run`), waiting in
    // a warp operation (warp_waiting), at a block barrier (warp_at_bar), in __activemask
    // (warp_active, see nasrs_sim_activemask) or exited (warp_exited). Fresh threads also have
    // their `run` bit set: they are runnable.
    uint32_t warp_exists[kMaxWarps], warp_waiting[kMaxWarps], warp_exited[kMaxWarps];
    uint32_t warp_active[kMaxWarps], warp_at_bar[kMaxWarps];
    // Lanes a warp operation's mask must not name: absent or exited (~warp_exists | warp_exited).
    uint32_t warp_bad[kMaxWarps];
    // The run queue in the fixed cyclic thread order: `run` per warp, and run_any bit w set iff
    // run[w] != 0, so the next runnable thread after any thread is two find-first-set steps away.
    uint32_t run[kMaxWarps];
    uint32_t run_any;
    // Threads start in thread order (the scheduler runs the next runnable thread in cyclic order
    // and a fresh one is always runnable), so the started ones are exactly [0, nstarted).
    unsigned nstarted;
    LaneSlots lanes;

#if NASRS_SIM_ASM_SWITCH
    void* sched_sp;
#endif
#if !NASRS_SIM_ASM_SWITCH
    ucontext_t sched_uc;
#endif

    // Fiber stacks: stacks[0, nstacks) made so far, free_list[0, nfree) not in use. LIFO, so a
    // grid of threads that never block keeps reusing one hot stack.
    unsigned nstacks, nfree;
    Stack stacks[kMaxBlockThreads];
    Stack* free_list[kMaxBlockThreads];

    // Dynamic shared memory: [guard page][48 KiB][guard page]; this launch's bytes end at dyn_end.
    char* dyn_map;
    size_t dyn_map_len;
    char* dyn_end;
    char* dyn_ptr;

    // STATIC_SHARED arrays: slots[0, nbound) serve this launch's call sites; the mappings of all
    // kMaxStaticShared slots persist. block_epoch counts blocks, so a slot is NaN-filled the first
    // time a block asks for it.
    SharedSlot sslots[kMaxStaticShared];
    unsigned nbound, block_epoch;
    size_t static_bytes;

    // The fault the handler recorded before jumping back.
    sigjmp_buf jb;
    int fault_sig, fault_code;
    void* fault_addr;
    long fault_err, fault_trapno;  // x86-64 page-fault error code and trap number, -1 elsewhere

    bool altstack_checked;
    char* altstack;
    size_t altstack_len;

    char err[1024];
    Fiber fibers[kMaxBlockThreads];
};

// Warp `warp`'s part of ts->lanes.
inline WarpSlots warp_slots(ThreadState* ts, unsigned warp) {
    LaneSlots& l = ts->lanes;
    const unsigned o = warp * 32;
    return WarpSlots{l.value + o, l.result + o, l.key + o, l.arg + o};
}

// ---- runtime.cpp: the built-ins' owner, each OS thread's state, the launch ------------------

extern __thread ThreadState* g_ts NASRS_SIM_TLS_MODEL;
// g_ts while its launch runs (in_run), else null: the intrinsics' one-load check that they are
// called from a kernel.
extern __thread ThreadState* g_active NASRS_SIM_TLS_MODEL;

// in_run and g_active change together.
inline void set_in_run(ThreadState* ts, bool on) {
    ts->in_run = on;
    g_active = on ? ts : nullptr;
}

// ---- runtime_memory.cpp: guarded memory ------------------------------------------------------

size_t page_size();

struct Alloc {
    char* start;
    size_t bytes;
    char* map;
    size_t map_len;
};

// The live allocations by start and a ring of recent frees (for the fault handler's messages);
// g_alloc_mu guards all three.
extern std::mutex g_alloc_mu;
std::map<uintptr_t, Alloc>& live_allocs();
extern Alloc g_freed[kFreedHistory];
extern unsigned g_freed_next;

// NaN-fills n bytes from p (every 2-byte unit 0x7FFF from p).
void poison(void* p, size_t n);
// [guard page][data pages, `bytes` flush against the end][guard page]; false when it cannot map.
bool map_guarded(size_t bytes, Alloc* out);
// Maps the thread's dynamic shared memory region once; false when it cannot.
bool ensure_dynamic_shared(ThreadState* ts);

// ---- runtime_fault.cpp: the fault handler, messages, failing a launch ---------------------------

void install_handlers();
// Gives the OS thread a signal stack when it has none; false when it cannot.
bool ensure_altstack(ThreadState* ts);

// Writes the launch's message (ts->err) and returns `code`.
int set_error(ThreadState* ts, int code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

// "kernel K, block (x,y,z) thread (x,y,z)" (or the scheduler when no fiber runs).
struct Where {
    char s[256];
};
Where where(const ThreadState* ts, int t);
const char* op_name(unsigned opsz);

[[noreturn]] NASRS_SIM_COLD void outside_launch(const char* what);

// Fails the launch from inside the running fiber: the scheduler sees `failed` and abandons the block.
[[noreturn]] NASRS_SIM_COLD void fiber_fail(ThreadState* ts, int code, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

NASRS_SIM_COLD int deadlock_error(ThreadState* ts);
NASRS_SIM_COLD int stack_error(ThreadState* ts, unsigned t);
// Words for the fault the handler recorded (ts->fault_*): which allocation, how far outside it.
int fault_error(ThreadState* ts);

// ---- runtime_sync.cpp: the block barrier and warp operations ----------------------------------

// Every live thread is at the barrier: releases them (see the definition); returns the result for
// op `op` (the releasing thread's).
unsigned release_barrier(ThreadState* ts, unsigned op = 0);
// Releases the lanes of `warp` waiting in __activemask once their warp has converged; true when
// it released them.
bool try_release_active(ThreadState* ts, unsigned warp);
// The message for a warp operation that waits for lane t, which has exited.
NASRS_SIM_COLD int exit_wait_error(ThreadState* ts, unsigned t, unsigned waiter);

// ---- runtime_fiber.cpp: fibers and the scheduler ---------------------------------------------

// Maps a new stack for the pool (the pool is empty).
NASRS_SIM_COLD Stack* new_stack(ThreadState* ts);
#if !NASRS_SIM_ASM_SWITCH
void uc_entry();
#endif
// switch_from's way to a fresh thread (once per thread), out of line.
NASRS_SIM_LEAVES __attribute__((noinline)) void start_and_leave(ThreadState* ts, Fiber* from, unsigned t);
// Gives every fiber's stack of the abandoned block back to the pool.
void abandon_block(ThreadState* ts);
// Runs every thread of the current block to completion (or to the first error).
int run_block(ThreadState* ts);

}  // namespace detail
}  // namespace nasrs_sim

#endif
