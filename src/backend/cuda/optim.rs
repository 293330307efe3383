//! Launchers for kernels/optim.cu: the fused SGD and Adam updates (PyTorch semantics, the
//! scalar bias corrections computed on the host in f64 exactly as the CPU twin does), per
//! tensor and multi-tensor (`*_many`: one launch per table of up to `SGD_MANY_TENSORS` /
//! `ADAM_MANY_TENSORS` tensors, the table passed by value as a kernel argument).

use super::driver::Dev;
use super::driver::LaunchConfig;
use super::kernels;
use super::{cfg1d, int, scalar_ptr, Cuda, CudaBuf, BLOCK};
use crate::backend::{checks, AdamStep, OptimOps, ScalarRef, SgdStep};
use crate::error::Result;

use kernels::consts::{ADAM_MANY_TENSORS, MANY_CHUNK, SGD_MANY_TENSORS};
use kernels::{AdamTable, SgdTable};

/// The launches of a multi-tensor update: the non-empty tensors (indices into the lists) in
/// consecutive groups of at most `per_launch`, each with its tensors' first blocks (chunks of
/// `MANY_CHUNK`) and its total block count.
fn many_launches(lens: &[usize], per_launch: usize) -> Result<Vec<(Vec<usize>, Vec<i32>)>> {
    let live: Vec<usize> = (0..lens.len()).filter(|&i| lens[i] > 0).collect();
    live.chunks(per_launch)
        .map(|group| {
            let mut starts = Vec::with_capacity(group.len() + 1);
            let mut total = 0usize;
            for &i in group {
                int(lens[i])?;
                starts.push(int(total)?);
                total += lens[i].div_ceil(MANY_CHUNK);
            }
            starts.push(int(total)?);
            Ok((group.to_vec(), starts))
        })
        .collect()
}

