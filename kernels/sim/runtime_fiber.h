// The inline hot path of a fiber switch, shared by the runtime units that run on a fiber
// (runtime_fiber.cpp: a fiber's life and the scheduler; runtime_sync.cpp: the blocking
// intrinsics; runtime_fault.cpp and runtime_memory.cpp: failing a launch, and the intrinsics'
// check that they run inside one): the run queue, the stack pool, and activating, leaving and
// switching between fibers. In a header, inline, so that each switch compiles into its caller as
// it did when the runtime was one unit.
#ifndef NASRS_SIM_RUNTIME_FIBER_H
#define NASRS_SIM_RUNTIME_FIBER_H

#include "runtime_internal.h"

namespace nasrs_sim {
namespace __attribute__((visibility("hidden"))) detail {

#if NASRS_SIM_ASM_SWITCH
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

// The running launch, for an intrinsic. (Inside a launch only fibers run kernel code, so
// ts->cur names the caller.)
inline ThreadState* fiber_state(const char* what) {
    ThreadState* ts = g_active;
    if (__builtin_expect(!ts, 0)) outside_launch(what);
    return ts;
}

}  // namespace detail
}  // namespace nasrs_sim

#endif
