//! Optimizer updates in place: SGD and Adam, one tensor or many at once.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::DeviceOps;
use crate::backend::{checks, AdamStep, ScalarRef, SgdStep};
use crate::error::Result;

pub trait OptimOps: DeviceOps {
    /// `grad_scale`, when given, multiplies the gradient first (global-norm clipping fused
    /// into the update, the coefficient read on the device).
    fn sgd_step(
        &self,
        param: &mut Self::Storage,
        grad: &Self::Storage,
        momentum_buf: &mut Self::Storage,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Self::Storage>>,
    ) -> Result<()>;
    fn adam_step(
        &self,
        param: &mut Self::Storage,
        grad: &Self::Storage,
        m: &mut Self::Storage,
        v: &mut Self::Storage,
        hp: &AdamStep,
    ) -> Result<()>;
    /// `sgd_step` of every `(params[i], grads[i], momentum_bufs[i])` as one op (a
    /// multi-tensor "foreach" update, as PyTorch's `foreach=True` SGD: a handful of launches
    /// on a GPU instead of one per tensor). Results are those of `sgd_step` on each tensor;
    /// the default loops over it.
    fn sgd_step_many(
        &self,
        params: &mut [&mut Self::Storage],
        grads: &[&Self::Storage],
        momentum_bufs: &mut [&mut Self::Storage],
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Self::Storage>>,
    ) -> Result<()> {
        checks::sgd_step_many(self, params, grads, momentum_bufs, grad_scale)?;
        for ((p, g), m) in params.iter_mut().zip(grads).zip(momentum_bufs.iter_mut()) {
            self.sgd_step(p, g, m, hp, grad_scale)?;
        }
        Ok(())
    }
    /// `adam_step` of every `(params[i], grads[i], ms[i], vs[i])` as one op (see
    /// `sgd_step_many`); the default loops over `adam_step`.
    fn adam_step_many(
        &self,
        params: &mut [&mut Self::Storage],
        grads: &[&Self::Storage],
        ms: &mut [&mut Self::Storage],
        vs: &mut [&mut Self::Storage],
        hp: &AdamStep,
    ) -> Result<()> {
        checks::adam_step_many(self, params, grads, ms, vs)?;
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(ms.iter_mut())
            .zip(vs.iter_mut())
        {
            self.adam_step(p, g, m, v, hp)?;
        }
        Ok(())
    }
}
