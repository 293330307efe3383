//! Parity cases for batch norm: the training forward (output, saved statistics, running
//! statistics), the eval forward and the backward (input and affine gradients).

use super::{Harness, TOL};
use crate::backend::prelude::*;
use crate::backend::RunningStats;
use crate::error::Result;
use crate::shape::Nchw;

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(super) fn batch_norm(&mut self, xd: Nchw, affine: bool, running: bool) -> Result<()> {
        let s = format!("x {} affine={affine} running={running}", xd.shape());
        // A non-zero mean and non-unit scale, so the statistics are exercised.
        let x: Vec<f32> = self
            .randn(xd.numel())
            .iter()
            .map(|v| v * 1.5 + 0.3)
            .collect();
        let dy = self.randn(xd.numel());
        let (g, b) = (self.uniform(xd.c, 0.5, 1.5), self.randn(xd.c));
        let (rm0, rv0) = (self.randn(xd.c), self.uniform(xd.c, 0.5, 1.5));
        let (dx_, ddy, dg, dbeta) = (self.up(&x)?, self.up(&dy)?, self.up(&g)?, self.up(&b)?);
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let (mut drm, mut drv) = (self.up(&rm0)?, self.up(&rv0)?);
        let eps = 1e-5;
        let (ry, rsaved) = self.cpu.batch_norm_train_fwd(
            &x,
            xd,
            affine.then_some((&g, &b)),
            running.then_some(RunningStats {
                mean: &mut rm,
                var: &mut rv,
                momentum: 0.1,
            }),
            eps,
        )?;
        let (y, saved) = self.dev.batch_norm_train_fwd(
            &dx_,
            xd,
            affine.then_some((&dg, &dbeta)),
            running.then_some(RunningStats {
                mean: &mut drm,
                var: &mut drv,
                momentum: 0.1,
            }),
            eps,
        )?;
        self.check("batch_norm_train_fwd", &s, &y, &ry, TOL)?;
        self.check(
            "batch_norm_train_fwd.mean",
            &s,
            &saved.mean,
            &rsaved.mean,
            TOL,
        )?;
        self.check(
            "batch_norm_train_fwd.invstd",
            &s,
            &saved.invstd,
            &rsaved.invstd,
            TOL,
        )?;
        if running {
            self.check("batch_norm_train_fwd.running_mean", &s, &drm, &rm, TOL)?;
            self.check("batch_norm_train_fwd.running_var", &s, &drv, &rv, TOL)?;
        }
        let r =
            self.cpu
                .batch_norm_eval_fwd(&x, xd, affine.then_some((&g, &b)), &rm0, &rv0, eps)?;
        let de = self.dev.batch_norm_eval_fwd(
            &dx_,
            xd,
            affine.then_some((&dg, &dbeta)),
            &self.up(&rm0)?,
            &self.up(&rv0)?,
            eps,
        )?;
        self.check("batch_norm_eval_fwd", &s, &de, &r, TOL)?;
        let (rdx, rgrads) = self
            .cpu
            .batch_norm_bwd(&x, &dy, xd, affine.then_some(&g), &rsaved)?;
        let (ddx, grads) =
            self.dev
                .batch_norm_bwd(&dx_, &ddy, xd, affine.then_some(&dg), &saved)?;
        self.check("batch_norm_bwd", &s, &ddx, &rdx, TOL)?;
        match (rgrads, grads) {
            (Some((rgg, rgb)), Some((gg, gb))) => {
                self.check("batch_norm_bwd.dgamma", &s, &gg, &rgg, TOL)?;
                self.check("batch_norm_bwd.dbeta", &s, &gb, &rgb, TOL)?;
            }
            (None, None) => {}
            _ => self.row("batch_norm_bwd.param_grads", s.clone(), f64::INFINITY, TOL),
        }
        Ok(())
    }
}
