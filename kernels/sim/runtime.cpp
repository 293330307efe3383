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
// scheduler is only re-entered when none is runnable); the switch saves six registers.
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
// Saves the callee-saved registers (rbx, rbp, r12-r15) on the current stack, stores rsp in
// *save_sp, loads load_sp and pops the same layout from it. Caller-saved registers need no
// saving: to the compiler this is an ordinary call. The MXCSR and x87 control words, also
// callee-saved in the SysV ABI, are deliberately not switched: saving and restoring them was 90%
// of a switch's cost (ldmxcsr/fldcw stall), and no fiber changes them (CUDA code has no way to),
// so nasrs_sim_run sets the device's mode once per launch instead (enter_device_fp).
extern "C" void nasrs_sim_switch_ctx(void** save_sp, void* load_sp);
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl nasrs_sim_switch_ctx\n"
    ".hidden nasrs_sim_switch_ctx\n"
    ".type nasrs_sim_switch_ctx,@function\n"
    "nasrs_sim_switch_ctx:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size nasrs_sim_switch_ctx,.-nasrs_sim_switch_ctx\n");
#endif

// Where a fresh fiber starts (reached by the first switch into it): runs thread bodies until its
// thread blocks for good or the block is done (defined with the other fiber-side entry points).
extern "C" [[noreturn]] void nasrs_sim_fiber_main() noexcept;

// Error paths live out of line: their message buffers would otherwise sit in the hot functions'
// frames, i.e. on every blocked fiber's stack, and cost cache misses at every switch.
#define NASRS_SIM_COLD __attribute__((cold, noinline))

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

enum : uint8_t { kFresh, kRunnable, kAtBarrier, kAtWarp, kAtActive, kDone };

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

struct Fiber {
    void* sp;  // saved stack pointer while switched out (asm switch)
    Stack* stack;
    nasrs_sim_dim3 idx;
    uint8_t state;
    // The pending warp operation (valid while kAtWarp, and `result` until the lane reads it);
    // `value` holds the call site while kAtActive.
    uint16_t opsz;
    uint32_t mask;
    int32_t param, width;
    uint64_t value, result;
#if !NASRS_SIM_ASM_SWITCH
    ucontext_t uc;
#endif
};

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
    int pending;           // a finished fiber whose stack is freed once execution has left it, or -1
    int failed;            // set by a fiber that fails the launch
    bool fp_switched;      // the host's FP mode differed from the device's: restore host_fenv
    fenv_t host_fenv;

    // The block in progress.
    // bar_pending counts true predicates of the barrier being filled; at release it moves to
    // bar_count, which (with bar_participants) stays put until the next release: that needs every
    // live thread to arrive again, i.e. to have read it first.
    unsigned alive, at_barrier, bar_pending, bar_count, bar_participants;
    uint32_t warp_exists[kMaxWarps], warp_waiting[kMaxWarps], warp_exited[kMaxWarps];
    // Lanes waiting in __activemask (see nasrs_sim_activemask).
    uint32_t warp_active[kMaxWarps];

    void* sched_sp;
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

__thread ThreadState* g_ts NASRS_SIM_TLS_MODEL;

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
        ts->in_run = false;
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

// ---- fibers -------------------------------------------------------------------------------

Stack* take_stack(ThreadState* ts) {
    if (ts->nfree) return ts->free_list[--ts->nfree];
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

void give_stack(ThreadState* ts, Fiber* f) {
    if (f->stack) {
        ts->free_list[ts->nfree++] = f->stack;
        f->stack = nullptr;
    }
}

// A finished fiber's stack can be reused only once execution has left it: whoever runs next
// (a resumed fiber, a fresh one, the scheduler) frees it first thing.
inline void release_pending(ThreadState* ts) {
    if (ts->pending >= 0) {
        give_stack(ts, &ts->fibers[ts->pending]);
        ts->pending = -1;
    }
}

// Leaves `from` (null: the scheduler) for `to` (null: the scheduler). Returns when something
// switches back to `from`.
inline void jump(ThreadState* ts, Fiber* from, Fiber* to) {
#if NASRS_SIM_ASM_SWITCH
    nasrs_sim_switch_ctx(from ? &from->sp : &ts->sched_sp, to ? to->sp : ts->sched_sp);
#else
    swapcontext(from ? &from->uc : &ts->sched_uc, to ? &to->uc : &ts->sched_uc);
#endif
    release_pending(ts);
}

#if !NASRS_SIM_ASM_SWITCH
void uc_entry() { nasrs_sim_fiber_main(); }
#endif

// Lays out a fresh fiber's stack so that the first switch into it "returns" into nasrs_sim_fiber_main
// with the SysV alignment of a function entry (rsp + 8 a multiple of 16).
void prepare_fiber(Fiber* f) {
#if NASRS_SIM_ASM_SWITCH
    uint64_t* sp = (uint64_t*)((uintptr_t)f->stack->hi & ~(uintptr_t)15);
    *--sp = 0;                                    // nasrs_sim_fiber_main's return address: it never returns
    *--sp = (uint64_t)(uintptr_t)&nasrs_sim_fiber_main;  // popped by the switch's ret
    for (int i = 0; i < 6; ++i) *--sp = 0;        // rbp rbx r12 r13 r14 r15
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack->lo;
    f->uc.uc_stack.ss_size = (size_t)(f->stack->hi - f->stack->lo);
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, uc_entry, 0);
#endif
}

