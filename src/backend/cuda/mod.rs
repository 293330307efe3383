//! The CUDA backend (feature `cuda`): `Cuda` implements [`Backend`] with f32 device buffers.
//!
//! One context, one non-blocking stream, event tracking off (single-stream engine), and the
//! stream-ordered memory pool with its release threshold raised, so steady-state training
//! allocates from the pool instead of calling cudaMalloc. Kernels come from the fatbins
//! build.rs embeds (one module per `kernels/*.cu`), every function is loaded once at open.
//! cuBLAS does the GEMMs (linear, 1x1 and im2col convs). The files beside this one mirror
//! the kernel families: `elementwise`, `conv`, `pool`, `norm`, `layout`, `dense`,
//! `mixed_op`, `optim`; the CPU backend is the reference each one is checked against
//! (`crate::selftest`).

mod conv;
mod dense;
mod elementwise;
mod layout;
mod mixed_op;
mod norm;
mod optim;
mod pool;

use crate::backend::{
    AdamStep, Backend, BatchNormSaved, PeakMemory, RunningStats, ScalarRef, SgdStep,
};
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Nchw, Pool2dSpec};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Threads per block of the 1-D kernels (`BLOCK` in kernels/common.cuh).
pub(crate) const BLOCK: u32 = 256;
/// Most blocks a grid-stride kernel is launched with; more work loops inside the kernel.
const MAX_GRID: usize = 1 << 16;

/// Every kernel, by module (the `.cu` file stem). All are loaded at open, so a missing one
/// is an error there, not in the middle of a run.
const KERNELS: &[(&str, &[&str])] = &[
    (
        "conv",
        &[
            "dwconv2d_fwd_f32",
            "dwconv2d_bwd_data_f32",
            "dwconv2d_bwd_weight_f32",
            "im2col_f32",
            "col2im_f32",
        ],
    ),
    (
        "dense",
        &[
            "linear_bias_fwd_f32",
            "linear_bias_bwd_f32",
            "softmax_cross_entropy_fwd_f32",
            "softmax_cross_entropy_finish_f32",
            "softmax_cross_entropy_bwd_f32",
            "count_correct_f32",
        ],
    ),
    (
        "elementwise",
        &[
            "add_f32",
            "scale_f32",
            "axpy_f32",
            "axpy_scaled_f32",
            "fill_f32",
            "scale_assign_f32",
            "relu_fwd_f32",
            "relu_bwd_f32",
            "to_bf16_f32",
            "from_bf16_f32",
            "drop_path_f32",
            "dot_f32",
            "square_partials_f32",
            "reduce_finish_f64",
            "norm_scalars_finish_f32",
            "sum_batches_f32",
        ],
    ),
    (
        "layout",
        &[
            "concat_channels_f32",
            "split_channels_f32",
            "shift_crop_fwd_f32",
            "shift_crop_bwd_f32",
        ],
    ),
    (
        "mixed_op",
        &[
            "mixed_op_fwd_f32",
            "mixed_op_bwd_f32",
            "mixed_op_bwd_finish_f32",
        ],
    ),
    (
        "norm",
        &[
            "batch_norm_train_fwd_f32",
            "batch_norm_eval_fwd_f32",
            "batch_norm_apply_f32",
            "batch_norm_bwd_f32",
            "batch_norm_bwd_data_f32",
        ],
    ),
    (
        "optim",
        &[
            "sgd_step_f32",
            "adam_step_f32",
            "sgd_step_many_f32",
            "adam_step_many_f32",
        ],
    ),
    (
        "pool",
        &[
            "max_pool2d_fwd_f32",
            "max_pool2d_bwd_f32",
            "avg_pool2d_fwd_f32",
            "avg_pool2d_bwd_f32",
            "global_avg_pool_fwd_f32",
            "global_avg_pool_bwd_f32",
        ],
    ),
];