/// One block of `BLOCK` threads per table block.
fn many_cfg(blocks: i32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn sgd_step(
    d: &Cuda,
    param: &mut CudaBuf,
    grad: &CudaBuf,
    buf: &mut CudaBuf,
    hp: &SgdStep,
    grad_scale: Option<ScalarRef<'_, CudaBuf>>,
) -> Result<()> {
    checks::sgd_step(d, param, grad, buf, grad_scale)?;
    if param.len == 0 {
        return Ok(());
    }
    // A null pointer tells the kernel "no scale".
    let scale = match grad_scale {
        Some(s) => scalar_ptr(&s)?,
        None => Dev::null(),
    };
    let (n, lr, mom, wd) = (
        int(param.len)?,
        hp.lr as f32,
        hp.momentum as f32,
        hp.weight_decay as f32,
    );
    // SAFETY: param, grad and buf hold n elements; scale is null or an element of its
    // buffer (checked).
    unsafe {
        kernels::sgd_step_f32(
            d.drv(),
            cfg1d(param.len),
            n,
            lr,
            mom,
            wd,
            scale,
            param.data.dev_mut(),
            grad.data.dev(),
            buf.data.dev_mut(),
        )
    }?;
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
    checks::adam_step(d, param, grad, m, v)?;
    if param.len == 0 {
        return Ok(());
    }
    let n = int(param.len)?;
    let (b1, b2, wd, eps) = (
        hp.beta1 as f32,
        hp.beta2 as f32,
        hp.weight_decay as f32,
        hp.eps as f32,
    );
    let (step_size, bc2_sqrt) = hp.bias_corrected();
    let (step_size, bc2_sqrt) = (step_size as f32, bc2_sqrt as f32);
    // SAFETY: param, grad, m and v hold n elements (checked).
    unsafe {
        kernels::adam_step_f32(
            d.drv(),
            cfg1d(param.len),
            n,
            b1,
            b2,
            wd,
            eps,
            step_size,
            bc2_sqrt,
            param.data.dev_mut(),
            grad.data.dev(),
            m.data.dev_mut(),
            v.data.dev_mut(),
        )
    }?;
    Ok(())
}

pub(super) fn sgd_step_many(
    d: &Cuda,
    params: &mut [&mut CudaBuf],
    grads: &[&CudaBuf],
    bufs: &mut [&mut CudaBuf],
    hp: &SgdStep,
    grad_scale: Option<ScalarRef<'_, CudaBuf>>,
) -> Result<()> {
    checks::sgd_step_many(d, params, grads, bufs, grad_scale)?;
    let scale = match grad_scale {
        Some(s) => scalar_ptr(&s)?,
        None => Dev::null(),
    };
    let (lr, mom, wd) = (hp.lr as f32, hp.momentum as f32, hp.weight_decay as f32);
    let lens: Vec<usize> = params.iter().map(|p| p.len).collect();
    for (group, starts) in many_launches(&lens, SGD_MANY_TENSORS)? {
        let mut table = SgdTable {
            param: [0; SGD_MANY_TENSORS],
            grad: [0; SGD_MANY_TENSORS],
            buf: [0; SGD_MANY_TENSORS],
            len: [0; SGD_MANY_TENSORS],
            block_start: [0; SGD_MANY_TENSORS + 1],
            count: group.len() as i32,
        };
        for (k, &i) in group.iter().enumerate() {
            table.param[k] = params[i].data.addr();
            table.grad[k] = grads[i].data.addr();
            table.buf[k] = bufs[i].data.addr();
            table.len[k] = int(lens[i])?;
        }
        table.block_start[..starts.len()].copy_from_slice(&starts);
        let blocks = starts[group.len()];
        // SAFETY: each table entry's buffers hold its len (checked per tensor); the grid is
        // the table's block count; scale as in sgd_step.
        unsafe {
            kernels::sgd_step_many_f32(d.drv(), many_cfg(blocks), table, lr, mom, wd, scale)
        }?;
    }
    Ok(())
}

pub(super) fn adam_step_many(
    d: &Cuda,
    params: &mut [&mut CudaBuf],
    grads: &[&CudaBuf],
    ms: &mut [&mut CudaBuf],
    vs: &mut [&mut CudaBuf],
    hp: &AdamStep,
) -> Result<()> {
    checks::adam_step_many(d, params, grads, ms, vs)?;
    let (b1, b2, wd, eps) = (
        hp.beta1 as f32,
        hp.beta2 as f32,
        hp.weight_decay as f32,
        hp.eps as f32,
    );
    let (step_size, bc2_sqrt) = hp.bias_corrected();
    let (step_size, bc2_sqrt) = (step_size as f32, bc2_sqrt as f32);
    let lens: Vec<usize> = params.iter().map(|p| p.len).collect();
    for (group, starts) in many_launches(&lens, ADAM_MANY_TENSORS)? {
        let mut table = AdamTable {
            param: [0; ADAM_MANY_TENSORS],
            grad: [0; ADAM_MANY_TENSORS],
            m: [0; ADAM_MANY_TENSORS],
            v: [0; ADAM_MANY_TENSORS],
            len: [0; ADAM_MANY_TENSORS],
            block_start: [0; ADAM_MANY_TENSORS + 1],
            count: group.len() as i32,
        };
        for (k, &i) in group.iter().enumerate() {
            table.param[k] = params[i].data.addr();
            table.grad[k] = grads[i].data.addr();
            table.m[k] = ms[i].data.addr();
            table.v[k] = vs[i].data.addr();
            table.len[k] = int(lens[i])?;
        }
        table.block_start[..starts.len()].copy_from_slice(&starts);
        let blocks = starts[group.len()];
        // SAFETY: each table entry's buffers hold its len (checked per tensor); the grid is
        // the table's block count.
        unsafe {
            kernels::adam_step_many_f32(
                d.drv(),
                many_cfg(blocks),
                table,
                b1,
                b2,
                wd,
                eps,
                step_size,
                bc2_sqrt,
            )
        }?;
    }
    Ok(())
}

impl OptimOps for Cuda {
    fn sgd_step(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        momentum_buf: &mut CudaBuf,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, CudaBuf>>,
    ) -> Result<()> {
        sgd_step(self, param, grad, momentum_buf, hp, grad_scale)
    }
    fn adam_step(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        hp: &AdamStep,
    ) -> Result<()> {
        adam_step(self, param, grad, m, v, hp)
    }
    fn sgd_step_many(
        &self,
        params: &mut [&mut CudaBuf],
        grads: &[&CudaBuf],
        momentum_bufs: &mut [&mut CudaBuf],
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, CudaBuf>>,
    ) -> Result<()> {
        sgd_step_many(self, params, grads, momentum_bufs, hp, grad_scale)
    }
    fn adam_step_many(
        &self,
        params: &mut [&mut CudaBuf],
        grads: &[&CudaBuf],
        ms: &mut [&mut CudaBuf],
        vs: &mut [&mut CudaBuf],
        hp: &AdamStep,
    ) -> Result<()> {
        adam_step_many(self, params, grads, ms, vs, hp)
    }
}
