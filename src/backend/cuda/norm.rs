//! Launchers for kernels/norm.cu: batch norm training forward (batch statistics and the
//! running-stat update), eval forward, and backward. Optional buffers (gamma/beta, running
//! stats, dgamma/dbeta) travel as raw device addresses, 0 meaning absent.

use super::driver::DevMut;
use super::driver::LaunchConfig;
use super::{cfg1d, int, Cuda, CudaBuf};
use super::{kernels, opt};
use crate::backend::{checks, NormOps};
use crate::backend::{BatchNormSaved, RunningStats};
use crate::error::Result;
use crate::shape::Nchw;

/// One block per channel for the per-channel reductions.
fn per_channel(xd: Nchw) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (xd.c.max(1) as u32, 1, 1),
        block_dim: (super::BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// y = x * ab[c] + ab[C + c].
fn apply(d: &Cuda, x: &CudaBuf, xd: Nchw, ab: &CudaBuf) -> Result<CudaBuf> {
    let mut y = d.alloc(xd.numel())?;
    if xd.numel() > 0 {
        let (total, c, plane) = (int(xd.numel())?, int(xd.c)?, int(xd.plane())?);
        // SAFETY: x holds `total` (checked by the callers), ab 2c (alloc by the callers), y
        // total.
        unsafe {
            kernels::batch_norm_apply_f32(
                d.drv(),
                cfg1d(xd.numel()),
                total,
                c,
                plane,
                x.data.dev(),
                ab.data.dev(),
                y.data.dev_mut(),
            )
        }?;
    }
    Ok(y)
}

pub(super) fn batch_norm_train_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    affine: Option<(&CudaBuf, &CudaBuf)>,
    running: Option<RunningStats<'_, CudaBuf>>,
    eps: f64,
) -> Result<(CudaBuf, BatchNormSaved<CudaBuf>)> {
    checks::batch_norm_train_fwd(d, x, xd, affine, running.as_ref())?;
    let mut mean = d.alloc(xd.c)?;
    let mut invstd = d.alloc(xd.c)?;
    let mut ab = d.alloc(2 * xd.c)?;
    let (gp, bp) = (opt(affine.map(|a| a.0)), opt(affine.map(|a| a.1)));
    let momentum = running.as_ref().map_or(0.0, |r| r.momentum);
    let (rm, rv) = match running {
        Some(r) => (r.mean.data.dev_mut(), r.var.data.dev_mut()),
        None => (DevMut::null(), DevMut::null()),
    };
    let (n, c, plane) = (int(xd.n)?, int(xd.c)?, int(xd.plane())?);
    if xd.c > 0 {
        // SAFETY: x holds n*c*plane; gamma, beta, the running stats (when not null) c
        // (checked); mean and invstd hold c, ab 2c (alloc); one block
        // per channel.
        unsafe {
            kernels::batch_norm_train_fwd_f32(
                d.drv(),
                per_channel(xd),
                n,
                c,
                plane,
                eps,
                momentum,
                x.data.dev(),
                gp,
                bp,
                rm,
                rv,
                mean.data.dev_mut(),
                invstd.data.dev_mut(),
                ab.data.dev_mut(),
            )
        }?;
    }
    let y = apply(d, x, xd, &ab)?;
    Ok((y, BatchNormSaved { mean, invstd }))
}

pub(super) fn batch_norm_eval_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    affine: Option<(&CudaBuf, &CudaBuf)>,
    rm: &CudaBuf,
    rv: &CudaBuf,
    eps: f64,
) -> Result<CudaBuf> {
    checks::batch_norm_eval_fwd(d, x, xd, affine, rm, rv)?;
    let mut ab = d.alloc(2 * xd.c)?;
    let (gp, bp) = (opt(affine.map(|a| a.0)), opt(affine.map(|a| a.1)));
    if xd.c > 0 {
        let c = int(xd.c)?;
        // SAFETY: running stats and gamma/beta (when not null) hold c (checked), ab 2c
        // (alloc).
        unsafe {
            kernels::batch_norm_eval_fwd_f32(
                d.drv(),
                cfg1d(xd.c),
                c,
                eps,
                rm.data.dev(),
                rv.data.dev(),
                gp,
                bp,
                ab.data.dev_mut(),
            )
        }?;
    }
    apply(d, x, xd, &ab)
}

#[allow(clippy::type_complexity)]
pub(super) fn batch_norm_bwd(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
    gamma: Option<&CudaBuf>,
    saved: &BatchNormSaved<CudaBuf>,
) -> Result<(CudaBuf, Option<(CudaBuf, CudaBuf)>)> {
    checks::batch_norm_bwd(d, x, dy, xd, gamma, saved)?;
    let mut sums = d.scratch::<f64>(2 * xd.c)?;
    let mut grads = match gamma {
        Some(_) => Some((d.alloc(xd.c)?, d.alloc(xd.c)?)),
        None => None,
    };
    let (dgp, dbp) = match grads.as_mut() {
        Some((dg, db)) => (dg.data.dev_mut(), db.data.dev_mut()),
        None => (DevMut::null(), DevMut::null()),
    };
    let (n, c, plane) = (int(xd.n)?, int(xd.c)?, int(xd.plane())?);
    let mut dx = d.alloc(xd.numel())?;
    if xd.c > 0 {
        // SAFETY: x and dy hold n*c*plane, saved stats and gamma c (checked); sums 2c
        // doubles, dgamma/dbeta c when not null (alloc); one block per channel.
        unsafe {
            kernels::batch_norm_bwd_f32(
                d.drv(),
                per_channel(xd),
                n,
                c,
                plane,
                x.data.dev(),
                dy.data.dev(),
                saved.mean.data.dev(),
                saved.invstd.data.dev(),
                sums.dev_mut(),
                dgp,
                dbp,
            )
        }?;
    }
    if xd.numel() > 0 {
        let total = int(xd.numel())?;
        let count = (xd.n * xd.plane()) as f64;
        let gp = opt(gamma);
        // SAFETY: as the launch above; dx holds `total` (alloc) and sums was written by it.
        unsafe {
            kernels::batch_norm_bwd_data_f32(
                d.drv(),
                cfg1d(xd.numel()),
                total,
                c,
                plane,
                count,
                x.data.dev(),
                dy.data.dev(),
                gp,
                saved.mean.data.dev(),
                saved.invstd.data.dev(),
                sums.dev(),
                dx.data.dev_mut(),
            )
        }?;
    }
    Ok((dx, grads))
}

impl NormOps for Cuda {
    fn batch_norm_train_fwd(
        &self,
        x: &CudaBuf,
        xd: Nchw,
        affine: Option<(&CudaBuf, &CudaBuf)>,
        running: Option<RunningStats<'_, CudaBuf>>,
        eps: f64,
    ) -> Result<(CudaBuf, BatchNormSaved<CudaBuf>)> {
        batch_norm_train_fwd(self, x, xd, affine, running, eps)
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
        batch_norm_eval_fwd(self, x, xd, affine, rm, rv, eps)
    }
    fn batch_norm_bwd(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        gamma: Option<&CudaBuf>,
        saved: &BatchNormSaved<CudaBuf>,
    ) -> Result<(CudaBuf, Option<(CudaBuf, CudaBuf)>)> {
        batch_norm_bwd(self, x, dy, xd, gamma, saved)
    }
}
