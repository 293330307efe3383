//! Device memory: stream-ordered allocation from the default pool (graph memory nodes inside
//! a capture), frees, memsets and copies on the stream, and the pools' accounting: in-use
//! high-water marks, trimming unused memory back to the device, and the free memory left.

use super::device::Inner;
use super::Gpu;
use crate::backend::cuda::driver::{DevAddr, Driver};
use crate::backend::PeakMemory;
use crate::error::{Error, Result};
use cudarc::driver::result::DriverError;
use cudarc::driver::{result, sys};
use std::ffi::c_void;
use std::sync::atomic::Ordering;

impl Gpu {
    fn try_alloc(&self, bytes: usize) -> std::result::Result<DevAddr, DriverError> {
        let i = &self.inner;
        if i.pool.is_some() {
            unsafe { result::malloc_async(i.stream, bytes) }
        } else {
            unsafe { result::malloc_sync(bytes) }
        }
    }

    /// `cuMemAllocAsync` on the stream (from the default pool; inside a capture a graph
    /// memory node), or `cuMemAlloc` where the device has no pools. Out of memory outside a
    /// capture: the pools' unused memory goes back (`trim_memory`) and it is tried once more.
    pub(super) fn alloc(&self, bytes: usize) -> Result<DevAddr> {
        let i = &self.inner;
        if bytes == 0 {
            return Err(Error::Cuda(format!(
                "allocating 0 bytes on cuda:{} (CUDA refuses empty allocations)",
                i.ordinal
            )));
        }
        i.bind()?;
        let fail = |e: DriverError, note: &str| {
            Error::Cuda(format!(
                "allocating {bytes} bytes on cuda:{}{note}: {e}",
                i.ordinal
            ))
        };
        match self.try_alloc(bytes) {
            Ok(addr) => Ok(addr),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY && !i.capturing() => {
                // A trim failure is not the error to report; the retry says what is wrong.
                let _ = self.trim_memory();
                self.try_alloc(bytes)
                    .map_err(|e| fail(e, " (retried after trimming the memory pools)"))
            }
            Err(e) => Err(fail(e, "")),
        }
    }

    /// `cuMemFreeAsync` on the stream (`cuMemFree` without pools). Runs in `Drop`: the first
    /// failure is reported on stderr, later ones are not, nothing panics.
    pub(super) fn free(&self, addr: DevAddr) {
        if addr == 0 {
            return;
        }
        let i = &self.inner;
        let r = i.bind().and_then(|()| {
            if i.pool.is_some() {
                unsafe { result::free_async(addr, i.stream) }
            } else {
                unsafe { result::free_sync(addr) }
            }
            .map_err(|e| i.err(&format!("freeing {addr:#x}"), e))
        });
        if let Err(e) = r {
            if !i.free_failed.swap(true, Ordering::SeqCst) {
                eprintln!("nasrs: {e} (further free errors are not reported)");
            }
        }
    }

    pub(super) fn memset_zero(&self, dst: DevAddr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let i = &self.inner;
        i.bind()?;
        unsafe { result::memset_d8_async(dst, 0, bytes, i.stream) }
            .map_err(|e| i.err(&format!("zeroing {bytes} bytes"), e))
    }

    /// `cuMemcpyHtoDAsync` from pageable memory: the driver stages `src` before it returns,
    /// so the borrow may end with the call (this would not hold for page-locked memory,
    /// which nasrs never passes).
    pub(super) fn copy_htod(&self, dst: DevAddr, src: &[u8]) -> Result<()> {
        self.refuse_in_capture(|| {
            format!(
                "the captured step uploads from the host ({} bytes)",
                src.len()
            )
        })?;
        if src.is_empty() {
            return Ok(());
        }
        let i = &self.inner;
        i.bind()?;
        unsafe { result::memcpy_htod_async(dst, src, i.stream) }
            .map_err(|e| i.err(&format!("upload of {} bytes", src.len()), e))
    }

    /// `cuMemcpyDtoHAsync`, then the stream is synchronised: the host reads `dst` next.
    pub(super) fn copy_dtoh(&self, dst: &mut [u8], src: DevAddr) -> Result<()> {
        self.refuse_in_capture(|| {
            format!(
                "the captured step reads a value back to the host ({} bytes)",
                dst.len()
            )
        })?;
        if dst.is_empty() {
            return Ok(());
        }
        let i = &self.inner;
        i.bind()?;
        let bytes = dst.len();
        unsafe { result::memcpy_dtoh_async(dst, src, i.stream) }
            .map_err(|e| i.err(&format!("download of {bytes} bytes"), e))?;
        i.sync_stream()
    }

