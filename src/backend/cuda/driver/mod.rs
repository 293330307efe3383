//! The device driver under the CUDA backend: memory, copies, kernel launches, the cuBLAS
//! GEMM subset, capture/replay, timing and the memory pools, as one object-safe trait.
//!
//! Everything above this module (`src/backend/cuda/*.rs`, the generated launchers in
//! `kernels.rs`) is written once against [`Driver`] and runs unchanged on either
//! implementation:
//! - `gpu` (feature `cuda`): the NVIDIA driver and cuBLAS through cudarc's raw API, the
//!   kernels from the fatbins build.rs embeds;
//! - `sim` (feature `cuda-sim`): the same `kernels/*.cu` compiled for the host against
//!   `kernels/sim/cuda_sim.h`, every launch run thread by thread on the CPU, guarded
//!   NaN-filled allocations, a column-major SGEMM, graphs as recorded launch lists.
//!
//! Addresses are plain `u64` device addresses, as in the driver API; the typed views
//! [`Dev`] / [`DevMut`] are what launchers take, so a kernel's `const float*` can only be
//! given a borrowed f32 buffer and its `float*` a mutably borrowed one.

#[cfg(feature = "cuda")]
pub(crate) mod gpu;
#[cfg(feature = "cuda-sim")]
pub(crate) mod sim;

use super::kernels::Kernel;
use crate::backend::PeakMemory;
use crate::error::{Error, Result};
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;

/// A device address (`CUdeviceptr`); 0 is the null pointer kernels test for.
pub type DevAddr = u64;

/// Grid, block and dynamic shared memory of one launch (CUDA's `<<<grid, block, smem>>>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid_dim: (u32, u32, u32),
    pub block_dim: (u32, u32, u32),
    pub shared_mem_bytes: u32,
}

/// One column-major SGEMM as cuBLAS defines it: `C = alpha op(A) op(B) + beta C` with
/// `op(A)` m x k, `op(B)` k x n, C m x n; `batch` makes it `cublasSgemmStridedBatched`.
/// beta == 0 means C is not read (cuBLAS's rule: NaN in C does not propagate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub a: DevAddr,
    pub lda: i32,
    pub b: DevAddr,
    pub ldb: i32,
    pub beta: f32,
    pub c: DevAddr,
    pub ldc: i32,
    pub batch: Option<GemmBatch>,
}

/// `cublasSgemmStridedBatched`'s batch count and element strides of A, B and C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmBatch {
    pub count: i32,
    pub stride_a: i64,
    pub stride_b: i64,
    pub stride_c: i64,
}

/// An instantiated graph: replays the work its capture recorded, on the driver's stream.
pub trait GraphExec: Send + Sync {
    fn launch(&self) -> Result<()>;
}

