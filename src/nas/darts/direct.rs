//! The direct step API: steps on device batches, run as they are (no staging, no graphs),
//! and what they report. [`Darts::weight_step`], [`Darts::arch_gradient`] /
//! [`Darts::arch_step`] and their `_report` forms ([`ArchStepReport`]: the gradient Adam
//! takes and, second order, its [`UnrolledParts`]), [`Darts::apply_arch_gradient`],
//! [`Darts::iteration_report`] (both steps in `iteration`'s order) and [`Darts::evaluate`].

use super::step_io::{DeviceBatch, StepOutputs, StepStats};
use super::Darts;
use crate::autograd::{ParamStore, Tape};
use crate::backend::Backend;
use crate::error::Result;
use crate::nas::modules::Mode;
use crate::tensor::Tensor;

/// What one architecture step computed, in the terms of PyTorch DARTS' `Architect`
/// (`architect.py`). Alpha tensors are per-edge rows in `net.arch` order (PyTorch's
/// [edges, ops] view: `SearchNetwork::alpha_grad_table`), weight tensors in `net.weights`
/// order.
pub struct ArchStepReport<B: Backend> {
    /// The validation batch's loss and correct count (at the unrolled weights w' for the
    /// second order).
    pub stats: StepStats,
    /// The weight learning rate the step was given: the unrolled step's `xi` (PyTorch's
    /// `eta`).
    pub xi: f64,
    /// The learning rate Adam stepped the alphas with (`DartsHyper::arch_lr`); `None` when
    /// only the gradient was computed ([`Darts::arch_gradient_report`]).
    pub arch_lr: Option<f64>,
    /// The architecture gradient Adam takes: `grad_alpha L_val(w, alpha)` (first order), or
    /// `unrolled.dalpha - xi * unrolled.implicit` (second order; computed as one expression on
    /// the device, so the sum of the parts may differ from it in the last bit).
    pub dalpha: Vec<Tensor<B>>,
    /// The second-order parts; `None` for the first order.
    pub unrolled: Option<UnrolledParts<B>>,
}

/// The parts of the second-order architecture gradient (`_backward_step_unrolled`).
pub struct UnrolledParts<B: Backend> {
    /// `w' = w - xi (momentum * v + grad_w L_train(w) + wd * w)` (`_compute_unrolled_model`).
    pub weights: ParamStore<B>,
    /// `grad_alpha L_val(w', alpha)`: PyTorch's `dalpha` before the implicit term.
    pub dalpha: Vec<Tensor<B>>,
    /// `grad_w' L_val(w', alpha)`: PyTorch's `vector`.
    pub dw: Vec<Tensor<B>>,
    /// `||dw||`, the global L2 norm of `dw`.
    pub dw_norm: f64,
    /// The finite-difference step `R = hvp_radius / ||dw||` (0 when `||dw||` is 0, which
    /// makes the implicit term 0).
    pub r: f64,
    /// `(grad_alpha L_train(w + R dw) - grad_alpha L_train(w - R dw)) / 2R`: PyTorch's
    /// `implicit_grads` (`_hessian_vector_product`), before the factor `-xi`.
    pub implicit: Vec<Tensor<B>>,
}

/// [`ArchStepReport`] and the weight step's statistics of one [`Darts::iteration_report`].
pub struct IterationReport<B: Backend> {
    /// The weight step's training-batch statistics.
    pub weights: StepStats,
    /// The architecture step, taken first.
    pub arch: ArchStepReport<B>,
}

impl<B: Backend> Darts<B> {
    /// One SGD step of the weights on a training batch (clipped to `grad_clip`) with
    /// learning rate `lr` (the current epoch's, [`DartsHyper::lr_at`](super::DartsHyper::lr_at)), run directly (see
    /// `weight_step_staged` for the captured path). Its forward updates the BN running
    /// statistics. Returns the training batch's statistics (before the step).
    pub fn weight_step(&mut self, batch: &DeviceBatch<B>, lr: f64) -> Result<StepStats> {
        let mut out = StepOutputs::new(&self.backend, Some("gradient norm"))?;
        self.queue_weight_step(batch, lr, &mut out)?;
        out.read(&self.backend, "training")
    }

