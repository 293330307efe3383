//! Launchers for the fused DARTS MixedOp (kernels/mixed_op.cu): the K op outputs travel as
//! one by-value pointer struct, softmax(alpha) is computed on the device, and the backward
//! produces every requested dx_k and dalpha in one pass plus a one-block finish. An absent
//! input (the `none` op) travels as a null pointer: the kernels skip it, never reading zeros.
//! `mixed_op_bwd_into` points dx_k at a pending gradient and sets bit k of `acc_mask`, so the
//! kernel adds `w_k dy` into it.

use super::driver::LaunchConfig;
use super::kernels;
use super::{cfg1d, int, Cuda, CudaBuf, BLOCK};
use crate::backend::{checks, MixedOpOps};
use crate::error::{Error, Result};

/// Most op outputs one MixedOp takes (MAX_K in kernels/common.cuh).
pub const MAX_K: usize = kernels::consts::MAX_K;
/// Blocks of the backward pass (partials per block are summed in block order at the end).
const BWD_BLOCKS: usize = 512;

use kernels::MixedOpPtrs;

/// CUDA only: the kernels take at most `MAX_K` inputs (a by-value pointer table). The op's
/// `checks` function checked the rest (and refused an empty list).
fn max_k(op: &'static str, xs: &[Option<&CudaBuf>]) -> Result<()> {
    if xs.len() > MAX_K {
        return Err(Error::shape(
            op,
            format!(
                "{} op outputs; the CUDA MixedOp takes 1 to {MAX_K}",
                xs.len()
            ),
        ));
    }
    Ok(())
}

fn pointers(xs: &[Option<&CudaBuf>]) -> MixedOpPtrs {
    let mut p = MixedOpPtrs {
        x: [0; MAX_K],
        dx: [0; MAX_K],
    };
    for (slot, x) in p.x.iter_mut().zip(xs) {
        *slot = x.map_or(0, |b| b.data.addr());
    }
    p
}

pub(super) fn mixed_op_fwd(
    d: &Cuda,
    xs: &[Option<&CudaBuf>],
    alpha: &CudaBuf,
    len: usize,
) -> Result<CudaBuf> {
    checks::mixed_op_fwd(d, xs, alpha, len)?;
    max_k("mixed_op", xs)?;
    let mut y = d.alloc(len)?;
    if len == 0 {
        return Ok(y);
    }
    let p = pointers(xs);
    let (n, k) = (int(len)?, int(xs.len())?);
    // SAFETY: every non-null input in p holds len elements and alpha k (checked), y len
    // (alloc); k <= MAX_K (max_k).
    unsafe {
        kernels::mixed_op_fwd_f32(
            d.drv(),
            cfg1d(len),
            n,
            k,
            p,
            alpha.data.dev(),
            y.data.dev_mut(),
        )
    }?;
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
    checks::mixed_op_bwd(d, dy, xs, alpha, len)?;
    max_k("mixed_op_bwd", xs)?;
    bwd(d, dy, xs, alpha, len, need_dx, &mut [])
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
    checks::mixed_op_bwd_into(d, dy, xs, alpha, len, acc)?;
    max_k("mixed_op_bwd_into", xs)?;
    bwd(d, dy, xs, alpha, len, need_dx, acc)
}

/// The backward launches; the caller checked the operands.
#[allow(clippy::type_complexity)]
fn bwd(
    d: &Cuda,
    dy: &CudaBuf,
    xs: &[Option<&CudaBuf>],
    alpha: &CudaBuf,
    len: usize,
    need_dx: &[bool],
    acc: &mut [Option<&mut CudaBuf>],
) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
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
    let mut p = pointers(xs);
    let mut acc_mask = 0u32;
    for (slot, dx) in p.dx.iter_mut().zip(dxs.iter_mut()) {
        *slot = dx.as_ref().map_or(0, |b| b.data.addr());
    }
    for (i, a) in acc.iter_mut().enumerate().take(k) {
        if let (Some(a), true) = (a.as_deref_mut(), wanted(i)) {
            p.dx[i] = a.data.addr();
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
    // SAFETY: inputs, dy and every dx target hold len elements, alpha k (checked);
    // partials MAX_K doubles per block of the grid.
    unsafe {
        kernels::mixed_op_bwd_f32(
            d.drv(),
            cfg,
            n,
            kk,
            p,
            acc_mask,
            alpha.data.dev(),
            dy.data.dev(),
            partials.dev_mut(),
        )
    }?;
    let one = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (MAX_K as u32 * 2, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: partials holds nb * MAX_K doubles, dalpha k (alloc).
    unsafe {
        kernels::mixed_op_bwd_finish_f32(
            d.drv(),
            one,
            nb,
            kk,
            alpha.data.dev(),
            partials.dev(),
            dalpha.data.dev_mut(),
        )
    }?;
    Ok((dxs, dalpha))
}

impl MixedOpOps for Cuda {
    fn mixed_op_fwd(
        &self,
        xs: &[Option<&CudaBuf>],
        alpha: &CudaBuf,
        len: usize,
    ) -> Result<CudaBuf> {
        mixed_op_fwd(self, xs, alpha, len)
    }
    fn mixed_op_bwd(
        &self,
        dy: &CudaBuf,
        xs: &[Option<&CudaBuf>],
        alpha: &CudaBuf,
        len: usize,
        need_dx: &[bool],
    ) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
        mixed_op_bwd(self, dy, xs, alpha, len, need_dx)
    }
    fn mixed_op_bwd_into(
        &self,
        dy: &CudaBuf,
        xs: &[Option<&CudaBuf>],
        alpha: &CudaBuf,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut CudaBuf>],
    ) -> Result<(Vec<Option<CudaBuf>>, CudaBuf)> {
        mixed_op_bwd_into(self, dy, xs, alpha, len, need_dx, acc)
    }
}
