// The CUDA execution-model simulator's runtime: the scheduler that runs a launch's whole grid on
// the calling OS thread, the fibers that carry the simulated threads, the block barrier and warp
// syncs, guarded "device" memory, and the fault handler that turns a bad access into a failed
// launch. The C ABI is in runtime.h; the device language that calls into it is cuda_sim.h.
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
// Plain C++17; it also compiles with cuda_sim.h force-included and the kernels' flags (build.rs
// builds it that way, in the same library as the kernels), so it names none of the header's
// macros (threadIdx & co.). A fortified build (_FORTIFY_SOURCE) is fine: its siglongjmp check
// allows leaving the signal stack, which is the only jump made here.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "runtime.h"

#include <fenv.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <new>

#if defined(__x86_64__) && !defined(NASRS_SIM_FORCE_UCONTEXT)
#define NASRS_SIM_ASM_SWITCH 1
#else
#define NASRS_SIM_ASM_SWITCH 0
#endif

// ---- the built-ins cuda_sim.h reads -------------------------------------------------------
__thread nasrs_sim_dim3 nasrs_sim_thread_idx NASRS_SIM_TLS_MODEL;
__thread nasrs_sim_dim3 nasrs_sim_block_idx NASRS_SIM_TLS_MODEL;
__thread nasrs_sim_dim3 nasrs_sim_block_dim NASRS_SIM_TLS_MODEL;
__thread nasrs_sim_dim3 nasrs_sim_grid_dim NASRS_SIM_TLS_MODEL;

#if NASRS_SIM_ASM_SWITCH
// The asm context switch. A switched-out context is its saved stack pointer `sp`: at sp the six
// callee-saved registers (r15 r14 r13 r12 rbx rbp, upwards), then the address it resumes at. The
// blocking intrinsics (nasrs_sim_warp, nasrs_sim_syncthreads_op, nasrs_sim_activemask) are asm
// entry stubs that push those registers on the caller's stack, so the kernel's own call is the
// switch: a blocked fiber's `sp` is its stub's frame, its resume address its kernel's return
// address, and resuming it (resume_ctx) pops the registers and jumps there with the intrinsic's
// result in rax, straight back into the kernel. Nothing runs on the way out, and no `ret` is made
// whose prediction would come from another fiber's calls: in phases such as "every thread leaves
// barrier 1 while the one before it blocked at barrier 2", nearly every such ret mispredicted,
// where a `jmp` is predicted from its history, which repeats there. The MXCSR and x87 control
// words, callee-saved in the SysV ABI, are deliberately not switched: no fiber changes them (CUDA
// code has no way to), so nasrs_sim_run sets the device's mode once per launch instead
// (enter_device_fp).
//
// nasrs_sim_switch_ctx(save_sp, load_sp, value) saves its caller the same way (its return address
// as the resume address), then resumes load_sp with `value`; it returns the value it is resumed
// with. The scheduler uses it to start or resume a fiber and be resumed when none is runnable. A
// fresh fiber the scheduler starts has its stack laid out to resume into nasrs_sim_fiber_main; one
// a fiber starts is jumped into (start_and_leave).
#define NASRS_SIM_CFI_PUSH(reg) "pushq %" reg "\n.cfi_adjust_cfa_offset 8\n.cfi_rel_offset %" reg ", 0\n"
#define NASRS_SIM_CFI_POP(reg) "popq %" reg "\n.cfi_adjust_cfa_offset -8\n.cfi_restore %" reg "\n"
#define NASRS_SIM_SAVE_REGS                                                                                   \
    NASRS_SIM_CFI_PUSH("rbp") NASRS_SIM_CFI_PUSH("rbx") NASRS_SIM_CFI_PUSH("r12") NASRS_SIM_CFI_PUSH("r13") \
    NASRS_SIM_CFI_PUSH("r14") NASRS_SIM_CFI_PUSH("r15")
#define NASRS_SIM_RESTORE_REGS                                                                               \
    NASRS_SIM_CFI_POP("r15") NASRS_SIM_CFI_POP("r14") NASRS_SIM_CFI_POP("r13") NASRS_SIM_CFI_POP("r12") \
    NASRS_SIM_CFI_POP("rbx") NASRS_SIM_CFI_POP("rbp")
// An intrinsic's entry stub: saves the registers, calls `impl` with the saved stack pointer as one
// more argument (in `reg`), and returns what it returns. `impl` returns only when the caller did
// not block; one that blocks is resumed straight into its kernel (resume_ctx).
#define NASRS_SIM_STUB(name, impl, reg)         \
    ".p2align 4\n"                              \
    ".globl " name "\n"                         \
    ".type " name ",@function\n" name ":\n"     \
    ".cfi_startproc\n" NASRS_SIM_SAVE_REGS      \
    "movq %rsp, %" reg "\n"                     \
    "subq $8, %rsp\n"                           \
    ".cfi_adjust_cfa_offset 8\n"                \
    "call " impl "\n"                           \
    "addq $8, %rsp\n"                           \
    ".cfi_adjust_cfa_offset -8\n" NASRS_SIM_RESTORE_REGS \
    "ret\n"                                     \
    ".cfi_endproc\n"                            \
    ".size " name ",.-" name "\n"
__asm__(
    ".text\n"
    NASRS_SIM_STUB("nasrs_sim_warp", "nasrs_sim_warp_impl", "r9")
    NASRS_SIM_STUB("nasrs_sim_syncthreads_op", "nasrs_sim_syncthreads_impl", "rdx")
    NASRS_SIM_STUB("nasrs_sim_activemask", "nasrs_sim_activemask_impl", "rsi")
    ".p2align 4\n"
    ".globl nasrs_sim_switch_ctx\n"
    ".hidden nasrs_sim_switch_ctx\n"
    ".type nasrs_sim_switch_ctx,@function\n"
    "nasrs_sim_switch_ctx:\n"
    ".cfi_startproc\n"
    NASRS_SIM_SAVE_REGS
    "movq %rsp, (%rdi)\n"
    "movq %rsi, %rsp\n"
    "movq %rdx, %rax\n"
    "popq %r15\n"
    "popq %r14\n"
    "popq %r13\n"
    "popq %r12\n"
    "popq %rbx\n"
    "popq %rbp\n"
    "popq %rcx\n"
    "jmpq *%rcx\n"
    ".cfi_endproc\n"
    ".size nasrs_sim_switch_ctx,.-nasrs_sim_switch_ctx\n");
extern "C" uint64_t nasrs_sim_switch_ctx(void** save_sp, void* load_sp, uint64_t value);

// Resumes the context saved at `sp` with `value`, for good: the running one is finished or was
// saved (a blocked fiber, by its intrinsic's stub). Inline, so that each place that resumes has
// its own indirect jump, predicted from its own history.
[[noreturn]] __attribute__((always_inline)) inline void resume_ctx(void* sp, uint64_t value) {
    __asm__ __volatile__(
        "movq %0, %%rsp\n\t"
        "popq %%r15\n\t"
        "popq %%r14\n\t"
        "popq %%r13\n\t"
        "popq %%r12\n\t"
        "popq %%rbx\n\t"
        "popq %%rbp\n\t"
        "popq %%rcx\n\t"
        "jmpq *%%rcx"
        :
        : "D"(sp), "a"(value)
        : "memory");
    __builtin_unreachable();
}
#endif

// Where a fresh fiber starts: runs thread bodies until its thread blocks for good or the block is
// done (defined with the other fiber-side entry points).
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