ThreadState* fiber_state(const char* what) {
    ThreadState* ts = g_ts;
    if (!ts || ts->cur < 0 || !ts->in_run) {
        fprintf(stderr, "nasrs cuda sim: %s called outside a kernel launch\n", what);
        abort();
    }
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
    jump(ts, &ts->fibers[ts->cur], nullptr);
    abort();  // an abandoned fiber is never resumed
}

void release_barrier(ThreadState* ts) {
    ts->bar_participants = ts->at_barrier;
    ts->bar_count = ts->bar_pending;
    ts->bar_pending = 0;
    for (unsigned t = 0; t < ts->nthreads; ++t)
        if (ts->fibers[t].state == kAtBarrier) ts->fibers[t].state = kRunnable;
    ts->at_barrier = 0;
}

// PTX shfl.sync's source lane, with CUDA's c operand ((32 - width) << 8, | 0x1f except for up).
unsigned shfl_source(unsigned op, unsigned lane, int param, int width) {
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
    const Fiber* lanes = &ts->fibers[warp * 32];
    const unsigned self = (unsigned)ts->cur & 31;
    const Fiber &g = lanes[l], &me = lanes[self];
    if (g.mask != mask)
        fiber_fail(ts, NASRS_SIM_ERR_SYNC,
                   "invalid warp sync in %s: lanes of warp %u sync with different masks: lane %u (thread (%u,%u,%u)) "
                   "in %s with mask 0x%08x, lane %u in %s with mask 0x%08x",
                   where(ts, ts->cur).s, warp, l, g.idx.x, g.idx.y, g.idx.z, op_name(g.opsz), g.mask, self,
                   op_name(me.opsz), mask);
    fiber_fail(ts, NASRS_SIM_ERR_SYNC,
               "invalid warp sync in %s: lanes of warp %u meet at different warp operations: lane %u (thread "
               "(%u,%u,%u)) in %s on %u-byte values, lane %u in %s on %u-byte values (mask 0x%08x)",
               where(ts, ts->cur).s, warp, l, g.idx.x, g.idx.y, g.idx.z, op_name(g.opsz), g.opsz >> 8u, self,
               op_name(me.opsz), me.opsz >> 8u, mask);
}

[[noreturn]] NASRS_SIM_COLD void warp_source_error(ThreadState* ts, unsigned warp, unsigned l, unsigned src,
                                                   unsigned mask) {
    const Fiber& g = ts->fibers[warp * 32 + l];
    fiber_fail(ts, NASRS_SIM_ERR_SYNC,
               "invalid warp sync in %s: lane %u (thread (%u,%u,%u)) of warp %u reads lane %u in %s, which is not in "
               "the mask 0x%08x",
               where(ts, ts->cur).s, l, g.idx.x, g.idx.y, g.idx.z, warp, src, op_name(g.opsz), mask);
}

