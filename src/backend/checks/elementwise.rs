//! Checks of the elementwise ops, reductions, the activations, drop-path and the channel scale
//! (`ElementwiseOps`).

use super::{expect_len, same_len, scalar};
use crate::backend::{DeviceOps, ScalarRef};
use crate::error::{Error, Result};
use crate::shape::Nchw;

pub fn add<B: DeviceOps>(b: &B, x: &B::Storage, y: &B::Storage) -> Result<()> {
    same_len(b, "add", x, y)
}

pub fn axpy<B: DeviceOps>(b: &B, y: &B::Storage, x: &B::Storage) -> Result<()> {
    same_len(b, "axpy", y, x)
}

pub fn axpy_scaled<B: DeviceOps>(
    b: &B,
    y: &B::Storage,
    s: ScalarRef<'_, B::Storage>,
    x: &B::Storage,
) -> Result<()> {
    same_len(b, "axpy_scaled", y, x)?;
    scalar(b, "axpy_scaled", &s)
}

pub fn dot<B: DeviceOps>(b: &B, x: &B::Storage, y: &B::Storage) -> Result<()> {
    same_len(b, "dot", x, y)
}

pub fn relu_bwd<B: DeviceOps>(b: &B, y: &B::Storage, dy: &B::Storage) -> Result<()> {
    same_len(b, "relu_bwd", y, dy)
}

pub fn sigmoid_bwd<B: DeviceOps>(b: &B, y: &B::Storage, dy: &B::Storage) -> Result<()> {
    same_len(b, "sigmoid_bwd", y, dy)
}

pub fn tanh_bwd<B: DeviceOps>(b: &B, y: &B::Storage, dy: &B::Storage) -> Result<()> {
    same_len(b, "tanh_bwd", y, dy)
}

pub fn silu_bwd<B: DeviceOps>(b: &B, x: &B::Storage, dy: &B::Storage) -> Result<()> {
    same_len(b, "silu_bwd", x, dy)
}

pub fn mul<B: DeviceOps>(b: &B, x: &B::Storage, y: &B::Storage) -> Result<()> {
    same_len(b, "mul", x, y)
}

/// One scale per sample, and `x` split evenly into `n > 0` samples.
pub fn drop_path<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    n: usize,
    sample_scale: &B::Storage,
) -> Result<()> {
    expect_len(b, "drop_path", "sample scale", sample_scale, n)?;
    let len = b.len(x);
    if n == 0 || !len.is_multiple_of(n) {
        return Err(Error::shape(
            "drop_path",
            format!("{len} elements do not split into {n} samples"),
        ));
    }
    Ok(())
}

/// `x` is `x_dims`, `s` one value per (sample, channel).
pub fn channel_scale_fwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    x_dims: Nchw,
    s: &B::Storage,
) -> Result<()> {
    let op = "channel_scale_fwd";
    expect_len(b, op, "input", x, x_dims.numel())?;
    expect_len(b, op, "channel scale", s, x_dims.n * x_dims.c)
}

/// As the forward, and `dy` shaped as `x`.
pub fn channel_scale_bwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    s: &B::Storage,
    dy: &B::Storage,
    x_dims: Nchw,
) -> Result<()> {
    let op = "channel_scale_bwd";
    expect_len(b, op, "input", x, x_dims.numel())?;
    expect_len(b, op, "output gradient", dy, x_dims.numel())?;
    expect_len(b, op, "channel scale", s, x_dims.n * x_dims.c)
}