namespace {

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

__thread ThreadState* g_ts NASRS_SIM_TLS_MODEL;
// g_ts while its launch runs (in_run), else null: the intrinsics' one-load check that they are
// called from a kernel.
__thread ThreadState* g_active NASRS_SIM_TLS_MODEL;

// in_run and g_active change together.
inline void set_in_run(ThreadState* ts, bool on) {
    ts->in_run = on;
    g_active = on ? ts : nullptr;
}

size_t page_size() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

// ---- guarded memory -----------------------------------------------------------------------

struct Alloc {
    char* start;
    size_t bytes;
    char* map;
    size_t map_len;
};

// Process-wide: any OS thread may free what another allocated. Keyed by start; mappings are
// disjoint, so start order is mapping order.
std::mutex g_alloc_mu;
std::map<uintptr_t, Alloc>& live_allocs() {
    static auto* m = new std::map<uintptr_t, Alloc>();  // never destroyed: frees may run at exit
    return *m;
}
Alloc g_freed[kFreedHistory];  // ring of recent frees, for use-after-free messages
unsigned g_freed_next;

// NaN fill: byte i from `p` is 0xFF when i is even, 0x7F when odd, so every 2-byte unit reads
// 0x7FFF and every 4-byte word 0x7FFF7FFF from the start: a quiet NaN as f32, f64 (both halves
// have an all-ones exponent), bf16 and f16. (0x7FC00000 would not do: doubled it is the finite
// double 2.2e307.)
void poison(void* p, size_t n) {
    unsigned char* b = (unsigned char*)p;
    size_t i = 0;
    for (; i < n && ((uintptr_t)(b + i) & 7); ++i) b[i] = (i & 1) ? 0x7F : 0xFF;
    const uint64_t w = (i & 1) ? 0xFF7FFF7FFF7FFF7Full : 0x7FFF7FFF7FFF7FFFull;
    for (; i + 8 <= n; i += 8) memcpy(b + i, &w, 8);
    for (; i < n; ++i) b[i] = (i & 1) ? 0x7F : 0xFF;
}

// [guard page][data pages, `bytes` flush against the end][guard page].
bool map_guarded(size_t bytes, Alloc* out) {
    const size_t page = page_size();
    if (bytes == 0 || bytes > SIZE_MAX / 2) return false;
    const size_t data = (bytes + page - 1) / page * page;
    const size_t len = data + 2 * page;
    void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return false;
    char* map = (char*)m;
    if (mprotect(map + page, data, PROT_READ | PROT_WRITE) != 0) {
        munmap(map, len);
        return false;
    }
    out->map = map;
    out->map_len = len;
    out->start = map + page + data - bytes;
    out->bytes = bytes;
    return true;
}

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

// ---- fault handling -----------------------------------------------------------------------

// SIGFPE: integer division by zero traps on x86 (the device returns garbage); SIGILL: g++ turns a
// provable null dereference into ud2, and __builtin_trap is ud2.
constexpr int kFaultSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
struct sigaction g_prev_action[NSIG];
std::once_flag g_handler_once;

void on_fault(int sig, siginfo_t* si, void* ucv) {
    ThreadState* ts = g_ts;
    if (ts && ts->in_run) {
        set_in_run(ts, false);
        ts->fault_sig = sig;
        ts->fault_code = si->si_code;
        ts->fault_addr = si->si_addr;
        ts->fault_err = -1;
        ts->fault_trapno = -1;
        ucontext_t* uc = (ucontext_t*)ucv;
#if defined(__x86_64__)
        ts->fault_err = (long)uc->uc_mcontext.gregs[REG_ERR];
        ts->fault_trapno = (long)uc->uc_mcontext.gregs[REG_TRAPNO];
#endif
        // The kernel blocked `sig` for the handler; leaving by a jump must unblock it, or the
        // next fault on this thread would kill the process.
        pthread_sigmask(SIG_SETMASK, &uc->uc_sigmask, nullptr);
        siglongjmp(ts->jb, 1);
    }
    // Not ours: put the previous action back and return; the faulting instruction runs again and
    // the previous handler (Rust's stack-overflow handler, or the default action) sees it.
    sigaction(sig, &g_prev_action[sig], nullptr);
}

void install_handlers() {
    std::call_once(g_handler_once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        for (int sig : kFaultSignals) sigaction(sig, &sa, &g_prev_action[sig]);
    });
}

// A fiber stack overflow faults on a guard page, with no stack left to run a handler on: the
// handler needs a signal stack. Rust's std gives its threads one; other threads get ours.
bool ensure_altstack(ThreadState* ts) {
    if (ts->altstack_checked) return true;
    stack_t cur;
    if (sigaltstack(nullptr, &cur) != 0) return false;
    if (cur.ss_flags & SS_DISABLE) {
        size_t len = kAltStack + (size_t)SIGSTKSZ;
        len = (len + page_size() - 1) / page_size() * page_size();
        void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return false;
        stack_t ss = {};
        ss.ss_sp = m;
        ss.ss_size = len;
        if (sigaltstack(&ss, nullptr) != 0) {
            munmap(m, len);
            return false;
        }
        ts->altstack = (char*)m;
        ts->altstack_len = len;
    }
    ts->altstack_checked = true;
    return true;
}

// ---- messages -----------------------------------------------------------------------------

int set_error(ThreadState* ts, int code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
int set_error(ThreadState* ts, int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ts->err, sizeof ts->err, fmt, ap);
    va_end(ap);
    return code;
}

// "kernel K, block (x,y,z) thread (x,y,z)" (or the scheduler when no fiber runs).
struct Where {
    char s[256];
};
Where where(const ThreadState* ts, int t) {
    Where w;
    const nasrs_sim_dim3 b = nasrs_sim_block_idx;
    if (t < 0) {
        snprintf(w.s, sizeof w.s, "kernel %s, block (%u,%u,%u) (in the simulator's scheduler)", ts->name, b.x, b.y,
                 b.z);
    } else {
        const nasrs_sim_dim3 i = ts->fibers[t].idx;
        snprintf(w.s, sizeof w.s, "kernel %s, block (%u,%u,%u) thread (%u,%u,%u)", ts->name, b.x, b.y, b.z, i.x, i.y,
                 i.z);
    }
    return w;
}

const char* op_name(unsigned opsz) {
    switch (opsz & 0xff) {
        case NASRS_SIM_WARP_SYNC: return "__syncwarp";
        case NASRS_SIM_WARP_SHFL_IDX: return "__shfl_sync";
        case NASRS_SIM_WARP_SHFL_UP: return "__shfl_up_sync";
        case NASRS_SIM_WARP_SHFL_DOWN: return "__shfl_down_sync";
        case NASRS_SIM_WARP_SHFL_XOR: return "__shfl_xor_sync";
        case NASRS_SIM_WARP_BALLOT: return "__ballot_sync";
        case NASRS_SIM_WARP_ANY: return "__any_sync";
        case NASRS_SIM_WARP_ALL: return "__all_sync";
        default: return "a warp operation";
    }
}

// ---- the run queue ------------------------------------------------------------------------------

// Lanes `lanes` of warp `warp` can run (again).
inline void make_runnable(ThreadState* ts, unsigned warp, uint32_t lanes) {
    const uint32_t r = ts->run[warp] | lanes;
    ts->run[warp] = r;
    ts->run_any |= (uint32_t)(r != 0) << warp;
}

// Thread t waits (or has exited).
inline void make_blocked(ThreadState* ts, unsigned t) {
    const unsigned warp = t >> 5;
    const uint32_t r = ts->run[warp] & ~(1u << (t & 31));
    ts->run[warp] = r;
    if (!r) ts->run_any &= ~(1u << warp);
}

