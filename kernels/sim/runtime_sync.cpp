// The CUDA simulator's block barrier and warp operations: __syncthreads(_count/_and/_or), the
// shuffles, votes, __syncwarp and __activemask (the bodies behind runtime_fiber.cpp's asm entry
// stubs, or the entry points themselves with ucontext), the checks that fail a launch where the
// device would hang or be undefined, and how a thread that blocks in one hands over to the next
// runnable thread.
#include "runtime_fiber.h"

#include <string.h>

namespace nasrs_sim {
namespace __attribute__((visibility("hidden"))) detail {

namespace {

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

}  // namespace

// Every live thread is at the barrier: the waiting ones become runnable, each with its result in
// lanes.result (worked out here for those waiting with an op, which is in lanes.arg). Returns the
// result for op `op` (the releasing thread's).
unsigned release_barrier(ThreadState* ts, unsigned op) {
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

namespace {

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

}  // namespace

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

namespace {

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
}  // namespace detail
}  // namespace nasrs_sim

using namespace nasrs_sim::detail;

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
