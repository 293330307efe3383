//! The `cuda-sim` driver: the CUDA backend's device, simulated on the host.
//!
//! What runs is the real thing from the backend's point of view: the generated launchers
//! pass `kernelParams` to [`SimDriver::launch`], which calls the kernel's C++ trampoline
//! (build/kernel_abi.rs), which runs `kernels/*.cu` compiled for the host against
//! kernels/sim/cuda_sim.h: every thread of every block, deterministically, with CUDA's
//! barrier, warp-shuffle and shared-memory semantics (kernels/sim/runtime.cpp).
//!
//! What this file models around the kernels:
//! - memory: every allocation is its own guarded mapping (the first byte past its end and
//!   the page before it fault, and a fault inside a kernel fails the launch naming the
//!   kernel), filled with NaN so a kernel that reads memory nobody wrote shows up in the
//!   parity checks; freed memory is unmapped, so use after free faults too;
//! - the stream-ordered pool and graph memory as CUDA accounts them: the pool keeps freed
//!   bytes reserved until trimmed, graph memory is reserved when a graph is replayed, both
//!   against an optional capacity ([`SimOptions::memory_bytes`]), with in-use high-water
//!   marks for `peak_memory`;
//! - cuBLAS: exactly the column-major SGEMM subset the backend calls (transposes, strided
//!   batches, beta == 0 not reading C), through `matrixmultiply`;
//! - graphs: a capture records launches, copies, memsets and GEMMs instead of running them
//!   (as CUDA does), allocations inside keep fixed addresses for every replay (graph memory
//!   nodes), and CUDA's capture rules are errors: host copies, synchronisation, nested
//!   captures, buffers allocated inside and still alive at the end, and freeing a buffer
//!   allocated before the capture (a replay would free it again);
//! - events: the wall clock (work runs when it is queued).
//!
//! What it cannot check: timing, memory ordering across streams or between blocks running
//! concurrently, driver errors, and cuBLAS's own numerics.

use super::{capture_rule, DevAddr, Driver, GraphExec, LaunchConfig, Sgemm};
use crate::backend::cuda::kernels::{sim_entry, Kernel};
use crate::backend::PeakMemory;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// `nasrs_sim_launch_cfg` in kernels/sim/runtime.h.
#[repr(C)]
pub struct SimLaunchCfg {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

/// A kernel's simulation entry point (generated): unpacks `kernelParams` and runs the grid.
pub type SimEntry = unsafe extern "C" fn(*const SimLaunchCfg, *mut *mut c_void) -> i32;

extern "C" {
    fn nasrs_sim_last_error() -> *const c_char;
    fn nasrs_sim_alloc(bytes: usize) -> *mut c_void;
    fn nasrs_sim_free(p: *mut c_void);
}

/// How the simulated device behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimOptions {
    /// Device memory: pool and graph reservations together may not exceed it (None:
    /// unlimited). For out-of-memory tests.
    pub memory_bytes: Option<usize>,
}

/// Launches run by every simulated device in this process, per kernel ([`Kernel::ALL`]
/// order), replays included: lets a test prove every kernel was exercised.
static LAUNCHES: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
const _: () = assert!(Kernel::ALL.len() <= 256);

/// How often each kernel has run on the simulation in this process.
pub fn launch_counts() -> Vec<(Kernel, u64)> {
    Kernel::ALL
        .iter()
        .map(|&k| (k, LAUNCHES[k.index()].load(Ordering::Relaxed)))
        .collect()
}

/// Opens a simulated device.
pub fn open(options: SimOptions) -> Arc<dyn Driver> {
    Arc::new(SimDriver {
        state: Arc::new(Mutex::new(State::default())),
        options,
    })
}

/// Work a capture records, replayed in order.
enum Op {
    /// The argument bytes of each parameter (8-byte aligned storage).
    Launch {
        kernel: Kernel,
        cfg: LaunchConfig,
        args: Vec<Vec<u64>>,
    },
    Memset {
        dst: DevAddr,
        bytes: usize,
    },
    Dtod {
        dst: DevAddr,
        src: DevAddr,
        bytes: usize,
    },
    Gemm(Sgemm),
    /// A graph allocation coming into use (refilled with NaN, as fresh memory).
    Alloc {
        addr: DevAddr,
        bytes: usize,
    },
    Free {
        bytes: usize,
    },
}