// The next runnable (or fresh) thread after `from` in cyclic thread order (`from` itself last), or
// -1: the first set bit after `from`'s in its warp's word, else in the first nonempty word after
// it, else (wrapping) in the first nonempty word.
__attribute__((always_inline)) inline int next_runnable(const ThreadState* ts, unsigned from) {
    const unsigned w = from >> 5, l = from & 31;
    const uint32_t above = (uint32_t)(0xfffffffeull << l);  // lanes l+1..31 (none when l == 31)
    const uint32_t here = ts->run[w] & above;
    if (here) return (int)(w * 32 + (unsigned)__builtin_ctz(here));
    const uint32_t later = ts->run_any & (uint32_t)(0xfffffffeull << w);  // warps w+1.. (none when w == 31)
    const uint32_t any = later ? later : ts->run_any;                    // else wrap (w's low lanes included)
    if (!any) return -1;
    const unsigned w2 = (unsigned)__builtin_ctz(any);
    return (int)(w2 * 32 + (unsigned)__builtin_ctz(ts->run[w2]));
}

// ---- fibers -------------------------------------------------------------------------------

// Maps a new stack for the pool (the pool is empty).
NASRS_SIM_COLD Stack* new_stack(ThreadState* ts) {
    if (ts->nstacks == kMaxBlockThreads) return nullptr;  // cannot happen: one per thread at most
    void* m = mmap(nullptr, kFiberMap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) return nullptr;
    if (mprotect(m, kFiberGuard, PROT_NONE) != 0) {
        munmap(m, kFiberMap);
        return nullptr;
    }
    Stack* s = &ts->stacks[ts->nstacks];
    s->map = (char*)m;
    s->lo = s->map + kFiberGuard;
    s->hi = s->map + kFiberMap - fiber_color(ts->nstacks);
    ++ts->nstacks;
    return s;
}

inline Stack* take_stack(ThreadState* ts) {
    if (__builtin_expect(ts->nfree != 0, 1)) return ts->free_list[--ts->nfree];
    return new_stack(ts);
}

inline void give_stack(ThreadState* ts, Fiber* f) {
    if (f->stack) {
        ts->free_list[ts->nfree++] = f->stack;
        f->stack = nullptr;
    }
}

#if !NASRS_SIM_ASM_SWITCH
void uc_entry() { nasrs_sim_fiber_main(); }
#endif

// The hot frames of a switched-out fiber, upwards from its saved stack pointer: its saved
// registers and resume address, then its kernel's frames.
constexpr unsigned kPrefetchLines = 4;

// Fetches the hot frames of fiber t (when it has any) into the cache ahead of a switch into it:
// the one after the fiber being switched to, most likely the next to run. The blocked fibers'
// frames do not all fit in L1 (256 threads x 4-5 lines), so without this a switch waits on each
// line in turn as it returns into the kernel. (t < nstarted also means t < nthreads.)
inline void prefetch_fiber(const ThreadState* ts, unsigned t) {
#if NASRS_SIM_ASM_SWITCH
    if (t >= ts->nstarted) return;
    const char* sp = (const char*)ts->fibers[t].sp;
    // (As asm: g++ 12 drops these as dead when written as __builtin_prefetch.)
    for (unsigned i = 0; i < kPrefetchLines; ++i) __asm__ __volatile__("prefetcht0 %0" ::"m"(sp[64 * i]));
#else
    (void)ts;
    (void)t;
#endif
}

// Gives fresh thread t a stack from the pool, set up so that switching to it enters
// nasrs_sim_fiber_main; false when no stack can be had.
inline bool start_fiber(ThreadState* ts, unsigned t) {
    Fiber* g = &ts->fibers[t];
    g->stack = take_stack(ts);
    if (__builtin_expect(!g->stack, 0)) return false;
    ts->nstarted = t + 1;
#if NASRS_SIM_ASM_SWITCH
    // Entered as a call would enter it: rsp + 8 16-byte aligned.
    uint64_t* sp = (uint64_t*)((uintptr_t)g->stack->hi & ~(uintptr_t)15);
    *--sp = 0;                                           // its return address: it never returns
    *--sp = (uint64_t)(uintptr_t)&nasrs_sim_fiber_main;  // the resume address
    for (int i = 0; i < 6; ++i) *--sp = 0;               // r15 r14 r13 r12 rbx rbp (0: the end of the frame chain)
    g->sp = sp;
#else
    getcontext(&g->uc);
    g->uc.uc_stack.ss_sp = g->stack->lo;
    g->uc.uc_stack.ss_size = (size_t)(g->stack->hi - g->stack->lo);
    g->uc.uc_link = nullptr;
    makecontext(&g->uc, uc_entry, 0);
#endif
    return true;
}

// Makes thread t the running one, starting it when fresh; false (nothing changed) when a fresh
// thread can have no stack. The caller then switches to it.
__attribute__((always_inline)) inline bool activate(ThreadState* ts, unsigned t) {
    if (t >= ts->nstarted && !start_fiber(ts, t)) return false;
    ts->cur = (int)t;
    nasrs_sim_thread_idx = ts->fibers[t].idx;
    prefetch_fiber(ts, t + 1);
    return true;
}

// Leaves the running fiber `from` for activated thread t (-1: the scheduler). With the asm switch
// this never returns: `from` is finished or was saved by its intrinsic's stub, and t resumes with
// the result of what it waited in (lanes.result) as its intrinsic's return value. With ucontext it
// returns when `from` is resumed.
NASRS_SIM_LEAVES __attribute__((always_inline)) inline void leave_for(ThreadState* ts, Fiber* from, int t) {
#if NASRS_SIM_ASM_SWITCH
    (void)from;
    if (t < 0) resume_ctx(ts->sched_sp, 0);
    resume_ctx(ts->fibers[t].sp, ts->lanes.result[t]);
#else
    swapcontext(&from->uc, t < 0 ? &ts->sched_uc : &ts->fibers[t].uc);
#endif
}

// switch_from's way to a fresh thread (once per thread), out of line. With the asm switch, a jump
// into nasrs_sim_fiber_main on the new stack as a call would enter it (rsp + 8 16-byte aligned, a
// null return address and frame pointer: the ends of the chains, for debuggers).
NASRS_SIM_LEAVES __attribute__((noinline)) void start_and_leave(ThreadState* ts, Fiber* from, unsigned t) {
#if NASRS_SIM_ASM_SWITCH
    (void)from;
    Fiber* g = &ts->fibers[t];
    g->stack = take_stack(ts);
    if (__builtin_expect(!g->stack, 0)) resume_ctx(ts->sched_sp, 0);
    ts->nstarted = t + 1;
    ts->cur = (int)t;
    nasrs_sim_thread_idx = g->idx;
    prefetch_fiber(ts, t + 1);
    void** top = (void**)((uintptr_t)g->stack->hi & ~(uintptr_t)15);
    top[-1] = nullptr;
    __asm__ __volatile__(
        "movq %0, %%rsp\n\t"
        "xorl %%ebp, %%ebp\n\t"
        "jmp nasrs_sim_fiber_main"
        :
        : "r"(top - 1)
        : "memory");
    __builtin_unreachable();
#else
    leave_for(ts, from, activate(ts, t) ? (int)t : -1);
#endif
}

// Records where the running thread t's intrinsic stub saved its registers: where it resumes if
// it blocks (asm switch; a no-op with ucontext, where swapcontext saves them).
inline void set_saved(ThreadState* ts, unsigned t, void* saved) {
#if NASRS_SIM_ASM_SWITCH
    ts->fibers[t].sp = saved;
#else
    (void)ts;
    (void)t;
    (void)saved;
#endif
}

