//! The CUDA backend (feature `cuda`): `Cuda` implements [`Backend`] with f32 device buffers.
//!
//! One context, one non-blocking stream, event tracking off (single-stream engine), and the
//! stream-ordered memory pool with its release threshold raised, so steady-state training
//! allocates from the pool instead of calling cudaMalloc. Kernels come from the fatbins
//! build.rs embeds (one module per `kernels/*.cu`), every function is loaded once at open.
//! cuBLAS does the GEMMs (linear, 1x1 and im2col convs). The files beside this one mirror
//! the kernel families: `elementwise`, `conv`, `pool`, `norm`, `layout`, `dense`,
//! `mixed_op`, `optim`; the CPU backend is the reference each one is checked against
//! (`crate::backend::selftest`).

mod conv;
mod dense;
pub(crate) mod driver;
mod elementwise;
pub(crate) mod kernels;
mod layout;
mod mixed_op;
mod norm;
mod optim;
mod pool;
#[cfg(all(test, feature = "cuda-sim"))]
mod sim_faults;

use crate::backend::{checks, DeviceOps};
use crate::backend::{PeakMemory, ScalarRef};
use crate::error::{Error, Result};
use crate::shape::Nchw;
#[cfg(feature = "cuda-sim")]
pub use driver::sim::{launch_counts as sim_launch_counts, SimOptions};
use driver::{Dev, DeviceCopy, DeviceSlice, Driver, GemmBatch, GraphExec, LaunchConfig, Sgemm};
pub use kernels::Kernel;
use std::sync::Arc;

/// Threads per block of the 1-D kernels (`BLOCK` in kernels/common.cuh).
pub(crate) const BLOCK: u32 = kernels::consts::BLOCK as u32;
/// Most blocks a grid-stride kernel is launched with; more work loops inside the kernel.
const MAX_GRID: usize = 1 << 16;

/// Class labels on the device (u32), checked against the class count on upload.
pub struct CudaLabels {
    pub(crate) data: DeviceSlice<u32>,
    pub(crate) len: usize,
    /// The class count they were checked against; ops refuse logits with fewer.
    pub(crate) classes: usize,
}

/// A captured step: an instantiated graph on the backend's stream.
pub struct CudaStepGraph(Box<dyn GraphExec>);

/// An f32 buffer on the device. Holds at least one element (a zero-byte allocation is an
/// error in CUDA); `len` is the logical length.
pub struct CudaBuf {
    pub(crate) data: DeviceSlice<f32>,
    pub(crate) len: usize,
}

/// A bf16 buffer on the device (the kernels read it as `__nv_bfloat16`).
/// Holds at least one element, like [`CudaBuf`]; `len` is the logical length.
pub struct CudaHalf {
    pub(crate) data: DeviceSlice<half::bf16>,
    pub(crate) len: usize,
}

pub(crate) use kernels::Geom;

impl Geom {
    pub(crate) fn new(
        x: Nchw,
        y: Nchw,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> Result<Self> {
        // The kernels index with int products of these: every one must fit.
        int(x.numel())?;
        int(y.numel())?;
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

/// A size as the kernels' `int`, or an error if it does not fit. A CUDA-only check (the
/// kernels index in 32 bits), so it stays here rather than in `crate::backend::checks`.
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

/// `s.buf[s.index]` as a kernel's scalar pointer (the index was checked by the op's
/// `checks` function).
pub(crate) fn scalar_ptr<'a>(s: &ScalarRef<'a, CudaBuf>) -> Result<Dev<'a, f32>> {
    s.buf.data.dev_at(s.index)
}

/// An optional buffer as a kernel's `const float*` (null for None).
pub(crate) fn opt(b: Option<&CudaBuf>) -> Dev<'_, f32> {
    driver::dev_opt(b.map(|b| &b.data))
}

struct Inner {
    driver: Arc<dyn Driver>,
    name: String,
}

/// The CUDA device, on a GPU or on the host simulation. Cloning shares the driver (its
/// context, stream and cuBLAS handle).
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
}

impl Cuda {
    /// Opens GPU `ordinal`. Every failure is an `Error::Device` with one line saying why
    /// (no driver library, no device, no cuBLAS, a kernel that would not load); never panics.
    #[cfg(feature = "cuda")]
    pub fn open(ordinal: usize) -> Result<Cuda> {
        Ok(Cuda::on(driver::gpu::open(ordinal)?))
    }

