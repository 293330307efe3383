//! Simulated device memory: every allocation its own guarded, NaN-filled mapping (the
//! runtime's `nasrs_sim_alloc`), memsets and copies, and the pool and graph memory as CUDA
//! accounts them: the pool keeps freed bytes reserved until trimmed, graph memory is reserved
//! when a graph is replayed, both against the optional capacity, with in-use high-water marks.

use super::graph::{Capture, Op};
use super::{sim_err, SimDriver};
use crate::backend::cuda::driver::DevAddr;
use crate::backend::PeakMemory;
use crate::error::Result;
use std::collections::HashMap;
use std::ffi::c_void;

extern "C" {
    fn nasrs_sim_alloc(bytes: usize) -> *mut c_void;
    fn nasrs_sim_free(p: *mut c_void);
}

/// The simulated device's bookkeeping (behind the driver's one lock): eager allocations,
/// the pool's and graph memory's bytes, and the capture running, if any.
#[derive(Default)]
pub(super) struct State {
    /// Eager allocations: address -> bytes.
    pub(super) allocs: HashMap<DevAddr, usize>,
    pub(super) pool_in_use: usize,
    pub(super) pool_reserved: usize,
    pub(super) pool_high: usize,
    pub(super) graph_in_use: usize,
    pub(super) graph_reserved: usize,
    pub(super) graph_high: usize,
    pub(super) capture: Option<Capture>,
}

impl State {
    /// Grows the pool (`graph` false) or graph memory so `need` more bytes are reserved,
    /// within the capacity.
    fn reserve(&mut self, capacity: Option<usize>, graph: bool, need: usize) -> Result<()> {
        let (in_use, reserved) = if graph {
            (self.graph_in_use, self.graph_reserved)
        } else {
            (self.pool_in_use, self.pool_reserved)
        };
        let grow = (in_use + need).saturating_sub(reserved);
        if let Some(cap) = capacity {
            let total = self.pool_reserved + self.graph_reserved + grow;
            if grow > 0 && total > cap {
                return Err(sim_err(format!(
                    "out of memory: {need} more bytes of {} memory needed; the pool holds {} \
                     bytes ({} in use), graph memory {} ({} in use), capacity {cap}",
                    if graph { "graph" } else { "pool" },
                    self.pool_reserved,
                    self.pool_in_use,
                    self.graph_reserved,
                    self.graph_in_use
                )));
            }
        }
        if graph {
            self.graph_reserved += grow;
        } else {
            self.pool_reserved += grow;
        }
        Ok(())
    }
    pub(super) fn trim(&mut self) {
        self.pool_reserved = self.pool_in_use;
        self.graph_reserved = self.graph_in_use;
    }
    /// [`State::reserve`], and when it fails, what the GPU driver does on out-of-memory:
    /// hand unused pool and graph memory back, then try once more.
    pub(super) fn reserve_or_trim(
        &mut self,
        capacity: Option<usize>,
        graph: bool,
        need: usize,
    ) -> Result<()> {
        if self.reserve(capacity, graph, need).is_err() {
            self.trim();
            return self.reserve(capacity, graph, need);
        }
        Ok(())
    }
}

/// Fresh guarded memory, NaN-filled by the runtime.
fn map(bytes: usize) -> Result<DevAddr> {
    // SAFETY: plain allocation call; a null result is handled.
    let p = unsafe { nasrs_sim_alloc(bytes) };
    if p.is_null() {
        return Err(sim_err(format!("host allocation of {bytes} bytes failed")));
    }
    Ok(p as DevAddr)
}

pub(super) fn unmap(addr: DevAddr) {
    // SAFETY: `addr` came from nasrs_sim_alloc and is unmapped once (the callers remove it
    // from their tables first).
    unsafe { nasrs_sim_free(addr as *mut c_void) }
}

/// Refills memory with the runtime's fresh-allocation pattern (NaN for f32, f64, bf16).
///
/// # Safety
/// `addr..addr + bytes` must be a live simulated allocation.
pub(super) unsafe fn poison(addr: DevAddr, bytes: usize) {
    let p = addr as *mut u8;
    for i in 0..bytes {
        // 0x7FFF in every 2-byte unit, little endian, as nasrs_sim_alloc fills.
        *p.add(i) = if i % 2 == 0 { 0xFF } else { 0x7F };
    }
}