// Leaves the running fiber `from` (blocked, its registers saved: set_saved) for thread `next`, or
// the scheduler when next < 0 or a fresh next can have no stack (ts->cur still names `from`: the
// scheduler goes on from there, and reports that). The hot path keeps nothing live across a
// call.
NASRS_SIM_LEAVES __attribute__((always_inline)) inline void switch_from(ThreadState* ts, Fiber* from, int next) {
    if (__builtin_expect(next >= 0 && (unsigned)next < ts->nstarted, 1)) {
        ts->cur = next;
        nasrs_sim_thread_idx = ts->fibers[next].idx;
        prefetch_fiber(ts, (unsigned)next + 1);
        leave_for(ts, from, next);
    } else if (next >= 0) {
        start_and_leave(ts, from, (unsigned)next);
    } else {
        leave_for(ts, from, -1);
    }
}

[[noreturn]] NASRS_SIM_COLD void outside_launch(const char* what) {
    fprintf(stderr, "nasrs cuda sim: %s called outside a kernel launch\n", what);
    abort();
}

// The running launch, for an intrinsic. (Inside a launch only fibers run kernel code, so
// ts->cur names the caller.)
inline ThreadState* fiber_state(const char* what) {
    ThreadState* ts = g_active;
    if (__builtin_expect(!ts, 0)) outside_launch(what);
    return ts;
}

// Fails the launch from inside the running fiber: the scheduler sees `failed` and abandons the block.
[[noreturn]] NASRS_SIM_COLD void fiber_fail(ThreadState* ts, int code, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
[[noreturn]] void fiber_fail(ThreadState* ts, int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ts->err, sizeof ts->err, fmt, ap);
    va_end(ap);
    ts->failed = code;
    leave_for(ts, &ts->fibers[ts->cur], -1);
    abort();  // an abandoned fiber is never resumed
}

// What __syncthreads op `op` returns (bar_count and bar_participants stay put from a release
// until the next, which needs every live thread to arrive again).
inline unsigned bar_result(const ThreadState* ts, unsigned op) {
    switch (op) {
        case NASRS_SIM_BAR_COUNT: return ts->bar_count;
        case NASRS_SIM_BAR_AND: return ts->bar_count == ts->bar_participants;
        case NASRS_SIM_BAR_OR: return ts->bar_count != 0;
        default: return 0;
    }
}

// Every live thread is at the barrier: the waiting ones become runnable, each with its result in
// lanes.result (worked out here for those waiting with an op, which is in lanes.arg). Returns the
// result for op `op` (the releasing thread's).
unsigned release_barrier(ThreadState* ts, unsigned op = 0) {
    ts->bar_participants = ts->at_barrier;
    ts->bar_count = ts->bar_pending;
    ts->bar_pending = 0;
    const bool ops = ts->bar_ops;
    ts->bar_ops = false;
    LaneSlots& ls = ts->lanes;
    for (unsigned w = 0; w < ts->nwarps; ++w)
        if (const uint32_t lanes = ts->warp_at_bar[w]) {
            if (ops)
                for (uint32_t m = lanes; m; m &= m - 1) {
                    const unsigned t = w * 32 + (unsigned)__builtin_ctz(m);
                    if (ls.arg[t]) ls.result[t] = bar_result(ts, (unsigned)ls.arg[t]);
                }
            make_runnable(ts, w, lanes);
            ts->warp_at_bar[w] = 0;
        }
    ts->at_barrier = 0;
    return bar_result(ts, op);
}

// PTX shfl.sync's source lane, with CUDA's c operand ((32 - width) << 8, | 0x1f except for up).
inline unsigned shfl_source(unsigned op, unsigned lane, int param, int width) {
    const int seg = 32 - width;
    const int cval = op == NASRS_SIM_WARP_SHFL_UP ? 0 : 31;
    const int b = param & 31;
    const int max_lane = ((int)lane & seg) | (cval & ~seg);
    const int min_lane = (int)lane & seg;
    int j = (int)lane;
    bool ok = false;
    switch (op) {
        case NASRS_SIM_WARP_SHFL_UP: j = (int)lane - b; ok = j >= max_lane; break;
        case NASRS_SIM_WARP_SHFL_DOWN: j = (int)lane + b; ok = j <= max_lane; break;
        case NASRS_SIM_WARP_SHFL_XOR: j = (int)lane ^ b; ok = j <= max_lane; break;
        default: j = min_lane | (b & ~seg); ok = j <= max_lane; break;
    }
    return ok ? (unsigned)j : lane;
}

[[noreturn]] NASRS_SIM_COLD void warp_mismatch_error(ThreadState* ts, unsigned warp, unsigned l, unsigned mask) {
    const WarpSlots s = warp_slots(ts, warp);
    const unsigned self = (unsigned)ts->cur & 31;
    const nasrs_sim_dim3 g = ts->fibers[warp * 32 + l].idx;
    const unsigned gmask = key_mask(s.key[l]), gopsz = key_opsz(s.key[l]), mopsz = key_opsz(s.key[self]);
    if (gmask != mask)
        fiber_fail(ts, NASRS_SIM_ERR_SYNC,
                   "invalid warp sync in %s: lanes of warp %u sync with different masks: lane %u (thread (%u,%u,%u)) "
                   "in %s with mask 0x%08x, lane %u in %s with mask 0x%08x",
                   where(ts, ts->cur).s, warp, l, g.x, g.y, g.z, op_name(gopsz), gmask, self, op_name(mopsz), mask);
    fiber_fail(ts, NASRS_SIM_ERR_SYNC,
               "invalid warp sync in %s: lanes of warp %u meet at different warp operations: lane %u (thread "
               "(%u,%u,%u)) in %s on %u-byte values, lane %u in %s on %u-byte values (mask 0x%08x)",
               where(ts, ts->cur).s, warp, l, g.x, g.y, g.z, op_name(gopsz), gopsz >> 8u, self, op_name(mopsz),
               mopsz >> 8u, mask);
}

// The first lane of `mask` (in lane order) that disagrees with `key`.
[[noreturn]] NASRS_SIM_COLD void warp_key_error(ThreadState* ts, unsigned warp, unsigned mask, uint64_t key) {
    const WarpSlots s = warp_slots(ts, warp);
    uint32_t m = mask;
    while (m && s.key[__builtin_ctz(m)] == key) m &= m - 1;
    warp_mismatch_error(ts, warp, (unsigned)__builtin_ctz(m), mask);
}

[[noreturn]] NASRS_SIM_COLD void warp_source_error(ThreadState* ts, unsigned warp, unsigned l, unsigned src,
                                                   unsigned mask) {
    const nasrs_sim_dim3 g = ts->fibers[warp * 32 + l].idx;
    fiber_fail(ts, NASRS_SIM_ERR_SYNC,
               "invalid warp sync in %s: lane %u (thread (%u,%u,%u)) of warp %u reads lane %u in %s, which is not in "
               "the mask 0x%08x",
               where(ts, ts->cur).s, l, g.x, g.y, g.z, warp, src, op_name(key_opsz(ts->lanes.key[warp * 32 + l])), mask);
}

// A full-warp shuffle whose lanes all pass the same srcLane/delta/laneMask and width (the usual
// case): the source lane is a function of the lane alone, and always in the mask. Width 32 (the
// most usual) is a copy or two.
template <unsigned Op>
inline void shuffle_uniform(const WarpSlots& s, int param, int width) {
    if (width == 32) {
        const unsigned b = (unsigned)param & 31;
        switch (Op) {
            case NASRS_SIM_WARP_SHFL_DOWN:  // lane l reads l + b, the top b lanes themselves
                memcpy(s.result, s.value + b, (32 - b) * sizeof(uint64_t));
                memcpy(s.result + (32 - b), s.value + (32 - b), b * sizeof(uint64_t));
                return;
            case NASRS_SIM_WARP_SHFL_UP:  // lane l reads l - b, the bottom b lanes themselves
                memcpy(s.result + b, s.value, (32 - b) * sizeof(uint64_t));
                memcpy(s.result, s.value, b * sizeof(uint64_t));
                return;
            case NASRS_SIM_WARP_SHFL_IDX:
                for (unsigned l = 0; l < 32; ++l) s.result[l] = s.value[b];
                return;
            default:
                break;
        }
    }
    for (unsigned l = 0; l < 32; ++l) s.result[l] = s.value[shfl_source(Op, l, param, width)];
}