    /// The number of GPUs the driver reports (0 without a driver, or on any error).
    #[cfg(feature = "cuda")]
    pub fn gpu_count() -> usize {
        driver::gpu::count()
    }

    /// Opens the host simulation of the GPU (`--device cuda-sim`): the same kernels and
    /// launch code, run thread by thread on the CPU with guarded, NaN-filled memory.
    #[cfg(feature = "cuda-sim")]
    pub fn open_sim() -> Result<Cuda> {
        Ok(Cuda::on(driver::sim::open(
            driver::sim::SimOptions::default(),
        )))
    }

    /// The simulation with options (a device memory capacity, for out-of-memory tests).
    #[cfg(feature = "cuda-sim")]
    pub fn open_sim_with(options: SimOptions) -> Result<Cuda> {
        Ok(Cuda::on(driver::sim::open(options)))
    }

    fn on(driver: Arc<dyn Driver>) -> Cuda {
        let name = driver.name();
        Cuda {
            inner: Arc::new(Inner { driver, name }),
        }
    }

    /// Total bytes of embedded GPU kernel code (a kernel-less GPU build would show 0).
    pub fn embedded_kernel_bytes() -> usize {
        #[cfg(feature = "cuda")]
        {
            kernels::FATBINS.iter().map(|(_, b)| b.len()).sum()
        }
        #[cfg(not(feature = "cuda"))]
        {
            0
        }
    }

    /// Hands memory the pool and graph memory cache but nobody uses back to the device
    /// (the drivers also do this before each capture and when an allocation fails).
    pub fn trim_memory(&self) -> Result<()> {
        self.drv().trim_memory()
    }

    /// Bytes a new allocation can still get on the device (after handing cached pool
    /// memory back), or None where unknown.
    pub fn free_memory(&self) -> Result<Option<u64>> {
        self.drv().free_memory()
    }

    /// The driver every launcher and copy goes through.
    pub(crate) fn drv(&self) -> &dyn Driver {
        &*self.inner.driver
    }

    /// An uninitialised buffer (every kernel writing into one writes all of it; NaN in the
    /// simulation, so one that does not shows up).
    pub(crate) fn alloc(&self, len: usize) -> Result<CudaBuf> {
        Ok(CudaBuf {
            data: DeviceSlice::alloc(&self.inner.driver, len)?,
            len,
        })
    }

    /// Scratch memory of any device type (double partial sums, labels).
    pub(crate) fn scratch<T: DeviceCopy>(&self, len: usize) -> Result<DeviceSlice<T>> {
        DeviceSlice::alloc(&self.inner.driver, len)
    }

    /// Row-major GEMM through column-major cuBLAS: `C[m, n] = op(A) op(B)` is computed as
    /// `C^T = op(B)^T op(A)^T`. Arguments here are in column-major terms already:
    /// `C'[m, n] = op_a(A') op_b(B')` with leading dimensions as stored. Each operand is a
    /// buffer and an element offset into it; `batch` is (count, stride_a, stride_b,
    /// stride_c) for a strided batched call. Every element the call addresses is checked
    /// to lie inside its buffer before the call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        (m, n, k): (usize, usize, usize),
        (a, a_off): (&DeviceSlice<f32>, usize),
        lda: usize,
        (b, b_off): (&DeviceSlice<f32>, usize),
        ldb: usize,
        beta: f32,
        (c, c_off): (&mut DeviceSlice<f32>, usize),
        ldc: usize,
        batch: Option<(usize, usize, usize, usize)>,
    ) -> Result<()> {
        let (count, sa, sb, sc) = batch.unwrap_or((1, 0, 0, 0));
        if m == 0 || n == 0 || count == 0 {
            return Ok(());
        }
        // The last element a column-major (rows x cols, ld) operand touches, plus one.
        let extent = |rows: usize, cols: usize, ld: usize, stride: usize| {
            (count - 1) * stride + (cols.max(1) - 1) * ld + rows
        };
        let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
        let (br, bc) = if trans_b { (n, k) } else { (k, n) };
        let fits = |what: &str, off: usize, need: usize, have: usize| {
            if off + need > have {
                return Err(Error::invalid(
                    "gemm",
                    format!(
                        "operand {what} needs {} elements, its buffer has {have}",
                        off + need
                    ),
                ));
            }
            Ok(())
        };
        // With k == 0 cuBLAS reads neither A nor B (C = beta C).
        if k > 0 {
            fits("A", a_off, extent(ar, ac, lda, sa), a.len())?;
            fits("B", b_off, extent(br, bc, ldb, sb), b.len())?;
        }
        fits("C", c_off, extent(m, n, ldc, sc), c.len())?;
        let at = |s: &DeviceSlice<f32>, off: usize| s.addr() + (off * 4) as u64;
        let g = Sgemm {
            trans_a,
            trans_b,
            m: int(m)?,
            n: int(n)?,
            k: int(k)?,
            alpha: 1.0,
            a: at(a, a_off),
            lda: int(lda.max(1))?,
            b: at(b, b_off),
            ldb: int(ldb.max(1))?,
            beta,
            c: at(c, c_off),
            ldc: int(ldc.max(1))?,
            batch: match batch {
                None => None,
                Some(_) => Some(GemmBatch {
                    count: int(count)?,
                    stride_a: sa as i64,
                    stride_b: sb as i64,
                    stride_c: sc as i64,
                }),
            },
        };
        // SAFETY: every element the GEMM addresses was checked against its buffer above.
        unsafe { self.drv().sgemm(&g) }
    }
}