/// Maps cudarc's driver and cuBLAS errors into [`Error::Cuda`]. Only used once the libraries
/// are known to be loaded (formatting a `DriverError` calls into libcuda).
pub(crate) trait CuResult<T> {
    fn cu(self, what: &str) -> Result<T>;
}
impl<T> CuResult<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn cu(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Cuda(format!("{what}: {e}")))
    }
}
impl<T> CuResult<T> for std::result::Result<T, cudarc::cublas::result::CublasError> {
    fn cu(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Cuda(format!("{what}: cuBLAS {e}")))
    }
}

/// Class labels on the device (u32), checked against the class count on upload.
pub struct CudaLabels {
    pub(crate) data: CudaSlice<u32>,
    pub(crate) len: usize,
    /// The class count they were checked against; ops refuse logits with fewer.
    pub(crate) classes: usize,
}

/// A captured step: an instantiated CUDA graph on the backend's stream.
pub struct CudaStepGraph(cudarc::driver::CudaGraph);
// SAFETY: a CUgraphExec handle may be launched from any thread (the driver API is thread
// safe); nasrs launches it from the thread that owns the backend, on the backend's stream.
unsafe impl Send for CudaStepGraph {}
unsafe impl Sync for CudaStepGraph {}

/// cuBLAS's workspace, set once so that GEMMs captured in a graph never allocate (32 MiB,
/// NVIDIA's recommendation for Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// An f32 buffer on the device. Holds at least one element (a zero-byte allocation is an
/// error in CUDA); `len` is the logical length.
pub struct CudaBuf {
    pub(crate) data: CudaSlice<f32>,
    pub(crate) len: usize,
}

/// A bf16 buffer on the device (raw u16 bits; the kernels read them as `__nv_bfloat16`).
/// Holds at least one element, like [`CudaBuf`]; `len` is the logical length.
pub struct CudaHalf {
    pub(crate) data: CudaSlice<u16>,
    pub(crate) len: usize,
}

/// The geometry of a windowed op; the same fields, in order, as `struct Geom` in
/// kernels/common.cuh.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub ho: i32,
    pub wo: i32,
    pub k: i32,
    pub stride: i32,
    pub pad: i32,
    pub dil: i32,
}
unsafe impl DeviceRepr for Geom {}

impl Geom {
    pub(crate) fn new(
        x: Nchw,
        y: Nchw,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> Result<Self> {
        Ok(Geom {
            n: int(x.n)?,
            c: int(x.c)?,
            h: int(x.h)?,
            w: int(x.w)?,
            ho: int(y.h)?,
            wo: int(y.w)?,
            k: int(k)?,
            stride: int(stride)?,
            pad: int(pad)?,
            dil: int(dil)?,
        })
    }
}

/// A size as the kernels' `int`, or an error if it does not fit.
pub(crate) fn int(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid(
            "tensor size",
            format!("{v} elements exceed the CUDA kernels' 2^31 limit"),
        )
    })
}

/// A grid-stride launch over `n` elements.
/// One block of `BLOCK` threads: the launch of every kernel that finishes a reduction.
pub(crate) const ONE_BLOCK: LaunchConfig = LaunchConfig {
    grid_dim: (1, 1, 1),
    block_dim: (BLOCK, 1, 1),
    shared_mem_bytes: 0,
};

pub(crate) fn cfg1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn expect_len(op: &'static str, what: &str, buf: &CudaBuf, len: usize) -> Result<()> {
    if buf.len != len {
        return Err(Error::shape(
            op,
            format!("{what} has {} elements, expected {len}", buf.len),
        ));
    }
    Ok(())
}

/// The device address of `s.buf[s.index]`, for a kernel's scalar-pointer argument.
pub(crate) fn scalar_ptr(d: &Cuda, op: &'static str, s: &ScalarRef<'_, CudaBuf>) -> Result<u64> {
    if s.index >= s.buf.len {
        return Err(Error::shape(
            op,
            format!("scalar index {} in a buffer of {}", s.index, s.buf.len),
        ));
    }
    Ok(d.ptr(Some(s.buf)) + (s.index * std::mem::size_of::<f32>()) as u64)
}

