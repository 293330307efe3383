// The CUDA device language on the host: force-included (g++ -include) before every
// kernels/*.cu in the simulation build, so the very sources nvcc compiles for the GPU compile
// with g++ (-std=c++17 -O2 -ffp-contract=off -fwrapv -fno-strict-aliasing -DNASRS_CUDA_SIM
// -Ikernels/sim -Ikernels) and run under the simulator's scheduler (runtime*.cpp).
//
// Owns: the qualifiers, the built-in index variables, shared memory (DYNAMIC_SHARED,
// STATIC_SHARED), barriers, warp shuffles and votes, atomics, the bf16 type and conversions, and
// the device math the kernels call. What makes this a faithful model (order, barriers, warp
// syncs, faults) lives in the runtime (runtime*.cpp, described in runtime.cpp); this header only
// routes each intrinsic there. Why some choices:
// - every synchronising intrinsic is an out-of-line call into the runtime: a fiber switch may
//   happen inside it, and an opaque call is what stops g++ from caching shared memory or a
//   built-in across it;
// - __shared__ is `static thread_local`: a block's threads are fibers on ONE OS thread and
//   blocks run one after another, so a thread-local static is exactly one block's shared
//   storage, and OS threads running launches in parallel (Rust tests) each get their own. Unlike
//   the device, its contents carry over from the previous block; STATIC_SHARED and dynamic
//   shared memory are NaN-filled at each block start and guarded instead;
// - -ffp-contract=off mirrors nvcc -fmad=false and x86-64 float math is IEEE single/double, so
//   + - * / sqrt round exactly as on the device; libm's exp/log may differ from CUDA's in the
//   last place.
#ifndef NASRS_CUDA_SIM_H
#define NASRS_CUDA_SIM_H

#include <cmath>
// libstdc++'s <math.h> puts the float overloads (sqrt(float), exp(float), ...) in the global
// namespace, as CUDA's math API does: sqrt(x) on a float stays float.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <type_traits>

#include "runtime.h"

// `#pragma unroll` is nvcc's; g++ would warn about every one.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"

// ---- qualifiers ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static thread_local
// __restrict__ needs nothing: g++ understands it natively.

// ---- built-in variables -------------------------------------------------------------------
typedef nasrs_sim_dim3 uint3;

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

// Read-only views of the thread-locals the scheduler maintains (unsigned members, as in CUDA,
// so `threadIdx.x < k` compares unsigned exactly as on the device).
#define threadIdx (static_cast<const uint3&>(nasrs_sim_thread_idx))
#define blockIdx (static_cast<const uint3&>(nasrs_sim_block_idx))
#define blockDim (static_cast<const uint3&>(nasrs_sim_block_dim))
#define gridDim (static_cast<const uint3&>(nasrs_sim_grid_dim))
constexpr int warpSize = 32;

// Dynamic shared memory. common.cuh defines the same macro (extern __shared__ under nvcc); this
// one, with the identical body, lets the header be used on its own.
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(nasrs_sim_dynamic_shared())
#endif

// Static shared memory that behaves like the device's: `T name[count]` per block, NaN-filled at
// each block start and guarded at its end (runtime_memory.cpp). Plain `__shared__` here is a
// thread-local static: correct, but it keeps the previous block's values, so a kernel reading
// shared memory before a barrier made it valid can pass by luck (same values in every block).
// Under nvcc the same macro is `__shared__ T name[count]`. `name` is a pointer here, so
// sizeof(name) is not the array's size.
#ifndef STATIC_SHARED
#define STATIC_SHARED(T, name, count)                                              \
    T* const name = static_cast<T*>(nasrs_sim_static_shared(                     \
        [] {                                                                     \
            static const char nasrs_sim_site = 0;                                \
            return static_cast<const void*>(&nasrs_sim_site);                    \
        }(),                                                                     \
        sizeof(T) * (size_t)(count)))
#endif

