//! Launchers for the fused DARTS MixedOp (kernels/mixed_op.cu): the K op outputs travel as
//! one by-value pointer struct, softmax(alpha) is computed on the device, and the backward
//! produces every requested dx_k and dalpha in one pass plus a one-block finish. An absent
//! input (the `none` op) travels as a null pointer: the kernels skip it, never reading zeros.
//! `mixed_op_bwd_into` points dx_k at a pending gradient and sets bit k of `acc_mask`, so the
//! kernel adds `w_k dy` into it.

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
    bwd(d, "mixed_op_bwd", dy, xs, alpha, len, need_dx, &mut [])
}

/// `mixed_op_bwd` with a wanted dx_k added into `acc[k]` where given (bit k of the kernel's
/// `acc_mask`; the pointer is the accumulator's).
#[allow(clippy::type_complexity)]
pub(super) fn mixed_op_bwd_into(
    d: &Cuda,
    dy: &CudaBuf,
    xs: &[Option<&CudaBuf>],
    alpha: &CudaBuf,
    len: usize,
    need_dx: &[bool],
    acc: &mut [Option<&mut CudaBuf>],
) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
    crate::backend::same_count("mixed_op_bwd_into", xs.len(), &[acc.len()])?;
    bwd(d, "mixed_op_bwd_into", dy, xs, alpha, len, need_dx, acc)
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn bwd(
    d: &Cuda,
    op: &'static str,
    dy: &CudaBuf,
    xs: &[Option<&CudaBuf>],
    alpha: &CudaBuf,
    len: usize,
    need_dx: &[bool],
    acc: &mut [Option<&mut CudaBuf>],
) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
    check(op, xs, alpha, len)?;
    expect_len(op, "output gradient", dy, len)?;
    let k = xs.len();
    let wanted = |i: usize| xs[i].is_some() && need_dx.get(i).copied().unwrap_or(false);
    let into = |i: usize| wanted(i) && acc.get(i).is_some_and(Option::is_some);
    let mut dxs: Vec<Option<CudaBuf>> = (0..k)
        .map(|i| {
            if wanted(i) && !into(i) {
                d.alloc(len).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_>>()?;
    let mut p = pointers(d, xs);
    let mut acc_mask = 0u32;
    for (slot, dx) in p.dx.iter_mut().zip(dxs.iter_mut()) {
        *slot = d.ptr_mut(dx.as_mut());
    }
    for (i, a) in acc.iter_mut().enumerate().take(k) {
        if let (Some(a), true) = (a.as_deref_mut(), wanted(i)) {
            expect_len(op, "accumulator", a, len)?;
            p.dx[i] = d.ptr_mut(Some(a));
            acc_mask |= 1 << i;
        }
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
            .arg(&acc_mask)
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