    /// The architecture gradient for this order (without stepping), run directly. `lr` is
    /// the current weight learning rate (the unrolled step's `xi`).
    pub fn arch_gradient(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<(StepStats, Vec<Tensor<B>>)> {
        let mut out = StepOutputs::new(&self.backend, Some("unrolled validation gradient norm"))?;
        let mut dalpha = self.net.arch.zeros_like(&self.backend)?.into_tensors();
        self.queue_arch_gradient(train, val, lr, &mut out, &mut dalpha, false)?;
        Ok((out.read(&self.backend, "validation")?, dalpha))
    }

    /// The architecture gradient for this order with its parts (see [`ArchStepReport`]),
    /// without stepping, run directly. `lr` is the current weight learning rate (`xi`). The
    /// gradient is the one [`Self::arch_gradient`] gives, bit for bit; keeping the
    /// second-order parts costs a copy of the weights and a few alpha-sized tensors.
    pub fn arch_gradient_report(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<ArchStepReport<B>> {
        let be = self.backend.clone();
        let mut out = StepOutputs::new(&be, Some("unrolled validation gradient norm"))?;
        let mut dalpha = self.net.arch.zeros_like(&be)?.into_tensors();
        let raw = self.queue_arch_gradient(train, val, lr, &mut out, &mut dalpha, true)?;
        let stats = out.read(&be, "validation")?;
        let unrolled = match raw {
            Some(raw) => Some(raw.read(&be, self.hyper.hvp_radius)?),
            None => None,
        };
        Ok(ArchStepReport {
            stats,
            xi: lr,
            arch_lr: None,
            dalpha,
            unrolled,
        })
    }

    /// One Adam step of the alphas (learning rate `DartsHyper::arch_lr`) from the
    /// architecture gradient for this order, run directly; `lr` is the current weight
    /// learning rate (the unrolled step's `xi`; unused by the first order). Returns the
    /// validation-batch statistics. [`Self::arch_step_report`] returns the gradient too.
    pub fn arch_step(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<StepStats> {
        let (stats, dalpha) = self.arch_gradient(train, val, lr)?;
        self.apply_arch_gradient(&dalpha)?;
        Ok(stats)
    }

    /// [`Self::arch_step`], returning the gradient it took and its parts (the unrolled
    /// gradient, R, the implicit term): PyTorch's `architect.step`, bit for bit the same
    /// alphas as `arch_step`.
    pub fn arch_step_report(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<ArchStepReport<B>> {
        let mut report = self.arch_gradient_report(train, val, lr)?;
        self.apply_arch_gradient(&report.dalpha)?;
        report.arch_lr = Some(self.hyper.arch_lr);
        Ok(report)
    }

    /// One Adam step of the alphas (learning rate `DartsHyper::arch_lr`) along `dalpha`, an
    /// architecture gradient in `net.arch` order (e.g. [`ArchStepReport::dalpha`], or a
    /// gradient computed elsewhere).
    pub fn apply_arch_gradient(&mut self, dalpha: &[Tensor<B>]) -> Result<()> {
        self.arch_opt.step(
            &self.backend,
            &mut self.net.arch,
            dalpha,
            self.hyper.arch_lr,
        )
    }

    /// A full DARTS iteration on device batches, run directly: [`Self::arch_step_report`]
    /// on (`train`, `val`), then [`Self::weight_step`] on `train`, both at the weight
    /// learning rate `lr`; the same order and the same results (bit for bit on the CPU) as
    /// [`Self::iteration`], plus the architecture step's parts.
    pub fn iteration_report(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
    ) -> Result<IterationReport<B>> {
        let arch = self.arch_step_report(train, val, lr)?;
        let weights = self.weight_step(train, lr)?;
        Ok(IterationReport { weights, arch })
    }

    /// Loss and accuracy over batches in eval mode (running statistics, no gradients).
    pub fn evaluate(&mut self, batch: &DeviceBatch<B>) -> Result<StepStats> {
        let mut tape = Tape::new(self.backend.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.images.clone());
        let logits = self.net.run(&mut tape, x, Mode::EVAL, None)?;
        let loss = tape.softmax_cross_entropy(logits, &batch.labels)?;
        let mut out = StepOutputs::new(&self.backend, None)?;
        let correct = tape.count_correct(logits, &batch.labels)?;
        out.record(&self.backend, tape.value(loss)?, &correct, batch.len())?;
        out.read(&self.backend, "evaluation")
    }
}
