// The CUDA simulator's guarded memory: "device" allocations (nasrs_sim_alloc / nasrs_sim_free:
// NaN-filled, flush against a guard page, and remembered once freed, for the fault handler's
// messages) and each block's shared memory (the launch's dynamic shared memory and the
// STATIC_SHARED arrays), NaN-filled at each block start and flush against a guard page too.
#include "runtime_fiber.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

namespace nasrs_sim {
namespace __attribute__((visibility("hidden"))) detail {

size_t page_size() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

// ---- guarded memory -----------------------------------------------------------------------

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
}  // namespace detail
}  // namespace nasrs_sim

using namespace nasrs_sim::detail;

extern "C" void* nasrs_sim_dynamic_shared(void) {
    ThreadState* ts = fiber_state("dynamic shared memory");
    return ts->dyn_ptr;
}

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
