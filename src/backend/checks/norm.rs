//! Checks of batch normalisation (`NormOps`): the input, and every per-channel operand
//! (gamma, beta, running and saved statistics) of `C` elements.

use super::expect_len;
use crate::backend::{BatchNormSaved, DeviceOps, RunningStats};
use crate::error::Result;
use crate::shape::Nchw;

fn affine<B: DeviceOps>(
    b: &B,
    x_dims: Nchw,
    affine: Option<(&B::Storage, &B::Storage)>,
) -> Result<()> {
    if let Some((gamma, beta)) = affine {
        expect_len(b, "batch_norm", "gamma", gamma, x_dims.c)?;
        expect_len(b, "batch_norm", "beta", beta, x_dims.c)?;
    }
    Ok(())
}

fn running<B: DeviceOps>(b: &B, x_dims: Nchw, mean: &B::Storage, var: &B::Storage) -> Result<()> {
    expect_len(b, "batch_norm", "running mean", mean, x_dims.c)?;
    expect_len(b, "batch_norm", "running var", var, x_dims.c)
}

pub fn batch_norm_train_fwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    x_dims: Nchw,
    affine_params: Option<(&B::Storage, &B::Storage)>,
    running_stats: Option<&RunningStats<'_, B::Storage>>,
) -> Result<()> {
    expect_len(b, "batch_norm", "input", x, x_dims.numel())?;
    affine(b, x_dims, affine_params)?;
    if let Some(r) = running_stats {
        running(b, x_dims, r.mean, r.var)?;
    }
    Ok(())
}

pub fn batch_norm_eval_fwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    x_dims: Nchw,
    affine_params: Option<(&B::Storage, &B::Storage)>,
    running_mean: &B::Storage,
    running_var: &B::Storage,
) -> Result<()> {
    expect_len(b, "batch_norm", "input", x, x_dims.numel())?;
    running(b, x_dims, running_mean, running_var)?;
    affine(b, x_dims, affine_params)
}

pub fn batch_norm_bwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    dy: &B::Storage,
    x_dims: Nchw,
    gamma: Option<&B::Storage>,
    saved: &BatchNormSaved<B::Storage>,
) -> Result<()> {
    let op = "batch_norm_bwd";
    expect_len(b, op, "input", x, x_dims.numel())?;
    expect_len(b, op, "output gradient", dy, x_dims.numel())?;
    expect_len(b, op, "saved mean", &saved.mean, x_dims.c)?;
    expect_len(b, op, "saved invstd", &saved.invstd, x_dims.c)?;
    if let Some(g) = gamma {
        expect_len(b, op, "gamma", g, x_dims.c)?;
    }
    Ok(())
}