impl DeviceOps for Cuda {
    type Elem = f32;
    type Storage = CudaBuf;
    type Labels = CudaLabels;
    type Graph = CudaStepGraph;
    type Half = CudaHalf;
    fn device_name(&self) -> String {
        self.inner.name.clone()
    }
    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        let mut y = self.alloc(len)?;
        y.data.zero()?;
        Ok(y)
    }
    fn upload(&self, host: &[f32]) -> Result<CudaBuf> {
        let mut y = self.alloc(host.len())?;
        y.data.upload_from(host)?;
        Ok(y)
    }
    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        let mut host = vec![0.0f32; buf.len];
        buf.data.download_into(&mut host)?;
        Ok(host)
    }
    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }
    fn storage_addr(&self, buf: &CudaBuf) -> usize {
        buf.data.addr() as usize
    }
    fn labels_addr(&self, labels: &CudaLabels) -> usize {
        labels.data.addr() as usize
    }
    fn copy(&self, buf: &CudaBuf) -> Result<CudaBuf> {
        let mut y = self.alloc(buf.len)?;
        self.copy_into(&mut y, buf)?;
        Ok(y)
    }
    fn copy_into(&self, dst: &mut CudaBuf, src: &CudaBuf) -> Result<()> {
        checks::copy_into(self, dst, src)?;
        dst.data.copy_from(&src.data, src.len)
    }
    fn synchronize(&self) -> Result<()> {
        self.drv().synchronize()
    }
    fn upload_into(&self, dst: &mut CudaBuf, host: &[f32]) -> Result<()> {
        checks::upload_into(self, dst, host)?;
        dst.data.upload_from(host)
    }
    fn upload_labels(&self, labels: &[u32], classes: usize) -> Result<CudaLabels> {
        checks::upload_labels(labels, classes)?;
        let mut data = self.scratch::<u32>(labels.len())?;
        data.upload_from(labels)?;
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
        checks::upload_labels_into(self, dst, labels, classes)?;
        dst.classes = classes;
        dst.data.upload_from(labels)
    }
    fn labels_len(&self, labels: &CudaLabels) -> usize {
        labels.len
    }
    /// Stream capture into a graph. Allocations inside become graph memory (the pool
    /// plans their addresses once, at instantiation), so a step that frees what it
    /// allocates replays with no allocation at all. The capture is ended even when `body`
    /// fails, so the stream is usable afterwards.
    fn capture(&self, body: &mut dyn FnMut() -> Result<()>) -> Result<Option<CudaStepGraph>> {
        self.drv().begin_capture()?;
        let result = body();
        let graph = self.drv().end_capture();
        result?;
        Ok(Some(CudaStepGraph(graph?)))
    }
    fn replay(&self, graph: &CudaStepGraph) -> Result<()> {
        graph.0.launch()
    }
    /// Device time from the first op `f` queues to the last, host gaps inside (mid-step
    /// downloads) included, as PyTorch's `torch.cuda.Event` timing counts them.
    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.drv().time_region(f)
    }
    fn timer_kind(&self) -> &'static str {
        self.drv().timer_kind()
    }
    fn reset_peak_memory(&self) -> Result<()> {
        self.drv().reset_peak_memory()
    }
    /// The analogue of `torch.cuda.max_memory_allocated`: the pool's high-water mark plus
    /// graph memory's. cuBLAS's own workspace (allocated outside the pool) is not in it.
    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        self.drv().peak_memory()
    }
}
