//! The tape's dense layer and loss: `linear` (`x W^T + b`), mean softmax cross-entropy, each
//! with its backward, and `count_correct` (accuracy, never differentiated).

use super::{Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

impl<B: Backend> Tape<B> {
    /// `x W^T + b`: x `[n, in]`, w `[out, in]`, b `[out]`.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let (n, in_f) = self.shape(x).matrix("linear")?;
        let (out_f, w_in) = self.shape(w).matrix("linear")?;
        if w_in != in_f {
            return Err(Error::shape(
                "linear",
                format!("input {} and weight {}", self.shape(x), self.shape(w)),
            ));
        }
        if let Some(b) = b {
            if self.shape(b).dims() != [out_f] {
                return Err(Error::shape(
                    "linear",
                    format!("bias {} for weight {}", self.shape(b), self.shape(w)),
                ));
            }
        }
        let bt = b.map(|b| self.value(b).cloned()).transpose()?;
        let y = self.backend.linear_fwd(
            &self.value(x)?.buf,
            &self.value(w)?.buf,
            bt.as_ref().map(|b| &*b.buf),
            n,
            in_f,
            out_f,
        )?;
        drop(bt);
        let (xs, ws) = (self.save(x)?, self.save(w)?);
        let mut parents = vec![x, w];
        parents.extend(b);
        let with_bias = b.is_some();
        Ok(self.push(
            Tensor::new(y, [n, out_f]),
            &parents,
            Box::new(move |be, dy, _, _| {
                let (xb, wb) = (xs.read(be)?, ws.read(be)?);
                let (dx, dw, db) = be.linear_bwd(&xb, &wb, dy, n, in_f, out_f, with_bias)?;
                let mut out = vec![Some(dx), Some(dw)];
                if with_bias {
                    out.push(db);
                }
                Ok(out)
            }),
        ))
    }

    /// Mean softmax cross-entropy of logits `[n, k]` against device `labels`; a `[1]` loss.
    pub fn softmax_cross_entropy(&mut self, logits: Var, labels: &Arc<B::Labels>) -> Result<Var> {
        let (n, k) = self.shape(logits).matrix("softmax_cross_entropy")?;
        if n == 0 {
            return Err(Error::shape("softmax_cross_entropy", "empty batch"));
        }
        if self.backend.labels_len(labels) != n {
            return Err(Error::shape(
                "softmax_cross_entropy",
                format!(
                    "{} labels for a batch of {n}",
                    self.backend.labels_len(labels)
                ),
            ));
        }
        let (loss, probs) =
            self.backend
                .softmax_cross_entropy_fwd(&self.value(logits)?.buf, n, k, labels)?;
        let labels = labels.clone();
        Ok(self.push(
            Tensor::new(loss, [1]),
            &[logits],
            Box::new(move |be, dy, _, _| {
                Ok(vec![Some(
                    be.softmax_cross_entropy_bwd(&probs, dy, n, k, &labels)?,
                )])
            }),
        ))
    }

    /// How many rows of `logits` [n, k] predict their label, as a one-element device value.
    pub fn count_correct(&self, logits: Var, labels: &B::Labels) -> Result<Tensor<B>> {
        let (n, k) = self.shape(logits).matrix("count_correct")?;
        let count = self
            .backend
            .count_correct(&self.value(logits)?.buf, n, k, labels)?;
        Ok(Tensor::new(count, [1]))
    }
}