    pub(super) fn copy_dtod(&self, dst: DevAddr, src: DevAddr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let i = &self.inner;
        i.bind()?;
        unsafe { result::memcpy_dtod_async(dst, src, bytes, i.stream) }
            .map_err(|e| i.err(&format!("device copy of {bytes} bytes"), e))
    }

    /// Resets the pool's and graph memory's in-use high-water marks (the driver only allows
    /// resetting them to 0, which restarts them at the bytes in use now). Queued frees are
    /// flushed first.
    pub(super) fn reset_peak_memory(&self) -> Result<()> {
        self.synchronize()?;
        let i = &self.inner;
        let Some(pool) = i.pool else {
            return Ok(());
        };
        high_water(i, pool, true).map(|_| ())
    }

    /// The default pool's in-use high-water mark plus graph memory's, since the last
    /// [`Driver::reset_peak_memory`]: the analogue of `torch.cuda.max_memory_allocated`.
    ///
    /// Allocations made inside a capture are graph memory nodes, backed by the device's graph
    /// memory, not by the default pool, so reading only the pool (as the backend once did)
    /// left a graph-replayed step's whole working set out. The two marks may have been
    /// reached at different times, so their sum is an upper bound of what was in use at
    /// once. cuBLAS's workspace (`cuMemAlloc`, outside both) is not in it. None where the
    /// device has no memory pools.
    pub(super) fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        self.synchronize()?;
        let i = &self.inner;
        let Some(pool) = i.pool else {
            return Ok(None);
        };
        let (pool_high, graph_high) = high_water(i, pool, false)?;
        Ok(Some(PeakMemory {
            bytes: pool_high.saturating_add(graph_high),
            kind: "cuda_mempool_used_high+graph_used_high",
        }))
    }

    /// `cuMemPoolTrimTo(default pool, 0)` and `cuDeviceGraphMemTrim`. Outside a capture the
    /// stream is synchronised first: blocks whose stream-ordered free the host has not seen
    /// complete count as in use and would stay.
    pub(super) fn trim_memory(&self) -> Result<()> {
        let i = &self.inner;
        let Some(pool) = i.pool else {
            return Ok(());
        };
        i.bind()?;
        if !i.capturing() {
            i.sync_stream()?;
        }
        unsafe { result::mem_pool::trim_to(pool, 0) }.map_err(|e| i.err("memory pool trim", e))?;
        unsafe { sys::cuDeviceGraphMemTrim(i.dev).result() }
            .map_err(|e| i.err("graph memory trim", e))
    }

    /// `cuMemGetInfo`'s free bytes after a trim (pool blocks nobody uses count as free).
    pub(super) fn free_memory(&self) -> Result<Option<u64>> {
        self.trim_memory()?;
        let i = &self.inner;
        i.bind()?;
        let (free, _total) = result::mem_get_info().map_err(|e| i.err("cuMemGetInfo", e))?;
        Ok(Some(free as u64))
    }
}

/// The in-use high-water marks of the default pool and of graph memory, read, or with
/// `reset` set to 0 first (the driver restarts them at the bytes in use now) and returned
/// as 0.
fn high_water(i: &Inner, pool: sys::CUmemoryPool, reset: bool) -> Result<(u64, u64)> {
    let (mut pool_high, mut graph_high) = (0u64, 0u64);
    let pool_attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
    let graph_attr = sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH;
    let (p, g) = (
        (&mut pool_high as *mut u64).cast::<c_void>(),
        (&mut graph_high as *mut u64).cast::<c_void>(),
    );
    // SAFETY: both attributes are u64 and the pointers address live u64s.
    unsafe {
        if reset {
            result::mem_pool::set_attribute(pool, pool_attr, p)
        } else {
            result::mem_pool::get_attribute(pool, pool_attr, p)
        }
        .map_err(|e| i.err("memory pool high-water mark", e))?;
        if reset {
            sys::cuDeviceSetGraphMemAttribute(i.dev, graph_attr, g)
        } else {
            sys::cuDeviceGetGraphMemAttribute(i.dev, graph_attr, g)
        }
        .result()
        .map_err(|e| i.err("graph memory high-water mark", e))?;
    }
    Ok((pool_high, graph_high))
}