// Every lane of `mask` has arrived (the caller completed it): check they agree, then give each its
// result and make the others runnable. O(lanes in the mask), i.e. O(1) per arrival.
__attribute__((noinline)) uint64_t complete_warp_op(ThreadState* ts, unsigned warp, unsigned mask) {
    const WarpSlots s = warp_slots(ts, warp);
    const unsigned self = (unsigned)ts->cur & 31;
    const uint64_t key = s.key[self], arg = s.arg[self];
    const unsigned op = key_opsz(key) & 0xff;
    bool uniform;  // every lane passed the same param and width
    if (mask == 0xffffffffu) {  // two lanes at a time
        typedef uint64_t u64x2 __attribute__((vector_size(16)));
        const u64x2 k0 = {key, key}, a0 = {arg, arg};
        u64x2 kd = {0, 0}, ad = {0, 0};
        for (unsigned l = 0; l < 32; l += 2) {
            u64x2 k, a;
            memcpy(&k, s.key + l, sizeof k);
            memcpy(&a, s.arg + l, sizeof a);
            kd |= k ^ k0;
            ad |= a ^ a0;
        }
        if (__builtin_expect((kd[0] | kd[1]) != 0, 0)) warp_key_error(ts, warp, mask, key);
        uniform = (ad[0] | ad[1]) == 0;
    } else {
        uniform = false;
        for (uint32_t m = mask; m; m &= m - 1)
            if (__builtin_expect(s.key[__builtin_ctz(m)] != key, 0)) warp_key_error(ts, warp, mask, key);
    }
    if (op >= NASRS_SIM_WARP_SHFL_IDX && op <= NASRS_SIM_WARP_SHFL_XOR) {
        if (uniform) {
            const int param = (int32_t)(uint32_t)arg, width = (int32_t)(uint32_t)(arg >> 32);
            switch (op) {
                case NASRS_SIM_WARP_SHFL_IDX: shuffle_uniform<NASRS_SIM_WARP_SHFL_IDX>(s, param, width); break;
                case NASRS_SIM_WARP_SHFL_UP: shuffle_uniform<NASRS_SIM_WARP_SHFL_UP>(s, param, width); break;
                case NASRS_SIM_WARP_SHFL_DOWN: shuffle_uniform<NASRS_SIM_WARP_SHFL_DOWN>(s, param, width); break;
                default: shuffle_uniform<NASRS_SIM_WARP_SHFL_XOR>(s, param, width); break;
            }
        } else {
            for (uint32_t m = mask; m; m &= m - 1) {
                const unsigned l = (unsigned)__builtin_ctz(m);
                const unsigned src = shfl_source(op, l, (int32_t)(uint32_t)s.arg[l], (int32_t)(uint32_t)(s.arg[l] >> 32));
                if (__builtin_expect(!((mask >> src) & 1u), 0)) warp_source_error(ts, warp, l, src, mask);
                s.result[l] = s.value[src];
            }
        }
    } else {
        uint32_t ballot = 0;
        for (uint32_t m = mask; m; m &= m - 1) {
            const unsigned l = (unsigned)__builtin_ctz(m);
            if (s.value[l]) ballot |= 1u << l;
        }
        uint64_t r = 0;  // NASRS_SIM_WARP_SYNC
        if (op == NASRS_SIM_WARP_BALLOT) r = ballot;
        else if (op == NASRS_SIM_WARP_ANY) r = ballot != 0;
        else if (op == NASRS_SIM_WARP_ALL) r = ballot == mask;
        for (uint32_t m = mask; m; m &= m - 1) s.result[__builtin_ctz(m)] = r;
    }
    ts->warp_waiting[warp] &= ~mask;
    make_runnable(ts, warp, mask);  // the caller's bit is set already: it is running
    return s.result[self];
}

// __activemask's convergence: it completes once every lane of the warp that has not exited is
// blocked somewhere (a barrier, a warp sync, __activemask) and gives each waiting lane the lanes
// blocked at the same __activemask call site: the lanes that got there together, as a converged
// group would on the device (lanes in different branches are at different sites). Checked
// whenever a lane of a warp with waiters blocks or exits. True when it released them.
bool try_release_active(ThreadState* ts, unsigned warp) {
    const uint32_t waiting = ts->warp_active[warp];
    if (!waiting) return false;
    const uint32_t blocked = ts->warp_exited[warp] | ts->warp_waiting[warp] | ts->warp_at_bar[warp] | waiting;
    if (ts->warp_exists[warp] & ~blocked) return false;
    const WarpSlots s = warp_slots(ts, warp);
    for (uint32_t m = waiting; m; m &= m - 1) {
        const unsigned l = (unsigned)__builtin_ctz(m);
        uint32_t group = 0;
        for (uint32_t o = waiting; o; o &= o - 1) {
            const unsigned k = (unsigned)__builtin_ctz(o);
            if (s.value[k] == s.value[l]) group |= 1u << k;
        }
        s.result[l] = group;
    }
    make_runnable(ts, warp, waiting);
    ts->warp_active[warp] = 0;
    return true;
}

NASRS_SIM_COLD int exit_wait_error(ThreadState* ts, unsigned t, unsigned waiter) {
    const uint64_t key = ts->lanes.key[waiter];
    const nasrs_sim_dim3 e = ts->fibers[t].idx;
    return set_error(ts, NASRS_SIM_ERR_SYNC,
                     "invalid warp sync in %s: %s with mask 0x%08x waits for lane %u (thread (%u,%u,%u)), which has "
                     "exited",
                     where(ts, (int)waiter).s, op_name(key_opsz(key)), key_mask(key), t & 31, e.x, e.y, e.z);
}

// Thread t has exited (its `run` bit is clear): lanes waiting for it can never complete, and a
// barrier may now be full.
int on_thread_exit(ThreadState* ts, unsigned t) {
    const unsigned warp = t >> 5, bit = 1u << (t & 31);
    --ts->alive;
    ts->warp_exited[warp] |= bit;
    ts->warp_bad[warp] |= bit;
    for (uint32_t m = ts->warp_waiting[warp]; m; m &= m - 1) {  // usually none
        const unsigned l = (unsigned)__builtin_ctz(m);
        if (__builtin_expect(key_mask(ts->lanes.key[warp * 32 + l]) & bit, 0)) return exit_wait_error(ts, t, warp * 32 + l);
    }
    if (ts->at_barrier && ts->at_barrier == ts->alive) release_barrier(ts);
    if (ts->warp_active[warp]) try_release_active(ts, warp);
    return 0;
}