// Every lane of `mask` has arrived: check they agree, then give each its result.
void complete_warp_op(ThreadState* ts, unsigned warp, unsigned mask) {
    Fiber* lanes = &ts->fibers[warp * 32];
    const unsigned self = (unsigned)ts->cur & 31;
    const Fiber& me = lanes[self];
    uint32_t ballot = 0;
    for (uint32_t m = mask; m; m &= m - 1) {
        const unsigned l = (unsigned)__builtin_ctz(m);
        const Fiber& g = lanes[l];
        if (__builtin_expect(g.mask != mask || g.opsz != me.opsz, 0)) warp_mismatch_error(ts, warp, l, mask);
        if (g.value) ballot |= 1u << l;
    }
    const unsigned op = me.opsz & 0xff;
    for (uint32_t m = mask; m; m &= m - 1) {
        const unsigned l = (unsigned)__builtin_ctz(m);
        Fiber& g = lanes[l];
        switch (op) {
            case NASRS_SIM_WARP_SYNC: g.result = 0; break;
            case NASRS_SIM_WARP_BALLOT: g.result = ballot; break;
            case NASRS_SIM_WARP_ANY: g.result = ballot != 0; break;
            case NASRS_SIM_WARP_ALL: g.result = ballot == mask; break;
            default: {
                const unsigned src = shfl_source(op, l, g.param, g.width);
                if (__builtin_expect(!((mask >> src) & 1u), 0)) warp_source_error(ts, warp, l, src, mask);
                g.result = lanes[src].value;
            }
        }
        if (l != self) g.state = kRunnable;
    }
    ts->warp_waiting[warp] &= ~mask;
}

// __activemask's convergence: it completes once every lane of the warp that has not exited is
// blocked somewhere (a barrier, a warp sync, __activemask) and gives each waiting lane the lanes
// blocked at the same __activemask call site: the lanes that got there together, as a converged
// group would on the device (lanes in different branches are at different sites). Checked
// whenever a lane of a warp with waiters blocks or exits. True when it released them.
bool try_release_active(ThreadState* ts, unsigned warp) {
    const uint32_t waiting = ts->warp_active[warp];
    if (!waiting) return false;
    Fiber* lanes = &ts->fibers[warp * 32];
    uint32_t blocked = ts->warp_exited[warp];
    for (uint32_t m = ts->warp_exists[warp] & ~blocked; m; m &= m - 1) {
        const unsigned l = (unsigned)__builtin_ctz(m);
        const uint8_t st = lanes[l].state;
        if (st != kAtBarrier && st != kAtWarp && st != kAtActive) return false;
    }
    for (uint32_t m = waiting; m; m &= m - 1) {
        const unsigned l = (unsigned)__builtin_ctz(m);
        uint32_t group = 0;
        for (uint32_t o = waiting; o; o &= o - 1) {
            const unsigned k = (unsigned)__builtin_ctz(o);
            if (lanes[k].value == lanes[l].value) group |= 1u << k;
        }
        lanes[l].result = group;
    }
    for (uint32_t m = waiting; m; m &= m - 1) lanes[__builtin_ctz(m)].state = kRunnable;
    ts->warp_active[warp] = 0;
    return true;
}

NASRS_SIM_COLD int exit_wait_error(ThreadState* ts, unsigned t, unsigned waiter) {
    const Fiber& g = ts->fibers[waiter];
    const nasrs_sim_dim3 e = ts->fibers[t].idx;
    return set_error(ts, NASRS_SIM_ERR_SYNC,
                     "invalid warp sync in %s: %s with mask 0x%08x waits for lane %u (thread (%u,%u,%u)), which has "
                     "exited",
                     where(ts, (int)waiter).s, op_name(g.opsz), g.mask, t & 31, e.x, e.y, e.z);
}

// Thread t has exited: lanes waiting for it can never complete, and a barrier may now be full.
int on_thread_exit(ThreadState* ts, unsigned t) {
    const unsigned warp = t >> 5, bit = 1u << (t & 31);
    --ts->alive;
    ts->warp_exited[warp] |= bit;
    for (uint32_t m = ts->warp_waiting[warp]; m; m &= m - 1) {
        const unsigned l = (unsigned)__builtin_ctz(m);
        const Fiber& g = ts->fibers[warp * 32 + l];
        if (__builtin_expect(g.mask & bit, 0)) return exit_wait_error(ts, t, warp * 32 + l);
    }
    if (ts->at_barrier && ts->at_barrier == ts->alive) release_barrier(ts);
    try_release_active(ts, warp);
    return 0;
}

