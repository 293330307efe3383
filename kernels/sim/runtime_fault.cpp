// How a launch fails: the process-wide fault handler (SIGSEGV, SIGBUS, SIGFPE and SIGILL, on the
// thread's signal stack, back into the launch by siglongjmp; outside a launch, back to the
// previous handler), the launch's error message (set_error, and fiber_fail from inside a fiber),
// and the words for each failure: which allocation or region a fault address hit, a deadlock, a
// trap, an intrinsic called outside a launch.
#include "runtime_fiber.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

namespace nasrs_sim {
namespace __attribute__((visibility("hidden"))) detail {

// ---- fault handling -----------------------------------------------------------------------

namespace {

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

}  // namespace

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

int set_error(ThreadState* ts, int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ts->err, sizeof ts->err, fmt, ap);
    va_end(ap);
    return code;
}

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

[[noreturn]] NASRS_SIM_COLD void outside_launch(const char* what) {
    fprintf(stderr, "nasrs cuda sim: %s called outside a kernel launch\n", what);
    abort();
}

// Fails the launch from inside the running fiber: the scheduler sees `failed` and abandons the block.
[[noreturn]] void fiber_fail(ThreadState* ts, int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ts->err, sizeof ts->err, fmt, ap);
    va_end(ap);
    ts->failed = code;
    leave_for(ts, &ts->fibers[ts->cur], -1);
    abort();  // an abandoned fiber is never resumed
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

NASRS_SIM_COLD int stack_error(ThreadState* ts, unsigned t) {
    return set_error(ts, NASRS_SIM_ERR_LAUNCH, "cannot map a fiber stack for %s", where(ts, (int)t).s);
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

}  // namespace detail
}  // namespace nasrs_sim

using namespace nasrs_sim::detail;

extern "C" NASRS_SIM_COLD void nasrs_sim_trap(void) {
    ThreadState* ts = fiber_state("__trap");
    fiber_fail(ts, NASRS_SIM_ERR_TRAP, "kernel trap in %s: __trap() called", where(ts, ts->cur).s);
}