impl SimDriver {
    pub(super) fn alloc(&self, bytes: usize) -> Result<DevAddr> {
        let capacity = self.options.memory_bytes;
        {
            let mut s = self.lock();
            if s.capture.is_some() {
                // Graph memory: reserved when the graph is replayed, not now.
                let reused = s
                    .capture
                    .as_mut()
                    .and_then(|c| c.free_by_size.get_mut(&bytes))
                    .and_then(Vec::pop);
                drop(s);
                let addr = match reused {
                    Some(addr) => addr,
                    None => map(bytes)?,
                };
                let mut s = self.lock();
                let c = s
                    .capture
                    .as_mut()
                    .ok_or_else(|| sim_err("capture ended during an allocation"))?;
                if reused.is_none() {
                    c.owned.push((addr, bytes));
                }
                c.live.insert(addr, bytes);
                c.in_use += bytes;
                c.peak = c.peak.max(c.in_use);
                c.ops.push(Op::Alloc { addr, bytes });
                return Ok(addr);
            }
            s.reserve_or_trim(capacity, false, bytes)?;
            s.pool_in_use += bytes;
            s.pool_high = s.pool_high.max(s.pool_in_use);
        }
        match map(bytes) {
            Ok(addr) => {
                self.lock().allocs.insert(addr, bytes);
                Ok(addr)
            }
            Err(e) => {
                self.lock().pool_in_use -= bytes;
                Err(e)
            }
        }
    }

    pub(super) fn free(&self, addr: DevAddr) {
        let mut s = self.lock();
        if let Some(bytes) = s.allocs.remove(&addr) {
            if let Some(c) = s.capture.as_mut() {
                // CUDA would record a free node: every replay would free it again.
                c.violation.get_or_insert_with(|| {
                    "the captured step frees a buffer allocated before the capture (a replay \
                     would free it again)"
                        .into()
                });
                // The graph is refused at end_capture, which frees it then.
                c.deferred_frees.push(addr);
                s.allocs.insert(addr, bytes);
                return;
            }
            s.pool_in_use -= bytes;
            drop(s);
            unmap(addr);
            return;
        }
        if let Some(c) = s.capture.as_mut() {
            if let Some(bytes) = c.live.remove(&addr) {
                // Stays mapped: the graph owns it until the graph is dropped.
                c.in_use -= bytes;
                c.free_by_size.entry(bytes).or_default().push(addr);
                c.ops.push(Op::Free { bytes });
                return;
            }
        }
        // A graph's buffer freed after its capture ended is the graph's to unmap; anything
        // else is a bug in the backend's bookkeeping.
        eprintln!("cuda-sim: free of unknown device address {addr:#x}");
    }

    pub(super) fn memset_zero(&self, dst: DevAddr, bytes: usize) -> Result<()> {
        if let Some(Op::Memset { dst, bytes }) = self.record(Op::Memset { dst, bytes }) {
            // SAFETY: the backend's buffers are live allocations of at least `bytes`.
            unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        }
        Ok(())
    }

    pub(super) fn copy_htod(&self, dst: DevAddr, src: &[u8]) -> Result<()> {
        self.refuse_in_capture("the captured step uploads from the host")?;
        // SAFETY: `dst` is a live allocation of at least src.len() bytes (DeviceSlice
        // checks the count).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    pub(super) fn copy_dtoh(&self, dst: &mut [u8], src: DevAddr) -> Result<()> {
        self.refuse_in_capture("the captured step reads a value back to the host")?;
        // SAFETY: as copy_htod.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    pub(super) fn copy_dtod(&self, dst: DevAddr, src: DevAddr, bytes: usize) -> Result<()> {
        if let Some(Op::Dtod { dst, src, bytes }) = self.record(Op::Dtod { dst, src, bytes }) {
            // SAFETY: both are live allocations of at least `bytes` (checked by the caller);
            // distinct allocations never overlap.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
        }
        Ok(())
    }

    pub(super) fn reset_peak_memory(&self) -> Result<()> {
        let mut s = self.lock();
        s.pool_high = s.pool_in_use;
        s.graph_high = s.graph_in_use;
        Ok(())
    }

    pub(super) fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        let s = self.lock();
        Ok(Some(PeakMemory {
            bytes: (s.pool_high + s.graph_high) as u64,
            kind: "cuda_sim_pool_high+graph_high",
        }))
    }

    pub(super) fn trim_memory(&self) -> Result<()> {
        self.lock().trim();
        Ok(())
    }

    /// The capacity left, or with no capacity set the host's available memory (the
    /// simulated device's memory is the host's).
    pub(super) fn free_memory(&self) -> Result<Option<u64>> {
        let mut s = self.lock();
        s.trim();
        Ok(match self.options.memory_bytes {
            Some(cap) => Some(cap.saturating_sub(s.pool_reserved + s.graph_reserved) as u64),
            None => crate::host::available_memory(),
        })
    }
}
