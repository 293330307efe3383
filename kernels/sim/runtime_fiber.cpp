// The CUDA simulator's fibers: the asm context switch (the blocking intrinsics' entry stubs and
// nasrs_sim_switch_ctx), the stacks of the pool, a fiber's life (nasrs_sim_fiber_main: thread
// bodies run back to back on one stack) and the scheduler that runs one block's threads
// (run_block). The inline switch path they share with the blocking intrinsics is in
// runtime_fiber.h; the model in runtime.cpp.
#include "runtime_fiber.h"

#include <stdlib.h>
#include <sys/mman.h>

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
#endif

namespace nasrs_sim {
namespace __attribute__((visibility("hidden"))) detail {

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

#if !NASRS_SIM_ASM_SWITCH
void uc_entry() { nasrs_sim_fiber_main(); }
#endif

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

void abandon_block(ThreadState* ts) {
    for (unsigned t = 0; t < ts->nthreads; ++t) give_stack(ts, &ts->fibers[t]);
    ts->cur = -1;
    ts->failed = 0;
}

namespace {

// Thread t has exited (its `run` bit is clear): lanes waiting for it can never complete, and a
// barrier may now be full. (Here, with its one caller, into which it inlines.)
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

}  // namespace

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

}  // namespace detail
}  // namespace nasrs_sim

using namespace nasrs_sim::detail;

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
