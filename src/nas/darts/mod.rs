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
//! Architecture-step forwards use batch statistics but, by default, leave the BN running
//! statistics alone; only weight steps update them (one forward per iteration). PyTorch's
//! DARTS updates them in every training-mode forward of the real network: 2 per first-order
//! iteration (validation batch, then training batch), 4 per second-order one (training batch
//! at w, at w + R v and at w - R v, then the weight step; the unrolled forward runs on a copy).
//! `DartsHyper::arch_step_updates_bn` does the same. Either way the search itself (weights,
//! alphas, losses) is bit for bit the same, since training-mode BN normalises with batch
//! statistics; only the running statistics (eval-mode validation, the checkpoint) and
//! `num_batches_tracked` differ. The default keeps them an average over the training half at
//! the current weights, not over the validation half and the perturbed weights w +- R v,
//! which no network is ever evaluated with.
//!
//! The step API: [`Darts::iteration`] (host batches: staged, captured on a GPU) or, on
//! device batches run directly, [`Darts::arch_step`] / [`Darts::arch_step_report`] (the
//! architecture step, the report exposing the unrolled gradient, R and the implicit term) and
//! [`Darts::weight_step`]; [`Darts::iteration_report`] is both in `iteration`'s order. Every
//! step takes `lr`, the weight learning rate of the current epoch
//! ([`DartsHyper::lr_at`]); the alphas' Adam uses `DartsHyper::arch_lr`.
//!
//! `DartsHyper::activations` picks how every step's tape keeps saved activations (f32, or
//! bf16 storage with f32 arithmetic; see `autograd::Tape::release_activations`), the staged
//! and captured steps included.
//!
//! Each step's device work is one body (`queue_weight_step`, `queue_arch_gradient`) that
//! reads nothing back to the host: it writes its loss, correct count and gradient norm into
//! `StepOutputs`, read after the step. The direct API (`weight_step`, `arch_step`) runs the
//! bodies as they are; the staged API (`stage`, then `iteration_staged`) copies the batches
//! into fixed buffers and, on a device with graphs, captures each body once and replays it
//! (`run_step`), re-capturing when what the graph froze changes (`GraphKey`).
//!
//! The files: `hyper.rs` the hyper-parameters, `step_io.rs` a step's batches and outputs,
//! `arch_gradient.rs` the first- and second-order architecture gradient, `direct.rs` the
//! direct steps and their reports, `staged.rs` the staged and captured steps; this file the
//! strategy itself (its optimizers, the shared forward + backward, the weight step's body).

mod arch_gradient;
mod direct;
mod hyper;
mod staged;
mod step_io;

pub use direct::{ArchStepReport, IterationReport, UnrolledParts};
pub use hyper::DartsHyper;
pub use step_io::{DeviceBatch, StepOutputs, StepStats};

use super::modules::Mode;
use super::search_model::SearchNetwork;
use crate::autograd::{ParamStore, Tape};
use crate::backend::{norm_scalars, Backend, ScalarRef};
use crate::error::{Error, Result};
use crate::optim::{grad_norm_scalars, Adam, Sgd};
use crate::tensor::Tensor;
use staged::StepBuffers;

/// The DARTS search strategy over a [`SearchNetwork`]: its two optimizers and the buffers of
/// the staged (captured) steps. Embed it as
///
/// ```no_run
/// # use nasrs::nas::darts::{Darts, DartsHyper, DeviceBatch};
/// # use nasrs::nas::{SearchConfig, SearchNetwork};
/// # fn f(train: DeviceBatch<nasrs::Cpu<f32>>, val: DeviceBatch<nasrs::Cpu<f32>>) -> nasrs::Result<()> {
/// let be = nasrs::Cpu::new();
/// let net = SearchNetwork::new(&be, SearchConfig::default().channels(4).layers(5), 0)?;
/// let mut darts = Darts::new(be.clone(), net, DartsHyper { order: 2, ..DartsHyper::default() })?;
/// let lr = darts.hyper.lr_at(0, 50);
/// let it = darts.iteration_report(&train, &val, lr)?;
/// let r = it.arch.unrolled.as_ref().map(|u| u.r);
/// let dalpha_normal = darts.net.alpha_grad_table(&be, &it.arch.dalpha, false)?; // [14, 8]
/// # Ok(()) }
/// ```
pub struct Darts<B: Backend> {
    pub backend: B,
    pub net: SearchNetwork<B>,
    pub hyper: DartsHyper,
    /// SGD of the weights (momentum buffers in `state`).
    pub weight_opt: Sgd<B>,
    /// Adam of the alphas; [`Darts::apply_arch_gradient`] steps it.
    pub arch_opt: Adam<B>,
    /// Capture the staged steps (`iteration`, `weight_step_staged`) in graphs and replay
    /// them, where the device has graphs (a GPU). On by default; results are the same
    /// either way.
    pub use_graphs: bool,
    /// `None` only while a staged step has it out.
    steps: Option<StepBuffers<B>>,
    /// Why a graph capture failed, if one did (steps then run directly).
    graph_error: Option<String>,
}

impl<B: Backend> Darts<B> {
    /// The strategy over `net` with fresh optimizers; an order other than 1 or 2 is an
    /// error naming `--order`.
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
        let steps = StepBuffers::new(&backend, &net)?;
        Ok(Darts {
            backend,
            net,
            hyper,
            weight_opt,
            arch_opt,
            use_graphs: true,
            steps: Some(steps),
            graph_error: None,
        })
    }

    /// Forward + backward of the loss on `batch`; gradients of the weights and/or alphas
    /// as `mode` asks, with the network's weights replaced by `weights` if given. The loss
    /// and correct count go to `out` if given. Queues device work only (no host reads).
    #[allow(clippy::type_complexity)]
    fn loss_grads(
        &mut self,
        batch: &DeviceBatch<B>,
        mode: Mode,
        weights: Option<&ParamStore<B>>,
        out: Option<&mut StepOutputs<B>>,
    ) -> Result<(Option<Vec<Tensor<B>>>, Option<Vec<Tensor<B>>>)> {
        let mut tape = Tape::new(self.backend.clone());
        tape.set_activations(self.hyper.activations);
        let x = tape.constant(batch.images.clone());
        let logits = self.net.run(&mut tape, x, mode, weights)?;
        let loss = tape.softmax_cross_entropy(logits, &batch.labels)?;
        if let Some(out) = out {
            let correct = tape.count_correct(logits, &batch.labels)?;
            out.record(&self.backend, tape.value(loss)?, &correct, batch.len())?;
        }
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
        Ok((gw, ga))
    }

    /// Queues one SGD step of the weights on `batch`, clipped to `grad_clip` with the
    /// coefficient computed and applied on the device (fused into the update).
    fn queue_weight_step(
        &mut self,
        batch: &DeviceBatch<B>,
        lr: f64,
        out: &mut StepOutputs<B>,
    ) -> Result<()> {
        let (gw, _) = self.loss_grads(batch, Mode::WEIGHT_STEP, None, Some(out))?;
        let gw = gw.ok_or_else(|| Error::invalid("weight step", "no weight gradients"))?;
        let norms = grad_norm_scalars(&self.backend, &gw, self.hyper.grad_clip)?;
        out.record_norm(&self.backend, &norms)?;
        let clip = ScalarRef {
            buf: &norms,
            index: norm_scalars::CLIP_COEF,
        };
        self.weight_opt
            .step(&self.backend, &mut self.net.weights, &gw, lr, Some(clip))
    }
}