#[derive(Default)]
struct Capture {
    ops: Vec<Op>,
    /// The graph's own allocations: address -> bytes, and which are still alive.
    owned: Vec<(DevAddr, usize)>,
    live: HashMap<DevAddr, usize>,
    /// Graph allocations freed earlier in the capture, by size: a later allocation of the
    /// same size takes one over, as CUDA's graph memory planning shares memory between
    /// allocations whose lifetimes do not overlap (and a step's thousands of buffers stay
    /// within the host's mapping limit).
    free_by_size: HashMap<usize, Vec<DevAddr>>,
    in_use: usize,
    peak: usize,
    /// The first rule the body broke that could not be an error where it happened (a
    /// free runs in `Drop`).
    violation: Option<String>,
    /// Buffers from before the capture that the body freed (the violation above): freed
    /// for real when the capture ends.
    deferred_frees: Vec<DevAddr>,
}

#[derive(Default)]
struct State {
    /// Eager allocations: address -> bytes.
    allocs: HashMap<DevAddr, usize>,
    pool_in_use: usize,
    pool_reserved: usize,
    pool_high: usize,
    graph_in_use: usize,
    graph_reserved: usize,
    graph_high: usize,
    capture: Option<Capture>,
}

struct SimDriver {
    state: Arc<Mutex<State>>,
    options: SimOptions,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain counters: still consistent to read.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn sim_err(msg: impl std::fmt::Display) -> Error {
    Error::Cuda(format!("cuda-sim: {msg}"))
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
    fn trim(&mut self) {
        self.pool_reserved = self.pool_in_use;
        self.graph_reserved = self.graph_in_use;
    }
    /// [`State::reserve`], and when it fails, what the GPU driver does on out-of-memory:
    /// hand unused pool and graph memory back, then try once more.
    fn reserve_or_trim(&mut self, capacity: Option<usize>, graph: bool, need: usize) -> Result<()> {
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

fn unmap(addr: DevAddr) {
    // SAFETY: `addr` came from nasrs_sim_alloc and is unmapped once (the callers remove it
    // from their tables first).
    unsafe { nasrs_sim_free(addr as *mut c_void) }
}

/// Refills memory with the runtime's fresh-allocation pattern (NaN for f32, f64, bf16).
///
/// # Safety
/// `addr..addr + bytes` must be a live simulated allocation.
unsafe fn poison(addr: DevAddr, bytes: usize) {
    let p = addr as *mut u8;
    for i in 0..bytes {
        // 0x7FFF in every 2-byte unit, little endian, as nasrs_sim_alloc fills.
        *p.add(i) = if i % 2 == 0 { 0xFF } else { 0x7F };
    }
}

/// Runs one kernel now.
///
/// # Safety
/// As [`Driver::launch`].
unsafe fn execute(kernel: Kernel, cfg: &LaunchConfig, params: &mut [*mut c_void]) -> Result<()> {
    let c = SimLaunchCfg {
        grid: [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2],
        block: [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2],
        shared_mem_bytes: cfg.shared_mem_bytes,
    };
    let entry = sim_entry::ENTRIES[kernel.index()];
    LAUNCHES[kernel.index()].fetch_add(1, Ordering::Relaxed);
    if entry(&c, params.as_mut_ptr()) != 0 {
        let msg = CStr::from_ptr(nasrs_sim_last_error()).to_string_lossy();
        return Err(sim_err(format!("{}: {msg}", kernel.name())));
    }
    Ok(())
}

/// Column-major SGEMM, cuBLAS's definition, by `matrixmultiply` (single-threaded:
/// deterministic).
///
/// # Safety
/// As [`Driver::sgemm`].
unsafe fn gemm(g: &Sgemm) {
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    let (lda, ldb, ldc) = (g.lda as isize, g.ldb as isize, g.ldc as isize);
    let (rsa, csa) = if g.trans_a { (lda, 1) } else { (1, lda) };
    let (rsb, csb) = if g.trans_b { (ldb, 1) } else { (1, ldb) };
    let batch = g.batch.map_or((1, 0, 0, 0), |b| {
        (b.count as usize, b.stride_a, b.stride_b, b.stride_c)
    });
    for i in 0..batch.0 {
        let a = (g.a as *const f32).offset(i as isize * batch.1 as isize);
        let b = (g.b as *const f32).offset(i as isize * batch.2 as isize);
        let c = (g.c as *mut f32).offset(i as isize * batch.3 as isize);
        if g.beta == 0.0 {
            // cuBLAS does not read C when beta is 0: whatever it holds (NaN) is overwritten.
            for j in 0..n {
                for r in 0..m {
                    *c.offset(r as isize + j as isize * ldc) = 0.0;
                }
            }
        }
        matrixmultiply::sgemm(
            m, k, n, g.alpha, a, rsa, csa, b, rsb, csb, g.beta, c, 1, ldc,
        );
    }
}

impl SimDriver {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
    /// An error if a capture is running (for work CUDA refuses to capture).
    fn refuse_in_capture(&self, what: &str) -> Result<()> {
        if self.lock().capture.is_some() {
            return Err(capture_rule(what));
        }
        Ok(())
    }
    /// Records `op` if a capture is running; returns it back to run it now otherwise.
    fn record(&self, op: Op) -> Option<Op> {
        let mut s = self.lock();
        match s.capture.as_mut() {
            Some(c) => {
                c.ops.push(op);
                None
            }
            None => Some(op),
        }
    }
}

impl Driver for SimDriver {
    fn name(&self) -> String {
        "cuda-sim (the CUDA backend on a host simulation of the GPU)".into()
    }

    fn alloc(&self, bytes: usize) -> Result<DevAddr> {
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

    fn free(&self, addr: DevAddr) {
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

    fn memset_zero(&self, dst: DevAddr, bytes: usize) -> Result<()> {
        if let Some(Op::Memset { dst, bytes }) = self.record(Op::Memset { dst, bytes }) {
            // SAFETY: the backend's buffers are live allocations of at least `bytes`.
            unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        }
        Ok(())
    }

    fn copy_htod(&self, dst: DevAddr, src: &[u8]) -> Result<()> {
        self.refuse_in_capture("the captured step uploads from the host")?;
        // SAFETY: `dst` is a live allocation of at least src.len() bytes (DeviceSlice
        // checks the count).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn copy_dtoh(&self, dst: &mut [u8], src: DevAddr) -> Result<()> {
        self.refuse_in_capture("the captured step reads a value back to the host")?;
        // SAFETY: as copy_htod.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy_dtod(&self, dst: DevAddr, src: DevAddr, bytes: usize) -> Result<()> {
        if let Some(Op::Dtod { dst, src, bytes }) = self.record(Op::Dtod { dst, src, bytes }) {
            // SAFETY: both are live allocations of at least `bytes` (checked by the caller);
            // distinct allocations never overlap.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
        }
        Ok(())
    }

    unsafe fn launch(
        &self,
        kernel: Kernel,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let sizes = kernel.param_sizes();
        if params.len() != sizes.len() {
            return Err(sim_err(format!(
                "{}: {} arguments for {} parameters",
                kernel.name(),
                params.len(),
                sizes.len()
            )));
        }
        let mut s = self.lock();
        if let Some(c) = s.capture.as_mut() {
            // Arguments are frozen at capture, as in a CUDA graph.
            let args = params
                .iter()
                .zip(sizes)
                .map(|(&p, &size)| {
                    let mut words = vec![0u64; size.div_ceil(8)];
                    std::ptr::copy_nonoverlapping(
                        p as *const u8,
                        words.as_mut_ptr() as *mut u8,
                        size,
                    );
                    words
                })
                .collect();
            c.ops.push(Op::Launch {
                kernel,
                cfg: *cfg,
                args,
            });
            return Ok(());
        }
        drop(s);
        execute(kernel, cfg, params)
    }

    unsafe fn sgemm(&self, g: &Sgemm) -> Result<()> {
        if let Some(Op::Gemm(g)) = self.record(Op::Gemm(*g)) {
            gemm(&g);
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.refuse_in_capture("the captured step synchronizes the stream")
    }

    fn begin_capture(&self) -> Result<()> {
        let mut s = self.lock();
        if s.capture.is_some() {
            return Err(capture_rule("a capture is already running"));
        }
        // As the GPU driver: free pool blocks go back so graph memory can use them.
        s.trim();
        s.capture = Some(Capture::default());
        Ok(())
    }

    fn end_capture(&self) -> Result<Box<dyn GraphExec>> {
        let c = self
            .lock()
            .capture
            .take()
            .ok_or_else(|| capture_rule("no capture is running"))?;
        for &addr in &c.deferred_frees {
            self.free(addr);
        }
        let graph = SimGraph {
            state: self.state.clone(),
            options: self.options,
            ops: c.ops,
            owned: c.owned,
            peak: c.peak,
        };
        if let Some(v) = c.violation {
            return Err(capture_rule(&v));
        }
        if c.in_use > 0 {
            return Err(capture_rule(&format!(
                "the captured step leaves {} bytes allocated (every buffer it allocates must \
                 be freed inside it)",
                c.in_use
            )));
        }
        if graph.ops.is_empty() {
            return Err(sim_err("graph capture recorded nothing"));
        }
        Ok(Box::new(graph))
    }

    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    }
    fn timer_kind(&self) -> &'static str {
        "cuda_sim_wall_clock"
    }

    fn reset_peak_memory(&self) -> Result<()> {
        let mut s = self.lock();
        s.pool_high = s.pool_in_use;
        s.graph_high = s.graph_in_use;
        Ok(())
    }
    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        let s = self.lock();
        Ok(Some(PeakMemory {
            bytes: (s.pool_high + s.graph_high) as u64,
            kind: "cuda_sim_pool_high+graph_high",
        }))
    }
    fn trim_memory(&self) -> Result<()> {
        self.lock().trim();
        Ok(())
    }
    /// The capacity left, or with no capacity set the host's available memory (the
    /// simulated device's memory is the host's).
    fn free_memory(&self) -> Result<Option<u64>> {
        let mut s = self.lock();
        s.trim();
        Ok(match self.options.memory_bytes {
            Some(cap) => Some(cap.saturating_sub(s.pool_reserved + s.graph_reserved) as u64),
            None => crate::host::available_memory(),
        })
    }
}

/// A recorded graph: its ops, and the graph memory they use at fixed addresses.
struct SimGraph {
    state: Arc<Mutex<State>>,
    options: SimOptions,
    ops: Vec<Op>,
    owned: Vec<(DevAddr, usize)>,
    /// Most graph bytes in use at once during a replay.
    peak: usize,
}

impl GraphExec for SimGraph {
    fn launch(&self) -> Result<()> {
        {
            let mut s = lock(&self.state);
            if s.capture.is_some() {
                return Err(capture_rule("a graph is launched inside a capture"));
            }
            // The graph's memory is reserved for the replay, as cuGraphLaunch maps it (blocks
            // the eager pool caches go back first if they must).
            s.reserve_or_trim(self.options.memory_bytes, true, self.peak)?;
        }
        let mut in_use = 0usize;
        let result = (|| {
            for op in &self.ops {
                match op {
                    Op::Launch { kernel, cfg, args } => {
                        let mut params: Vec<*mut c_void> =
                            args.iter().map(|w| w.as_ptr() as *mut c_void).collect();
                        // SAFETY: the arguments were valid at capture, and the buffers they
                        // address are the graph's own (alive as long as it is) or ones the
                        // caller keeps alive across replays, as with a CUDA graph.
                        unsafe { execute(*kernel, cfg, &mut params)? };
                    }
                    // SAFETY (three arms): as the eager copies and memsets.
                    Op::Memset { dst, bytes } => unsafe {
                        std::ptr::write_bytes(*dst as *mut u8, 0, *bytes)
                    },
                    Op::Dtod { dst, src, bytes } => unsafe {
                        std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes)
                    },
                    Op::Gemm(g) => unsafe { gemm(g) },
                    Op::Alloc { addr, bytes } => {
                        // SAFETY: a graph-owned allocation, mapped until the graph drops.
                        unsafe { poison(*addr, *bytes) };
                        in_use += bytes;
                        let mut s = lock(&self.state);
                        s.graph_in_use += bytes;
                        s.graph_high = s.graph_high.max(s.graph_in_use);
                    }
                    Op::Free { bytes } => {
                        in_use -= bytes;
                        lock(&self.state).graph_in_use -= bytes;
                    }
                }
            }
            Ok(())
        })();
        // A replay that failed midway leaves nothing in use (AUTO_FREE_ON_LAUNCH).
        lock(&self.state).graph_in_use -= in_use;
        result
    }
}

impl Drop for SimGraph {
    fn drop(&mut self) {
        for &(addr, _) in &self.owned {
            unmap(addr);
        }
    }
}
