//! The linear layer on cuBLAS (plus the bias kernels of kernels/dense.cu) and the mean
//! softmax cross-entropy and the correct-prediction count, reading device labels (uploaded
//! once per batch, so a captured step reads them in place).

use super::driver::DeviceSlice;
use super::driver::LaunchConfig;
use super::kernels;
use super::{cfg1d, int, Cuda, CudaBuf, CudaLabels, ONE_BLOCK};
use crate::backend::prelude::*;
use crate::backend::{checks, DenseOps};
use crate::error::{Error, Result};

pub(super) fn linear_fwd(
    d: &Cuda,
    x: &CudaBuf,
    w: &CudaBuf,
    b: Option<&CudaBuf>,
    n: usize,
    in_f: usize,
    out_f: usize,
) -> Result<CudaBuf> {
    checks::linear_fwd(d, x, w, b, n, in_f, out_f)?;
    let mut y = d.alloc(n * out_f)?;
    if n * out_f == 0 {
        return Ok(y);
    }
    if let Some(b) = b {
        let (rows, cols) = (int(n)?, int(out_f)?);
        // SAFETY: b holds out_f elements (checked), y n * out_f (alloc).
        unsafe {
            kernels::linear_bias_fwd_f32(
                d.drv(),
                cfg1d(n * out_f),
                rows,
                cols,
                b.data.dev(),
                y.data.dev_mut(),
            )
        }?;
    }
    let beta = if b.is_some() { 1.0 } else { 0.0 };
    // y' [out, n] = (w' [in, out])^T x' [in, n]
    d.gemm(
        true,
        false,
        (out_f, n, in_f),
        (&w.data, 0),
        in_f,
        (&x.data, 0),
        in_f,
        beta,
        (&mut y.data, 0),
        out_f,
        None,
    )?;
    Ok(y)
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub(super) fn linear_bwd(
    d: &Cuda,
    x: &CudaBuf,
    w: &CudaBuf,
    dy: &CudaBuf,
    n: usize,
    in_f: usize,
    out_f: usize,
    with_bias: bool,
) -> Result<(CudaBuf, CudaBuf, Option<CudaBuf>)> {
    checks::linear_bwd(d, x, w, dy, n, in_f, out_f)?;
    let mut dx = d.zeros(n * in_f)?;
    let mut dw = d.zeros(out_f * in_f)?;
    if n * in_f * out_f > 0 {
        // dx' [in, n] = w' [in, out] dy' [out, n]
        d.gemm(
            false,
            false,
            (in_f, n, out_f),
            (&w.data, 0),
            in_f,
            (&dy.data, 0),
            out_f,
            0.0,
            (&mut dx.data, 0),
            in_f,
            None,
        )?;
        // dw' [in, out] = x' [in, n] (dy' [out, n])^T
        d.gemm(
            false,
            true,
            (in_f, out_f, n),
            (&x.data, 0),
            in_f,
            (&dy.data, 0),
            out_f,
            0.0,
            (&mut dw.data, 0),
            in_f,
            None,
        )?;
    }
    let db = if with_bias {
        let mut db = d.zeros(out_f)?;
        if out_f > 0 {
            let (rows, cols) = (int(n)?, int(out_f)?);
            // SAFETY: dy holds n * out_f (checked), db out_f (zeros).
            unsafe {
                kernels::linear_bias_bwd_f32(
                    d.drv(),
                    cfg1d(out_f),
                    rows,
                    cols,
                    dy.data.dev(),
                    db.data.dev_mut(),
                )
            }?;
        }
        Some(db)
    } else {
        None
    };
    Ok((dx, dw, db))
}

/// The labels' device buffer, after checking every label is below the `k` classes of the
/// logits. CUDA only: the values are on the device, so the class count they were checked
/// against on upload stands for them (the CPU checks the values themselves; their number
/// was checked by the op's `checks` function).
fn labels_for(labels: &CudaLabels, k: usize) -> Result<&DeviceSlice<u32>> {
    if labels.classes > k {
        return Err(Error::invalid(
            "labels",
            format!("uploaded for {} classes, used with {k}", labels.classes),
        ));
    }
    Ok(&labels.data)
}

pub(super) fn softmax_cross_entropy_fwd(
    d: &Cuda,
    logits: &CudaBuf,
    n: usize,
    k: usize,
    labels: &CudaLabels,
) -> Result<(CudaBuf, CudaBuf)> {
    checks::softmax_cross_entropy_fwd(d, logits, n, k, labels)?;
    let lab = labels_for(labels, k)?.dev();
    let mut probs = d.alloc(n * k)?;
    let mut row_loss = d.scratch::<f64>(n)?;
    let mut loss = d.alloc(1)?;
    let (rows, classes) = (int(n)?, int(k)?);
    // SAFETY: logits hold n * k, labels n (checked), probs n * k and
    // row_loss n (alloc).
    unsafe {
        kernels::softmax_cross_entropy_fwd_f32(
            d.drv(),
            cfg1d(n),
            rows,
            classes,
            logits.data.dev(),
            lab,
            probs.data.dev_mut(),
            row_loss.dev_mut(),
        )
    }?;
    let one = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: row_loss holds n doubles, loss one float.
    unsafe {
        kernels::softmax_cross_entropy_finish_f32(
            d.drv(),
            one,
            rows,
            row_loss.dev(),
            loss.data.dev_mut(),
        )
    }?;
    Ok((loss, probs))
}

pub(super) fn softmax_cross_entropy_bwd(
    d: &Cuda,
    probs: &CudaBuf,
    dloss: &CudaBuf,
    n: usize,
    k: usize,
    labels: &CudaLabels,
) -> Result<CudaBuf> {
    checks::softmax_cross_entropy_bwd(d, probs, dloss, n, k, labels)?;
    let lab = labels_for(labels, k)?.dev();
    let mut dl = d.alloc(n * k)?;
    if n * k > 0 {
        let (rows, classes) = (int(n)?, int(k)?);
        // SAFETY: probs hold n * k, dloss one, labels n (checked), dl n * k
        // (alloc).
        unsafe {
            kernels::softmax_cross_entropy_bwd_f32(
                d.drv(),
                cfg1d(n * k),
                rows,
                classes,
                probs.data.dev(),
                dloss.data.dev(),
                lab,
                dl.data.dev_mut(),
            )
        }?;
    }
    Ok(dl)
}

/// `out[0]` = rows whose first maximum is at the label, counted by one block.
pub(super) fn count_correct(
    d: &Cuda,
    logits: &CudaBuf,
    n: usize,
    k: usize,
    labels: &CudaLabels,
) -> Result<CudaBuf> {
    checks::count_correct(d, logits, n, k, labels)?;
    let lab = labels_for(labels, k)?.dev();
    let mut out = d.alloc(1)?;
    let (rows, classes) = (int(n)?, int(k)?);
    // SAFETY: logits hold n * k, labels n (checked), out one (alloc).
    unsafe {
        kernels::count_correct_f32(
            d.drv(),
            ONE_BLOCK,
            rows,
            classes,
            logits.data.dev(),
            lab,
            out.data.dev_mut(),
        )
    }?;
    Ok(out)
}

impl DenseOps for Cuda {
    fn linear_fwd(
        &self,
        x: &CudaBuf,
        w: &CudaBuf,
        b: Option<&CudaBuf>,
        n: usize,
        in_f: usize,
        out_f: usize,
    ) -> Result<CudaBuf> {
        linear_fwd(self, x, w, b, n, in_f, out_f)
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
        linear_bwd(self, x, w, dy, n, in_f, out_f, with_bias)
    }
    fn softmax_cross_entropy_fwd(
        &self,
        logits: &CudaBuf,
        n: usize,
        k: usize,
        labels: &CudaLabels,
    ) -> Result<(CudaBuf, CudaBuf)> {
        softmax_cross_entropy_fwd(self, logits, n, k, labels)
    }
    fn softmax_cross_entropy_bwd(
        &self,
        probs: &CudaBuf,
        dloss: &CudaBuf,
        n: usize,
        k: usize,
        labels: &CudaLabels,
    ) -> Result<CudaBuf> {
        softmax_cross_entropy_bwd(self, probs, dloss, n, k, labels)
    }
    fn count_correct(
        &self,
        logits: &CudaBuf,
        n: usize,
        k: usize,
        labels: &CudaLabels,
    ) -> Result<CudaBuf> {
        count_correct(self, logits, n, k, labels)
    }
}
