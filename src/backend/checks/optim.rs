//! Checks of the optimizer updates (`OptimOps`): every operand of a tensor's update as long
//! as the parameter, the lists of a multi-tensor update equally long, the scale inside its
//! buffer.

use super::{same_count, same_len, scalar};
use crate::backend::{DeviceOps, ScalarRef};
use crate::error::Result;

fn sgd_tensor<B: DeviceOps>(
    b: &B,
    op: &'static str,
    param: &B::Storage,
    grad: &B::Storage,
    momentum_buf: &B::Storage,
) -> Result<()> {
    same_len(b, op, param, grad)?;
    same_len(b, op, param, momentum_buf)
}

fn adam_tensor<B: DeviceOps>(
    b: &B,
    op: &'static str,
    param: &B::Storage,
    grad: &B::Storage,
    m: &B::Storage,
    v: &B::Storage,
) -> Result<()> {
    same_len(b, op, param, grad)?;
    same_len(b, op, param, m)?;
    same_len(b, op, param, v)
}

pub fn sgd_step<B: DeviceOps>(
    b: &B,
    param: &B::Storage,
    grad: &B::Storage,
    momentum_buf: &B::Storage,
    grad_scale: Option<ScalarRef<'_, B::Storage>>,
) -> Result<()> {
    sgd_tensor(b, "sgd_step", param, grad, momentum_buf)?;
    match grad_scale {
        Some(s) => scalar(b, "sgd_step", &s),
        None => Ok(()),
    }
}

pub fn adam_step<B: DeviceOps>(
    b: &B,
    param: &B::Storage,
    grad: &B::Storage,
    m: &B::Storage,
    v: &B::Storage,
) -> Result<()> {
    adam_tensor(b, "adam_step", param, grad, m, v)
}

pub fn sgd_step_many<B: DeviceOps>(
    b: &B,
    params: &[&mut B::Storage],
    grads: &[&B::Storage],
    momentum_bufs: &[&mut B::Storage],
    grad_scale: Option<ScalarRef<'_, B::Storage>>,
) -> Result<()> {
    let op = "sgd_step_many";
    same_count(op, params.len(), &[grads.len(), momentum_bufs.len()])?;
    for ((p, g), m) in params.iter().zip(grads).zip(momentum_bufs) {
        sgd_tensor(b, op, p, g, m)?;
    }
    match grad_scale {
        Some(s) => scalar(b, op, &s),
        None => Ok(()),
    }
}

pub fn adam_step_many<B: DeviceOps>(
    b: &B,
    params: &[&mut B::Storage],
    grads: &[&B::Storage],
    ms: &[&mut B::Storage],
    vs: &[&mut B::Storage],
) -> Result<()> {
    let op = "adam_step_many";
    same_count(op, params.len(), &[grads.len(), ms.len(), vs.len()])?;
    for (((p, g), m), v) in params.iter().zip(grads).zip(ms).zip(vs) {
        adam_tensor(b, op, p, g, m, v)?;
    }
    Ok(())
}
