//! Parity cases for the dense family: the linear layer forward and backward, softmax
//! cross-entropy forward and backward, `count_correct` (ties included) and staged labels.

use super::{Harness, TOL};
use crate::backend::prelude::*;
use crate::error::Result;

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(super) fn linear(&mut self, n: usize, in_f: usize, out_f: usize, bias: bool) -> Result<()> {
        let s = format!("x [{n}, {in_f}] -> [{n}, {out_f}] bias={bias}");
        let (x, w, b, dy) = (
            self.randn(n * in_f),
            self.randn(out_f * in_f),
            self.randn(out_f),
            self.randn(n * out_f),
        );
        let (dx_, dw_, db_, ddy) = (self.up(&x)?, self.up(&w)?, self.up(&b)?, self.up(&dy)?);
        let r = self
            .cpu
            .linear_fwd(&x, &w, bias.then_some(&b), n, in_f, out_f)?;
        let y = self
            .dev
            .linear_fwd(&dx_, &dw_, bias.then_some(&db_), n, in_f, out_f)?;
        self.check("linear_fwd", &s, &y, &r, TOL)?;
        let (rx, rw, rb) = self.cpu.linear_bwd(&x, &w, &dy, n, in_f, out_f, bias)?;
        let (gx, gw, gb) = self
            .dev
            .linear_bwd(&dx_, &dw_, &ddy, n, in_f, out_f, bias)?;
        self.check("linear_bwd.dx", &s, &gx, &rx, TOL)?;
        self.check("linear_bwd.dw", &s, &gw, &rw, TOL)?;
        match (rb, gb) {
            (Some(rb), Some(gb)) => self.check("linear_bwd.db", &s, &gb, &rb, TOL)?,
            (None, None) => {}
            _ => self.row("linear_bwd.db", s.clone(), f64::INFINITY, TOL),
        }
        Ok(())
    }

    pub(super) fn softmax_ce(&mut self, n: usize, k: usize) -> Result<()> {
        let s = format!("logits [{n}, {k}]");
        let logits: Vec<f32> = self.randn(n * k).iter().map(|v| v * 3.0).collect();
        let labels: Vec<u32> = (0..n).map(|_| self.rng.below(k) as u32).collect();
        let dl = self.up(&logits)?;
        let (clab, dlab) = (
            self.cpu.upload_labels(&labels, k)?,
            self.dev.upload_labels(&labels, k)?,
        );
        let (rl, rp) = self.cpu.softmax_cross_entropy_fwd(&logits, n, k, &clab)?;
        let (yl, yp) = self.dev.softmax_cross_entropy_fwd(&dl, n, k, &dlab)?;
        self.check("softmax_cross_entropy_fwd.loss", &s, &yl, &rl, TOL)?;
        self.check("softmax_cross_entropy_fwd.probs", &s, &yp, &rp, TOL)?;
        let r = self
            .cpu
            .softmax_cross_entropy_bwd(&rp, &vec![0.8], n, k, &clab)?;
        let y = self
            .dev
            .softmax_cross_entropy_bwd(&yp, &self.up(&[0.8])?, n, k, &dlab)?;
        self.check("softmax_cross_entropy_bwd", &s, &y, &r, TOL)?;
        // Ties on purpose (rounded logits): the first maximum wins on both devices.
        let tied: Vec<f32> = logits.iter().map(|v| v.round()).collect();
        let r = self.cpu.count_correct(&tied, n, k, &clab)?;
        let y = self.dev.count_correct(&self.up(&tied)?, n, k, &dlab)?;
        self.check("count_correct", &s, &y, &r, 0.0)?;
        // Staged labels: overwritten in place, then used again.
        let relabel: Vec<u32> = (0..n).map(|_| self.rng.below(k) as u32).collect();
        let (mut clab, mut dlab) = (clab, dlab);
        self.cpu.upload_labels_into(&mut clab, &relabel, k)?;
        self.dev.upload_labels_into(&mut dlab, &relabel, k)?;
        let r = self.cpu.count_correct(&tied, n, k, &clab)?;
        let y = self.dev.count_correct(&self.up(&tied)?, n, k, &dlab)?;
        self.check("upload_labels_into", &s, &y, &r, 0.0)
    }
}