NASRS_SIM_COLD int deadlock_error(ThreadState* ts) {
    unsigned at_bar = 0, at_warp = 0;
    int first_warp = -1, first_bar = -1;
    for (unsigned w = 0; w < ts->nwarps; ++w) {
        const uint32_t bar = ts->warp_at_bar[w], wait = ts->warp_waiting[w] | ts->warp_active[w];
        if (bar && first_bar < 0) first_bar = (int)(w * 32 + (unsigned)__builtin_ctz(bar));
        if (wait && first_warp < 0) first_warp = (int)(w * 32 + (unsigned)__builtin_ctz(wait));
        at_bar += (unsigned)__builtin_popcount(bar);
        at_warp += (unsigned)__builtin_popcount(wait);
    }
    if (first_warp >= 0 && (ts->warp_active[(unsigned)first_warp >> 5] >> (first_warp & 31) & 1u))
        return set_error(ts, NASRS_SIM_ERR_DEADLOCK,
                         "deadlock in %s: no thread can proceed: it waits in __activemask; %u thread(s) wait in warp "
                         "syncs, %u at __syncthreads",
                         where(ts, first_warp).s, at_warp, at_bar);
    if (first_warp >= 0) {
        const uint64_t key = ts->lanes.key[first_warp];
        const unsigned missing = key_mask(key) & ~ts->warp_waiting[(unsigned)first_warp >> 5];
        return set_error(ts, NASRS_SIM_ERR_DEADLOCK,
                         "deadlock in %s: no thread can proceed: it waits in %s (mask 0x%08x) for lanes 0x%08x of "
                         "warp %u, which never arrive; %u thread(s) wait in warp syncs, %u at __syncthreads",
                         where(ts, first_warp).s, op_name(key_opsz(key)), key_mask(key), missing,
                         (unsigned)first_warp >> 5, at_warp, at_bar);
    }
    return set_error(ts, NASRS_SIM_ERR_DEADLOCK, "deadlock in %s: no thread can proceed; %u thread(s) wait at __syncthreads",
                     where(ts, first_bar).s, at_bar);
}

void abandon_block(ThreadState* ts) {
    for (unsigned t = 0; t < ts->nthreads; ++t) give_stack(ts, &ts->fibers[t]);
    ts->cur = -1;
    ts->failed = 0;
}

NASRS_SIM_COLD int stack_error(ThreadState* ts, unsigned t) {
    return set_error(ts, NASRS_SIM_ERR_LAUNCH, "cannot map a fiber stack for %s", where(ts, (int)t).s);
}

// block_fiber's way when lanes of t's warp wait in __activemask (rare), out of line.
NASRS_SIM_LEAVES __attribute__((noinline)) void block_fiber_active(ThreadState* ts, unsigned t) {
    make_blocked(ts, t);
    try_release_active(ts, t >> 5);
    switch_from(ts, &ts->fibers[t], next_runnable(ts, t));
}

// The running thread t has blocked (its wait recorded; with the asm switch its registers saved,
// see set_saved): clears its `run` bit and runs the next runnable thread in cyclic order directly, one
// switch, without a round trip through the scheduler (only when none is runnable, the block
// being done or deadlocked, or a stack cannot be had does control go back to the scheduler,
// which sorts it out). With the asm switch it never returns (t resumes straight into its kernel);
// with ucontext it returns when t is resumed.
NASRS_SIM_LEAVES __attribute__((always_inline)) inline void block_fiber(ThreadState* ts, unsigned t) {
    const unsigned w = t >> 5, l = t & 31;
    if (__builtin_expect(ts->warp_active[w] != 0, 0)) {
        block_fiber_active(ts, t);
    } else {
        // make_blocked and next_runnable, for the usual case first: a later lane of the same warp
        // runs next.
        const uint32_t r = ts->run[w] & ~(1u << l);
        ts->run[w] = r;
        const uint32_t later = r & (uint32_t)(0xfffffffeull << l);
        if (__builtin_expect(later != 0, 1)) {
            switch_from(ts, &ts->fibers[t], (int)(w * 32 + (unsigned)__builtin_ctz(later)));
        } else {
            if (!r) ts->run_any &= ~(1u << w);
            switch_from(ts, &ts->fibers[t], next_runnable(ts, t));
        }
    }
}