pub(crate) fn same_len(op: &'static str, a: &CudaBuf, b: &CudaBuf) -> Result<()> {
    if a.len != b.len {
        return Err(Error::shape(
            op,
            format!("buffers of {} and {} elements", a.len, b.len),
        ));
    }
    Ok(())
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// Kept alive for as long as `blas` uses it.
    _blas_workspace: CudaSlice<u8>,
    funcs: HashMap<&'static str, CudaFunction>,
    _modules: Vec<Arc<CudaModule>>,
    name: String,
}

/// The CUDA device. Cloning shares the context, stream and cuBLAS handle.
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
}

impl Cuda {
    /// Opens GPU `ordinal`. Every failure is an `Error::Device` with one line saying why
    /// (no driver library, no device, no cuBLAS, a kernel that would not load); never panics.
    pub fn open(ordinal: usize) -> Result<Cuda> {
        // cudarc panics on the first call if the library is missing: check before any call.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::Device(
                "CUDA unavailable: no NVIDIA driver library (libcuda.so) found".into(),
            ));
        }
        let count = CudaContext::device_count()
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
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device(
                "CUDA unavailable: libcublas.so not found on the loader path (add its folder, e.g. site-packages/nvidia/cu13/lib, to LD_LIBRARY_PATH)".into(),
            ));
        }
        let dev = |what: &str, e: cudarc::driver::DriverError| {
            Error::Device(format!("CUDA {what} failed on cuda:{ordinal}: {e}"))
        };
        let ctx = CudaContext::new(ordinal).map_err(|e| dev("context creation", e))?;
        // One stream, so per-buffer events would only cost: off before the first allocation.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| dev("stream creation", e))?;
        if ctx.has_async_alloc() {
            // Keep freed memory in the pool across synchronisations (the default threshold
            // of 0 hands it back to the driver at every sync).
            unsafe {
                let pool = cudarc::driver::result::device::get_default_mem_pool(ctx.cu_device())
                    .map_err(|e| dev("memory pool query", e))?;
                let mut threshold: u64 = u64::MAX;
                cudarc::driver::result::mem_pool::set_attribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut threshold as *mut u64 as *mut std::ffi::c_void,
                )
                .map_err(|e| dev("memory pool setup", e))?;
            }
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| {
            Error::Device(format!(
                "cuBLAS initialisation failed on cuda:{ordinal}: {e}"
            ))
        })?;
        let blas_workspace = unsafe { stream.alloc::<u8>(CUBLAS_WORKSPACE_BYTES) }
            .map_err(|e| dev("cuBLAS workspace allocation", e))?;
        {
            let (ptr, _guard) = blas_workspace.device_ptr(&stream);
            let status = unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    ptr as *mut std::ffi::c_void,
                    CUBLAS_WORKSPACE_BYTES,
                )
            };
            if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(Error::Device(format!(
                    "cuBLAS workspace setup failed on cuda:{ordinal}: {status:?}"
                )));
            }
        }
        let mut funcs = HashMap::new();
        let mut modules = Vec::new();
        for (module_name, names) in KERNELS {
            let bin = FATBINS
                .iter()
                .find(|(m, _)| m == module_name)
                .map(|(_, b)| *b)
                .ok_or_else(|| {
                    Error::Device(format!(
                        "kernel module {module_name} was not embedded at build time"
                    ))
                })?;
            let module = ctx
                .load_module(Ptx::from_binary(bin.to_vec()))
                .map_err(|e| dev(&format!("loading kernels/{module_name}.cu"), e))?;
            for name in *names {
                let f = module
                    .load_function(name)
                    .map_err(|e| dev(&format!("loading kernel {name}"), e))?;
                funcs.insert(*name, f);
            }
            modules.push(module);
        }
        let gpu = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let cc = ctx
            .compute_capability()
            .map(|(a, b)| format!("sm_{a}{b}"))
            .unwrap_or_default();
        let name = format!("cuda:{ordinal} {gpu} ({cc})");
        Ok(Cuda {
            inner: Arc::new(Inner {
                ctx,
                stream,
                blas,
                _blas_workspace: blas_workspace,
                funcs,
                _modules: modules,
                name,
            }),
        })
    }

    /// Total bytes of embedded kernel code (a kernel-less build would show 0).
    pub fn embedded_kernel_bytes() -> usize {
        FATBINS.iter().map(|(_, b)| b.len()).sum()
    }

    /// The context's default stream-ordered memory pool (every `alloc` comes from it), or
    /// None where the device has no memory pools.
    fn mem_pool(&self) -> Result<Option<sys::CUmemoryPool>> {
        if !self.inner.ctx.has_async_alloc() {
            return Ok(None);
        }
        self.inner.ctx.bind_to_thread().cu("bind context")?;
        unsafe { cudarc::driver::result::device::get_default_mem_pool(self.inner.ctx.cu_device()) }
            .cu("memory pool query")
            .map(Some)
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    pub(crate) fn func(&self, name: &'static str) -> Result<&CudaFunction> {
        self.inner
            .funcs
            .get(name)
            .ok_or_else(|| Error::Cuda(format!("kernel {name} is not loaded")))
    }

    /// An uninitialised buffer (every kernel writing into one writes all of it).
    pub(crate) fn alloc(&self, len: usize) -> Result<CudaBuf> {
        let data = unsafe { self.stream().alloc::<f32>(len.max(1)) }.cu("alloc")?;
        Ok(CudaBuf { data, len })
    }

    /// Scratch memory of any device type (double partial sums, labels).
    pub(crate) fn scratch<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        unsafe { self.stream().alloc::<T>(len.max(1)) }.cu("alloc")
    }

    /// The raw device address of an optional buffer (0 = null for the kernel). Event
    /// tracking is off, so the returned guard has nothing to record.
    pub(crate) fn ptr(&self, b: Option<&CudaBuf>) -> u64 {
        match b {
            Some(b) => b.data.device_ptr(self.stream()).0,
            None => 0,
        }
    }
    pub(crate) fn ptr_mut(&self, b: Option<&mut CudaBuf>) -> u64 {
        match b {
            Some(b) => b.data.device_ptr_mut(self.stream()).0,
            None => 0,
        }
    }

    /// Row-major GEMM through column-major cuBLAS: `C[m, n] = op(A) op(B)` is computed as
    /// `C^T = op(B)^T op(A)^T`. Arguments here are in column-major terms already:
    /// `C'[m, n] = op_a(A') op_b(B')` with leading dimensions as stored. `batch` is
    /// (count, stride_a, stride_b, stride_c) for a strided batched call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
        &self,
        trans_a: bool,
        trans_b: bool,
        (m, n, k): (usize, usize, usize),
        a: &A,
        lda: usize,
        b: &B,
        ldb: usize,
        beta: f32,
        c: &mut C,
        ldc: usize,
        batch: Option<(usize, usize, usize, usize)>,
    ) -> Result<()> {
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let cfg = GemmConfig {
            transa: op(trans_a),
            transb: op(trans_b),
            m: int(m)?,
            n: int(n)?,
            k: int(k)?,
            alpha: 1.0f32,
            lda: int(lda.max(1))?,
            ldb: int(ldb.max(1))?,
            beta,
            ldc: int(ldc.max(1))?,
        };
        match batch {
            None => unsafe { self.inner.blas.gemm(cfg, a, b, c) }.cu("sgemm"),
            Some((count, sa, sb, sc)) => {
                let cfg = StridedBatchedConfig {
                    gemm: cfg,
                    batch_size: int(count)?,
                    stride_a: sa as i64,
                    stride_b: sb as i64,
                    stride_c: sc as i64,
                };
                unsafe { self.inner.blas.gemm_strided_batched(cfg, a, b, c) }
                    .cu("sgemm_strided_batched")
            }
        }
    }
}

