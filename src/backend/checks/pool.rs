//! Checks of the pooling ops (`PoolOps`): the window (`Pool2dSpec::output`, errors naming
//! `max_pool2d` / `avg_pool2d`), then every operand's length. Each windowed one returns the
//! output dims.

use super::expect_len;
use crate::backend::DeviceOps;
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec};

pub fn max_pool2d_fwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
) -> Result<Nchw> {
    let y_dims = spec.output(x_dims, "max_pool2d")?;
    expect_len(b, "max_pool2d_fwd", "input", x, x_dims.numel())?;
    Ok(y_dims)
}

pub fn max_pool2d_bwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    dy: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
) -> Result<Nchw> {
    max_bwd(b, "max_pool2d_bwd", x, dy, x_dims, spec)
}

pub fn max_pool2d_bwd_into<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    dy: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
    dx: &B::Storage,
) -> Result<Nchw> {
    let op = "max_pool2d_bwd_into";
    let y_dims = max_bwd(b, op, x, dy, x_dims, spec)?;
    expect_len(b, op, "accumulator", dx, x_dims.numel())?;
    Ok(y_dims)
}

fn max_bwd<B: DeviceOps>(
    b: &B,
    op: &'static str,
    x: &B::Storage,
    dy: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
) -> Result<Nchw> {
    let y_dims = spec.output(x_dims, "max_pool2d")?;
    expect_len(b, op, "input", x, x_dims.numel())?;
    expect_len(b, op, "output gradient", dy, y_dims.numel())?;
    Ok(y_dims)
}

pub fn avg_pool2d_fwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
) -> Result<Nchw> {
    let y_dims = spec.output(x_dims, "avg_pool2d")?;
    expect_len(b, "avg_pool2d_fwd", "input", x, x_dims.numel())?;
    Ok(y_dims)
}

pub fn avg_pool2d_bwd<B: DeviceOps>(
    b: &B,
    dy: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
) -> Result<Nchw> {
    avg_bwd(b, "avg_pool2d_bwd", dy, x_dims, spec)
}

pub fn avg_pool2d_bwd_into<B: DeviceOps>(
    b: &B,
    dy: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
    dx: &B::Storage,
) -> Result<Nchw> {
    let op = "avg_pool2d_bwd_into";
    let y_dims = avg_bwd(b, op, dy, x_dims, spec)?;
    expect_len(b, op, "accumulator", dx, x_dims.numel())?;
    Ok(y_dims)
}

fn avg_bwd<B: DeviceOps>(
    b: &B,
    op: &'static str,
    dy: &B::Storage,
    x_dims: Nchw,
    spec: &Pool2dSpec,
) -> Result<Nchw> {
    let y_dims = spec.output(x_dims, "avg_pool2d")?;
    expect_len(b, op, "output gradient", dy, y_dims.numel())?;
    Ok(y_dims)
}

pub fn global_avg_pool_fwd<B: DeviceOps>(b: &B, x: &B::Storage, x_dims: Nchw) -> Result<()> {
    expect_len(b, "global_avg_pool_fwd", "input", x, x_dims.numel())
}

/// `dy` is `[N, C]`.
pub fn global_avg_pool_bwd<B: DeviceOps>(b: &B, dy: &B::Storage, x_dims: Nchw) -> Result<()> {
    let op = "global_avg_pool_bwd";
    expect_len(b, op, "output gradient", dy, x_dims.n * x_dims.c)
}
