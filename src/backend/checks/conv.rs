//! Checks of the convolutions (`ConvOps`): the geometry (`Conv2dSpec::output`, errors naming
//! `conv2d`), then every operand's length. Each returns the output dims.

use super::expect_len;
use crate::backend::DeviceOps;
use crate::error::Result;
use crate::shape::{Conv2dSpec, Nchw};

pub fn conv2d_fwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    x_dims: Nchw,
    w: &B::Storage,
    spec: &Conv2dSpec,
) -> Result<Nchw> {
    let y_dims = spec.output(x_dims)?;
    expect_len(b, "conv2d_fwd", "input", x, x_dims.numel())?;
    expect_len(b, "conv2d_fwd", "weight", w, spec.weight_shape().numel())?;
    Ok(y_dims)
}

pub fn conv2d_bwd_data<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    dy: &B::Storage,
    w: &B::Storage,
    x_dims: Nchw,
    spec: &Conv2dSpec,
) -> Result<Nchw> {
    bwd_data(b, "conv2d_bwd_data", x, dy, w, x_dims, spec)
}

pub fn conv2d_bwd_data_into<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    dy: &B::Storage,
    w: &B::Storage,
    x_dims: Nchw,
    spec: &Conv2dSpec,
    dx: &B::Storage,
) -> Result<Nchw> {
    let op = "conv2d_bwd_data_into";
    let y_dims = bwd_data(b, op, x, dy, w, x_dims, spec)?;
    expect_len(b, op, "accumulator", dx, x_dims.numel())?;
    Ok(y_dims)
}

/// The data gradient's operands; `x` (the forward input) only with a fused ReLU, the one
/// case where it is read.
fn bwd_data<B: DeviceOps>(
    b: &B,
    op: &'static str,
    x: &B::Storage,
    dy: &B::Storage,
    w: &B::Storage,
    x_dims: Nchw,
    spec: &Conv2dSpec,
) -> Result<Nchw> {
    let y_dims = spec.output(x_dims)?;
    if spec.relu_input {
        expect_len(b, op, "input", x, x_dims.numel())?;
    }
    expect_len(b, op, "output gradient", dy, y_dims.numel())?;
    expect_len(b, op, "weight", w, spec.weight_shape().numel())?;
    Ok(y_dims)
}

pub fn conv2d_bwd_weight<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    dy: &B::Storage,
    x_dims: Nchw,
    spec: &Conv2dSpec,
) -> Result<Nchw> {
    let y_dims = spec.output(x_dims)?;
    expect_len(b, "conv2d_bwd_weight", "input", x, x_dims.numel())?;
    expect_len(
        b,
        "conv2d_bwd_weight",
        "output gradient",
        dy,
        y_dims.numel(),
    )?;
    Ok(y_dims)
}
