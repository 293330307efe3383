//! cuBLAS on the device's stream: the handle and its fixed workspace, set up at open, and
//! the column-major SGEMMs of [`Sgemm`] (plain and strided-batched).

use super::device::{open_error, Inner};
use super::Gpu;
use crate::backend::cuda::driver::Sgemm;
use crate::error::{Error, Result};
use cudarc::cublas::{result as cublas_result, sys as cublas_sys};
use cudarc::driver::result;
use cudarc::driver::result::DriverError;
use std::ffi::c_void;

/// cuBLAS's workspace, set once so that GEMMs captured in a graph never allocate (32 MiB,
/// NVIDIA's recommendation for Hopper). Allocated with `cuMemAlloc`, outside the pool, so it
/// is not in [`Driver::peak_memory`](crate::backend::cuda::driver::Driver::peak_memory).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// Creates `inner`'s cuBLAS handle on its stream and gives it the workspace (`open`'s step;
/// `Inner`'s `Drop` releases both).
pub(super) fn attach(inner: &mut Inner) -> Result<()> {
    let ordinal = inner.ordinal;
    let dev_err = |what: &str, e: DriverError| open_error(ordinal, what, e);
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
    Ok(())
}

impl Gpu {
    /// `cublasSgemm_v2` or `cublasSgemmStridedBatched` on the stream, alpha and beta by host
    /// pointer (the handle's default pointer mode: cuBLAS reads them before returning, and a
    /// capture records their values).
    pub(super) unsafe fn sgemm(&self, g: &Sgemm) -> Result<()> {
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
}