// ---- barriers, fences ---------------------------------------------------------------------
inline void __syncthreads() { nasrs_sim_syncthreads_op(NASRS_SIM_BAR_PLAIN, 0); }
inline int __syncthreads_count(int pred) { return nasrs_sim_syncthreads_op(NASRS_SIM_BAR_COUNT, pred); }
inline int __syncthreads_and(int pred) { return nasrs_sim_syncthreads_op(NASRS_SIM_BAR_AND, pred); }
inline int __syncthreads_or(int pred) { return nasrs_sim_syncthreads_op(NASRS_SIM_BAR_OR, pred); }
// One OS thread runs a launch and fibers switch only inside runtime calls: a compiler barrier is
// all a fence has to be. (A kernel spinning on a flag another block sets never finishes here:
// blocks run one after another.)
inline void __threadfence() { __asm__ __volatile__("" ::: "memory"); }
inline void __threadfence_block() { __asm__ __volatile__("" ::: "memory"); }
inline void __threadfence_system() { __asm__ __volatile__("" ::: "memory"); }
[[noreturn]] inline void __trap() { nasrs_sim_trap(); }

// ---- warp operations ----------------------------------------------------------------------
namespace nasrs_sim_detail {
template <typename T>
inline T warp_exchange(unsigned op, unsigned mask, T v, int param, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffled values are at most 8 raw bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    const uint64_t r = nasrs_sim_warp(op | (unsigned)(sizeof(T) << 8), mask, bits, param, width);
    T out;
    memcpy(&out, &r, sizeof(T));
    return out;
}
}  // namespace nasrs_sim_detail

inline void __syncwarp(unsigned mask = 0xffffffffu) { nasrs_sim_warp(NASRS_SIM_WARP_SYNC, mask, 0, 0, 32); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)nasrs_sim_warp(NASRS_SIM_WARP_BALLOT | (4u << 8), mask, pred != 0, 0, 32);
}
inline int __any_sync(unsigned mask, int pred) {
    return (int)nasrs_sim_warp(NASRS_SIM_WARP_ANY | (4u << 8), mask, pred != 0, 0, 32);
}
inline int __all_sync(unsigned mask, int pred) {
    return (int)nasrs_sim_warp(NASRS_SIM_WARP_ALL | (4u << 8), mask, pred != 0, 0, 32);
}
// The lanes converged with the caller. Threads here run one at a time, so "converged" is modelled
// as: the lanes that reach this same __activemask() before blocking anywhere else (runtime_sync.cpp).
// The lambda's static gives every call site in the source its own address.
#define __activemask()                             \
    ([] {                                          \
        static const char nasrs_sim_site = 0;      \
        return nasrs_sim_activemask(&nasrs_sim_site); \
    }())

struct __nv_bfloat16;  // defined below; shuffles accept it like CUDA's cuda_bf16.h does

// One overload per CUDA type (not a template), so a short or bool promotes to int as in CUDA.
#define NASRS_SIM_SHUFFLES(T)                                                                            \
    inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {                   \
        return nasrs_sim_detail::warp_exchange<T>(NASRS_SIM_WARP_SHFL_IDX, mask, var, src_lane, width); \
    }                                                                                                  \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {              \
        return nasrs_sim_detail::warp_exchange<T>(NASRS_SIM_WARP_SHFL_UP, mask, var, (int)delta, width); \
    }                                                                                                  \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {            \
        return nasrs_sim_detail::warp_exchange<T>(NASRS_SIM_WARP_SHFL_DOWN, mask, var, (int)delta, width); \
    }                                                                                                  \
    inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {              \
        return nasrs_sim_detail::warp_exchange<T>(NASRS_SIM_WARP_SHFL_XOR, mask, var, lane_mask, width); \
    }
NASRS_SIM_SHUFFLES(int)
NASRS_SIM_SHUFFLES(unsigned)
NASRS_SIM_SHUFFLES(long)
NASRS_SIM_SHUFFLES(unsigned long)
NASRS_SIM_SHUFFLES(long long)
NASRS_SIM_SHUFFLES(unsigned long long)
NASRS_SIM_SHUFFLES(float)
NASRS_SIM_SHUFFLES(double)

