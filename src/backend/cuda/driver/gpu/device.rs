//! Opening the device, and the handles it owns: the driver library checked for, the device
//! and its primary context, the one non-blocking stream, the default memory pool with its
//! release threshold raised, then cuBLAS (blas.rs) and the kernel modules (modules.rs).
//! [`Inner`] holds every handle and releases what is set when the last owner (the driver or
//! one of its graphs) drops it.

use super::{blas, modules, Gpu};
use crate::backend::cuda::driver::{DevAddr, Driver};
use crate::error::{Error, Result};
use cudarc::cublas::{result as cublas_result, sys as cublas_sys};
use cudarc::driver::result::DriverError;
use cudarc::driver::{result, sys};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The number of GPUs the driver reports: 0 without a driver library, or when it reports
/// an error (the caller then runs on the CPU, as `auto` does).
pub(crate) fn count() -> usize {
    // cudarc panics on the first call if the library is missing: check before any call.
    if !unsafe { sys::is_culib_present() } {
        return 0;
    }
    result::init()
        .and_then(|()| result::device::get_count())
        .map_or(0, |c| c.max(0) as usize)
}

/// Opens GPU `ordinal`. Every failure is an `Error::Device` with one line saying why (no
/// driver library, no device, no cuBLAS, a kernel that would not load); never panics.
pub(crate) fn open(ordinal: usize) -> Result<Arc<dyn Driver>> {
    // cudarc panics on the first call if the library is missing: check before any call.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Device(
            "CUDA unavailable: no NVIDIA driver library (libcuda.so) found".into(),
        ));
    }
    // cuInit, then cuDeviceGetCount (what cudarc's `CudaContext::device_count` does).
    let count = result::init()
        .and_then(|()| result::device::get_count())
        .map_err(|e| Error::Device(format!("CUDA unavailable: {e}")))?;
    if count <= 0 {
        return Err(Error::Device(
            "CUDA unavailable: the driver reports no GPU".into(),
        ));
    }
    if ordinal >= count as usize {
        return Err(Error::Device(format!(
            "CUDA device cuda:{ordinal} does not exist ({count} GPU(s) found: cuda:0..cuda:{})",
            count - 1
        )));
    }
    if !unsafe { cublas_sys::is_culib_present() } {
        return Err(Error::Device(
            "CUDA unavailable: libcublas.so not found on the loader path (add its folder, e.g. site-packages/nvidia/cu13/lib, to LD_LIBRARY_PATH)".into(),
        ));
    }
    let dev_err = |what: &str, e: DriverError| open_error(ordinal, what, e);

    // The primary context (what the CUDA runtime inside cuBLAS uses too), current on this
    // thread. From here on `inner` owns what was created: an early return drops it, and its
    // Drop releases everything that is set (null handles are skipped).
    let dev = result::device::get(ordinal as i32).map_err(|e| dev_err("context creation", e))?;
    let ctx =
        unsafe { result::primary_ctx::retain(dev) }.map_err(|e| dev_err("context creation", e))?;
    let mut inner = Inner {
        ordinal,
        dev,
        ctx,
        stream: std::ptr::null_mut(),
        pool: None,
        blas: std::ptr::null_mut(),
        workspace: 0,
        modules: Vec::new(),
        funcs: Vec::new(),
        name: String::new(),
        capturing: AtomicBool::new(false),
        free_failed: AtomicBool::new(false),
    };
    unsafe { result::ctx::set_current(ctx) }.map_err(|e| dev_err("context creation", e))?;
    let pools = unsafe {
        result::device::get_attribute(
            dev,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED,
        )
    }
    .map_err(|e| dev_err("context creation", e))?
        > 0;

    inner.stream = result::stream::create(result::stream::StreamKind::NonBlocking)
        .map_err(|e| dev_err("stream creation", e))?;

    if pools {
        // Keep freed memory in the pool across synchronisations (the default threshold of 0
        // hands it back to the driver at every sync).
        let pool = unsafe { result::device::get_default_mem_pool(dev) }
            .map_err(|e| dev_err("memory pool query", e))?;
        let mut threshold: u64 = u64::MAX;
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast::<c_void>(),
            )
        }
        .map_err(|e| dev_err("memory pool setup", e))?;
        inner.pool = Some(pool);
    }

    // cuBLAS: a handle on our stream with its workspace (blas.rs).
    blas::attach(&mut inner)?;

    // Every kernel, each module loaded once (modules.rs).
    modules::load_all(&mut inner)?;

    let gpu = result::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
    let cc = unsafe {
        (
            result::device::get_attribute(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            ),
            result::device::get_attribute(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            ),
        )
    };
    let cc = match cc {
        (Ok(major), Ok(minor)) => format!("sm_{major}{minor}"),
        _ => String::new(),
    };
    inner.name = format!("cuda:{ordinal} {gpu} ({cc})");
    Ok(Arc::new(Gpu {
        inner: Arc::new(inner),
    }))
}