NASRS_SIM_COLD int deadlock_error(ThreadState* ts) {
    unsigned at_bar = 0, at_warp = 0;
    int first_warp = -1, first_bar = -1;
    for (unsigned t = 0; t < ts->nthreads; ++t) {
        if (ts->fibers[t].state == kAtBarrier) {
            if (first_bar < 0) first_bar = (int)t;
            ++at_bar;
        } else if (ts->fibers[t].state == kAtWarp || ts->fibers[t].state == kAtActive) {
            if (first_warp < 0) first_warp = (int)t;
            ++at_warp;
        }
    }
    if (first_warp >= 0 && ts->fibers[first_warp].state == kAtActive)
        return set_error(ts, NASRS_SIM_ERR_DEADLOCK,
                         "deadlock in %s: no thread can proceed: it waits in __activemask; %u thread(s) wait in warp "
                         "syncs, %u at __syncthreads",
                         where(ts, first_warp).s, at_warp, at_bar);
    if (first_warp >= 0) {
        const Fiber& g = ts->fibers[first_warp];
        const unsigned missing = g.mask & ~ts->warp_waiting[(unsigned)first_warp >> 5];
        return set_error(ts, NASRS_SIM_ERR_DEADLOCK,
                         "deadlock in %s: no thread can proceed: it waits in %s (mask 0x%08x) for lanes 0x%08x of "
                         "warp %u, which never arrive; %u thread(s) wait in warp syncs, %u at __syncthreads",
                         where(ts, first_warp).s, op_name(g.opsz), g.mask, missing, (unsigned)first_warp >> 5, at_warp,
                         at_bar);
    }
    return set_error(ts, NASRS_SIM_ERR_DEADLOCK, "deadlock in %s: no thread can proceed; %u thread(s) wait at __syncthreads",
                     where(ts, first_bar).s, at_bar);
}

void abandon_block(ThreadState* ts) {
    ts->pending = -1;  // its stack is still attached to its fiber: given back below
    for (unsigned t = 0; t < ts->nthreads; ++t) {
        give_stack(ts, &ts->fibers[t]);
        ts->fibers[t].state = kDone;
    }
    ts->cur = -1;
    ts->failed = 0;
}

NASRS_SIM_COLD int stack_error(ThreadState* ts, unsigned t) {
    return set_error(ts, NASRS_SIM_ERR_LAUNCH, "cannot map a fiber stack for %s", where(ts, (int)t).s);
}

// The next runnable fiber after `from` in cyclic thread order, or -1.
inline int next_runnable(const ThreadState* ts, unsigned from) {
    const unsigned n = ts->nthreads;
    unsigned t = from;
    for (unsigned k = 0; k < n; ++k) {
        if (++t == n) t = 0;
        if (ts->fibers[t].state <= kRunnable) return (int)t;
    }
    return -1;
}

// Makes fiber t the running one (giving a fresh fiber its stack); false when no stack can be had.
inline bool activate(ThreadState* ts, unsigned t) {
    Fiber* g = &ts->fibers[t];
    if (g->state == kFresh) {
        g->stack = take_stack(ts);
        if (__builtin_expect(!g->stack, 0)) return false;
        prepare_fiber(g);
        g->state = kRunnable;
    }
    ts->cur = (int)t;
    nasrs_sim_thread_idx = g->idx;
    return true;
}

// The running fiber `f` has blocked or finished (its state says which): run the next runnable
// fiber directly, one switch, without a round trip through the scheduler. Only when none is
// runnable (the block is done, or deadlocked) or a stack cannot be had does control go back to
// the scheduler, which sorts it out. Returns when `f` is resumed.
void leave_fiber(ThreadState* ts, Fiber* f) {
    const unsigned t = (unsigned)ts->cur;
    if (f->state != kDone && ts->warp_active[t >> 5]) try_release_active(ts, t >> 5);  // it blocked
    const int next = next_runnable(ts, t);
    if (next >= 0 && activate(ts, (unsigned)next)) jump(ts, f, &ts->fibers[next]);
    else jump(ts, f, nullptr);  // ts->cur still names `f`: the scheduler goes on from there
}

