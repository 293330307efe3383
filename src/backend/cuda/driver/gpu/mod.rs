//! The real GPU under [`Driver`]: the NVIDIA driver API and cuBLAS through cudarc's raw level
//! (`cudarc::driver::{result, sys}`, `cudarc::cublas::{result, sys}`) on plain `u64` device
//! addresses. cudarc's safe types (`CudaSlice`, `CudaStream`, ...) are not used: buffers are
//! [`super::DeviceSlice`]s, which call [`Driver::alloc`] / [`Driver::free`].
//!
//! One device, its primary context, one non-blocking stream, one cuBLAS handle bound to that
//! stream with a fixed workspace, and every kernel of `kernels/*.cu` loaded at open from the
//! fatbins build.rs embeds. Allocations come from the device's default stream-ordered pool
//! (`cuMemAllocAsync`) with its release threshold raised, so steady-state training reuses the
//! pool instead of calling into the driver's allocator.
//!
//! Every handle lives in one [`Inner`], shared by the driver and by every graph it
//! instantiated: a graph's kernel nodes point into the loaded modules and its GEMM nodes into
//! the cuBLAS workspace, so those are released only when the last of them is dropped.
//!
//! Nothing here can run without a GPU; `open` checks for the driver library before the first
//! call (cudarc panics when it is missing) and reports every failure as one line.
//!
//! This file owns the driver object and routes each [`Driver`] method to the file that owns
//! its job:
//! - `device.rs`: opening the device (context, stream, pool) and [`Inner`], every handle
//!   and its release;
//! - `modules.rs`: the kernel modules loaded from the embedded fatbins, and launches;
//! - `memory.rs`: allocation, copies, the memory pools and their high-water marks;
//! - `blas.rs`: the cuBLAS handle, its workspace and the SGEMMs;
//! - `graph.rs`: stream capture and the instantiated graphs;
//! - `timing.rs`: event timing.

mod blas;
mod device;
mod graph;
mod memory;
mod modules;
mod timing;

use super::{capture_rule, DevAddr, Driver, GraphExec, LaunchConfig, Sgemm};
use crate::backend::cuda::kernels::Kernel;
use crate::backend::PeakMemory;
use crate::error::Result;
use device::Inner;
use std::ffi::c_void;
use std::sync::Arc;

pub(crate) use device::{count, open};

/// The GPU driver: shares [`Inner`] with the graphs it instantiated.
struct Gpu {
    inner: Arc<Inner>,
}

impl Gpu {
    /// The error a host round trip inside a capture gets (CUDA would invalidate the capture:
    /// the graph would freeze the host data, or the host would read a value never computed).
    fn refuse_in_capture(&self, what: impl FnOnce() -> String) -> Result<()> {
        if self.inner.capturing() {
            return Err(capture_rule(&what()));
        }
        Ok(())
    }
}

// Each method calls the inherent method of the same name in the file that owns its job
// (`Gpu::alloc` is memory.rs's: inherent methods come before trait methods in a path).
impl Driver for Gpu {
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    fn alloc(&self, bytes: usize) -> Result<DevAddr> {
        Gpu::alloc(self, bytes)
    }

    fn free(&self, addr: DevAddr) {
        Gpu::free(self, addr)
    }

    fn memset_zero(&self, dst: DevAddr, bytes: usize) -> Result<()> {
        Gpu::memset_zero(self, dst, bytes)
    }

    fn copy_htod(&self, dst: DevAddr, src: &[u8]) -> Result<()> {
        Gpu::copy_htod(self, dst, src)
    }

    fn copy_dtoh(&self, dst: &mut [u8], src: DevAddr) -> Result<()> {
        Gpu::copy_dtoh(self, dst, src)
    }

    fn copy_dtod(&self, dst: DevAddr, src: DevAddr, bytes: usize) -> Result<()> {
        Gpu::copy_dtod(self, dst, src, bytes)
    }

    unsafe fn launch(
        &self,
        kernel: Kernel,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged.
        unsafe { Gpu::launch(self, kernel, cfg, params) }
    }

    unsafe fn sgemm(&self, g: &Sgemm) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged.
        unsafe { Gpu::sgemm(self, g) }
    }

    /// `cuStreamSynchronize`. Inside a capture an error (CUDA would invalidate the capture).
    fn synchronize(&self) -> Result<()> {
        self.refuse_in_capture(|| "the captured step synchronizes with the host".to_string())?;
        let i = &self.inner;
        i.bind()?;
        i.sync_stream()
    }

    fn begin_capture(&self) -> Result<()> {
        Gpu::begin_capture(self)
    }

    fn end_capture(&self) -> Result<Box<dyn GraphExec>> {
        Gpu::end_capture(self)
    }

    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        Gpu::time_region(self, f)
    }

    fn timer_kind(&self) -> &'static str {
        "cuda_events"
    }

    fn reset_peak_memory(&self) -> Result<()> {
        Gpu::reset_peak_memory(self)
    }

    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        Gpu::peak_memory(self)
    }

    fn trim_memory(&self) -> Result<()> {
        Gpu::trim_memory(self)
    }

    fn free_memory(&self) -> Result<Option<u64>> {
        Gpu::free_memory(self)
    }
}