impl Backend for Cuda {
    type Elem = f32;
    type Storage = CudaBuf;
    type Labels = CudaLabels;
    type Graph = CudaStepGraph;
    type Half = CudaHalf;

    fn device_name(&self) -> String {
        self.inner.name.clone()
    }

    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        let data = self
            .stream()
            .alloc_zeros::<f32>(len.max(1))
            .cu("alloc_zeros")?;
        Ok(CudaBuf { data, len })
    }
    fn upload(&self, host: &[f32]) -> Result<CudaBuf> {
        if host.is_empty() {
            return self.zeros(0);
        }
        let data = self.stream().clone_htod(host).cu("upload")?;
        Ok(CudaBuf {
            data,
            len: host.len(),
        })
    }
    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        if buf.len == 0 {
            return Ok(Vec::new());
        }
        let host = self
            .stream()
            .clone_dtoh(&buf.data.slice(0..buf.len))
            .cu("download")?;
        // A DtoH copy into pageable memory already returns when done; the sync makes that explicit.
        self.synchronize()?;
        Ok(host)
    }
    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }
    fn copy(&self, buf: &CudaBuf) -> Result<CudaBuf> {
        let mut y = self.alloc(buf.len)?;
        self.copy_into(&mut y, buf)?;
        Ok(y)
    }
    fn copy_into(&self, dst: &mut CudaBuf, src: &CudaBuf) -> Result<()> {
        same_len("copy_into", dst, src)?;
        if src.len > 0 {
            self.stream()
                .memcpy_dtod(
                    &src.data.slice(0..src.len),
                    &mut dst.data.slice_mut(0..src.len),
                )
                .cu("copy")?;
        }
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        self.stream().synchronize().cu("synchronize")
    }
    fn upload_into(&self, dst: &mut CudaBuf, host: &[f32]) -> Result<()> {
        if host.len() != dst.len {
            return Err(Error::shape(
                "upload_into",
                format!("{} elements into a buffer of {}", host.len(), dst.len),
            ));
        }
        if !host.is_empty() {
            self.stream()
                .memcpy_htod(host, &mut dst.data.slice_mut(0..host.len()))
                .cu("upload_into")?;
        }
        Ok(())
    }
    fn fill(&self, len: usize, value: f64) -> Result<CudaBuf> {
        elementwise::fill(self, len, value)
    }

    fn upload_labels(&self, labels: &[u32], classes: usize) -> Result<CudaLabels> {
        crate::backend::cpu::check_labels(labels, labels.len(), classes)?;
        let data = if labels.is_empty() {
            self.scratch::<u32>(1)?
        } else {
            self.stream().clone_htod(labels).cu("label upload")?
        };
        Ok(CudaLabels {
            data,
            len: labels.len(),
            classes,
        })
    }
    fn upload_labels_into(
        &self,
        dst: &mut CudaLabels,
        labels: &[u32],
        classes: usize,
    ) -> Result<()> {
        crate::backend::cpu::check_labels(labels, dst.len, classes)?;
        dst.classes = classes;
        if !labels.is_empty() {
            self.stream()
                .memcpy_htod(labels, &mut dst.data.slice_mut(0..labels.len()))
                .cu("label upload")?;
        }
        Ok(())
    }
    fn labels_len(&self, labels: &CudaLabels) -> usize {
        labels.len
    }

    /// Stream capture into a CUDA graph. Allocations inside become graph memory nodes
    /// (the stream-ordered pool plans their addresses once, at instantiation), so a step
    /// that frees what it allocates replays with no allocation at all. The capture is ended
    /// even when `body` fails, so the stream is usable afterwards.
    fn capture(&self, body: &mut dyn FnMut() -> Result<()>) -> Result<Option<CudaStepGraph>> {
        self.synchronize()?;
        self.stream()
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .cu("begin graph capture")?;
        let result = body();
        let graph = self.stream().end_capture(
            sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
        );
        result?;
        let graph = graph
            .cu("end graph capture")?
            .ok_or_else(|| Error::Cuda("graph capture recorded nothing".into()))?;
        graph.upload().cu("graph upload")?;
        Ok(Some(CudaStepGraph(graph)))
    }
    fn replay(&self, graph: &CudaStepGraph) -> Result<()> {
        graph.0.launch().cu("graph launch")
    }

    /// CUDA events recorded on the stream around `f`: device time from the first queued
    /// op to the last, host gaps inside (mid-step downloads) included, as PyTorch's
    /// `torch.cuda.Event` timing counts them.
    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.inner.ctx.new_event(flags).cu("event creation")?;
        let end = self.inner.ctx.new_event(flags).cu("event creation")?;
        start.record(self.stream()).cu("event record")?;
        f()?;
        end.record(self.stream()).cu("event record")?;
        let ms = start.elapsed_ms(&end).cu("event elapsed time")?;
        Ok(f64::from(ms) / 1e3)
    }
    fn timer_kind(&self) -> &'static str {
        "cuda_events"
    }
    /// Resets the pool's in-use high-water mark (the driver only allows resetting it to 0,
    /// which restarts it at the bytes in use now). Queued frees are flushed first.
    fn reset_peak_memory(&self) -> Result<()> {
        self.synchronize()?;
        if let Some(pool) = self.mem_pool()? {
            let mut zero: u64 = 0;
            unsafe {
                cudarc::driver::result::mem_pool::set_attribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    &mut zero as *mut u64 as *mut std::ffi::c_void,
                )
            }
            .cu("memory pool high-water reset")?;
        }
        Ok(())
    }
    /// The pool's in-use high-water mark: the analogue of `torch.cuda.max_memory_allocated`.
    /// cuBLAS's own workspace (allocated outside the pool) is not in it.
    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        self.synchronize()?;
        let Some(pool) = self.mem_pool()? else {
            return Ok(None);
        };
        let mut high: u64 = 0;
        unsafe {
            cudarc::driver::result::mem_pool::get_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut high as *mut u64 as *mut std::ffi::c_void,
            )
        }
        .cu("memory pool high-water query")?;
        Ok(Some(PeakMemory {
            bytes: high,
            kind: "cuda_mempool_used_high",
        }))
    }

    fn add(&self, a: &CudaBuf, b: &CudaBuf) -> Result<CudaBuf> {
        elementwise::add(self, a, b)
    }
    fn scale(&self, x: &CudaBuf, s: f64) -> Result<CudaBuf> {
        elementwise::scale(self, x, s)
    }
    fn axpy(&self, y: &mut CudaBuf, a: f64, x: &CudaBuf) -> Result<()> {
        elementwise::axpy(self, y, a, x)
    }
    fn scale_assign(&self, x: &mut CudaBuf, s: f64) -> Result<()> {
        elementwise::scale_assign(self, x, s)
    }
    fn axpy_scaled(
        &self,
        y: &mut CudaBuf,
        a: f64,
        s: ScalarRef<'_, CudaBuf>,
        x: &CudaBuf,
    ) -> Result<()> {
        elementwise::axpy_scaled(self, y, a, s, x)
    }
    fn grad_norm_scalars(&self, xs: &[&CudaBuf], max_norm: f64) -> Result<CudaBuf> {
        elementwise::grad_norm_scalars(self, xs, max_norm)
    }
    fn sum_squares(&self, x: &CudaBuf) -> Result<f64> {
        elementwise::dot(self, x, x)
    }
    fn sum_squares_many(&self, xs: &[&CudaBuf]) -> Result<f64> {
        elementwise::sum_squares_many(self, xs)
    }
    fn dot(&self, a: &CudaBuf, b: &CudaBuf) -> Result<f64> {
        same_len("dot", a, b)?;
        elementwise::dot(self, a, b)
    }
    fn relu_fwd(&self, x: &CudaBuf) -> Result<CudaBuf> {
        elementwise::relu_fwd(self, x)
    }
    fn relu_bwd(&self, y: &CudaBuf, dy: &CudaBuf) -> Result<CudaBuf> {
        elementwise::relu_bwd(self, y, dy)
    }
    fn to_bf16(&self, x: &CudaBuf) -> Result<CudaHalf> {
        elementwise::to_bf16(self, x)
    }
    fn from_bf16(&self, x: &CudaHalf) -> Result<CudaBuf> {
        elementwise::from_bf16(self, x)
    }
    fn half_len(&self, x: &CudaHalf) -> usize {
        x.len
    }

    fn conv2d_fwd(&self, x: &CudaBuf, xd: Nchw, w: &CudaBuf, spec: &Conv2dSpec) -> Result<CudaBuf> {
        conv::conv2d_fwd(self, x, xd, w, spec)
    }
    fn conv2d_bwd_data(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        w: &CudaBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<CudaBuf> {
        conv::conv2d_bwd_data(self, x, dy, w, xd, spec)
    }
    fn conv2d_bwd_data_into(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        w: &CudaBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
        dx: &mut CudaBuf,
    ) -> Result<()> {
        conv::conv2d_bwd_data_into(self, x, dy, w, xd, spec, dx)
    }
    fn conv2d_bwd_weight(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<CudaBuf> {
        conv::conv2d_bwd_weight(self, x, dy, xd, spec)
    }

    fn max_pool2d_fwd(&self, x: &CudaBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CudaBuf> {
        pool::max_pool2d_fwd(self, x, xd, spec)
    }
    fn max_pool2d_bwd(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<CudaBuf> {
        pool::max_pool2d_bwd(self, x, dy, xd, spec)
    }
    fn max_pool2d_bwd_into(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut CudaBuf,
    ) -> Result<()> {
        pool::max_pool2d_bwd_into(self, x, dy, xd, spec, dx)
    }
    fn avg_pool2d_fwd(&self, x: &CudaBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CudaBuf> {
        pool::avg_pool2d_fwd(self, x, xd, spec)
    }
    fn avg_pool2d_bwd(&self, dy: &CudaBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CudaBuf> {
        pool::avg_pool2d_bwd(self, dy, xd, spec)
    }
    fn avg_pool2d_bwd_into(
        &self,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut CudaBuf,
    ) -> Result<()> {
        pool::avg_pool2d_bwd_into(self, dy, xd, spec, dx)
    }
    fn global_avg_pool_fwd(&self, x: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        pool::global_avg_pool_fwd(self, x, xd)
    }
    fn global_avg_pool_bwd(&self, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        pool::global_avg_pool_bwd(self, dy, xd)
    }

    fn batch_norm_train_fwd(
        &self,
        x: &CudaBuf,
        xd: Nchw,
        affine: Option<(&CudaBuf, &CudaBuf)>,
        running: Option<RunningStats<'_, CudaBuf>>,
        eps: f64,
    ) -> Result<(CudaBuf, BatchNormSaved<CudaBuf>)> {
        norm::batch_norm_train_fwd(self, x, xd, affine, running, eps)
    }
    fn batch_norm_eval_fwd(
        &self,
        x: &CudaBuf,
        xd: Nchw,
        affine: Option<(&CudaBuf, &CudaBuf)>,
        rm: &CudaBuf,
        rv: &CudaBuf,
        eps: f64,
    ) -> Result<CudaBuf> {
        norm::batch_norm_eval_fwd(self, x, xd, affine, rm, rv, eps)
    }
    fn batch_norm_bwd(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        gamma: Option<&CudaBuf>,
        saved: &BatchNormSaved<CudaBuf>,
    ) -> Result<(CudaBuf, Option<(CudaBuf, CudaBuf)>)> {
        norm::batch_norm_bwd(self, x, dy, xd, gamma, saved)
    }

    fn concat_channels(&self, parts: &[(&CudaBuf, Nchw)]) -> Result<CudaBuf> {
        layout::concat_channels(self, parts)
    }
    fn split_channels(&self, dy: &CudaBuf, dd: Nchw, channels: &[usize]) -> Result<Vec<CudaBuf>> {
        layout::split_channels(self, dy, dd, channels)
    }
    fn shift_crop_fwd(&self, x: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        layout::shift_crop_fwd(self, x, xd)
    }
    fn shift_crop_bwd(&self, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        layout::shift_crop_bwd(self, dy, xd)
    }

    fn linear_fwd(
        &self,
        x: &CudaBuf,
        w: &CudaBuf,
        b: Option<&CudaBuf>,
        n: usize,
        in_f: usize,
        out_f: usize,
    ) -> Result<CudaBuf> {
        dense::linear_fwd(self, x, w, b, n, in_f, out_f)
    }
    fn linear_bwd(
        &self,
        x: &CudaBuf,
        w: &CudaBuf,
        dy: &CudaBuf,
        n: usize,
        in_f: usize,
        out_f: usize,
        with_bias: bool,
    ) -> Result<(CudaBuf, CudaBuf, Option<CudaBuf>)> {
        dense::linear_bwd(self, x, w, dy, n, in_f, out_f, with_bias)
    }
    fn softmax_cross_entropy_fwd(
        &self,
        logits: &CudaBuf,
        n: usize,
        k: usize,
        labels: &CudaLabels,
    ) -> Result<(CudaBuf, CudaBuf)> {
        dense::softmax_cross_entropy_fwd(self, logits, n, k, labels)
    }
    fn softmax_cross_entropy_bwd(
        &self,
        probs: &CudaBuf,
        dloss: &CudaBuf,
        n: usize,
        k: usize,
        labels: &CudaLabels,
    ) -> Result<CudaBuf> {
        dense::softmax_cross_entropy_bwd(self, probs, dloss, n, k, labels)
    }
    fn count_correct(
        &self,
        logits: &CudaBuf,
        n: usize,
        k: usize,
        labels: &CudaLabels,
    ) -> Result<CudaBuf> {
        dense::count_correct(self, logits, n, k, labels)
    }

    fn drop_path(&self, x: &CudaBuf, n: usize, sample_scale: &CudaBuf) -> Result<CudaBuf> {
        elementwise::drop_path(self, x, n, sample_scale)
    }

    fn mixed_op_fwd(
        &self,
        xs: &[Option<&CudaBuf>],
        alpha: &CudaBuf,
        len: usize,
    ) -> Result<CudaBuf> {
        mixed_op::mixed_op_fwd(self, xs, alpha, len)
    }
    fn mixed_op_bwd(
        &self,
        dy: &CudaBuf,
        xs: &[Option<&CudaBuf>],
        alpha: &CudaBuf,
        len: usize,
        need_dx: &[bool],
    ) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
        mixed_op::mixed_op_bwd(self, dy, xs, alpha, len, need_dx)
    }
    fn mixed_op_bwd_into(
        &self,
        dy: &CudaBuf,
        xs: &[Option<&CudaBuf>],
        alpha: &CudaBuf,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut CudaBuf>],
    ) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
        mixed_op::mixed_op_bwd_into(self, dy, xs, alpha, len, need_dx, acc)
    }

    fn sgd_step(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        momentum_buf: &mut CudaBuf,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, CudaBuf>>,
    ) -> Result<()> {
        optim::sgd_step(self, param, grad, momentum_buf, hp, grad_scale)
    }
    fn adam_step(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        hp: &AdamStep,
    ) -> Result<()> {
        optim::adam_step(self, param, grad, m, v, hp)
    }
    fn sgd_step_many(
        &self,
        params: &mut [&mut CudaBuf],
        grads: &[&CudaBuf],
        momentum_bufs: &mut [&mut CudaBuf],
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, CudaBuf>>,
    ) -> Result<()> {
        optim::sgd_step_many(self, params, grads, momentum_bufs, hp, grad_scale)
    }
    fn adam_step_many(
        &self,
        params: &mut [&mut CudaBuf],
        grads: &[&CudaBuf],
        ms: &mut [&mut CudaBuf],
        vs: &mut [&mut CudaBuf],
        hp: &AdamStep,
    ) -> Result<()> {
        optim::adam_step_many(self, params, grads, ms, vs, hp)
    }
}