/// One device behind one in-order stream. Every method is stream-ordered unless it says
/// otherwise; `copy_dtoh` and `synchronize` wait for the stream.
pub trait Driver: Send + Sync {
    /// "cuda:0 NVIDIA H200 (sm_90)" or "cuda-sim (host simulation)".
    fn name(&self) -> String;
    /// A stream-ordered allocation from the device's pool; inside a capture it belongs to
    /// the graph (a memory node with a fixed address). Its contents are undefined (NaN in
    /// the simulation).
    fn alloc(&self, bytes: usize) -> Result<DevAddr>;
    /// Frees an allocation of `alloc` (stream-ordered). Called from `Drop`: a failure is
    /// reported on stderr, never a panic.
    fn free(&self, addr: DevAddr);
    fn memset_zero(&self, dst: DevAddr, bytes: usize) -> Result<()>;
    /// Host to device; an error inside a capture (a graph would freeze the host data).
    fn copy_htod(&self, dst: DevAddr, src: &[u8]) -> Result<()>;
    /// Device to host; waits for the stream. An error inside a capture.
    fn copy_dtoh(&self, dst: &mut [u8], src: DevAddr) -> Result<()>;
    fn copy_dtod(&self, dst: DevAddr, src: DevAddr, bytes: usize) -> Result<()>;
    /// Launches `kernel` with `params[i]` pointing at its i-th argument's value (the
    /// driver's `kernelParams`).
    ///
    /// # Safety
    /// The params must match the kernel's C signature in number, order and type, and every
    /// device address among them must be valid for what the kernel reads and writes. The
    /// generated launchers in `kernels.rs` guarantee the first; their callers the second.
    unsafe fn launch(
        &self,
        kernel: Kernel,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()>;
    /// # Safety
    /// A, B and C must hold the elements the GEMM's sizes, leading dimensions and strides
    /// address.
    unsafe fn sgemm(&self, g: &Sgemm) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// Starts recording the stream's work into a graph instead of running it.
    fn begin_capture(&self) -> Result<()>;
    /// Ends the capture (always, so the stream is usable after a failed body) and
    /// instantiates what it recorded.
    fn end_capture(&self) -> Result<Box<dyn GraphExec>>;
    /// Seconds of stream work queued by `f` (events on a GPU, the wall clock in the
    /// simulation, where work runs as it is queued).
    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64>;
    fn timer_kind(&self) -> &'static str;
    /// Restarts the high-water marks of the pool and of graph memory at what is in use now.
    fn reset_peak_memory(&self) -> Result<()>;
    /// The pool's high-water mark plus graph memory's (graph allocations are not in the
    /// pool), or None where the device has no pools.
    fn peak_memory(&self) -> Result<Option<PeakMemory>>;
    /// Hands memory the pools keep but nobody uses back to the device: the default pool's
    /// free blocks and the graph pool's. Called before a capture and after an allocation
    /// fails, so eager and graph phases in one process do not starve each other.
    fn trim_memory(&self) -> Result<()>;
    /// Bytes a new allocation can still get (after a trim), or None where unknown.
    fn free_memory(&self) -> Result<Option<u64>>;
}

/// A CUDA graph-capture rule broken (a host copy or sync inside a capture, a nested capture,
/// ...): the same error on every driver, worded as the counting backend words it.
pub(crate) fn capture_rule(msg: &str) -> Error {
    Error::invalid("graph capture", msg)
}

/// An element type a device buffer may hold: plain data, any bit pattern valid.
pub trait DeviceCopy: bytemuck::Pod + Send + Sync {}
impl DeviceCopy for f32 {}
impl DeviceCopy for f64 {}
impl DeviceCopy for u32 {}
impl DeviceCopy for i32 {}
impl DeviceCopy for u16 {}
impl DeviceCopy for u8 {}
impl DeviceCopy for half::bf16 {}

/// An owned device allocation of `len` elements of `T` (at least one: a zero-byte
/// allocation is an error in CUDA). Freed, stream-ordered, on drop.
pub struct DeviceSlice<T: DeviceCopy> {
    addr: DevAddr,
    len: usize,
    driver: Arc<dyn Driver>,
    _t: PhantomData<T>,
}

impl<T: DeviceCopy> DeviceSlice<T> {
    /// An uninitialised allocation of `len.max(1)` elements.
    pub fn alloc(driver: &Arc<dyn Driver>, len: usize) -> Result<Self> {
        let len = len.max(1);
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::invalid("device allocation", format!("{len} elements overflow"))
        })?;
        let addr = driver.alloc(bytes)?;
        Ok(DeviceSlice {
            addr,
            len,
            driver: driver.clone(),
            _t: PhantomData,
        })
    }
    /// Elements allocated (at least 1).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn addr(&self) -> DevAddr {
        self.addr
    }
    /// The buffer as a kernel's `const T*`.
    pub fn dev(&self) -> Dev<'_, T> {
        Dev::new(self.addr)
    }
    /// The buffer as a kernel's `T*`.
    pub fn dev_mut(&mut self) -> DevMut<'_, T> {
        DevMut::new(self.addr)
    }
    /// The address of element `index`, for a kernel's scalar pointer.
    pub fn dev_at(&self, index: usize) -> Result<Dev<'_, T>> {
        if index >= self.len {
            return Err(Error::invalid(
                "device pointer",
                format!("element {index} of a buffer of {}", self.len),
            ));
        }
        Ok(Dev::new(
            self.addr + (index * std::mem::size_of::<T>()) as u64,
        ))
    }
    /// Copies the first `dst.len()` elements to the host (waits for the stream).
    pub fn download_into(&self, dst: &mut [T]) -> Result<()> {
        self.check_count("download", dst.len())?;
        if !dst.is_empty() {
            self.driver
                .copy_dtoh(bytemuck::cast_slice_mut(dst), self.addr)?;
        }
        Ok(())
    }
    /// Uploads `src` into the first `src.len()` elements.
    pub fn upload_from(&mut self, src: &[T]) -> Result<()> {
        self.check_count("upload", src.len())?;
        if !src.is_empty() {
            self.driver
                .copy_htod(self.addr, bytemuck::cast_slice(src))?;
        }
        Ok(())
    }
    /// Copies the first `count` elements of `src` into this buffer.
    pub fn copy_from(&mut self, src: &DeviceSlice<T>, count: usize) -> Result<()> {
        self.check_count("copy", count)?;
        src.check_count("copy", count)?;
        if count > 0 {
            self.driver
                .copy_dtod(self.addr, src.addr, count * std::mem::size_of::<T>())?;
        }
        Ok(())
    }
    /// Zeroes every element.
    pub fn zero(&mut self) -> Result<()> {
        self.driver
            .memset_zero(self.addr, self.len * std::mem::size_of::<T>())
    }
    fn check_count(&self, what: &str, count: usize) -> Result<()> {
        if count > self.len {
            return Err(Error::invalid(
                "device copy",
                format!(
                    "{what} of {count} elements into/out of a buffer of {}",
                    self.len
                ),
            ));
        }
        Ok(())
    }
}

impl<T: DeviceCopy> Drop for DeviceSlice<T> {
    fn drop(&mut self) {
        self.driver.free(self.addr);
    }
}

/// A kernel's `const T*`: a device address borrowed from a buffer for `'a` (or null).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Dev<'a, T> {
    addr: DevAddr,
    _t: PhantomData<&'a T>,
}

impl<T> Dev<'_, T> {
    fn new(addr: DevAddr) -> Self {
        Dev {
            addr,
            _t: PhantomData,
        }
    }
    /// The null pointer, for a kernel argument the kernel tests before reading.
    pub fn null() -> Self {
        Dev::new(0)
    }
}

/// A kernel's `T*`: a device address borrowed mutably from a buffer for `'a` (or null).
#[repr(transparent)]
#[derive(Debug)]
pub struct DevMut<'a, T> {
    addr: DevAddr,
    _t: PhantomData<&'a mut T>,
}

impl<T> DevMut<'_, T> {
    fn new(addr: DevAddr) -> Self {
        DevMut {
            addr,
            _t: PhantomData,
        }
    }
    /// The null pointer, for a kernel output the kernel tests before writing.
    pub fn null() -> Self {
        DevMut::new(0)
    }
}

/// An optional buffer as a kernel pointer (null for None).
pub fn dev_opt<T: DeviceCopy>(b: Option<&DeviceSlice<T>>) -> Dev<'_, T> {
    b.map_or_else(Dev::null, DeviceSlice::dev)
}