// ---- atomics ------------------------------------------------------------------------------
// Fibers switch only inside runtime calls, so a plain read-modify-write cannot be interleaved
// with another simulated thread: it is atomic. Each returns the old value, as in CUDA.
#define NASRS_SIM_ATOMIC(name, T, expr) \
    inline T name(T* address, T val) {  \
        const T old = *address;         \
        *address = (expr);              \
        return old;                     \
    }
NASRS_SIM_ATOMIC(atomicAdd, int, old + val)
NASRS_SIM_ATOMIC(atomicAdd, unsigned, old + val)
NASRS_SIM_ATOMIC(atomicAdd, unsigned long long, old + val)
NASRS_SIM_ATOMIC(atomicAdd, float, old + val)
NASRS_SIM_ATOMIC(atomicAdd, double, old + val)
NASRS_SIM_ATOMIC(atomicSub, int, old - val)
NASRS_SIM_ATOMIC(atomicSub, unsigned, old - val)
NASRS_SIM_ATOMIC(atomicExch, int, val)
NASRS_SIM_ATOMIC(atomicExch, unsigned, val)
NASRS_SIM_ATOMIC(atomicExch, unsigned long long, val)
NASRS_SIM_ATOMIC(atomicExch, float, val)
NASRS_SIM_ATOMIC(atomicMax, int, old > val ? old : val)
NASRS_SIM_ATOMIC(atomicMax, unsigned, old > val ? old : val)
NASRS_SIM_ATOMIC(atomicMax, long long, old > val ? old : val)
NASRS_SIM_ATOMIC(atomicMax, unsigned long long, old > val ? old : val)
NASRS_SIM_ATOMIC(atomicMin, int, old < val ? old : val)
NASRS_SIM_ATOMIC(atomicMin, unsigned, old < val ? old : val)
NASRS_SIM_ATOMIC(atomicMin, long long, old < val ? old : val)
NASRS_SIM_ATOMIC(atomicMin, unsigned long long, old < val ? old : val)
NASRS_SIM_ATOMIC(atomicAnd, int, old & val)
NASRS_SIM_ATOMIC(atomicAnd, unsigned, old & val)
NASRS_SIM_ATOMIC(atomicAnd, unsigned long long, old & val)
NASRS_SIM_ATOMIC(atomicOr, int, old | val)
NASRS_SIM_ATOMIC(atomicOr, unsigned, old | val)
NASRS_SIM_ATOMIC(atomicOr, unsigned long long, old | val)
NASRS_SIM_ATOMIC(atomicXor, int, old ^ val)
NASRS_SIM_ATOMIC(atomicXor, unsigned, old ^ val)
NASRS_SIM_ATOMIC(atomicXor, unsigned long long, old ^ val)
NASRS_SIM_ATOMIC(atomicInc, unsigned, old >= val ? 0u : old + 1u)
NASRS_SIM_ATOMIC(atomicDec, unsigned, (old == 0u || old > val) ? val : old - 1u)
#undef NASRS_SIM_ATOMIC

#define NASRS_SIM_ATOMIC_CAS(T)                                \
    inline T atomicCAS(T* address, T compare, T val) {         \
        const T old = *address;                                \
        if (old == compare) *address = val;                    \
        return old;                                            \
    }
NASRS_SIM_ATOMIC_CAS(int)
NASRS_SIM_ATOMIC_CAS(unsigned)
NASRS_SIM_ATOMIC_CAS(unsigned long long)
NASRS_SIM_ATOMIC_CAS(unsigned short)
#undef NASRS_SIM_ATOMIC_CAS

// ---- bf16 ---------------------------------------------------------------------------------
struct __nv_bfloat16_raw {
    unsigned short x;
};

