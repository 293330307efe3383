//! Parity cases for the fused DARTS MixedOp: forward, backward and the accumulating backward,
//! with absent (`none`) inputs and only some input gradients asked for.

use super::{Harness, TOL};
use crate::backend::prelude::*;
use crate::error::Result;

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// `zero`: the inputs passed as absent (all-zero, the `none` op).
    pub(super) fn mixed_op(&mut self, k: usize, len: usize, zero: &[usize]) -> Result<()> {
        let s = if zero.is_empty() {
            format!("K {k} len {len}")
        } else {
            format!("K {k} len {len} none {zero:?}")
        };
        let xs: Vec<Vec<f32>> = (0..k).map(|_| self.randn(len)).collect();
        let dxs_dev: Vec<B::Storage> = xs.iter().map(|x| self.up(x)).collect::<Result<_>>()?;
        let alpha = self
            .randn(k)
            .iter()
            .map(|v| v * 1e-3 * (len as f32).sqrt())
            .collect::<Vec<_>>();
        let dalpha_in = self.up(&alpha)?;
        let dy = self.randn(len);
        let present = |i: usize| !zero.contains(&i);
        let cx: Vec<Option<&Vec<f32>>> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| present(i).then_some(x))
            .collect();
        let dx: Vec<Option<&B::Storage>> = dxs_dev
            .iter()
            .enumerate()
            .map(|(i, x)| present(i).then_some(x))
            .collect();
        let r = self.cpu.mixed_op_fwd(&cx, &alpha, len)?;
        let y = self.dev.mixed_op_fwd(&dx, &dalpha_in, len)?;
        self.check("mixed_op_fwd", &s, &y, &r, TOL)?;
        // Every other gradient requested, so both the written and the skipped paths run (an
        // absent input asked for one must still get none).
        let need: Vec<bool> = (0..k).map(|i| i % 2 == 0).collect();
        let (rdx, rda) = self.cpu.mixed_op_bwd(&dy, &cx, &alpha, len, &need)?;
        let (ydx, yda) = self
            .dev
            .mixed_op_bwd(&self.up(&dy)?, &dx, &dalpha_in, len, &need)?;
        self.check("mixed_op_bwd.dalpha", &s, &yda, &rda, TOL)?;
        for (i, (r, y)) in rdx.iter().zip(&ydx).enumerate() {
            match (r, y) {
                (Some(r), Some(y)) => {
                    self.check(&format!("mixed_op_bwd.dx[{i}]"), &s, y, r, TOL)?
                }
                (None, None) => {}
                _ => self.row(
                    format!("mixed_op_bwd.dx[{i}]"),
                    s.clone(),
                    f64::INFINITY,
                    TOL,
                ),
            }
        }
        // Accumulating: every third input adds into a pending gradient (`acc`), the other
        // wanted ones come back fresh; an accumulator of an unwanted input stays as it was.
        let into = |i: usize| i.is_multiple_of(3);
        let accs: Vec<Vec<f32>> = (0..k).map(|_| self.randn(len)).collect();
        let mut rbufs = accs.clone();
        let mut ybufs: Vec<B::Storage> = accs.iter().map(|a| self.up(a)).collect::<Result<_>>()?;
        let (rdx, rda) = {
            let mut acc: Vec<Option<&mut Vec<f32>>> = rbufs
                .iter_mut()
                .enumerate()
                .map(|(i, a)| into(i).then_some(a))
                .collect();
            self.cpu
                .mixed_op_bwd_into(&dy, &cx, &alpha, len, &need, &mut acc)?
        };
        let (ydx, yda) = {
            let mut acc: Vec<Option<&mut B::Storage>> = ybufs
                .iter_mut()
                .enumerate()
                .map(|(i, a)| into(i).then_some(a))
                .collect();
            self.dev
                .mixed_op_bwd_into(&self.up(&dy)?, &dx, &dalpha_in, len, &need, &mut acc)?
        };
        self.check("mixed_op_bwd_into.dalpha", &s, &yda, &rda, TOL)?;
        for i in 0..k {
            let op = format!("mixed_op_bwd_into.dx[{i}]");
            match (&rdx[i], &ydx[i]) {
                (Some(r), Some(y)) => self.check(&op, &s, y, r, TOL)?,
                (None, None) if into(i) => self.check(&op, &s, &ybufs[i], &rbufs[i], TOL)?,
                (None, None) => {}
                _ => self.row(op, s.clone(), f64::INFINITY, TOL),
            }
        }
        Ok(())
    }
}
