//! Launchers for kernels/pool.cu: max / average pooling and global average pooling. The
//! `_into` backwards (dx += ..) launch the same kernels with their `accumulate` flag set.

use super::{cfg1d, expect_len, int, CuResult, Cuda, CudaBuf, Geom};
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec};
use cudarc::driver::{LaunchConfig, PushKernelArg};

fn geom(xd: Nchw, yd: Nchw, spec: &Pool2dSpec) -> Result<Geom> {
    Geom::new(xd, yd, spec.kernel, spec.stride, spec.padding, 1)
}

/// Forward kernels: one thread per output element.
fn fwd(d: &Cuda, name: &'static str, x: &CudaBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CudaBuf> {
    let yd = spec.output(xd, name)?;
    expect_len(name, "input", x, xd.numel())?;
    let g = geom(xd, yd, spec)?;
    let mut y = d.alloc(yd.numel())?;
    unsafe {
        d.stream()
            .launch_builder(d.func(name)?)
            .arg(&g)
            .arg(&x.data)
            .arg(&mut y.data)
            .launch(cfg1d(yd.numel()))
    }
    .cu(name)?;
    Ok(y)
}

pub(super) fn max_pool2d_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    fwd(d, "max_pool2d_fwd_f32", x, xd, spec)
}

pub(super) fn avg_pool2d_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    fwd(d, "avg_pool2d_fwd_f32", x, xd, spec)
}

pub(super) fn max_pool2d_bwd(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    let mut dx = d.alloc(xd.numel())?;
    max_bwd(d, "max_pool2d_bwd", x, dy, xd, spec, &mut dx, false)?;
    Ok(dx)
}

/// `dx += ` the max-pool gradient.
pub(super) fn max_pool2d_bwd_into(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
    dx: &mut CudaBuf,
) -> Result<()> {
    expect_len("max_pool2d_bwd_into", "accumulator", dx, xd.numel())?;
    max_bwd(d, "max_pool2d_bwd_into", x, dy, xd, spec, dx, true)
}

#[allow(clippy::too_many_arguments)]
fn max_bwd(
    d: &Cuda,
    op: &'static str,
    x: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
    dx: &mut CudaBuf,
    accumulate: bool,
) -> Result<()> {
    let yd = spec.output(xd, "max_pool2d")?;
    expect_len(op, "input", x, xd.numel())?;
    expect_len(op, "output gradient", dy, yd.numel())?;
    let g = geom(xd, yd, spec)?;
    let acc = i32::from(accumulate);
    unsafe {
        d.stream()
            .launch_builder(d.func("max_pool2d_bwd_f32")?)
            .arg(&g)
            .arg(&acc)
            .arg(&x.data)
            .arg(&dy.data)
            .arg(&mut dx.data)
            .launch(cfg1d(xd.numel()))
    }
    .cu("max_pool2d_bwd_f32")?;
    Ok(())
}

pub(super) fn avg_pool2d_bwd(
    d: &Cuda,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    let mut dx = d.alloc(xd.numel())?;
    avg_bwd(d, "avg_pool2d_bwd", dy, xd, spec, &mut dx, false)?;
    Ok(dx)
}

/// `dx += ` the average-pool gradient.
pub(super) fn avg_pool2d_bwd_into(
    d: &Cuda,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
    dx: &mut CudaBuf,
) -> Result<()> {
    expect_len("avg_pool2d_bwd_into", "accumulator", dx, xd.numel())?;
    avg_bwd(d, "avg_pool2d_bwd_into", dy, xd, spec, dx, true)
}

fn avg_bwd(
    d: &Cuda,
    op: &'static str,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
    dx: &mut CudaBuf,
    accumulate: bool,
) -> Result<()> {
    let yd = spec.output(xd, "avg_pool2d")?;
    expect_len(op, "output gradient", dy, yd.numel())?;
    let g = geom(xd, yd, spec)?;
    let acc = i32::from(accumulate);
    unsafe {
        d.stream()
            .launch_builder(d.func("avg_pool2d_bwd_f32")?)
            .arg(&g)
            .arg(&acc)
            .arg(&dy.data)
            .arg(&mut dx.data)
            .launch(cfg1d(xd.numel()))
    }
    .cu("avg_pool2d_bwd_f32")?;
    Ok(())
}

pub(super) fn global_avg_pool_fwd(d: &Cuda, x: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
    expect_len("global_avg_pool_fwd", "input", x, xd.numel())?;
    let planes = xd.n * xd.c;
    let mut y = d.alloc(planes)?;
    if planes > 0 && xd.plane() > 0 {
        let plane = int(xd.plane())?;
        let blocks = u32::try_from(planes).map_err(|_| {
            crate::error::Error::invalid("global_avg_pool", format!("{planes} planes"))
        })?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (super::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe {
            d.stream()
                .launch_builder(d.func("global_avg_pool_fwd_f32")?)
                .arg(&plane)
                .arg(&x.data)
                .arg(&mut y.data)
                .launch(cfg)
        }
        .cu("global_avg_pool_fwd_f32")?;
    }
    Ok(y)
}

pub(super) fn global_avg_pool_bwd(d: &Cuda, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
    expect_len("global_avg_pool_bwd", "output gradient", dy, xd.n * xd.c)?;
    let mut dx = d.alloc(xd.numel())?;
    if xd.numel() > 0 {
        let (total, plane) = (int(xd.numel())?, int(xd.plane())?);
        unsafe {
            d.stream()
                .launch_builder(d.func("global_avg_pool_bwd_f32")?)
                .arg(&total)
                .arg(&plane)
                .arg(&dy.data)
                .arg(&mut dx.data)
                .launch(cfg1d(xd.numel()))
        }
        .cu("global_avg_pool_bwd_f32")?;
    }
    Ok(dx)
}
