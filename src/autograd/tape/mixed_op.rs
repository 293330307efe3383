//! The DARTS MixedOp on the tape: `sum_k softmax(alpha)_k * xs[k]` as one fused op, absent
//! (`none`) inputs never materialised, and its one-pass backward, which adds each input's
//! gradient into a pending one in place where it can.

use super::{Tape, Var};
use crate::autograd::saved::Saved;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

impl<B: Backend> Tape<B> {
    /// `sum_k softmax(alpha)_k * xs[k]`, one fused op. `alpha` has one value per input;
    /// `xs[k] = None` is an all-zero input (the DARTS `none` op) that is never materialised:
    /// it keeps its softmax weight and gets an alpha gradient, but nothing is read for it. At
    /// least one input must be present (it gives the shape).
    pub fn mixed_op(&mut self, xs: &[Option<Var>], alpha: Var) -> Result<Var> {
        let k = xs.len();
        if k == 0 || self.shape(alpha).numel() != k {
            return Err(Error::shape(
                "mixed_op",
                format!("{k} op outputs but alpha {}", self.shape(alpha)),
            ));
        }
        let present: Vec<Var> = xs.iter().flatten().copied().collect();
        let Some(&first) = present.first() else {
            return Err(Error::shape(
                "mixed_op",
                format!("all {k} op outputs are none (zero): no shape to take"),
            ));
        };
        for &x in &present[1..] {
            self.same_shape("mixed_op", first, x)?;
        }
        let shape = self.shape(first).clone();
        let len = shape.numel();
        let y = {
            let bufs: Vec<Option<&B::Storage>> = xs
                .iter()
                .map(|x| x.map(|x| self.value(x).map(|t| &*t.buf)).transpose())
                .collect::<Result<_>>()?;
            self.backend
                .mixed_op_fwd(&bufs, &self.value(alpha)?.buf, len)?
        };
        let saved: Vec<Option<Saved<B>>> = xs
            .iter()
            .map(|x| x.map(|x| self.save(x)).transpose())
            .collect::<Result<_>>()?;
        let at = self.save(alpha)?;
        // Parents: the present inputs in order, then alpha; `slot[p]` is parent p's input.
        let slot: Vec<usize> = (0..k).filter(|&i| xs[i].is_some()).collect();
        let mut parents = present;
        parents.push(alpha);
        Ok(self.push(
            Tensor::new(y, shape),
            &parents,
            Box::new(move |be, dy, need, acc| {
                let np = slot.len();
                let mut need_dx = vec![false; k];
                for (p, &i) in slot.iter().enumerate() {
                    need_dx[i] = need[p];
                }
                let held: Vec<Option<Arc<B::Storage>>> = saved
                    .iter()
                    .map(|t| t.as_ref().map(|t| t.read(be)).transpose())
                    .collect::<Result<_>>()?;
                let bufs: Vec<Option<&B::Storage>> = held.iter().map(|t| t.as_deref()).collect();
                // Input i's pending gradient (parent p = its position among present inputs).
                let mut into: Vec<Option<&mut B::Storage>> = (0..k).map(|_| None).collect();
                for (a, &i) in acc.iter_mut().zip(&slot) {
                    into[i] = a.as_mut();
                }
                let ab = at.read(be)?;
                // Without a wanted dalpha (a weight step) the dots over every input are
                // skipped.
                let (mut dxs, dalpha) = if !need[np] {
                    let dxs = be.mixed_op_bwd_dx(dy, &bufs, &ab, len, &need_dx, &mut into)?;
                    (dxs, None)
                } else if into.iter().any(Option::is_some) {
                    let (dxs, da) =
                        be.mixed_op_bwd_into(dy, &bufs, &ab, len, &need_dx, &mut into)?;
                    (dxs, Some(da))
                } else {
                    let (dxs, da) = be.mixed_op_bwd(dy, &bufs, &ab, len, &need_dx)?;
                    (dxs, Some(da))
                };
                let mut out: Vec<Option<B::Storage>> =
                    slot.iter().map(|&i| dxs[i].take()).collect();
                out.push(dalpha);
                Ok(out)
            }),
        ))
    }
}
