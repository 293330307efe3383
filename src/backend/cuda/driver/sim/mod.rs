//! The `cuda-sim` driver: the CUDA backend's device, simulated on the host.
//!
//! What runs is the real thing from the backend's point of view: the generated launchers
//! pass `kernelParams` to [`SimDriver::launch`], which calls the kernel's C++ trampoline
//! (build/kernel_abi.rs), which runs `kernels/*.cu` compiled for the host against
//! kernels/sim/cuda_sim.h: every thread of every block, deterministically, with CUDA's
//! barrier, warp-shuffle and shared-memory semantics (kernels/sim/runtime*.cpp).
//!
//! What this module models around the kernels, file by file:
//! - memory (`memory.rs`): every allocation is its own guarded mapping (the first byte past
//!   its end and the page before it fault, and a fault inside a kernel fails the launch
//!   naming the kernel), filled with NaN so a kernel that reads memory nobody wrote shows up
//!   in the parity checks; freed memory is unmapped, so use after free faults too;
//! - the stream-ordered pool and graph memory as CUDA accounts them (`memory.rs`): the pool
//!   keeps freed bytes reserved until trimmed, graph memory is reserved when a graph is
//!   replayed, both against an optional capacity ([`SimOptions::memory_bytes`]), with in-use
//!   high-water marks for `peak_memory`;
//! - launches and cuBLAS (`exec.rs`): exactly the column-major SGEMM subset the backend calls
//!   (transposes, strided batches, beta == 0 not reading C), through `matrixmultiply`;
//! - graphs (`graph.rs`): a capture records launches, copies, memsets and GEMMs instead of
//!   running them (as CUDA does), allocations inside keep fixed addresses for every replay
//!   (graph memory nodes), and CUDA's capture rules are errors: host copies,
//!   synchronisation, nested captures, buffers allocated inside and still alive at the end,
//!   and freeing a buffer allocated before the capture (a replay would free it again);
//! - events (this file): the wall clock (work runs when it is queued).
//!
//! What it cannot check: timing, memory ordering across streams or between blocks running
//! concurrently, driver errors, and cuBLAS's own numerics.
//!
//! This file owns the driver object, its lock, and the routing of each [`Driver`] method to
//! the file that owns its job.

mod exec;
mod graph;
mod memory;

use super::{capture_rule, DevAddr, Driver, GraphExec, LaunchConfig, Sgemm};
use crate::backend::cuda::kernels::Kernel;
use crate::backend::PeakMemory;
use crate::error::{Error, Result};
use graph::Op;
use memory::State;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub use exec::{launch_counts, SimEntry, SimLaunchCfg};

/// How the simulated device behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimOptions {
    /// Device memory: pool and graph reservations together may not exceed it (None:
    /// unlimited). For out-of-memory tests.
    pub memory_bytes: Option<usize>,
}

/// Opens a simulated device.
pub fn open(options: SimOptions) -> Arc<dyn Driver> {
    Arc::new(SimDriver {
        state: Arc::new(Mutex::new(State::default())),
        options,
    })
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

// Each method calls the inherent method of the same name in the file that owns its job
// (`SimDriver::alloc` is memory.rs's: inherent methods come before trait methods in a path).
impl Driver for SimDriver {
    fn name(&self) -> String {
        "cuda-sim (the CUDA backend on a host simulation of the GPU)".into()
    }

    fn alloc(&self, bytes: usize) -> Result<DevAddr> {
        SimDriver::alloc(self, bytes)
    }

    fn free(&self, addr: DevAddr) {
        SimDriver::free(self, addr)
    }

    fn memset_zero(&self, dst: DevAddr, bytes: usize) -> Result<()> {
        SimDriver::memset_zero(self, dst, bytes)
    }

    fn copy_htod(&self, dst: DevAddr, src: &[u8]) -> Result<()> {
        SimDriver::copy_htod(self, dst, src)
    }

    fn copy_dtoh(&self, dst: &mut [u8], src: DevAddr) -> Result<()> {
        SimDriver::copy_dtoh(self, dst, src)
    }

    fn copy_dtod(&self, dst: DevAddr, src: DevAddr, bytes: usize) -> Result<()> {
        SimDriver::copy_dtod(self, dst, src, bytes)
    }

    unsafe fn launch(
        &self,
        kernel: Kernel,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged.
        unsafe { SimDriver::launch(self, kernel, cfg, params) }
    }

    unsafe fn sgemm(&self, g: &Sgemm) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged.
        unsafe { SimDriver::sgemm(self, g) }
    }

    fn synchronize(&self) -> Result<()> {
        self.refuse_in_capture("the captured step synchronizes the stream")
    }

    fn begin_capture(&self) -> Result<()> {
        SimDriver::begin_capture(self)
    }

    fn end_capture(&self) -> Result<Box<dyn GraphExec>> {
        SimDriver::end_capture(self)
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
        SimDriver::reset_peak_memory(self)
    }

    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        SimDriver::peak_memory(self)
    }

    fn trim_memory(&self) -> Result<()> {
        SimDriver::trim_memory(self)
    }

    fn free_memory(&self) -> Result<Option<u64>> {
        SimDriver::free_memory(self)
    }
}
