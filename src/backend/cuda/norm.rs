//! Launchers for kernels/norm.cu: batch norm training forward (batch statistics and the
//! running-stat update), eval forward, and backward. Optional buffers (gamma/beta, running
//! stats, dgamma/dbeta) travel as raw device addresses, 0 meaning absent.

use super::{cfg1d, expect_len, int, CuResult, Cuda, CudaBuf};
use crate::backend::{BatchNormSaved, RunningStats};
use crate::error::Result;
use crate::shape::Nchw;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// One block per channel for the per-channel reductions.
fn per_channel(xd: Nchw) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (xd.c.max(1) as u32, 1, 1),
        block_dim: (super::BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn check_affine(xd: Nchw, affine: Option<(&CudaBuf, &CudaBuf)>) -> Result<()> {
    if let Some((g, b)) = affine {
        expect_len("batch_norm", "gamma", g, xd.c)?;
        expect_len("batch_norm", "beta", b, xd.c)?;
    }
    Ok(())
}

/// y = x * ab[c] + ab[C + c].
fn apply(d: &Cuda, x: &CudaBuf, xd: Nchw, ab: &CudaBuf) -> Result<CudaBuf> {
    let mut y = d.alloc(xd.numel())?;
    if xd.numel() > 0 {
        let (total, c, plane) = (int(xd.numel())?, int(xd.c)?, int(xd.plane())?);
        unsafe {
            d.stream()
                .launch_builder(d.func("batch_norm_apply_f32")?)
                .arg(&total)
                .arg(&c)
                .arg(&plane)
                .arg(&x.data)
                .arg(&ab.data)
                .arg(&mut y.data)
                .launch(cfg1d(xd.numel()))
        }
        .cu("batch_norm_apply_f32")?;
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
    expect_len("batch_norm", "input", x, xd.numel())?;
    check_affine(xd, affine)?;
    if let Some(r) = &running {
        expect_len("batch_norm", "running mean", r.mean, xd.c)?;
        expect_len("batch_norm", "running var", r.var, xd.c)?;
    }
    let mut mean = d.alloc(xd.c)?;
    let mut invstd = d.alloc(xd.c)?;
    let mut ab = d.alloc(2 * xd.c)?;
    let (gp, bp) = (d.ptr(affine.map(|a| a.0)), d.ptr(affine.map(|a| a.1)));
    let momentum = running.as_ref().map_or(0.0, |r| r.momentum);
    let (rm, rv) = match running {
        Some(r) => (d.ptr_mut(Some(r.mean)), d.ptr_mut(Some(r.var))),
        None => (0u64, 0u64),
    };
    let (n, c, plane) = (int(xd.n)?, int(xd.c)?, int(xd.plane())?);
    if xd.c > 0 {
        unsafe {
            d.stream()
                .launch_builder(d.func("batch_norm_train_fwd_f32")?)
                .arg(&n)
                .arg(&c)
                .arg(&plane)
                .arg(&eps)
                .arg(&momentum)
                .arg(&x.data)
                .arg(&gp)
                .arg(&bp)
                .arg(&rm)
                .arg(&rv)
                .arg(&mut mean.data)
                .arg(&mut invstd.data)
                .arg(&mut ab.data)
                .launch(per_channel(xd))
        }
        .cu("batch_norm_train_fwd_f32")?;
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
    expect_len("batch_norm", "input", x, xd.numel())?;
    expect_len("batch_norm", "running mean", rm, xd.c)?;
    expect_len("batch_norm", "running var", rv, xd.c)?;
    check_affine(xd, affine)?;
    let mut ab = d.alloc(2 * xd.c)?;
    let (gp, bp) = (d.ptr(affine.map(|a| a.0)), d.ptr(affine.map(|a| a.1)));
    if xd.c > 0 {
        let c = int(xd.c)?;
        unsafe {
            d.stream()
                .launch_builder(d.func("batch_norm_eval_fwd_f32")?)
                .arg(&c)
                .arg(&eps)
                .arg(&rm.data)
                .arg(&rv.data)
                .arg(&gp)
                .arg(&bp)
                .arg(&mut ab.data)
                .launch(cfg1d(xd.c))
        }
        .cu("batch_norm_eval_fwd_f32")?;
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
    expect_len("batch_norm_bwd", "input", x, xd.numel())?;
    expect_len("batch_norm_bwd", "output gradient", dy, xd.numel())?;
    expect_len("batch_norm_bwd", "saved mean", &saved.mean, xd.c)?;
    expect_len("batch_norm_bwd", "saved invstd", &saved.invstd, xd.c)?;
    if let Some(g) = gamma {
        expect_len("batch_norm_bwd", "gamma", g, xd.c)?;
    }
    let mut sums = d.scratch::<f64>(2 * xd.c)?;
    let mut grads = match gamma {
        Some(_) => Some((d.alloc(xd.c)?, d.alloc(xd.c)?)),
        None => None,
    };
    let (dgp, dbp) = match grads.as_mut() {
        Some((dg, db)) => (d.ptr_mut(Some(dg)), d.ptr_mut(Some(db))),
        None => (0u64, 0u64),
    };
    let (n, c, plane) = (int(xd.n)?, int(xd.c)?, int(xd.plane())?);
    let mut dx = d.alloc(xd.numel())?;
    if xd.c > 0 {
        unsafe {
            d.stream()
                .launch_builder(d.func("batch_norm_bwd_f32")?)
                .arg(&n)
                .arg(&c)
                .arg(&plane)
                .arg(&x.data)
                .arg(&dy.data)
                .arg(&saved.mean.data)
                .arg(&saved.invstd.data)
                .arg(&mut sums)
                .arg(&dgp)
                .arg(&dbp)
                .launch(per_channel(xd))
        }
        .cu("batch_norm_bwd_f32")?;
    }
    if xd.numel() > 0 {
        let total = int(xd.numel())?;
        let count = (xd.n * xd.plane()) as f64;
        let gp = d.ptr(gamma);
        unsafe {
            d.stream()
                .launch_builder(d.func("batch_norm_bwd_data_f32")?)
                .arg(&total)
                .arg(&c)
                .arg(&plane)
                .arg(&count)
                .arg(&x.data)
                .arg(&dy.data)
                .arg(&gp)
                .arg(&saved.mean.data)
                .arg(&saved.invstd.data)
                .arg(&sums)
                .arg(&mut dx.data)
                .launch(cfg1d(xd.numel()))
        }
        .cu("batch_norm_bwd_data_f32")?;
    }
    Ok((dx, grads))
}