// Runs every thread of the current block to completion (or to the first error). Fibers pass
// control among themselves (block_fiber); the scheduler only starts the first and takes over
// when none is runnable.
int run_block(ThreadState* ts) {
    const unsigned n = ts->nthreads;
    for (unsigned w = 0; w < ts->nwarps; ++w) {
        ts->warp_waiting[w] = ts->warp_exited[w] = ts->warp_active[w] = ts->warp_at_bar[w] = 0;
        ts->warp_bad[w] = ~ts->warp_exists[w];
        ts->run[w] = ts->warp_exists[w];  // every thread fresh
    }
    ts->run_any = ts->nwarps == 32 ? 0xffffffffu : (1u << ts->nwarps) - 1u;
    ts->nstarted = 0;
    ts->alive = n;
    ts->at_barrier = 0;
    ts->bar_pending = 0;
    ts->bar_ops = false;
    unsigned from = n - 1;  // so thread 0 runs first
    while (ts->alive) {
        const int t = next_runnable(ts, from);
        if (t < 0) return deadlock_error(ts);
        if (!activate(ts, (unsigned)t)) return stack_error(ts, (unsigned)t);
#if NASRS_SIM_ASM_SWITCH
        nasrs_sim_switch_ctx(&ts->sched_sp, ts->fibers[t].sp, ts->lanes.result[t]);
#else
        swapcontext(&ts->sched_uc, &ts->fibers[t].uc);
#endif
        if (ts->failed) return ts->failed;
        from = (unsigned)ts->cur;
        ts->cur = -1;
    }
    return 0;
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

bool ensure_dynamic_shared(ThreadState* ts) {
    if (ts->dyn_map) return true;
    const size_t page = page_size();
    const size_t data = (kMaxDynamicShared + page - 1) / page * page;
    const size_t len = data + 2 * page;
    void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return false;
    if (mprotect((char*)m + page, data, PROT_READ | PROT_WRITE) != 0) {
        munmap(m, len);
        return false;
    }
    ts->dyn_map = (char*)m;
    ts->dyn_map_len = len;
    ts->dyn_end = ts->dyn_map + page + data;
    return true;
}

// Words for a fault address: which allocation, how far outside it.
int fault_error(ThreadState* ts) {
    const int t = ts->cur;
    const Where w = where(ts, t);
    const uintptr_t a = (uintptr_t)ts->fault_addr;
    if (ts->fault_sig == SIGILL)
        return set_error(ts, NASRS_SIM_ERR_FAULT,
                         "illegal instruction in %s (g++ compiles a provable null dereference or other undefined "
                         "behaviour into a trap)",
                         w.s);
    if (ts->fault_sig == SIGFPE)
        return set_error(ts, NASRS_SIM_ERR_FAULT,
                         "arithmetic fault (integer division by zero or INT_MIN / -1; the device gives no error) in %s",
                         w.s);
    const char* access = "access";
    if (ts->fault_trapno == 14) access = (ts->fault_err & 16) ? "execute" : (ts->fault_err & 2) ? "write" : "read";
    if (ts->fault_sig == SIGBUS)
        return set_error(ts, NASRS_SIM_ERR_FAULT, "bus error (%s) in %s: address %p", access, w.s, ts->fault_addr);
    if (ts->fault_trapno == 13)
        return set_error(ts, NASRS_SIM_ERR_FAULT,
                         "general-protection fault in %s: a wild (non-canonical or misaligned) pointer", w.s);

    // Dynamic shared memory.
    if (a >= (uintptr_t)ts->dyn_map && a < (uintptr_t)ts->dyn_map + ts->dyn_map_len) {
        if (a >= (uintptr_t)ts->dyn_end)
            return set_error(ts, NASRS_SIM_ERR_FAULT,
                             "out-of-bounds %s in %s: address %p is %zu bytes past the end of the %u-byte dynamic "
                             "shared memory at %p",
                             access, w.s, ts->fault_addr, (size_t)(a - (uintptr_t)ts->dyn_end), ts->shared_bytes,
                             (void*)ts->dyn_ptr);
        return set_error(ts, NASRS_SIM_ERR_FAULT,
                         "out-of-bounds %s in %s: address %p is %zu bytes before the start of the %u-byte dynamic "
                         "shared memory at %p",
                         access, w.s, ts->fault_addr, (size_t)((uintptr_t)ts->dyn_ptr - a), ts->shared_bytes,
                         (void*)ts->dyn_ptr);
    }
    // STATIC_SHARED arrays.
    for (unsigned i = 0; i < kMaxStaticShared; ++i) {
        const SharedSlot& sl = ts->sslots[i];
        if (!sl.map || a < (uintptr_t)sl.map || a >= (uintptr_t)sl.map + sl.map_len) continue;
        if (a >= (uintptr_t)sl.end)
            return set_error(ts, NASRS_SIM_ERR_FAULT,
                             "out-of-bounds %s in %s: address %p is %zu bytes past the end of a %zu-byte STATIC_SHARED "
                             "array at %p",
                             access, w.s, ts->fault_addr, (size_t)(a - (uintptr_t)sl.end), sl.bytes, (void*)sl.ptr);
        return set_error(ts, NASRS_SIM_ERR_FAULT,
                         "out-of-bounds %s in %s: address %p is before the start of a %zu-byte STATIC_SHARED array at %p",
                         access, w.s, ts->fault_addr, sl.bytes, (void*)sl.ptr);
    }
    // Fiber stack guards.
    for (unsigned i = 0; i < ts->nstacks; ++i) {
        const Stack& s = ts->stacks[i];
        if (a >= (uintptr_t)s.map && a < (uintptr_t)s.lo)
            return set_error(ts, NASRS_SIM_ERR_FAULT,
                             "fiber stack overflow (%s) in %s: address %p is %zu bytes below the thread's %zu KiB "
                             "simulator stack (a huge local array or deep recursion)",
                             access, w.s, ts->fault_addr, (size_t)((uintptr_t)s.lo - a), kFiberStack / 1024);
    }
    // Guarded allocations, live then freed.
    {
        std::lock_guard<std::mutex> lock(g_alloc_mu);
        auto& live = live_allocs();
        auto it = live.upper_bound(a);  // first start > a: a may be in its front guard
        const Alloc* hit = nullptr;
        if (it != live.end() && a >= (uintptr_t)it->second.map) hit = &it->second;
        if (!hit && it != live.begin()) {
            --it;  // last start <= a: a may be in its tail guard
            if (a < (uintptr_t)it->second.map + it->second.map_len) hit = &it->second;
        }
        if (hit) {
            const uintptr_t s = (uintptr_t)hit->start, e = s + hit->bytes;
            if (a >= e)
                return set_error(ts, NASRS_SIM_ERR_FAULT,
                                 "out-of-bounds %s in %s: address %p is %zu bytes past the end of a %zu-byte "
                                 "allocation at %p (offset %zu)",
                                 access, w.s, ts->fault_addr, (size_t)(a - e), hit->bytes, (void*)hit->start,
                                 (size_t)(a - s));
            return set_error(ts, NASRS_SIM_ERR_FAULT,
                             "out-of-bounds %s in %s: address %p is %zu bytes before the start of a %zu-byte "
                             "allocation at %p (offset -%zu)",
                             access, w.s, ts->fault_addr, (size_t)(s - a), hit->bytes, (void*)hit->start,
                             (size_t)(s - a));
        }
        for (unsigned k = 0; k < kFreedHistory; ++k) {
            const Alloc& f = g_freed[(g_freed_next + kFreedHistory - 1 - k) % kFreedHistory];  // newest first
            if (!f.map || a < (uintptr_t)f.map || a >= (uintptr_t)f.map + f.map_len) continue;
            const uintptr_t s = (uintptr_t)f.start;
            if (a >= s && a < s + f.bytes)
                return set_error(ts, NASRS_SIM_ERR_FAULT,
                                 "use-after-free %s in %s: address %p is %zu bytes into a %zu-byte allocation at %p "
                                 "that was freed",
                                 access, w.s, ts->fault_addr, (size_t)(a - s), f.bytes, (void*)f.start);
            return set_error(ts, NASRS_SIM_ERR_FAULT,
                             "use-after-free %s in %s: address %p is near a %zu-byte allocation at %p that was freed",
                             access, w.s, ts->fault_addr, f.bytes, (void*)f.start);
        }
    }
    if (a < kNullPageLimit)
        return set_error(ts, NASRS_SIM_ERR_FAULT, "null-pointer %s in %s: address %p", access, w.s, ts->fault_addr);
    return set_error(ts, NASRS_SIM_ERR_FAULT, "wild-pointer %s in %s: address %p is in no live allocation", access, w.s,
                     ts->fault_addr);
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

// ---- fiber-side entry points ----------------------------------------------------------------

// A fiber's life. When its thread finishes and the next runnable thread has not started yet, the
// fiber simply becomes that thread: same stack (hot in cache), no switch at all. So a block of
// threads that never block runs as one plain loop; a fiber is only left when the next runnable
// thread already has a stack of its own (it blocked earlier) or none is runnable.
extern "C" [[noreturn]] __attribute__((visibility("hidden"))) void nasrs_sim_fiber_main() noexcept {
    ThreadState* ts = g_ts;
    for (;;) {
        ts->body(ts->ctx);
        const unsigned t = (unsigned)ts->cur;
        Fiber* f = &ts->fibers[t];
        make_blocked(ts, t);  // for good
        if (int rc = on_thread_exit(ts, t)) {
            ts->failed = rc;
            leave_for(ts, f, -1);
        }
        const int next = next_runnable(ts, t);
        if (next >= 0 && (unsigned)next >= ts->nstarted) {
            Fiber* g = &ts->fibers[next];
            g->stack = f->stack;
            f->stack = nullptr;
            ts->nstarted = (unsigned)next + 1;
            ts->cur = next;
            nasrs_sim_thread_idx = g->idx;
            continue;
        }
        // The stack goes back to the pool while still in use, until the switch below leaves it:
        // nothing takes a stack before then (only a fresh thread's start does, and a fresh next
        // thread took the branch above), and this fiber is never resumed.
        give_stack(ts, f);
        leave_for(ts, f, next >= 0 && activate(ts, (unsigned)next) ? next : -1);
        abort();
    }
}

extern "C" int nasrs_sim_syncthreads_impl(int op, int pred, void* saved) {
    ThreadState* ts = fiber_state("__syncthreads");
    const unsigned t = (unsigned)ts->cur;
    if (pred) ++ts->bar_pending;
    if (++ts->at_barrier == ts->alive) return (int)release_barrier(ts, (unsigned)op);
    set_saved(ts, t, saved);
    ts->warp_at_bar[t >> 5] |= 1u << (t & 31);
    ts->lanes.result[t] = 0;  // plain (or an op that is none of count/and/or)
    ts->lanes.arg[t] = (unsigned)op;
    if (op == NASRS_SIM_BAR_COUNT || op == NASRS_SIM_BAR_AND || op == NASRS_SIM_BAR_OR) ts->bar_ops = true;
    block_fiber(ts, t);
    return (int)ts->lanes.result[t];
}

namespace {
[[noreturn]] NASRS_SIM_COLD void warp_arrival_error(ThreadState* ts, unsigned opsz, unsigned mask, int width) {
    const unsigned t = (unsigned)ts->cur, warp = t >> 5, lane = t & 31;
    if (!(mask & (1u << lane)))
        fiber_fail(ts, NASRS_SIM_ERR_SYNC, "invalid warp sync in %s: %s with mask 0x%08x does not name the calling lane %u",
                   where(ts, (int)t).s, op_name(opsz), mask, lane);
    if (mask & ~ts->warp_exists[warp])
        fiber_fail(ts, NASRS_SIM_ERR_SYNC,
                   "invalid warp sync in %s: %s with mask 0x%08x names lanes 0x%08x that do not exist (warp %u of a "
                   "block (%u,%u,%u) has lanes 0x%08x)",
                   where(ts, (int)t).s, op_name(opsz), mask, mask & ~ts->warp_exists[warp], warp, ts->block.x,
                   ts->block.y, ts->block.z, ts->warp_exists[warp]);
    if (mask & ts->warp_exited[warp]) {
        const unsigned l = (unsigned)__builtin_ctz(mask & ts->warp_exited[warp]);
        const nasrs_sim_dim3 e = ts->fibers[warp * 32 + l].idx;
        fiber_fail(ts, NASRS_SIM_ERR_SYNC,
                   "invalid warp sync in %s: %s with mask 0x%08x names lane %u (thread (%u,%u,%u)), which has exited",
                   where(ts, (int)t).s, op_name(opsz), mask, l, e.x, e.y, e.z);
    }
    fiber_fail(ts, NASRS_SIM_ERR_SYNC, "invalid warp sync in %s: %s width %d is not a power of two in [1, 32]",
               where(ts, (int)t).s, op_name(opsz), width);
}
}  // namespace

extern "C" uint64_t nasrs_sim_warp_impl(unsigned opsz, unsigned mask, uint64_t value, int param, int width,
                                        void* saved) {
    ThreadState* ts = fiber_state("a warp intrinsic");
    const unsigned t = (unsigned)ts->cur;
    // The lane's slots first (harmless if the checks fail the launch): fewer values stay live.
    LaneSlots& ls = ts->lanes;
    ls.value[t] = value;
    ls.arg[t] = (uint32_t)param | (uint64_t)(uint32_t)width << 32;
    set_saved(ts, t, saved);
    const unsigned warp = t >> 5, bit = 1u << (t & 31);
    const unsigned op = opsz & 0xff;
    // Shuffles need a width that is a power of two in [1, 32] (the usual 32 checked first).
    const bool bad_width =
        width != 32 && op - 1u < 4u && ((unsigned)(width - 1) > 31u || (width & (width - 1)));
    if (__builtin_expect(((mask & ts->warp_bad[warp]) | (~mask & bit)) != 0 || bad_width, 0))
        warp_arrival_error(ts, opsz, mask, width);
    ls.key[t] = warp_key(opsz, mask);
    const uint32_t waiting = ts->warp_waiting[warp] | bit;
    ts->warp_waiting[warp] = waiting;
    if ((waiting & mask) == mask) return complete_warp_op(ts, warp, mask);  // the caller's result
    block_fiber(ts, t);
    return ls.result[t];
}

extern "C" unsigned nasrs_sim_activemask_impl(const void* site, void* saved) {
    ThreadState* ts = fiber_state("__activemask");
    const unsigned t = (unsigned)ts->cur, warp = t >> 5;
    ts->lanes.value[t] = (uint64_t)(uintptr_t)site;
    ts->warp_active[warp] |= 1u << (t & 31);
    make_blocked(ts, t);
    // Released at once when the caller's group is complete (which makes it runnable again).
    if (!try_release_active(ts, warp)) {
        set_saved(ts, t, saved);
        switch_from(ts, &ts->fibers[t], next_runnable(ts, t));
    }
    return (unsigned)ts->lanes.result[t];
}

#if !NASRS_SIM_ASM_SWITCH
// Without the asm switch the intrinsics are plain functions (swapcontext saves the registers).
extern "C" uint64_t nasrs_sim_warp(unsigned opsz, unsigned mask, uint64_t value, int param, int width) {
    return nasrs_sim_warp_impl(opsz, mask, value, param, width, nullptr);
}
extern "C" int nasrs_sim_syncthreads_op(int op, int pred) { return nasrs_sim_syncthreads_impl(op, pred, nullptr); }
extern "C" unsigned nasrs_sim_activemask(const void* site) { return nasrs_sim_activemask_impl(site, nullptr); }
#endif

extern "C" NASRS_SIM_COLD void nasrs_sim_trap(void) {
    ThreadState* ts = fiber_state("__trap");
    fiber_fail(ts, NASRS_SIM_ERR_TRAP, "kernel trap in %s: __trap() called", where(ts, ts->cur).s);
}

extern "C" void* nasrs_sim_dynamic_shared(void) {
    ThreadState* ts = fiber_state("dynamic shared memory");
    return ts->dyn_ptr;
}

namespace {
[[noreturn]] NASRS_SIM_COLD void static_shared_error(ThreadState* ts, size_t bytes, const char* why) {
    fiber_fail(ts, NASRS_SIM_ERR_LAUNCH, "invalid STATIC_SHARED array in %s: %zu bytes: %s", where(ts, ts->cur).s,
               bytes, why);
}

// Binds call site `site` to a free slot for this launch, mapping (or growing) its memory.
NASRS_SIM_COLD SharedSlot* bind_static_shared(ThreadState* ts, const void* site, size_t bytes) {
    if (ts->nbound == kMaxStaticShared) static_shared_error(ts, bytes, "more than 32 STATIC_SHARED arrays in one kernel");
    ts->static_bytes += bytes;
    if (ts->static_bytes + ts->shared_bytes > kMaxDynamicShared)
        static_shared_error(ts, bytes, "static plus dynamic shared memory exceeds 48 KiB");
    SharedSlot* sl = &ts->sslots[ts->nbound];
    const size_t page = page_size();
    const size_t data = (bytes + page - 1) / page * page;
    if (!sl->map || sl->map_len < data + 2 * page) {
        if (sl->map) munmap(sl->map, sl->map_len);
        sl->map = nullptr;
        Alloc a;
        if (!map_guarded(data, &a)) static_shared_error(ts, bytes, "cannot map it");
        sl->map = a.map;
        sl->map_len = a.map_len;
        sl->end = a.start + data;
    }
    sl->site = site;
    sl->bytes = bytes;
    sl->ptr = sl->end - bytes;
    sl->epoch = ts->block_epoch - 1;  // not filled for this block yet
    ++ts->nbound;
    return sl;
}
}  // namespace

extern "C" void* nasrs_sim_static_shared(const void* site, size_t bytes) {
    ThreadState* ts = fiber_state("STATIC_SHARED");
    SharedSlot* sl = nullptr;
    for (unsigned i = 0; i < ts->nbound; ++i)
        if (ts->sslots[i].site == site) {
            sl = &ts->sslots[i];
            break;
        }
    if (!sl) sl = bind_static_shared(ts, site, bytes);
    if (sl->epoch != ts->block_epoch) {
        sl->epoch = ts->block_epoch;
        poison(sl->ptr, sl->bytes);
    }
    return sl->ptr;
}

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

extern "C" void* nasrs_sim_alloc(size_t bytes) {
    Alloc a;
    if (!map_guarded(bytes, &a)) return nullptr;
    poison(a.start, bytes);
    std::lock_guard<std::mutex> lock(g_alloc_mu);
    live_allocs()[(uintptr_t)a.start] = a;
    return a.start;
}

extern "C" void nasrs_sim_free(void* p) {
    if (!p) return;
    Alloc a;
    {
        std::lock_guard<std::mutex> lock(g_alloc_mu);
        auto& live = live_allocs();
        auto it = live.find((uintptr_t)p);
        if (it == live.end()) {
            fprintf(stderr, "nasrs cuda sim: nasrs_sim_free(%p): not a live nasrs_sim_alloc pointer (double free?)\n", p);
            abort();
        }
        a = it->second;
        live.erase(it);
        // Unmapped under the lock, so the range cannot be handed out again before it is recorded.
        munmap(a.map, a.map_len);
        g_freed[g_freed_next] = a;
        g_freed_next = (g_freed_next + 1) % kFreedHistory;
    }
}
