//! The DARTS search strategy: alternating architecture steps (Adam on the alphas, from a
//! validation batch) and weight steps (SGD on the weights, from a training batch).
//!
//! - First order: `dalpha = grad_alpha L_val(w, alpha)`.
//! - Second order (the DARTS paper's unrolled step, as its reference code computes it):
//!   `w' = w - xi (momentum * v + grad_w L_train(w) + wd * w)` (one virtual SGD step with the
//!   weight optimizer's momentum and decay; `xi` = the current weight learning rate), then
//!   `dalpha = grad_alpha L_val(w', alpha) - xi * H`, where the Hessian-vector product
//!   `H = grad^2_{alpha,w} L_train(w) . grad_w' L_val(w')` is estimated by central
//!   differences `(grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)) / 2 eps`
//!   with `v = grad_w' L_val` and `eps = 0.01 / ||v||` (`hvp_radius`).
//!
//! Architecture-step forwards use batch statistics but leave the BN running statistics
//! alone; only weight steps update them.

use super::modules::Mode;
use super::search_model::SearchNetwork;
use crate::autograd::{ParamStore, Tape};
use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::optim::{clip_grad_norm, Adam, Sgd};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The DARTS paper's search hyper-parameters (defaults from its CIFAR-10 search).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DartsHyper {
    pub lr_max: f64,
    pub lr_min: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub arch_lr: f64,
    pub arch_betas: (f64, f64),
    pub arch_weight_decay: f64,
    /// 1 = first order, 2 = second order (unrolled).
    pub order: u8,
    /// The finite-difference Hessian-vector product steps `eps = hvp_radius / ||v||` (0.01).
    pub hvp_radius: f64,
}

impl Default for DartsHyper {
    fn default() -> Self {
        DartsHyper {
            lr_max: 0.025,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            arch_lr: 3e-4,
            arch_betas: (0.5, 0.999),
            arch_weight_decay: 1e-3,
            order: 1,
            hvp_radius: 0.01,
        }
    }
}

/// One batch on the device: images [n, c, h, w] and host labels.
pub struct DeviceBatch<B: Backend> {
    pub images: Tensor<B>,
    pub labels: Vec<u32>,
}

impl<B: Backend> DeviceBatch<B> {
    /// Uploads a host batch (normalised f32 images) to the device.
    pub fn from_batch(backend: &B, batch: &crate::data::Batch) -> Result<Self> {
        let host: Vec<B::Elem> = batch
            .images
            .iter()
            .map(|&v| B::Elem::from_f64(v as f64))
            .collect();
        Ok(DeviceBatch {
            images: Tensor::from_host(backend, &host, batch.dims().shape())?,
            labels: batch.labels.clone(),
        })
    }
}

/// Loss and number of correct predictions of one forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    pub correct: usize,
    pub count: usize,
}

/// Number of rows of `logits` [n, k] whose arg-max equals the label.
pub fn count_correct<B: Backend>(backend: &B, logits: &Tensor<B>, labels: &[u32]) -> Result<usize> {
    let (n, k) = logits.shape.matrix("accuracy")?;
    let host = logits.to_f64(backend)?;
    Ok((0..n)
        .filter(|&i| {
            let row = &host[i * k..(i + 1) * k];
            let best = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            labels.get(i) == Some(&(best as u32))
        })
        .count())
}

/// A copy of `weights` moved by `a * direction` (the finite-difference points `w +- eps v`).
fn shifted<B: Backend>(
    be: &B,
    weights: &ParamStore<B>,
    direction: &[Tensor<B>],
    a: f64,
) -> Result<ParamStore<B>> {
    let mut w = weights.deep_copy(be)?;
    for (id, g) in weights.ids().zip(direction) {
        let name = weights.name(id).to_string();
        be.axpy(w.get_mut(id).buf_mut(&name)?, a, &g.buf)?;
    }
    Ok(w)
}

pub struct Darts<B: Backend> {
    pub backend: B,
    pub net: SearchNetwork<B>,
    pub hyper: DartsHyper,
    pub weight_opt: Sgd<B>,
    pub arch_opt: Adam<B>,
}

impl<B: Backend> Darts<B> {
    pub fn new(backend: B, net: SearchNetwork<B>, hyper: DartsHyper) -> Result<Self> {
        if hyper.order != 1 && hyper.order != 2 {
            return Err(Error::invalid(
                "--order",
                format!("{} (expected 1 or 2)", hyper.order),
            ));
        }
        let weight_opt = Sgd::new(&backend, &net.weights, hyper.momentum, hyper.weight_decay)?;
        let arch_opt = Adam::new(
            &backend,
            &net.arch,
            hyper.arch_betas,
            1e-8,
            hyper.arch_weight_decay,
        )?;
        Ok(Darts {
            backend,
            net,
            hyper,
            weight_opt,
            arch_opt,
        })
    }

    /// Forward + backward of the loss on `batch`; gradients of the weights and/or alphas
    /// as `mode` asks, with the network's weights replaced by `weights` if given.
    #[allow(clippy::type_complexity)]
    fn loss_grads(
        &mut self,
        batch: &DeviceBatch<B>,
        mode: Mode,
        weights: Option<&ParamStore<B>>,
    ) -> Result<(StepStats, Option<Vec<Tensor<B>>>, Option<Vec<Tensor<B>>>)> {
        let mut tape = Tape::new(self.backend.clone());
        let x = tape.constant(batch.images.clone());
        let logits = self.net.run(&mut tape, x, mode, weights)?;
        let loss = tape.softmax_cross_entropy(logits, &batch.labels)?;
        let loss_value = tape.scalar(loss, "loss")?;
        let correct = count_correct(&self.backend, tape.value(logits), &batch.labels)?;
        let grads = tape.backward(loss)?;
        let gw = if mode.grad_weights {
            Some(grads.params(&self.backend, weights.unwrap_or(&self.net.weights))?)
        } else {
            None
        };
        let ga = if mode.grad_arch {
            Some(grads.params(&self.backend, &self.net.arch)?)
        } else {
            None
        };
        drop(grads);
        tape.clear();
        Ok((
            StepStats {
                loss: loss_value,
                correct,
                count: batch.labels.len(),
            },
            gw,
            ga,
        ))
    }

