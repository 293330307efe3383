//! The tape's batch norm: training mode (batch statistics, running statistics updated in
//! place) and eval mode (running statistics; its backward is a per-channel scale), each with
//! its backward.

use super::{Tape, Var};
use crate::autograd::saved::Saved;
use crate::backend::{Backend, BatchNormSaved, Element, RunningStats};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::rc::Rc;

impl<B: Backend> Tape<B> {
    /// Training-mode batch norm (batch statistics). `affine` is (gamma, beta); `running`
    /// (running mean, running var, momentum) is updated in place.
    pub fn batch_norm_train(
        &mut self,
        x: Var,
        affine: Option<(Var, Var)>,
        running: Option<(&mut Tensor<B>, &mut Tensor<B>, f64)>,
        eps: f64,
    ) -> Result<Var> {
        let xd = self.nchw(x, "batch_norm")?;
        if let Some((g, b)) = affine {
            for p in [g, b] {
                if self.shape(p).dims() != [xd.c] {
                    return Err(Error::shape(
                        "batch_norm",
                        format!(
                            "affine parameter {} for input {}",
                            self.shape(p),
                            xd.shape()
                        ),
                    ));
                }
            }
        }
        if xd.n * xd.plane() < 2 && running.is_some() {
            return Err(Error::shape(
                "batch_norm",
                format!(
                    "training needs more than one value per channel, got input {}",
                    xd.shape()
                ),
            ));
        }
        let xt = self.value(x)?.clone();
        let (gamma, beta) = match affine {
            Some((g, b)) => (Some(self.save(g)?), Some(self.value(b)?.clone())),
            None => (None, None),
        };
        let gamma_f32 = gamma.as_ref().map(|g| g.read(&self.backend)).transpose()?;
        let running = match running {
            Some((m, v, momentum)) => Some(RunningStats {
                mean: m.buf_mut("running_mean")?,
                var: v.buf_mut("running_var")?,
                momentum,
            }),
            None => None,
        };
        let aff = gamma_f32
            .as_ref()
            .zip(beta.as_ref())
            .map(|(g, b)| (&**g, &*b.buf));
        let (y, saved) = self
            .backend
            .batch_norm_train_fwd(&xt.buf, xd, aff, running, eps)?;
        drop((xt, gamma_f32, beta));
        if affine.is_none() {
            return self.batch_norm_from_output(x, Tensor::new(y, xd.shape()), saved);
        }
        let xs = self.save(x)?;
        let mut parents = vec![x];
        if let Some((g, b)) = affine {
            parents.extend([g, b]);
        }
        Ok(self.push(
            Tensor::new(y, xd.shape()),
            &parents,
            Box::new(move |be, dy, _, _| {
                let g = gamma.as_ref().map(|g| g.read(be)).transpose()?;
                let (dx, dgb) = be.batch_norm_bwd(&*xs.read(be)?, dy, xd, g.as_deref(), &saved)?;
                let mut out = vec![Some(dx)];
                if let Some((dg, db)) = dgb {
                    out.extend([Some(dg), Some(db)]);
                }
                Ok(out)
            }),
        ))
    }

    /// Records a non-affine training-mode batch norm whose backward reads its output `y`,
    /// not its input: without gamma and beta, y is the normalised input x-hat itself, so the
    /// input need not be kept (every batch norm in a DARTS search cell: the input is a conv's
    /// or a pool's output that nothing else saves).
    fn batch_norm_from_output(
        &mut self,
        x: Var,
        y: Tensor<B>,
        stats: BatchNormSaved<B::Storage>,
    ) -> Result<Var> {
        let xd = y.shape.nchw("batch_norm")?;
        // The backward of the input x-hat (mean 0, invstd 1) with gamma = invstd is exactly
        // the backward of x: x-hat is the same and dx carries the factor gamma * 1 = invstd.
        // Its gamma/beta gradients are not wanted.
        let unit = match self.unit_stats.get(&xd.c) {
            Some(u) => u.clone(),
            None => {
                let u = Rc::new(BatchNormSaved {
                    mean: self.backend.zeros(xd.c)?,
                    invstd: self.backend.fill(xd.c, 1.0)?,
                });
                self.unit_stats.insert(xd.c, u.clone());
                u
            }
        };
        let invstd = stats.invstd;
        let ys = Saved::new(&y);
        let held = ys.clone();
        let out = self.push(
            y,
            &[x],
            Box::new(move |be, dy, _, _| {
                let (dx, _) = be.batch_norm_bwd(&*held.read(be)?, dy, xd, Some(&invstd), &unit)?;
                Ok(vec![Some(dx)])
            }),
        );
        self.nodes[out.0].saved = Some(ys);
        Ok(out)
    }

    /// Eval-mode batch norm (running statistics).
    pub fn batch_norm_eval(
        &mut self,
        x: Var,
        affine: Option<(Var, Var)>,
        running_mean: &Tensor<B>,
        running_var: &Tensor<B>,
        eps: f64,
    ) -> Result<Var> {
        let xd = self.nchw(x, "batch_norm")?;
        let (gamma, beta) = match affine {
            Some((g, b)) => (Some(self.value(g)?.clone()), Some(self.value(b)?.clone())),
            None => (None, None),
        };
        let aff = gamma
            .as_ref()
            .zip(beta.as_ref())
            .map(|(g, b)| (&*g.buf, &*b.buf));
        let y = self.backend.batch_norm_eval_fwd(
            &self.value(x)?.buf,
            xd,
            aff,
            &running_mean.buf,
            &running_var.buf,
            eps,
        )?;
        // Eval-mode backward (used when fine-tuning with frozen statistics) is a per-channel
        // scale: dx = dy * gamma / sqrt(running_var + eps). Gamma/beta gradients are not offered.
        let (rv, gm) = (running_var.clone(), gamma);
        let mut parents = vec![x];
        if let Some((g, b)) = affine {
            parents.extend([g, b]);
        }
        let n_parents = parents.len();
        Ok(self.push(
            Tensor::new(y, xd.shape()),
            &parents,
            Box::new(move |be, dy, need, _| {
                if need.iter().skip(1).any(|&n| n) {
                    return Err(Error::invalid(
                        "batch_norm",
                        "gamma/beta gradients through eval-mode batch norm are not supported",
                    ));
                }
                let var = be.download(&rv.buf)?;
                let g = match &gm {
                    Some(g) => be.download(&g.buf)?,
                    None => vec![B::Elem::ONE; xd.c],
                };
                let scale: Vec<B::Elem> = (0..xd.c)
                    .map(|c| B::Elem::from_f64(g[c].to_f64() / (var[c].to_f64() + eps).sqrt()))
                    .collect();
                // The eval forward with mean 0, variance 1, eps 0 and gamma = scale is exactly dy * scale.
                let (scale, zeros, ones) = (
                    be.upload(&scale)?,
                    be.zeros(xd.c)?,
                    be.upload(&vec![B::Elem::ONE; xd.c])?,
                );
                let dx =
                    be.batch_norm_eval_fwd(dy, xd, Some((&scale, &zeros)), &zeros, &ones, 0.0)?;
                let mut out = vec![Some(dx)];
                out.extend((1..n_parents).map(|_| None));
                Ok(out)
            }),
        ))
    }
}