/// The one-line `Error::Device` of a driver call `open` makes ("CUDA stream creation failed
/// on cuda:0: ...").
pub(super) fn open_error(ordinal: usize, what: &str, e: DriverError) -> Error {
    Error::Device(format!("CUDA {what} failed on cuda:{ordinal}: {e}"))
}

/// Every handle of one opened device. Null / 0 / empty where `open` failed before creating
/// it; `Drop` releases what is set, in reverse order of creation.
pub(super) struct Inner {
    pub(super) ordinal: usize,
    pub(super) dev: sys::CUdevice,
    /// The device's primary context, retained by `open` (released in `Drop`).
    pub(super) ctx: sys::CUcontext,
    /// The one non-blocking stream every operation is queued on.
    pub(super) stream: sys::CUstream,
    /// The device's default memory pool, where stream-ordered allocation is supported.
    pub(super) pool: Option<sys::CUmemoryPool>,
    pub(super) blas: cublas_sys::cublasHandle_t,
    /// cuBLAS's workspace (`cuMemAlloc`, 0 = none).
    pub(super) workspace: DevAddr,
    pub(super) modules: Vec<sys::CUmodule>,
    /// Indexed by [`Kernel::index`](crate::backend::cuda::Kernel::index).
    pub(super) funcs: Vec<sys::CUfunction>,
    pub(super) name: String,
    /// Between a successful `begin_capture` and the next `end_capture`.
    pub(super) capturing: AtomicBool,
    /// A `free` failed (reported once on stderr; later failures are not).
    pub(super) free_failed: AtomicBool,
}

// SAFETY: the handles are plain pointers into the driver, whose API is thread safe; the
// context is made current on the calling thread at the start of every method that calls the
// driver (`Inner::bind`), since the driver and its graphs are used from many threads. The
// cuBLAS handle is thread safe as long as its configuration (stream, workspace, pointer
// mode) does not change, which it does not after `open`. The capture flag is atomic; all
// other fields are immutable after `open`.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

impl Inner {
    /// Makes the context current on the calling thread (the driver API's context is
    /// per-thread state).
    pub(super) fn bind(&self) -> Result<()> {
        let current = result::ctx::get_current().map_err(|e| self.err("context binding", e))?;
        if current != Some(self.ctx) {
            unsafe { result::ctx::set_current(self.ctx) }
                .map_err(|e| self.err("context binding", e))?;
        }
        Ok(())
    }

    pub(super) fn err(&self, what: &str, e: DriverError) -> Error {
        Error::Cuda(format!("{what} on cuda:{}: {e}", self.ordinal))
    }

    pub(super) fn capturing(&self) -> bool {
        self.capturing.load(Ordering::SeqCst)
    }

    /// `cuStreamSynchronize` (the caller has bound the context).
    pub(super) fn sync_stream(&self) -> Result<()> {
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| self.err("synchronize", e))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Errors are ignored: there is no one to report them to, and the context goes away.
        unsafe {
            let _ = result::ctx::set_current(self.ctx);
            if !self.stream.is_null() {
                if *self.capturing.get_mut() {
                    if let Ok(graph) = result::stream::end_capture(self.stream) {
                        if !graph.is_null() {
                            let _ = result::graph::destroy(graph);
                        }
                    }
                }
                // Queued work may still use the workspace and the kernels.
                let _ = result::stream::synchronize(self.stream);
            }
            if !self.blas.is_null() {
                let _ = cublas_result::destroy_handle(self.blas);
            }
            if self.workspace != 0 {
                let _ = result::free_sync(self.workspace);
            }
            for module in self.modules.drain(..) {
                let _ = result::module::unload(module);
            }
            if let Some(pool) = self.pool {
                let _ = result::mem_pool::trim_to(pool, 0);
            }
            if !self.stream.is_null() {
                let _ = result::stream::destroy(self.stream);
            }
            let _ = result::primary_ctx::release(self.dev);
        }
    }
}
