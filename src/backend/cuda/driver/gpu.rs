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

use super::{capture_rule, DevAddr, Driver, GraphExec, LaunchConfig, Sgemm};
use crate::backend::cuda::kernels::{Kernel, FATBINS};
use crate::backend::PeakMemory;
use crate::error::{Error, Result};
use cudarc::cublas::{result as cublas_result, sys as cublas_sys};
use cudarc::driver::result::DriverError;
use cudarc::driver::{result, sys};
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// cuBLAS's workspace, set once so that GEMMs captured in a graph never allocate (32 MiB,
/// NVIDIA's recommendation for Hopper). Allocated with `cuMemAlloc`, outside the pool, so it
/// is not in [`Driver::peak_memory`].
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;
/// Most threads in one block on every architecture nasrs targets (sm_80, sm_90).
const MAX_BLOCK_THREADS: u64 = 1024;
/// Most dynamic shared memory a launch gets without opting in per kernel
/// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), which nasrs never does.
const MAX_SHARED_BYTES: u32 = 48 << 10;

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
    let dev_err = |what: &str, e: DriverError| {
        Error::Device(format!("CUDA {what} failed on cuda:{ordinal}: {e}"))
    };

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

    // cuBLAS: a handle on our stream. cublasSetStream resets the handle's workspace to the
    // library's default pool, so the workspace is set after it.
    let blas_err = |e: cublas_result::CublasError| {
        Error::Device(format!(
            "cuBLAS initialisation failed on cuda:{ordinal}: {e}"
        ))
    };
    inner.blas = cublas_result::create_handle().map_err(blas_err)?;
    unsafe { cublas_result::set_stream(inner.blas, inner.stream as cublas_sys::cudaStream_t) }
        .map_err(blas_err)?;
    inner.workspace = unsafe { result::malloc_sync(CUBLAS_WORKSPACE_BYTES) }
        .map_err(|e| dev_err("cuBLAS workspace allocation", e))?;
    let status = unsafe {
        cublas_sys::cublasSetWorkspace_v2(
            inner.blas,
            inner.workspace as *mut c_void,
            CUBLAS_WORKSPACE_BYTES,
        )
    };
    if status != cublas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        return Err(Error::Device(format!(
            "cuBLAS workspace setup failed on cuda:{ordinal}: {status:?}"
        )));
    }

    // Every kernel, each module loaded once, functions indexed by `Kernel::index`.
    let mut loaded: Vec<(&'static str, sys::CUmodule)> = Vec::new();
    inner.funcs = vec![std::ptr::null_mut(); Kernel::ALL.len()];
    // The simulation's deliberately wrong kernels are not in the fatbin (their slots stay
    // null: launching one on a GPU is an error, not a crash).
    for &kernel in Kernel::ALL.iter().filter(|k| !k.sim_only()) {
        let module_name = kernel.module();
        let module = match loaded.iter().find(|(m, _)| *m == module_name) {
            Some(&(_, m)) => m,
            None => {
                let m = load_module(module_name).map_err(|e| e.into_error(module_name, ordinal))?;
                // Owned by `inner` from here, so a later failure unloads it.
                inner.modules.push(m);
                loaded.push((module_name, m));
                m
            }
        };
        let name = kernel.name();
        let c_name = CString::new(name)
            .map_err(|_| Error::Device(format!("kernel name {name:?} contains a NUL byte")))?;
        let func = unsafe { result::module::get_function(module, c_name) }
            .map_err(|e| dev_err(&format!("loading kernel {name}"), e))?;
        let slot = inner.funcs.get_mut(kernel.index()).ok_or_else(|| {
            Error::Device(format!(
                "kernel {name} has index {} outside the kernel table of {}",
                kernel.index(),
                Kernel::ALL.len()
            ))
        })?;
        *slot = func;
    }

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

enum LoadError {
    /// No fatbin of that name in `FATBINS`.
    Missing,
    /// A zero-length fatbin.
    Empty,
    Driver(DriverError),
}

impl LoadError {
    /// The one-line `Error::Device` of `open` ("CUDA loading kernels/conv.cu failed ...").
    fn into_error(self, stem: &str, ordinal: usize) -> Error {
        let why = match self {
            LoadError::Missing => {
                return Error::Device(format!(
                    "kernel module {stem} was not embedded at build time"
                ))
            }
            LoadError::Empty => "the embedded fatbin is empty".to_string(),
            LoadError::Driver(e) => e.to_string(),
        };
        Error::Device(format!(
            "CUDA loading kernels/{stem}.cu failed on cuda:{ordinal}: {why}"
        ))
    }
}

/// Loads the module `kernels/<stem>.cu` from its embedded fatbin with `cuModuleLoadData`.
/// The context must be current.
fn load_module(stem: &str) -> std::result::Result<sys::CUmodule, LoadError> {
    let bin = FATBINS
        .iter()
        .find(|(m, _)| *m == stem)
        .map(|(_, b)| *b)
        .ok_or(LoadError::Missing)?;
    if bin.is_empty() {
        return Err(LoadError::Empty);
    }
    // `cuModuleLoadData` takes a bare pointer: it finds a fatbin's size in its header, but
    // reads anything it does not recognise as NUL-terminated PTX text. An `include_bytes!`
    // slice is neither NUL-terminated nor aligned, so hand the driver an owned, 8-byte
    // aligned copy with at least 8 zero bytes after the image. The driver copies what it
    // needs during the call; the buffer only has to outlive it.
    let mut image = vec![0u64; bin.len() / 8 + 2];
    bytemuck::cast_slice_mut::<u64, u8>(&mut image)[..bin.len()].copy_from_slice(bin);
    let module = unsafe { result::module::load_data(image.as_ptr().cast::<c_void>()) };
    drop(image);
    module.map_err(LoadError::Driver)
}

/// Every handle of one opened device. Null / 0 / empty where `open` failed before creating
/// it; `Drop` releases what is set, in reverse order of creation.
struct Inner {
    ordinal: usize,
    dev: sys::CUdevice,
    /// The device's primary context, retained by `open` (released in `Drop`).
    ctx: sys::CUcontext,
    /// The one non-blocking stream every operation is queued on.
    stream: sys::CUstream,
    /// The device's default memory pool, where stream-ordered allocation is supported.
    pool: Option<sys::CUmemoryPool>,
    blas: cublas_sys::cublasHandle_t,
    /// cuBLAS's workspace (`cuMemAlloc`, 0 = none).
    workspace: DevAddr,
    modules: Vec<sys::CUmodule>,
    /// Indexed by [`Kernel::index`].
    funcs: Vec<sys::CUfunction>,
    name: String,
    /// Between a successful `begin_capture` and the next `end_capture`.
    capturing: AtomicBool,
    /// A `free` failed (reported once on stderr; later failures are not).
    free_failed: AtomicBool,
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
    fn bind(&self) -> Result<()> {
        let current = result::ctx::get_current().map_err(|e| self.err("context binding", e))?;
        if current != Some(self.ctx) {
            unsafe { result::ctx::set_current(self.ctx) }
                .map_err(|e| self.err("context binding", e))?;
        }
        Ok(())
    }

    fn err(&self, what: &str, e: DriverError) -> Error {
        Error::Cuda(format!("{what} on cuda:{}: {e}", self.ordinal))
    }

    fn capturing(&self) -> bool {
        self.capturing.load(Ordering::SeqCst)
    }

    /// `cuStreamSynchronize` (the caller has bound the context).
    fn sync_stream(&self) -> Result<()> {
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

    fn try_alloc(&self, bytes: usize) -> std::result::Result<DevAddr, DriverError> {
        let i = &self.inner;
        if i.pool.is_some() {
            unsafe { result::malloc_async(i.stream, bytes) }
        } else {
            unsafe { result::malloc_sync(bytes) }
        }
    }
}

impl Driver for Gpu {
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// `cuMemAllocAsync` on the stream (from the default pool; inside a capture a graph
    /// memory node), or `cuMemAlloc` where the device has no pools. Out of memory outside a
    /// capture: the pools' unused memory goes back (`trim_memory`) and it is tried once more.
    fn alloc(&self, bytes: usize) -> Result<DevAddr> {
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
    fn free(&self, addr: DevAddr) {
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

    fn memset_zero(&self, dst: DevAddr, bytes: usize) -> Result<()> {
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
    fn copy_htod(&self, dst: DevAddr, src: &[u8]) -> Result<()> {
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
    fn copy_dtoh(&self, dst: &mut [u8], src: DevAddr) -> Result<()> {
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

    fn copy_dtod(&self, dst: DevAddr, src: DevAddr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let i = &self.inner;
        i.bind()?;
        unsafe { result::memcpy_dtod_async(dst, src, bytes, i.stream) }
            .map_err(|e| i.err(&format!("device copy of {bytes} bytes"), e))
    }

    unsafe fn launch(
        &self,
        kernel: Kernel,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let i = &self.inner;
        let name = kernel.name();
        let (gx, gy, gz) = cfg.grid_dim;
        let (bx, by, bz) = cfg.block_dim;
        // Clear errors for what the driver would only call an invalid value.
        if [gx, gy, gz, bx, by, bz].contains(&0) {
            return Err(Error::Cuda(format!(
                "{name}: empty launch (grid {gx}x{gy}x{gz}, block {bx}x{by}x{bz})"
            )));
        }
        let threads = u64::from(bx) * u64::from(by) * u64::from(bz);
        if threads > MAX_BLOCK_THREADS {
            return Err(Error::Cuda(format!(
                "{name}: a block of {bx}x{by}x{bz} = {threads} threads exceeds the limit of \
                 {MAX_BLOCK_THREADS}"
            )));
        }
        if cfg.shared_mem_bytes > MAX_SHARED_BYTES {
            return Err(Error::Cuda(format!(
                "{name}: {} bytes of dynamic shared memory exceed the limit of {MAX_SHARED_BYTES}",
                cfg.shared_mem_bytes
            )));
        }
        let func = match i.funcs.get(kernel.index()) {
            Some(&f) if !f.is_null() => f,
            _ => return Err(Error::Cuda(format!("{name}: kernel is not loaded"))),
        };
        i.bind()?;
        // SAFETY: `func` is a live function of a loaded module; the caller guarantees the
        // params match its signature and the addresses are valid (the trait's contract).
        unsafe {
            result::launch_kernel(
                func,
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                i.stream,
                params,
            )
        }
        .map_err(|e| Error::Cuda(format!("{name}: {e}")))
    }

    /// `cublasSgemm_v2` or `cublasSgemmStridedBatched` on the stream, alpha and beta by host
    /// pointer (the handle's default pointer mode: cuBLAS reads them before returning, and a
    /// capture records their values).
    unsafe fn sgemm(&self, g: &Sgemm) -> Result<()> {
        let i = &self.inner;
        i.bind()?;
        let op = |t: bool| {
            if t {
                cublas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cublas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let alpha: f32 = g.alpha;
        let beta: f32 = g.beta;
        let (a, b, c) = (g.a as *const f32, g.b as *const f32, g.c as *mut f32);
        // SAFETY: the handle is live and bound to our stream; the caller guarantees A, B and
        // C hold what the sizes, leading dimensions and strides address (the trait's
        // contract); alpha and beta are locals that outlive the call.
        let r = match g.batch {
            None => unsafe {
                cublas_result::sgemm(
                    i.blas,
                    op(g.trans_a),
                    op(g.trans_b),
                    g.m,
                    g.n,
                    g.k,
                    &alpha,
                    a,
                    g.lda,
                    b,
                    g.ldb,
                    &beta,
                    c,
                    g.ldc,
                )
            },
            Some(batch) => unsafe {
                cublas_result::sgemm_strided_batched(
                    i.blas,
                    op(g.trans_a),
                    op(g.trans_b),
                    g.m,
                    g.n,
                    g.k,
                    &alpha,
                    a,
                    g.lda,
                    batch.stride_a,
                    b,
                    g.ldb,
                    batch.stride_b,
                    &beta,
                    c,
                    g.ldc,
                    batch.stride_c,
                    batch.count,
                )
            },
        };
        r.map_err(|e| {
            let what = match g.batch {
                None => "sgemm".to_string(),
                Some(b) => format!("sgemm_strided_batched (batch {})", b.count),
            };
            Error::Cuda(format!("{what} m={} n={} k={}: cuBLAS {e}", g.m, g.n, g.k))
        })
    }

    /// `cuStreamSynchronize`. Inside a capture an error (CUDA would invalidate the capture).
    fn synchronize(&self) -> Result<()> {
        self.refuse_in_capture(|| "the captured step synchronizes with the host".to_string())?;
        let i = &self.inner;
        i.bind()?;
        i.sync_stream()
    }

    /// Waits for the stream, hands the pools' unused memory back (`trim_memory`: the eager
    /// pool's free blocks go back to the device so graph memory can take them), then
    /// `cuStreamBeginCapture` in thread-local mode: `end_capture` must come from the same
    /// thread. Needs memory pools (allocations inside become graph memory nodes).
    fn begin_capture(&self) -> Result<()> {
        let i = &self.inner;
        if i.pool.is_none() {
            return Err(Error::Cuda(format!(
                "graph capture needs stream-ordered memory pools, which {} lacks",
                i.name
            )));
        }
        if i.capturing() {
            return Err(capture_rule("a capture is already running"));
        }
        self.synchronize()?;
        self.trim_memory()?;
        if i.capturing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(capture_rule("a capture is already running"));
        }
        let r = i.bind().and_then(|()| {
            unsafe {
                result::stream::begin_capture(
                    i.stream,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                )
            }
            .map_err(|e| i.err("begin graph capture", e))
        });
        if r.is_err() {
            i.capturing.store(false, Ordering::SeqCst);
        }
        r
    }

    /// `cuStreamEndCapture` (always: even after a failed body the stream leaves capture
    /// mode), instantiation with `AUTO_FREE_ON_LAUNCH` (a relaunch frees what the previous
    /// launch left allocated), the template graph destroyed, the executable uploaded.
    fn end_capture(&self) -> Result<Box<dyn GraphExec>> {
        let i = &self.inner;
        if !i.capturing.swap(false, Ordering::SeqCst) {
            // Not ours to end: another thread's capture, or none (CUDA would refuse too).
            return Err(capture_rule("end_capture without a running capture"));
        }
        i.bind()?;
        let graph = unsafe { result::stream::end_capture(i.stream) }
            .map_err(|e| i.err("end graph capture", e))?;
        if graph.is_null() {
            return Err(Error::Cuda("graph capture recorded nothing".into()));
        }
        let exec = unsafe {
            result::graph::instantiate(
                graph,
                sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
            )
        };
        // The executable is independent of its template.
        let _ = unsafe { result::graph::destroy(graph) };
        let exec = exec.map_err(|e| i.err("graph instantiation", e))?;
        // Owned from here: a failed upload destroys it.
        let graph = GpuGraph {
            exec,
            inner: self.inner.clone(),
            launching: Mutex::new(()),
        };
        unsafe { result::graph::upload(exec, i.stream) }.map_err(|e| i.err("graph upload", e))?;
        Ok(Box::new(graph))
    }

    /// CUDA events recorded on the stream around `f` (`CU_EVENT_DEFAULT`: timing on): device
    /// time from the first queued op to the last, host gaps inside (mid-step downloads)
    /// included, as PyTorch's `torch.cuda.Event` timing counts them.
    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.refuse_in_capture(|| "time_region inside the captured step".to_string())?;
        let i = &self.inner;
        i.bind()?;
        let start = Event::new(i)?;
        let end = Event::new(i)?;
        unsafe { result::event::record(start.0, i.stream) }
            .map_err(|e| i.err("event record", e))?;
        f()?;
        // `f` may have run on this thread with another context current; ours again.
        i.bind()?;
        unsafe { result::event::record(end.0, i.stream) }.map_err(|e| i.err("event record", e))?;
        unsafe { result::event::synchronize(end.0) }.map_err(|e| i.err("event synchronize", e))?;
        let ms = unsafe { result::event::elapsed(start.0, end.0) }
            .map_err(|e| i.err("event elapsed time", e))?;
        Ok(f64::from(ms) / 1e3)
    }

    fn timer_kind(&self) -> &'static str {
        "cuda_events"
    }

    /// Resets the pool's and graph memory's in-use high-water marks (the driver only allows
    /// resetting them to 0, which restarts them at the bytes in use now). Queued frees are
    /// flushed first.
    fn reset_peak_memory(&self) -> Result<()> {
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
    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
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
    fn trim_memory(&self) -> Result<()> {
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
    fn free_memory(&self) -> Result<Option<u64>> {
        self.trim_memory()?;
        let i = &self.inner;
        i.bind()?;
        let (free, _total) = result::mem_get_info().map_err(|e| i.err("cuMemGetInfo", e))?;
        Ok(Some(free as u64))
    }
}

/// A CUDA event with timing, destroyed on drop (the context is current: `time_region` bound
/// it on this thread).
struct Event(sys::CUevent);

impl Event {
    fn new(i: &Inner) -> Result<Self> {
        result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map(Event)
            .map_err(|e| i.err("event creation", e))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let _ = unsafe { result::event::destroy(self.0) };
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

/// An instantiated graph, launched on the driver's stream.
struct GpuGraph {
    exec: sys::CUgraphExec,
    /// Keeps the context, stream, modules and cuBLAS workspace the graph's nodes use.
    inner: Arc<Inner>,
    /// Serialises launches: the driver API does not promise concurrent calls on one
    /// executable graph are safe.
    launching: Mutex<()>,
}

// SAFETY: a CUgraphExec handle may be launched from any thread (the driver API is thread
// safe, and `launch` binds the context first); launches of one graph are serialised by

// `launching`, and all of them go to the driver's one stream. `inner` is Send + Sync.
unsafe impl Send for GpuGraph {}
unsafe impl Sync for GpuGraph {}

impl GraphExec for GpuGraph {
    fn launch(&self) -> Result<()> {
        let i = &self.inner;
        i.bind()?;
        let _guard = self
            .launching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match unsafe { result::graph::launch(self.exec, i.stream) } {
            // Graph memory is mapped at launch: blocks the eager pool caches (release
            // threshold u64::MAX) may hold the device. Hand them back and retry once.
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                if let Some(pool) = i.pool {
                    i.sync_stream()?;
                    unsafe { result::mem_pool::trim_to(pool, 0) }
                        .map_err(|e| i.err("memory pool trim", e))?;
                }
                unsafe { result::graph::launch(self.exec, i.stream) }
                    .map_err(|e| i.err("graph launch", e))
            }
            r => r.map_err(|e| i.err("graph launch", e)),
        }
    }
}

impl Drop for GpuGraph {
    fn drop(&mut self) {
        // An executable still running is freed by the driver when it completes. Then the
        // graph memory nobody uses goes back to the device (what a running graph still uses
        // is released by a later trim).
        let i = &self.inner;
        let _ = i.bind();
        unsafe {
            let _ = result::graph::exec_destroy(self.exec);
            if i.pool.is_some() {
                let _ = sys::cuDeviceGraphMemTrim(i.dev).result();
            }
        }
    }
}
