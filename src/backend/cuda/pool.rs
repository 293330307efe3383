//! Launchers for kernels/pool.cu: max / average pooling and global average pooling. The
//! `_into` backwards (dx += ..) launch the same kernels with their `accumulate` flag set.

use super::driver::{Dev, DevMut, Driver, LaunchConfig};
use super::kernels;
use super::{cfg1d, int, Cuda, CudaBuf, Geom};
use crate::backend::{checks, PoolOps};
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec};

fn geom(xd: Nchw, yd: Nchw, spec: &Pool2dSpec) -> Result<Geom> {
    Geom::new(xd, yd, spec.kernel, spec.stride, spec.padding, 1)
}

/// A pooling forward kernel's launcher (`max_pool2d_fwd_f32`, `avg_pool2d_fwd_f32`).
type FwdKernel =
    unsafe fn(&dyn Driver, LaunchConfig, Geom, Dev<'_, f32>, DevMut<'_, f32>) -> Result<()>;

/// Forward kernels: one thread per output element. The caller checked the input.
fn fwd(
    d: &Cuda,
    kernel: FwdKernel,
    x: &CudaBuf,
    xd: Nchw,
    yd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
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
    let yd = checks::max_pool2d_fwd(d, x, xd, spec)?;
    fwd(d, kernels::max_pool2d_fwd_f32, x, xd, yd, spec)
}

pub(super) fn avg_pool2d_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    let yd = checks::avg_pool2d_fwd(d, x, xd, spec)?;
    fwd(d, kernels::avg_pool2d_fwd_f32, x, xd, yd, spec)
}

pub(super) fn max_pool2d_bwd(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Pool2dSpec,
) -> Result<CudaBuf> {
    let yd = checks::max_pool2d_bwd(d, x, dy, xd, spec)?;
    let mut dx = d.alloc(xd.numel())?;
    max_bwd(d, x, dy, xd, yd, spec, &mut dx, false)?;
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
    let yd = checks::max_pool2d_bwd_into(d, x, dy, xd, spec, dx)?;
    max_bwd(d, x, dy, xd, yd, spec, dx, true)
}

/// The caller checked the operands.
#[allow(clippy::too_many_arguments)]
fn max_bwd(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
    yd: Nchw,
    spec: &Pool2dSpec,
    dx: &mut CudaBuf,
    accumulate: bool,
) -> Result<()> {
    let g = geom(xd, yd, spec)?;
    let acc = i32::from(accumulate);
    // SAFETY: x and dx hold xd.numel(), dy yd.numel() (checked, alloc).
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
    let yd = checks::avg_pool2d_bwd(d, dy, xd, spec)?;
    let mut dx = d.alloc(xd.numel())?;
    avg_bwd(d, dy, xd, yd, spec, &mut dx, false)?;
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
    let yd = checks::avg_pool2d_bwd_into(d, dy, xd, spec, dx)?;
    avg_bwd(d, dy, xd, yd, spec, dx, true)
}

/// The caller checked the operands.
fn avg_bwd(
    d: &Cuda,
    dy: &CudaBuf,
    xd: Nchw,
    yd: Nchw,
    spec: &Pool2dSpec,
    dx: &mut CudaBuf,
    accumulate: bool,
) -> Result<()> {
    let g = geom(xd, yd, spec)?;
    let acc = i32::from(accumulate);
    // SAFETY: dy holds yd.numel(), dx xd.numel() (checked or alloc).
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
    checks::global_avg_pool_fwd(d, x, xd)?;
    let planes = xd.n * xd.c;
    let mut y = d.alloc(planes)?;
    if planes > 0 && xd.plane() > 0 {
        let plane = int(xd.plane())?;
        // CUDA only: one block per plane, within the grid's limit.
        let blocks = u32::try_from(planes).map_err(|_| {
            crate::error::Error::invalid("global_avg_pool", format!("{planes} planes"))
        })?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (super::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: x holds planes * plane (checked), y planes (alloc); one block per plane.
        unsafe {
            kernels::global_avg_pool_fwd_f32(d.drv(), cfg, plane, x.data.dev(), y.data.dev_mut())
        }?;
    }
    Ok(y)
}

pub(super) fn global_avg_pool_bwd(d: &Cuda, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
    checks::global_avg_pool_bwd(d, dy, xd)?;
    let mut dx = d.alloc(xd.numel())?;
    if xd.numel() > 0 {
        let (total, plane) = (int(xd.numel())?, int(xd.plane())?);
        // SAFETY: dy holds n*c (checked), dx `total` (alloc).
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