    /// One SGD step of the weights on a training batch (clipped to `grad_clip`).
    pub fn weight_step(&mut self, batch: &DeviceBatch<B>, lr: f64) -> Result<StepStats> {
        let (stats, gw, _) = self.loss_grads(batch, Mode::WEIGHT_STEP, None)?;
        let mut gw = gw.ok_or_else(|| Error::invalid("weight step", "no weight gradients"))?;
        clip_grad_norm(&self.backend, &mut gw, self.hyper.grad_clip)?;
        self.weight_opt
            .step(&self.backend, &mut self.net.weights, &gw, lr)?;
        Ok(stats)
    }

    /// The architecture gradient for this order (without stepping). `lr` is the current
    /// weight learning rate (the unrolled step's `xi`).
    pub fn arch_gradient(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<(StepStats, Vec<Tensor<B>>)> {
        if self.hyper.order == 1 {
            let (stats, _, ga) = self.loss_grads(val, Mode::ARCH_STEP, None)?;
            return Ok((
                stats,
                ga.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
            ));
        }
        let be = self.backend.clone();
        // w' = w - xi (momentum * v + g + wd * w)
        let grad_only = Mode {
            grad_weights: true,
            grad_arch: false,
            ..Mode::ARCH_STEP
        };
        let (_, g_train, _) = self.loss_grads(train, grad_only, None)?;
        let g_train = g_train.ok_or_else(|| Error::invalid("arch step", "no weight gradients"))?;
        let mut unrolled = self.net.weights.deep_copy(&be)?;
        for ((id, g), v) in self
            .net
            .weights
            .ids()
            .zip(&g_train)
            .zip(self.weight_opt.state.tensors())
        {
            let name = self.net.weights.name(id).to_string();
            let w = unrolled.get_mut(id).buf_mut(&name)?;
            let wd = self.hyper.weight_decay;
            be.scale_assign(w, 1.0 - lr * wd)?;
            be.axpy(w, -lr, &g.buf)?;
            be.axpy(w, -lr * self.hyper.momentum, &v.buf)?;
        }
        drop(g_train);
        // grad of L_val at (w', alpha), for both w' and alpha.
        let both = Mode {
            grad_weights: true,
            grad_arch: true,
            ..Mode::ARCH_STEP
        };
        let (stats, dw, da) = self.loss_grads(val, both, Some(&unrolled))?;
        drop(unrolled);
        let (dw, mut dalpha) = (
            dw.ok_or_else(|| Error::invalid("arch step", "no weight gradients"))?,
            da.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
        );
        let bufs: Vec<&B::Storage> = dw.iter().map(|g| &*g.buf).collect();
        let norm = be.sum_squares_many(&bufs)?.sqrt();
        if !norm.is_finite() {
            return Err(Error::NonFinite(format!(
                "unrolled validation gradient norm is {norm}"
            )));
        }
        if norm > 0.0 {
            let eps = self.hyper.hvp_radius / norm;
            let alpha_only = Mode::ARCH_STEP;
            let w_plus = shifted(&be, &self.net.weights, &dw, eps)?;
            let (_, _, g_plus) = self.loss_grads(train, alpha_only, Some(&w_plus))?;
            drop(w_plus);
            let w_minus = shifted(&be, &self.net.weights, &dw, -eps)?;
            let (_, _, g_minus) = self.loss_grads(train, alpha_only, Some(&w_minus))?;
            drop(w_minus);
            let (g_plus, g_minus) = (
                g_plus.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
                g_minus.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
            );
            // dalpha -= xi * (g+ - g-) / (2 eps)
            let c = lr / (2.0 * eps);
            for ((d, gp), gm) in dalpha.iter_mut().zip(&g_plus).zip(&g_minus) {
                let buf = d.buf_mut("alpha gradient")?;
                be.axpy(buf, -c, &gp.buf)?;
                be.axpy(buf, c, &gm.buf)?;
            }
        }
        Ok((stats, dalpha))
    }

    /// One Adam step of the alphas. Returns the validation-batch statistics.
    pub fn arch_step(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<StepStats> {
        let (stats, dalpha) = self.arch_gradient(train, val, lr)?;
        self.arch_opt.step(
            &self.backend,
            &mut self.net.arch,
            &dalpha,
            self.hyper.arch_lr,
        )?;
        Ok(stats)
    }

    /// A full DARTS iteration: architecture step on `val`, then weight step on `train`.
    pub fn iteration(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<(StepStats, StepStats)> {
        let arch = self.arch_step(train, val, lr)?;
        let weights = self.weight_step(train, lr)?;
        Ok((weights, arch))
    }

    /// Loss and accuracy over batches in eval mode (running statistics, no gradients).
    pub fn evaluate(&mut self, batch: &DeviceBatch<B>) -> Result<StepStats> {
        let mut tape = Tape::new(self.backend.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.images.clone());
        let logits = self.net.run(&mut tape, x, Mode::EVAL, None)?;
        let loss = tape.softmax_cross_entropy(logits, &batch.labels)?;
        let loss_value = tape.scalar(loss, "evaluation loss")?;
        let correct = count_correct(&self.backend, tape.value(logits), &batch.labels)?;
        Ok(StepStats {
            loss: loss_value,
            correct,
            count: batch.labels.len(),
        })
    }
}
