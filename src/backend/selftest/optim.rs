//! Parity cases for the optimizer family: SGD (plain and scaled by a device scalar) and Adam
//! over one tensor, and the multi-tensor steps and norm reductions over many.

use super::{Harness, TOL};
use crate::backend::prelude::*;
use crate::backend::{AdamStep, SgdStep};
use crate::error::Result;

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(super) fn optim(&mut self, len: usize) -> Result<()> {
        let s = format!("len {len}");
        let (p, g, buf) = (self.randn(len), self.randn(len), self.randn(len));
        let hp = SgdStep {
            lr: 0.025,
            momentum: 0.9,
            weight_decay: 3e-4,
        };
        let (mut rp, mut rb) = (p.clone(), buf.clone());
        let (mut yp, mut yb) = (self.up(&p)?, self.up(&buf)?);
        let dg = self.up(&g)?;
        for _ in 0..3 {
            self.cpu.sgd_step(&mut rp, &g, &mut rb, &hp, None)?;
            self.dev.sgd_step(&mut yp, &dg, &mut yb, &hp, None)?;
        }
        self.check("sgd_step.param", &s, &yp, &rp, TOL)?;
        self.check("sgd_step.momentum", &s, &yb, &rb, TOL)?;
        // With the gradient scaled by a device scalar (clipping fused into the update).
        let scale = vec![0.0f32, 0.3, 0.0];
        let dscale = self.up(&scale)?;
        for _ in 0..3 {
            let rs = crate::backend::ScalarRef {
                buf: &scale,
                index: 1,
            };
            let ys = crate::backend::ScalarRef {
                buf: &dscale,
                index: 1,
            };
            self.cpu.sgd_step(&mut rp, &g, &mut rb, &hp, Some(rs))?;
            self.dev.sgd_step(&mut yp, &dg, &mut yb, &hp, Some(ys))?;
        }
        self.check("sgd_step.param (scaled)", &s, &yp, &rp, TOL)?;
        self.check("sgd_step.momentum (scaled)", &s, &yb, &rb, TOL)?;
        let (mut rp, mut rm, mut rv) = (p.clone(), vec![0.0; len], vec![0.0; len]);
        let (mut yp, mut ym, mut yv) = (self.up(&p)?, self.dev.zeros(len)?, self.dev.zeros(len)?);
        for step in 1..=3 {
            let hp = AdamStep {
                lr: 3e-4,
                beta1: 0.5,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-3,
                step,
            };
            self.cpu.adam_step(&mut rp, &g, &mut rm, &mut rv, &hp)?;
            self.dev.adam_step(&mut yp, &dg, &mut ym, &mut yv, &hp)?;
        }
        self.check("adam_step.param", &s, &yp, &rp, TOL)?;
        self.check("adam_step.m", &s, &ym, &rm, TOL)?;
        self.check("adam_step.v", &s, &yv, &rv, TOL)
    }

    /// The multi-tensor ops over `count` tensors of assorted lengths (empty ones included,
    /// more than one launch's table where `count` exceeds it): `sgd_step_many` (plain and
    /// scaled by a device scalar) and `adam_step_many` against the CPU, the device's
    /// `sgd_step_many` against its own per-tensor `sgd_step` (the same float arithmetic:
    /// tolerance 0), and the norm reductions over the same list.
    pub(super) fn optim_many(&mut self, count: usize) -> Result<()> {
        let lens: Vec<usize> = (0..count)
            .map(|i| match i % 11 {
                0 => 0,
                5 => 70_001,
                _ => (i * 37) % 3001 + 1,
            })
            .collect();
        let s = format!("{count} tensors, {} elements", lens.iter().sum::<usize>());
        let mk = |h: &mut Self| -> Vec<Vec<f32>> { lens.iter().map(|&l| h.randn(l)).collect() };
        let (p, g, buf) = (mk(self), mk(self), mk(self));
        let up = |h: &Self, v: &[Vec<f32>]| -> Result<Vec<B::Storage>> {
            v.iter().map(|x| h.up(x)).collect()
        };
        let dg = up(self, &g)?;
        let cg: Vec<&Vec<f32>> = g.iter().collect();
        let yg: Vec<&B::Storage> = dg.iter().collect();
        let hp = SgdStep {
            lr: 0.025,
            momentum: 0.9,
            weight_decay: 3e-4,
        };
        let scale = vec![0.0f32, 0.3, 0.0];
        let dscale = self.up(&scale)?;
        let (mut rp, mut rb) = (p.clone(), buf.clone());
        let (mut yp, mut yb) = (up(self, &p)?, up(self, &buf)?);
        let (mut op1, mut ob1) = (up(self, &p)?, up(self, &buf)?);
        for scaled in [false, false, true, true] {
            let rs = scaled.then_some(crate::backend::ScalarRef {
                buf: &scale,
                index: 1,
            });
            let ys = scaled.then_some(crate::backend::ScalarRef {
                buf: &dscale,
                index: 1,
            });
            let mut rpm: Vec<&mut Vec<f32>> = rp.iter_mut().collect();
            let mut rbm: Vec<&mut Vec<f32>> = rb.iter_mut().collect();
            self.cpu.sgd_step_many(&mut rpm, &cg, &mut rbm, &hp, rs)?;
            let mut ypm: Vec<&mut B::Storage> = yp.iter_mut().collect();
            let mut ybm: Vec<&mut B::Storage> = yb.iter_mut().collect();
            self.dev.sgd_step_many(&mut ypm, &yg, &mut ybm, &hp, ys)?;
            for ((p, g), b) in op1.iter_mut().zip(&dg).zip(ob1.iter_mut()) {
                self.dev.sgd_step(p, g, b, &hp, ys)?;
            }
        }
        self.check_many("sgd_step_many.param", &s, &yp, &rp, TOL)?;
        self.check_many("sgd_step_many.momentum", &s, &yb, &rb, TOL)?;
        let one: Vec<Vec<f32>> = op1
            .iter()
            .map(|b| self.dev.download(b))
            .collect::<Result<_>>()?;
        self.check_many("sgd_step_many = sgd_step (device)", &s, &yp, &one, 0.0)?;

        let zeros = |h: &Self| -> Result<Vec<B::Storage>> {
            lens.iter().map(|&l| h.dev.zeros(l)).collect()
        };
        let (mut rp, mut rm, mut rv) = (
            p.clone(),
            lens.iter().map(|&l| vec![0.0f32; l]).collect::<Vec<_>>(),
            lens.iter().map(|&l| vec![0.0f32; l]).collect::<Vec<_>>(),
        );
        let (mut yp, mut ym, mut yv) = (up(self, &p)?, zeros(self)?, zeros(self)?);
        for step in 1..=3 {
            let hp = AdamStep {
                lr: 3e-4,
                beta1: 0.5,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-3,
                step,
            };
            let mut a: Vec<&mut Vec<f32>> = rp.iter_mut().collect();
            let mut b: Vec<&mut Vec<f32>> = rm.iter_mut().collect();
            let mut c: Vec<&mut Vec<f32>> = rv.iter_mut().collect();
            self.cpu.adam_step_many(&mut a, &cg, &mut b, &mut c, &hp)?;
            let mut a: Vec<&mut B::Storage> = yp.iter_mut().collect();
            let mut b: Vec<&mut B::Storage> = ym.iter_mut().collect();
            let mut c: Vec<&mut B::Storage> = yv.iter_mut().collect();
            self.dev.adam_step_many(&mut a, &yg, &mut b, &mut c, &hp)?;
        }
        self.check_many("adam_step_many.param", &s, &yp, &rp, TOL)?;
        self.check_many("adam_step_many.m", &s, &ym, &rm, TOL)?;
        self.check_many("adam_step_many.v", &s, &yv, &rv, TOL)?;

        let r = self.cpu.sum_squares_many(&cg)?;
        let y = self.dev.sum_squares_many(&yg)?;
        self.check_scalar("sum_squares_many", &s, y, r, 1e-9);
        let r = self.cpu.grad_norm_scalars(&cg, 5.0)?;
        let y = self.dev.grad_norm_scalars(&yg, 5.0)?;
        self.check("grad_norm_scalars", &s, &y, &r, TOL)
    }
}