// f32 -> bf16, round to nearest even; every NaN becomes the canonical 0x7FFF, as the device's
// cvt.rn.bf16.f32 gives (the `half` crate keeps the NaN's sign and payload instead).
inline unsigned short nasrs_sim_f32_to_bf16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
inline unsigned short nasrs_sim_f32_to_bf16_rz(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (unsigned short)(u >> 16);
}
inline float nasrs_sim_bf16_bits_to_f32(unsigned short b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Two bytes of raw bits, as on the device (Rust sees u16 buffers). The float constructor and
// conversion mirror cuda_bf16.h's implicit conversions.
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(nasrs_sim_f32_to_bf16_rn(f)) {}
    operator float() const { return nasrs_sim_bf16_bits_to_f32(__x); }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};
static_assert(sizeof(__nv_bfloat16) == 2 && std::is_trivially_copyable<__nv_bfloat16>::value, "bf16 is 2 raw bytes");

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16_raw{nasrs_sim_f32_to_bf16_rn(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16_raw{nasrs_sim_f32_to_bf16_rn(f)}; }
inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __nv_bfloat16_raw{nasrs_sim_f32_to_bf16_rz(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return nasrs_sim_bf16_bits_to_f32(h.__x); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return __nv_bfloat16_raw{b}; }
NASRS_SIM_SHUFFLES(__nv_bfloat16)
#undef NASRS_SIM_SHUFFLES

// ---- device math --------------------------------------------------------------------------
// CUDA's device min/max: one overload per type and the signed/unsigned mixes (which compare as
// unsigned, like CUDA's); float/double go through fmin/fmax (a NaN side loses).
#define NASRS_SIM_MINMAX(R, A, B)                                       \
    inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }        \
    inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
NASRS_SIM_MINMAX(int, int, int)
NASRS_SIM_MINMAX(unsigned, unsigned, unsigned)
NASRS_SIM_MINMAX(unsigned, int, unsigned)
NASRS_SIM_MINMAX(unsigned, unsigned, int)
NASRS_SIM_MINMAX(long, long, long)
NASRS_SIM_MINMAX(unsigned long, unsigned long, unsigned long)
NASRS_SIM_MINMAX(unsigned long, long, unsigned long)
NASRS_SIM_MINMAX(unsigned long, unsigned long, long)
NASRS_SIM_MINMAX(long long, long long, long long)
NASRS_SIM_MINMAX(unsigned long long, unsigned long long, unsigned long long)
NASRS_SIM_MINMAX(unsigned long long, long long, unsigned long long)
NASRS_SIM_MINMAX(unsigned long long, unsigned long long, long long)
#undef NASRS_SIM_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline double max(double a, float b) { return fmax(a, (double)b); }

// Intrinsics whose device versions are approximate get the correctly rounded host versions
// (rsqrtf as 1 / sqrtf); results may differ from the device in the last place.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }

#define NASRS_SIM_BITCAST(name, From, To) \
    inline To name(From v) {              \
        To r;                             \
        memcpy(&r, &v, sizeof r);         \
        return r;                         \
    }
NASRS_SIM_BITCAST(__float_as_int, float, int)
NASRS_SIM_BITCAST(__float_as_uint, float, unsigned)
NASRS_SIM_BITCAST(__int_as_float, int, float)
NASRS_SIM_BITCAST(__uint_as_float, unsigned, float)
NASRS_SIM_BITCAST(__double_as_longlong, double, long long)
NASRS_SIM_BITCAST(__longlong_as_double, long long, double)
#undef NASRS_SIM_BITCAST

template <typename T>
inline T __ldg(const T* p) { return *p; }

// ---- host-side convenience ----------------------------------------------------------------
// Launches `f` (a callable that calls the kernel with its arguments) as kernel `name` over the
// grid: the C++ form of nasrs_sim_run for tests and generated thunks.
template <typename F>
inline int nasrs_sim_launch(const char* name, dim3 grid, dim3 block, unsigned shared_mem_bytes, F&& f) {
    const nasrs_sim_launch_cfg cfg = {{grid.x, grid.y, grid.z}, {block.x, block.y, block.z}, shared_mem_bytes};
    using Fn = typename std::remove_reference<F>::type;
    return nasrs_sim_run(name, &cfg, [](void* p) { (*static_cast<Fn*>(p))(); }, (void*)&f);
}

#endif
