//! The DARTS MixedOp: `sum_k softmax(alpha)_k * x_k` and its gradients in one pass.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::ElementwiseOps;
use crate::backend::checks;
use crate::error::Result;

pub trait MixedOpOps: ElementwiseOps {
    /// `y = sum_k softmax(alpha)_k * x_k`, softmax computed inside over all `xs.len()` alphas.
    /// `xs[k] = None` declares input `k` all zero (the DARTS `none` op) without a buffer: it
    /// keeps its softmax weight but is never read. Present inputs have `len` elements; at
    /// least one must be present.
    fn mixed_op_fwd(
        &self,
        xs: &[Option<&Self::Storage>],
        alpha: &Self::Storage,
        len: usize,
    ) -> Result<Self::Storage>;
    /// One pass for every gradient: `dx_k = w_k dy` for each present `k` with `need_dx[k]`
    /// (None for absent inputs), and `dalpha_k = w_k (<dy, x_k> - sum_j w_j <dy, x_j>)` for
    /// every `k`, with `<dy, x_k> = 0` for an absent (zero) input: its alpha still moves.
    fn mixed_op_bwd(
        &self,
        dy: &Self::Storage,
        xs: &[Option<&Self::Storage>],
        alpha: &Self::Storage,
        len: usize,
        need_dx: &[bool],
    ) -> Result<(Vec<Option<Self::Storage>>, Self::Storage)>;
    /// `mixed_op_bwd`, except that a wanted `dx_k` with `acc[k] = Some(buf)` is added into
    /// `buf` (`buf += w_k dy`) and returned as None; the others are returned fresh as there.
    /// `acc` has one entry per input (entries of unwanted or absent inputs are left
    /// untouched, but a given one must still have `len` elements).
    #[allow(clippy::type_complexity)]
    fn mixed_op_bwd_into(
        &self,
        dy: &Self::Storage,
        xs: &[Option<&Self::Storage>],
        alpha: &Self::Storage,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut Self::Storage>],
    ) -> Result<(Vec<Option<Self::Storage>>, Self::Storage)> {
        checks::mixed_op_bwd_into(self, dy, xs, alpha, len, acc)?;
        let (mut dxs, dalpha) = self.mixed_op_bwd(dy, xs, alpha, len, need_dx)?;
        for (dx, a) in dxs.iter_mut().zip(acc.iter_mut()) {
            if let (Some(g), Some(a)) = (dx.as_ref(), a.as_deref_mut()) {
                self.axpy(a, 1.0, g)?;
                *dx = None;
            }
        }
        Ok((dxs, dalpha))
    }
    /// The input gradients of `mixed_op_bwd_into` (`acc[k]` may be None throughout) without
    /// `dalpha`, for a step whose alphas are constants (a weight step): a backend may skip
    /// the dot products `<dy, x_k>`, a full read of every input. By default, the full op
    /// with `dalpha` dropped.
    fn mixed_op_bwd_dx(
        &self,
        dy: &Self::Storage,
        xs: &[Option<&Self::Storage>],
        alpha: &Self::Storage,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut Self::Storage>],
    ) -> Result<Vec<Option<Self::Storage>>> {
        let (dxs, _) = if acc.iter().any(Option::is_some) {
            self.mixed_op_bwd_into(dy, xs, alpha, len, need_dx, acc)?
        } else {
            self.mixed_op_bwd(dy, xs, alpha, len, need_dx)?
        };
        Ok(dxs)
    }
}