// Runs every thread of the current block to completion (or to the first error). Fibers pass
// control among themselves (leave_fiber); the scheduler only starts the first and takes over
// when none is runnable.
int run_block(ThreadState* ts) {
    const unsigned n = ts->nthreads;
    Fiber* fibers = ts->fibers;
    for (unsigned t = 0; t < n; ++t) fibers[t].state = kFresh;
    for (unsigned w = 0; w < ts->nwarps; ++w) ts->warp_waiting[w] = ts->warp_exited[w] = ts->warp_active[w] = 0;
    ts->alive = n;
    ts->at_barrier = 0;
    ts->bar_pending = 0;
    ts->pending = -1;
    unsigned from = n - 1;  // so thread 0 runs first
    while (ts->alive) {
        const int t = next_runnable(ts, from);
        if (t < 0) return deadlock_error(ts);
        if (!activate(ts, (unsigned)t)) return stack_error(ts, (unsigned)t);
        jump(ts, nullptr, &fibers[t]);
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
    ts->in_run = true;
    const nasrs_sim_dim3 grid = ts->grid;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                nasrs_sim_block_idx = nasrs_sim_dim3{x, y, z};
                if (ts->shared_bytes) poison(ts->dyn_ptr, ts->shared_bytes);
                ++ts->block_epoch;  // STATIC_SHARED arrays are NaN-filled again on first use
                if (int rc = run_block(ts)) {
                    ts->in_run = false;
                    leave_device_fp(ts);
                    abandon_block(ts);
                    return rc;
                }
            }
    ts->in_run = false;
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
extern "C" [[noreturn]] void nasrs_sim_fiber_main() noexcept {
    ThreadState* ts = g_ts;
    release_pending(ts);
    for (;;) {
        ts->body(ts->ctx);
        const unsigned t = (unsigned)ts->cur;
        Fiber* f = &ts->fibers[t];
        f->state = kDone;
        if (int rc = on_thread_exit(ts, t)) {
            ts->failed = rc;
            jump(ts, f, nullptr);
        }
        const int next = next_runnable(ts, t);
        if (next >= 0 && ts->fibers[next].state == kFresh) {
            Fiber* g = &ts->fibers[next];
            g->stack = f->stack;
            f->stack = nullptr;
            g->state = kRunnable;
            ts->cur = next;
            nasrs_sim_thread_idx = g->idx;
            continue;
        }
        ts->pending = (int)t;
        leave_fiber(ts, f);
        abort();  // a finished fiber is never resumed
    }
}

extern "C" int nasrs_sim_syncthreads_op(int op, int pred) {
    ThreadState* ts = fiber_state("__syncthreads");
    Fiber* f = &ts->fibers[ts->cur];
    if (pred) ++ts->bar_pending;
    if (++ts->at_barrier == ts->alive) {
        release_barrier(ts);
    } else {
        f->state = kAtBarrier;
        leave_fiber(ts, f);
    }
    switch (op) {
        case NASRS_SIM_BAR_COUNT: return (int)ts->bar_count;
        case NASRS_SIM_BAR_AND: return ts->bar_count == ts->bar_participants;
        case NASRS_SIM_BAR_OR: return ts->bar_count != 0;
        default: return 0;
    }
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

extern "C" uint64_t nasrs_sim_warp(unsigned opsz, unsigned mask, uint64_t value, int param, int width) {
    ThreadState* ts = fiber_state("a warp intrinsic");
    const unsigned t = (unsigned)ts->cur;
    Fiber* f = &ts->fibers[t];
    const unsigned warp = t >> 5, bit = 1u << (t & 31), op = opsz & 0xff;
    const bool bad_width = op >= NASRS_SIM_WARP_SHFL_IDX && op <= NASRS_SIM_WARP_SHFL_XOR &&
                           (width < 1 || width > 32 || (width & (width - 1)));
    if (__builtin_expect(!(mask & bit) || (mask & ~ts->warp_exists[warp]) || (mask & ts->warp_exited[warp]) || bad_width, 0))
        warp_arrival_error(ts, opsz, mask, width);
    f->opsz = (uint16_t)opsz;
    f->mask = mask;
    f->value = value;
    f->param = param;
    f->width = width;
    ts->warp_waiting[warp] |= bit;
    if ((ts->warp_waiting[warp] & mask) == mask) {
        complete_warp_op(ts, warp, mask);
    } else {
        f->state = kAtWarp;
        leave_fiber(ts, f);
    }
    return f->result;
}

extern "C" unsigned nasrs_sim_activemask(const void* site) {
    ThreadState* ts = fiber_state("__activemask");
    const int t = ts->cur;
    const unsigned warp = (unsigned)t >> 5;
    Fiber* f = &ts->fibers[t];
    f->value = (uint64_t)(uintptr_t)site;
    ts->warp_active[warp] |= 1u << (t & 31);
    f->state = kAtActive;
    if (!try_release_active(ts, warp)) leave_fiber(ts, f);  // else the caller's group is complete: go on
    return (unsigned)f->result;
}

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
