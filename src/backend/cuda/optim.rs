//! Launchers for kernels/optim.cu: the fused SGD and Adam updates (PyTorch semantics, the
//! scalar bias corrections computed on the host in f64 exactly as the CPU twin does).

use super::{cfg1d, int, same_len, scalar_ptr, CuResult, Cuda, CudaBuf};
use crate::backend::{AdamStep, ScalarRef, SgdStep};
use crate::error::Result;
use cudarc::driver::PushKernelArg;

pub(super) fn sgd_step(
    d: &Cuda,
    param: &mut CudaBuf,
    grad: &CudaBuf,
    buf: &mut CudaBuf,
    hp: &SgdStep,
    grad_scale: Option<ScalarRef<'_, CudaBuf>>,
) -> Result<()> {
    same_len("sgd_step", param, grad)?;
    same_len("sgd_step", param, buf)?;
    if param.len == 0 {
        return Ok(());
    }
    // A null pointer tells the kernel "no scale".
    let scale = match grad_scale {
        Some(s) => scalar_ptr(d, "sgd_step", &s)?,
        None => 0u64,
    };
    let (n, lr, mom, wd) = (
        int(param.len)?,
        hp.lr as f32,
        hp.momentum as f32,
        hp.weight_decay as f32,
    );
    unsafe {
        d.stream()
            .launch_builder(d.func("sgd_step_f32")?)
            .arg(&n)
            .arg(&lr)
            .arg(&mom)
            .arg(&wd)
            .arg(&scale)
            .arg(&mut param.data)
            .arg(&grad.data)
            .arg(&mut buf.data)
            .launch(cfg1d(param.len))
    }
    .cu("sgd_step_f32")?;
    Ok(())
}

pub(super) fn adam_step(
    d: &Cuda,
    param: &mut CudaBuf,
    grad: &CudaBuf,
    m: &mut CudaBuf,
    v: &mut CudaBuf,
    hp: &AdamStep,
) -> Result<()> {
    same_len("adam_step", param, grad)?;
    same_len("adam_step", param, m)?;
    same_len("adam_step", param, v)?;
    if param.len == 0 {
        return Ok(());
    }
    let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
    let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
    let n = int(param.len)?;
    let (b1, b2, wd, eps) = (
        hp.beta1 as f32,
        hp.beta2 as f32,
        hp.weight_decay as f32,
        hp.eps as f32,
    );
    let (step_size, bc2_sqrt) = ((hp.lr / bc1) as f32, bc2.sqrt() as f32);
    unsafe {
        d.stream()
            .launch_builder(d.func("adam_step_f32")?)
            .arg(&n)
            .arg(&b1)
            .arg(&b2)
            .arg(&wd)
            .arg(&eps)
            .arg(&step_size)
            .arg(&bc2_sqrt)
            .arg(&mut param.data)
            .arg(&grad.data)
            .arg(&mut m.data)
            .arg(&mut v.data)
            .launch(cfg1d(param.len))
    }
    .cu("adam_step_f32")?;
    Ok(())
}
