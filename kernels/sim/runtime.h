/* The C ABI of the CUDA execution-model simulator (kernels/sim/runtime*.cpp; runtime.cpp
 * describes it).
 *
 * Two audiences:
 * - the host (the Rust CUDA-sim backend and its generated launch thunks): nasrs_sim_run,
 *   nasrs_sim_last_error, nasrs_sim_alloc, nasrs_sim_free;
 * - the device language in cuda_sim.h, which the kernels reach through its intrinsics: the
 *   thread-local built-ins (threadIdx & co.) and the nasrs_sim_* entry points below the
 *   "device side" line. The host never calls those; outside a launch they abort.
 *
 * Plain C so both sides (C++ kernels, Rust FFI) read the same declarations. */
#ifndef NASRS_SIM_RUNTIME_H
#define NASRS_SIM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { unsigned x, y, z; } nasrs_sim_dim3;
typedef struct { nasrs_sim_dim3 grid, block; unsigned shared_mem_bytes; } nasrs_sim_launch_cfg;

/* nasrs_sim_run's return codes (0 = success). The message in nasrs_sim_last_error() says more. */
enum {
    NASRS_SIM_OK = 0,
    NASRS_SIM_ERR_LAUNCH = 1,   /* invalid launch configuration, nested launch, no resources */
    NASRS_SIM_ERR_FAULT = 2,    /* memory fault (out of bounds, use after free, stack overflow, ...) or SIGFPE */
    NASRS_SIM_ERR_SYNC = 3,     /* invalid warp sync: bad mask, exited lane, mismatched masks/ops */
    NASRS_SIM_ERR_DEADLOCK = 4, /* no thread of a block can proceed */
    NASRS_SIM_ERR_TRAP = 5      /* the kernel called __trap() */
};

/* Runs kernel `name`'s whole grid: for every block in order (x fastest, then y, then z), every
 * thread of the block runs `body(ctx)` as its own fiber. Returns 0 on success, else nonzero
 * with a one-line message in nasrs_sim_last_error() (thread-local, valid until the next call on
 * this thread). */
int nasrs_sim_run(const char* name, const nasrs_sim_launch_cfg* cfg, void (*body)(void* ctx), void* ctx);
/* "" when the last nasrs_sim_run on this thread succeeded (or none ran). */
const char* nasrs_sim_last_error(void);

/* Guarded "device" memory: NaN-filled (every 2-byte unit 0x7FFF from the start, i.e. every
 * 4-byte word 0x7FFF7FFF, so f32, f64, bf16 and f16 all read as quiet NaN), its END flush
 * against an inaccessible guard page (the first byte past the end faults; start = guard -
 * bytes, so the start is as aligned as `bytes` is) and a guard page before the start. NULL on
 * failure or bytes == 0. */
void* nasrs_sim_alloc(size_t bytes);
/* Unmaps: a later use faults too. NULL is a no-op; a pointer nasrs_sim_alloc did not return
 * (or a double free) aborts the process with a message. */
void nasrs_sim_free(void* p);

/* ---- device side: used by cuda_sim.h only ------------------------------------------------ */

/* The CUDA built-ins of the running fiber; the scheduler rewrites nasrs_sim_thread_idx at every
 * switch into a fiber. initial-exec: one %fs-relative load per read (the simulator is linked into
 * the executable, never dlopen'ed). */
#define NASRS_SIM_TLS_MODEL __attribute__((tls_model("initial-exec")))
extern __thread nasrs_sim_dim3 nasrs_sim_thread_idx NASRS_SIM_TLS_MODEL;
extern __thread nasrs_sim_dim3 nasrs_sim_block_idx NASRS_SIM_TLS_MODEL;
extern __thread nasrs_sim_dim3 nasrs_sim_block_dim NASRS_SIM_TLS_MODEL;
extern __thread nasrs_sim_dim3 nasrs_sim_grid_dim NASRS_SIM_TLS_MODEL;

/* The current block's dynamic shared memory (the launch's shared_mem_bytes), NaN-filled at each
 * block start, its end flush against a guard page. */
void* nasrs_sim_dynamic_shared(void);

/* The current block's copy of the STATIC_SHARED array declared at `site` (one address per
 * STATIC_SHARED in the source): `bytes` in its own guarded mapping, flush against a guard page,
 * NaN-filled the first time each block asks for it. Fails the launch past 32 arrays or when static
 * plus dynamic shared memory exceeds 48 KiB. */
void* nasrs_sim_static_shared(const void* site, size_t bytes);

/* __syncthreads family: op 0 plain, 1 count, 2 and, 3 or; returns the reduction of `pred`. */
enum { NASRS_SIM_BAR_PLAIN = 0, NASRS_SIM_BAR_COUNT = 1, NASRS_SIM_BAR_AND = 2, NASRS_SIM_BAR_OR = 3 };
int nasrs_sim_syncthreads_op(int op, int pred);

/* Warp operations. `opsz` = op | (value size in bytes << 8); `value` holds the raw bytes of the
 * lane's value (shuffles) or the predicate as 0/1 (votes); `param` is srcLane / delta / laneMask;
 * `width` the shuffle segment width. Returns the raw result bytes (ballot mask, vote 0/1). */
enum {
    NASRS_SIM_WARP_SYNC = 0,
    NASRS_SIM_WARP_SHFL_IDX = 1,
    NASRS_SIM_WARP_SHFL_UP = 2,
    NASRS_SIM_WARP_SHFL_DOWN = 3,
    NASRS_SIM_WARP_SHFL_XOR = 4,
    NASRS_SIM_WARP_BALLOT = 5,
    NASRS_SIM_WARP_ANY = 6,
    NASRS_SIM_WARP_ALL = 7
};
uint64_t nasrs_sim_warp(unsigned opsz, unsigned mask, uint64_t value, int param, int width);
/* __activemask(): waits until every lane of the caller's warp that has not exited is blocked (at a
 * barrier, a warp sync or __activemask) and returns the lanes blocked in __activemask at the same
 * call `site` (one address per __activemask() in the source). */
unsigned nasrs_sim_activemask(const void* site);
/* __trap(): fails the launch. Never returns. */
void nasrs_sim_trap(void) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif
