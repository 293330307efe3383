//! Launchers for the fused DARTS MixedOp (kernels/mixed_op.cu): the K op outputs travel as
//! one by-value pointer struct, softmax(alpha) is computed on the device, and the backward
//! produces every requested dx_k and dalpha in one pass plus a one-block finish. An absent
//! input (the `none` op) travels as a null pointer: the kernels skip it, never reading zeros.

use super::{cfg1d, expect_len, int, CuResult, Cuda, CudaBuf, BLOCK};
use crate::error::{Error, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Most op outputs one MixedOp takes (MAX_K in kernels/common.cuh).
pub const MAX_K: usize = 16;
/// Blocks of the backward pass (partials per block are summed in block order at the end).
const BWD_BLOCKS: usize = 512;

/// The C `struct MixedOpPtrs`: input addresses (0 = an absent, all-zero input) and gradient
/// addresses (0 = not wanted).
#[repr(C)]
#[derive(Clone, Copy)]
struct MixedOpPtrs {
    x: [u64; MAX_K],
    dx: [u64; MAX_K],
}
unsafe impl DeviceRepr for MixedOpPtrs {}

fn check(op: &'static str, xs: &[Option<&CudaBuf>], alpha: &CudaBuf, len: usize) -> Result<()> {
    if xs.is_empty() || xs.len() > MAX_K {
        return Err(Error::shape(
            op,
            format!(
                "{} op outputs; the CUDA MixedOp takes 1 to {MAX_K}",
                xs.len()
            ),
        ));
    }
    crate::backend::check_mixed_op(op, xs.iter().map(|x| x.map(|b| b.len)), alpha.len, len)
}

fn pointers(d: &Cuda, xs: &[Option<&CudaBuf>]) -> MixedOpPtrs {
    let mut p = MixedOpPtrs {
        x: [0; MAX_K],
        dx: [0; MAX_K],
    };
    for (slot, x) in p.x.iter_mut().zip(xs) {
        *slot = d.ptr(*x);
    }
    p
}

pub(super) fn mixed_op_fwd(
    d: &Cuda,
    xs: &[Option<&CudaBuf>],
    alpha: &CudaBuf,
    len: usize,
) -> Result<CudaBuf> {
    check("mixed_op", xs, alpha, len)?;
    let mut y = d.alloc(len)?;
    if len == 0 {
        return Ok(y);
    }
    let p = pointers(d, xs);
    let (n, k) = (int(len)?, int(xs.len())?);
    unsafe {
        d.stream()
            .launch_builder(d.func("mixed_op_fwd_f32")?)
            .arg(&n)
            .arg(&k)
            .arg(&p)
            .arg(&alpha.data)
            .arg(&mut y.data)
            .launch(cfg1d(len))
    }
    .cu("mixed_op_fwd_f32")?;
    Ok(y)
}

#[allow(clippy::type_complexity)]
pub(super) fn mixed_op_bwd(
    d: &Cuda,
    dy: &CudaBuf,
    xs: &[Option<&CudaBuf>],
    alpha: &CudaBuf,
    len: usize,
    need_dx: &[bool],
) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
    check("mixed_op_bwd", xs, alpha, len)?;
    expect_len("mixed_op_bwd", "output gradient", dy, len)?;
    let k = xs.len();
    let mut dxs: Vec<Option<CudaBuf>> = (0..k)
        .map(|i| {
            if xs[i].is_some() && need_dx.get(i).copied().unwrap_or(false) {
                d.alloc(len).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_>>()?;
    let mut p = pointers(d, xs);
    for (slot, dx) in p.dx.iter_mut().zip(dxs.iter_mut()) {
        *slot = d.ptr_mut(dx.as_mut());
    }
    let blocks = len.div_ceil(BLOCK as usize).clamp(1, BWD_BLOCKS);
    let mut partials = d.scratch::<f64>(blocks * MAX_K)?;
    let mut dalpha = d.alloc(k)?;
    let (n, kk, nb) = (int(len)?, int(k)?, int(blocks)?);
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe {
        d.stream()
            .launch_builder(d.func("mixed_op_bwd_f32")?)
            .arg(&n)
            .arg(&kk)
            .arg(&p)
            .arg(&alpha.data)
            .arg(&dy.data)
            .arg(&mut partials)
            .launch(cfg)
    }
    .cu("mixed_op_bwd_f32")?;
    let one = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (MAX_K as u32 * 2, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe {
        d.stream()
            .launch_builder(d.func("mixed_op_bwd_finish_f32")?)
            .arg(&nb)
            .arg(&kk)
            .arg(&alpha.data)
            .arg(&partials)
            .arg(&mut dalpha.data)
            .launch(one)
    }
    .cu("mixed_op_bwd_finish_f32")?;
    Ok((dxs, dalpha))
}
