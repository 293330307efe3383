//! Launchers for kernels/pool.cu: max / average pooling and global average pooling. The
//! `_into` backwards (dx += ..) launch the same kernels with their `accumulate` flag set.

use super::driver::{Dev, DevMut, Driver, LaunchConfig};
use super::kernels;
use super::{cfg1d, expect_len, int, Cuda, CudaBuf, Geom};
use crate::backend::PoolOps;
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec};

fn geom(xd: Nchw, yd: Nchw, spec: &Pool2dSpec) -> Result<Geom> {
    Geom::new(xd, yd, spec.kernel, spec.stride, spec.padding, 1)
}

/// A pooling forward kernel's launcher (`max_pool2d_fwd_f32`, `avg_pool2d_fwd_f32`).
type FwdKernel =
    unsafe fn(&dyn Driver, LaunchConfig, Geom, Dev<'_, f32>, DevMut<'_, f32>) -> Result<()>;

/// Forward kernels: one thread per output element.
fn fwd(
    d: &Cuda,
    name: &'static str,
    kernel: FwdKernel,
    x: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    let yd = spec.output(xd, name)?;
    expect_len(name, "input", x, xd.numel())?;
    let g = geom(xd, yd, spec)?;
    let mut y = d.alloc(yd.numel())?;
    // SAFETY: x holds xd.numel() elements (checked), y yd.numel() (allocated); Geom::new
    // checked both products fit the kernel's int indices.
    unsafe {
        kernel(
            d.drv(),
            cfg1d(yd.numel()),
            g,
            x.data.dev(),
            y.data.dev_mut(),
        )
    }?;
    Ok(y)
}

pub(super) fn max_pool2d_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    fwd(
        d,
        "max_pool2d_fwd",
        kernels::max_pool2d_fwd_f32,
        x,
        xd,
        spec,
    )
}

pub(super) fn avg_pool2d_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    fwd(
        d,
        "avg_pool2d_fwd",
        kernels::avg_pool2d_fwd_f32,
        x,
        xd,
        spec,
    )
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
    // SAFETY: x and dx hold xd.numel(), dy yd.numel() (expect_len, alloc).
    unsafe {
        kernels::max_pool2d_bwd_f32(
            d.drv(),
            cfg1d(xd.numel()),
            g,
            acc,
            x.data.dev(),
            dy.data.dev(),
            dx.data.dev_mut(),
        )
    }?;
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
    // SAFETY: dy holds yd.numel() (expect_len), dx xd.numel() (alloc or expect_len).
    unsafe {
        kernels::avg_pool2d_bwd_f32(
            d.drv(),
            cfg1d(xd.numel()),
            g,
            acc,
            dy.data.dev(),
            dx.data.dev_mut(),
        )
    }?;
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
        // SAFETY: x holds planes * plane (expect_len), y planes (alloc); one block per plane.
        unsafe {
            kernels::global_avg_pool_fwd_f32(d.drv(), cfg, plane, x.data.dev(), y.data.dev_mut())
        }?;
    }
    Ok(y)
}

pub(super) fn global_avg_pool_bwd(d: &Cuda, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
    expect_len("global_avg_pool_bwd", "output gradient", dy, xd.n * xd.c)?;
    let mut dx = d.alloc(xd.numel())?;
    if xd.numel() > 0 {
        let (total, plane) = (int(xd.numel())?, int(xd.plane())?);
        // SAFETY: dy holds n*c (expect_len), dx `total` (alloc).
        unsafe {
            kernels::global_avg_pool_bwd_f32(
                d.drv(),
                cfg1d(xd.numel()),
                total,
                plane,
                dy.data.dev(),
                dx.data.dev_mut(),
            )
        }?;
    }
    Ok(dx)
}

impl PoolOps for Cuda {
    fn max_pool2d_fwd(&self, x: &CudaBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CudaBuf> {
        max_pool2d_fwd(self, x, xd, spec)
    }
    fn max_pool2d_bwd(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<CudaBuf> {
        max_pool2d_bwd(self, x, dy, xd, spec)
    }
    fn max_pool2d_bwd_into(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut CudaBuf,
    ) -> Result<()> {
        max_pool2d_bwd_into(self, x, dy, xd, spec, dx)
    }
    fn avg_pool2d_fwd(&self, x: &CudaBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CudaBuf> {
        avg_pool2d_fwd(self, x, xd, spec)
    }
    fn avg_pool2d_bwd(&self, dy: &CudaBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CudaBuf> {
        avg_pool2d_bwd(self, dy, xd, spec)
    }
    fn avg_pool2d_bwd_into(
        &self,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut CudaBuf,
    ) -> Result<()> {
        avg_pool2d_bwd_into(self, dy, xd, spec, dx)
    }
    fn global_avg_pool_fwd(&self, x: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        global_avg_pool_fwd(self, x, xd)
    }
    fn global_avg_pool_bwd(&self, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        global_avg_pool_bwd(self, dy, xd)
    }
}
