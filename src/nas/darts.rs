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

use super::modules::Mode;
use super::search_model::SearchNetwork;
use crate::autograd::{ParamStore, Precision, Tape};
use crate::backend::{norm_scalars, Backend, Element, ScalarRef};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::optim::{grad_norm_scalars, Adam, Sgd};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The DARTS paper's search hyper-parameters (defaults from its CIFAR-10 search).
///
/// Which learning rate a step uses: the weight steps (and the unrolled step's `xi`) use the
/// `lr` passed to each step ([`Darts::iteration`], [`Darts::weight_step`], ...), which a
/// search run sets per epoch to [`DartsHyper::lr_at`]: the cosine schedule from `lr_max`
/// (epoch 0) down towards `lr_min`. No step reads `lr_max` or `lr_min` itself. The alphas'
/// Adam always uses `arch_lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DartsHyper {
    /// The weights' learning rate at epoch 0: the start of the cosine schedule (`--lr`).
    pub lr_max: f64,
    /// Where the cosine schedule ends (reached after the last epoch).
    pub lr_min: f64,
    /// SGD momentum of the weights.
    pub momentum: f64,
    /// SGD (L2) weight decay of the weights.
    pub weight_decay: f64,
    /// The weight gradient's global norm is clipped to this in every weight step.
    pub grad_clip: f64,
    /// Adam's learning rate for the alphas, constant: what every architecture step uses
    /// (`--arch-lr`).
    pub arch_lr: f64,
    pub arch_betas: (f64, f64),
    /// Adam's L2 weight decay of the alphas.
    pub arch_weight_decay: f64,
    /// 1 = first order, 2 = second order (unrolled).
    pub order: u8,
    /// The finite-difference Hessian-vector product steps `eps = hvp_radius / ||v||` (0.01).
    pub hvp_radius: f64,
    /// How the activations saved for backward are stored once the forward is past them
    /// (`--activations`; f32 when absent from an older config).
    #[serde(default)]
    pub activations: Precision,
    /// Whether the architecture step's training-mode forwards update the BN running
    /// statistics and `num_batches_tracked`, as PyTorch's DARTS does (1 forward per first-order
    /// step, 3 per second-order one; see [`DartsHyper::arch_step_bn_forwards`]). Off by
    /// default (and when absent from an older config): only weight steps update them; why in
    /// the module docs. Weights, alphas and losses are the same either way.
    #[serde(default)]
    pub arch_step_updates_bn: bool,
}

impl DartsHyper {
    /// The weights' learning rate for `epoch` of `epochs` (from 0): the cosine schedule
    /// from `lr_max` to `lr_min` (PyTorch's `CosineAnnealingLR`), what a search run passes to
    /// every step of that epoch.
    pub fn lr_at(&self, epoch: usize, epochs: usize) -> f64 {
        crate::optim::cosine_lr(self.lr_max, self.lr_min, epoch, epochs)
    }

    /// How many forwards of one architecture step update the BN running statistics: 0
    /// unless `arch_step_updates_bn`, then 1 (first order: the validation batch) or 3
    /// (second order: the training batch at w, w + R v and w - R v). A weight step adds 1.
    pub fn arch_step_bn_forwards(&self) -> u64 {
        match (self.arch_step_updates_bn, self.order) {
            (false, _) => 0,
            (true, 1) => 1,
            (true, _) => 3,
        }
    }
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
            activations: Precision::F32,
            arch_step_updates_bn: false,
        }
    }
}

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

/// The second-order parts as the device left them (the norms not yet read).
struct RawParts<B: Backend> {
    weights: ParamStore<B>,
    dalpha: Vec<Tensor<B>>,
    dw: Vec<Tensor<B>>,
    implicit: Vec<Tensor<B>>,
    norms: B::Storage,
}

impl<B: Backend> RawParts<B> {
    fn read(self, be: &B, radius: f64) -> Result<UnrolledParts<B>> {
        let n = be.download(&self.norms)?;
        Ok(UnrolledParts {
            weights: self.weights,
            dalpha: self.dalpha,
            dw: self.dw,
            dw_norm: n[norm_scalars::NORM].to_f64(),
            r: radius * n[norm_scalars::INV_NORM].to_f64(),
            implicit: self.implicit,
        })
    }
}

fn copy_all<B: Backend>(be: &B, ts: &[Tensor<B>]) -> Result<Vec<Tensor<B>>> {
    ts.iter()
        .map(|t| Ok(Tensor::new(be.copy(&t.buf)?, t.shape.clone())))
        .collect()
}

/// One batch on the device: images [n, c, h, w] and their labels.
pub struct DeviceBatch<B: Backend> {
    pub images: Tensor<B>,
    pub labels: Arc<B::Labels>,
    pub classes: usize,
}

impl<B: Backend> DeviceBatch<B> {
    /// Uploads a host batch (normalised f32 images, labels below `classes`) to the device.
    pub fn from_batch(backend: &B, batch: &Batch, classes: usize) -> Result<Self> {
        Ok(DeviceBatch {
            images: Tensor::from_host(backend, &host_images::<B>(batch), batch.dims().shape())?,
            labels: Arc::new(backend.upload_labels(&batch.labels, classes)?),
            classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.images.shape.dims().first().copied().unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `batch` into this batch's buffers, which keep their device addresses (what a
    /// captured step reads). `Ok(false)`, with nothing copied, when the shapes differ.
    pub fn stage(&mut self, backend: &B, batch: &Batch) -> Result<bool> {
        if self.images.shape != batch.dims().shape() {
            return Ok(false);
        }
        backend.upload_into(
            self.images.buf_mut("staged images")?,
            &host_images::<B>(batch),
        )?;
        let labels = Arc::get_mut(&mut self.labels).ok_or_else(|| {
            Error::invalid(
                "staged labels",
                "still shared (a tape holding them was not cleared)",
            )
        })?;
        backend.upload_labels_into(labels, &batch.labels, self.classes)?;
        Ok(true)
    }
}

fn host_images<B: Backend>(batch: &Batch) -> Vec<B::Elem> {
    batch
        .images
        .iter()
        .map(|&v| B::Elem::from_f64(v as f64))
        .collect()
}

/// Loss and number of correct predictions of one forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    pub correct: usize,
    pub count: usize,
}

/// Where a step leaves its statistics on the device: the loss, the number of correct
/// predictions and, for steps that compute one, the [`norm_scalars`] of a gradient. Allocated
/// once, so a captured step writes them at fixed addresses; read after the step with one
/// round trip per value.
pub struct StepOutputs<B: Backend> {
    loss: B::Storage,
    correct: B::Storage,
    norm: Option<B::Storage>,
    /// What the norm is of, for the error when it is not finite.
    norm_of: &'static str,
    /// Whether the last step wrote the norm (a first-order architecture step has none).
    norm_recorded: bool,
    count: usize,
}

impl<B: Backend> StepOutputs<B> {
    fn new(be: &B, norm_of: Option<&'static str>) -> Result<Self> {
        Ok(StepOutputs {
            loss: be.zeros(1)?,
            correct: be.zeros(1)?,
            norm: match norm_of {
                Some(_) => Some(be.zeros(norm_scalars::LEN)?),
                None => None,
            },
            norm_of: norm_of.unwrap_or(""),
            norm_recorded: false,
            count: 0,
        })
    }

    /// Queues the copies of a forward pass's loss and correct count.
    fn record(
        &mut self,
        be: &B,
        loss: &Tensor<B>,
        correct: &Tensor<B>,
        count: usize,
    ) -> Result<()> {
        be.copy_into(&mut self.loss, &loss.buf)?;
        be.copy_into(&mut self.correct, &correct.buf)?;
        self.count = count;
        self.norm_recorded = false;
        Ok(())
    }

    /// Queues the copy of a gradient's norm scalars.
    fn record_norm(&mut self, be: &B, norms: &B::Storage) -> Result<()> {
        self.norm_recorded = true;
        match &mut self.norm {
            Some(n) => be.copy_into(n, norms),
            None => Err(Error::invalid(
                "step outputs",
                "this step keeps no gradient norm",
            )),
        }
    }

    /// The statistics on the host; a NaN or infinite loss or gradient norm is an error.
    fn read(&self, be: &B, what: &str) -> Result<StepStats> {
        let loss = be.download(&self.loss)?[0].to_f64();
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("{what} loss is {loss}")));
        }
        if let Some(n) = self.norm.as_ref().filter(|_| self.norm_recorded) {
            let norm = be.download(n)?[norm_scalars::NORM].to_f64();
            if !norm.is_finite() {
                return Err(Error::NonFinite(format!("{} is {norm}", self.norm_of)));
            }
        }
        let correct = be.download(&self.correct)?[0].to_f64();
        Ok(StepStats {
            loss,
            correct: correct.round() as usize,
            count: self.count,
        })
    }
}

/// A copy of `weights` moved by `a * s * direction` with `s` a device scalar (the
/// finite-difference points `w +- eps v`, `eps` computed on the device).
fn shifted<B: Backend>(
    be: &B,
    weights: &ParamStore<B>,
    direction: &[Tensor<B>],
    a: f64,
    s: &B::Storage,
    index: usize,
) -> Result<ParamStore<B>> {
    let mut w = weights.deep_copy(be)?;
    for (id, g) in weights.ids().zip(direction) {
        let name = weights.name(id).to_string();
        be.axpy_scaled(
            w.get_mut(id).buf_mut(&name)?,
            a,
            ScalarRef { buf: s, index },
            &g.buf,
        )?;
    }
    Ok(w)
}

/// The buffers a captured step reads and writes besides the network's own: the staged
/// batches, the statistics, the architecture gradient, and the graphs themselves.
struct StepBuffers<B: Backend> {
    train: Option<DeviceBatch<B>>,
    val: Option<DeviceBatch<B>>,
    weight_out: StepOutputs<B>,
    arch_out: StepOutputs<B>,
    arch_grads: Vec<Tensor<B>>,
    weight_graph: Option<(GraphKey, B::Graph)>,
    arch_graph: Option<(GraphKey, B::Graph)>,
}

/// What a captured graph froze: the learning rate (an argument of its kernels), the order,
/// the activation precision, the device addresses of every persistent buffer it touches,
/// and the other hyper-parameters its kernels take. Any change means a new capture.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct GraphKey {
    lr_bits: u64,
    order: u8,
    activations: Precision,
    buffers: u64,
    hyper: u64,
}

/// Runs `body` as a graph where the device has graphs (captured on first use, or again when
/// `key` changes; then replayed), and directly where it has none. A capture that fails is
/// recorded in `graph_error` and the step, and every later one, runs directly: a graph is a
/// speed-up, never a reason to stop a search (the error is reported by `nasrs bench`).
fn run_step<B: Backend>(
    be: &B,
    slot: &mut Option<(GraphKey, B::Graph)>,
    key: GraphKey,
    use_graphs: bool,
    graph_error: &mut Option<String>,
    body: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    if !use_graphs || graph_error.is_some() {
        *slot = None;
        return body();
    }
    if let Some((k, g)) = slot.as_ref() {
        if *k == key {
            return be.replay(g);
        }
    }
    // Free the old graph's memory before capturing the new one.
    *slot = None;
    match be.capture(body) {
        Ok(Some(g)) => {
            be.replay(&g)?;
            *slot = Some((key, g));
            Ok(())
        }
        Ok(None) => body(),
        Err(e) => {
            // Nothing ran while capturing, so running the body now is the whole step.
            *graph_error = Some(e.to_string());
            body()
        }
    }
}

/// The DARTS search strategy over a [`SearchNetwork`]: its two optimizers and the buffers of
/// the staged (captured) steps. Embed it as
///
/// ```no_run
/// # use nasrs::nas::darts::{Darts, DartsHyper, DeviceBatch};
/// # use nasrs::nas::{SearchConfig, SearchNetwork};
/// # fn f(train: DeviceBatch<nasrs::Cpu<f32>>, val: DeviceBatch<nasrs::Cpu<f32>>) -> nasrs::Result<()> {
/// let be = nasrs::Cpu::<f32>::new();
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
        let steps = StepBuffers {
            train: None,
            val: None,
            weight_out: StepOutputs::new(&backend, Some("gradient norm"))?,
            arch_out: StepOutputs::new(&backend, Some("unrolled validation gradient norm"))?,
            arch_grads: net
                .arch
                .ids()
                .map(|id| Tensor::zeros(&backend, net.arch.get(id).shape.clone()))
                .collect::<Result<_>>()?,
            weight_graph: None,
            arch_graph: None,
        };
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

    /// Queues the architecture gradient for this order into `dalpha_out`. `lr` is the
    /// current weight learning rate (the unrolled step's `xi`). With `keep_parts` (direct
    /// steps only) the second-order parts are kept too; the gradient is the same either way.
    fn queue_arch_gradient(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
        out: &mut StepOutputs<B>,
        dalpha_out: &mut [Tensor<B>],
        keep_parts: bool,
    ) -> Result<Option<RawParts<B>>> {
        let be = self.backend.clone();
        let store = |dalpha: Vec<Tensor<B>>, dst: &mut [Tensor<B>]| -> Result<()> {
            for (d, g) in dst.iter_mut().zip(&dalpha) {
                be.copy_into(d.buf_mut("alpha gradient")?, &g.buf)?;
            }
            Ok(())
        };
        // The forwards of the real network (not the unrolled copy's) update the running
        // statistics if asked, as PyTorch's do.
        let arch_mode = Mode {
            update_running: self.hyper.arch_step_updates_bn,
            ..Mode::ARCH_STEP
        };
        if self.hyper.order == 1 {
            let (_, ga) = self.loss_grads(val, arch_mode, None, Some(out))?;
            let ga = ga.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?;
            return store(ga, dalpha_out).map(|()| None);
        }
        // w' = w - xi (momentum * v + g + wd * w)
        let grad_only = Mode {
            grad_weights: true,
            grad_arch: false,
            ..arch_mode
        };
        let (g_train, _) = self.loss_grads(train, grad_only, None, None)?;
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
        let (dw, da) = self.loss_grads(val, both, Some(&unrolled), Some(out))?;
        let unrolled = keep_parts.then_some(unrolled);
        let (dw, mut dalpha) = (
            dw.ok_or_else(|| Error::invalid("arch step", "no weight gradients"))?,
            da.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
        );
        let unrolled_dalpha = match keep_parts {
            true => Some(copy_all(&be, &dalpha)?),
            false => None,
        };
        // eps = radius / ||dw|| stays on the device: the shifts scale dw by radius * (1 /
        // ||dw||), and the correction xi / (2 eps) = xi ||dw|| / (2 radius). A zero norm gives
        // zero shifts and a zero correction (the host rule "skip when ||dw|| = 0").
        let norms = grad_norm_scalars(&be, &dw, f64::INFINITY)?;
        out.record_norm(&be, &norms)?;
        let radius = self.hyper.hvp_radius;
        let w_plus = shifted(
            &be,
            &self.net.weights,
            &dw,
            radius,
            &norms,
            norm_scalars::INV_NORM,
        )?;
        let (_, g_plus) = self.loss_grads(train, arch_mode, Some(&w_plus), None)?;
        drop(w_plus);
        let w_minus = shifted(
            &be,
            &self.net.weights,
            &dw,
            -radius,
            &norms,
            norm_scalars::INV_NORM,
        )?;
        let (_, g_minus) = self.loss_grads(train, arch_mode, Some(&w_minus), None)?;
        drop(w_minus);
        let dw = keep_parts.then_some(dw);
        let (g_plus, g_minus) = (
            g_plus.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
            g_minus.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
        );
        // dalpha -= xi * (g+ - g-) / (2 eps)
        let c = lr / (2.0 * radius);
        let norm = |buf| ScalarRef {
            buf,
            index: norm_scalars::NORM,
        };
        for ((d, gp), gm) in dalpha.iter_mut().zip(&g_plus).zip(&g_minus) {
            let buf = d.buf_mut("alpha gradient")?;
            be.axpy_scaled(buf, -c, norm(&norms), &gp.buf)?;
            be.axpy_scaled(buf, c, norm(&norms), &gm.buf)?;
        }
        store(dalpha, dalpha_out)?;
        let (Some(weights), Some(dalpha), Some(dw)) = (unrolled, unrolled_dalpha, dw) else {
            return Ok(None);
        };
        // implicit = (g+ - g-) / 2R = (g+ - g-) ||dw|| / (2 radius)
        let mut implicit = Vec::with_capacity(g_plus.len());
        for (gp, gm) in g_plus.iter().zip(&g_minus) {
            let mut t = Tensor::zeros(&be, gp.shape.clone())?;
            let buf = t.buf_mut("implicit gradient")?;
            be.axpy_scaled(buf, 0.5 / radius, norm(&norms), &gp.buf)?;
            be.axpy_scaled(buf, -0.5 / radius, norm(&norms), &gm.buf)?;
            implicit.push(t);
        }
        Ok(Some(RawParts {
            weights,
            dalpha,
            dw,
            implicit,
            norms: be.copy(&norms)?,
        }))
    }

    /// One SGD step of the weights on a training batch (clipped to `grad_clip`) with
    /// learning rate `lr` (the current epoch's, [`DartsHyper::lr_at`]), run directly (see
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

    /// Copies host batches into the device buffers the staged steps read (allocated on
    /// first use, and again if the batch shape changes, e.g. a smaller last batch).
    pub fn stage(&mut self, train: &Batch, val: &Batch) -> Result<()> {
        let be = self.backend.clone();
        let classes = self.net.config.classes;
        let steps = self.steps_mut()?;
        for (slot, batch) in [(&mut steps.train, train), (&mut steps.val, val)] {
            let staged = match slot {
                Some(b) => b.stage(&be, batch)?,
                None => false,
            };
            if !staged {
                *slot = Some(DeviceBatch::from_batch(&be, batch, classes)?);
            }
        }
        Ok(())
    }

    /// A full DARTS iteration on host batches: stages them, then the architecture step on
    /// `val` (and `train`, second order) and the weight step on `train`, at the weight
    /// learning rate `lr` (the current epoch's: [`DartsHyper::lr_at`]). On a device with
    /// graphs each step is captured once and replayed. Returns (weight-step,
    /// architecture-step) statistics; [`Self::iteration_report`] is the same on device
    /// batches, run directly, with the architecture step's parts.
    pub fn iteration(
        &mut self,
        train: &Batch,
        val: &Batch,
        lr: f64,
    ) -> Result<(StepStats, StepStats)> {
        self.stage(train, val)?;
        self.iteration_staged(lr)
    }

    /// A full DARTS iteration on the staged batches: architecture gradient (a graph where
    /// the device has them), Adam on the alphas, weight step (a graph). Two reads of the
    /// statistics are the only host round trips.
    pub fn iteration_staged(&mut self, lr: f64) -> Result<(StepStats, StepStats)> {
        let arch = self.arch_step_staged(lr)?;
        let weights = self.weight_step_staged(lr)?;
        Ok((weights, arch))
    }

    /// The architecture step on the staged batches (see `iteration_staged`).
    pub fn arch_step_staged(&mut self, lr: f64) -> Result<StepStats> {
        let mut steps = self.take_steps()?;
        let result = self.arch_step_with(&mut steps, lr);
        self.steps = Some(steps);
        result
    }

    /// The weight step on the staged training batch (a graph where the device has them).
    pub fn weight_step_staged(&mut self, lr: f64) -> Result<StepStats> {
        let mut steps = self.take_steps()?;
        let result = self.weight_step_with(&mut steps, lr);
        self.steps = Some(steps);
        result
    }

    fn arch_step_with(&mut self, steps: &mut StepBuffers<B>, lr: f64) -> Result<StepStats> {
        let be = self.backend.clone();
        let key = self.graph_key(steps, if self.hyper.order == 1 { 0.0 } else { lr });
        let StepBuffers {
            train,
            val,
            arch_out,
            arch_grads,
            arch_graph,
            ..
        } = steps;
        let (train, val) = staged(train.as_ref(), val.as_ref())?;
        let (use_graphs, mut graph_error) = (self.use_graphs, self.graph_error.take());
        let bn_before = self.net.bn_batches;
        let ran = run_step(
            &be,
            arch_graph,
            key,
            use_graphs,
            &mut graph_error,
            &mut || {
                self.queue_arch_gradient(train, val, lr, arch_out, arch_grads, false)
                    .map(|_| ())
            },
        );
        self.graph_error = graph_error;
        ran?;
        // A replayed graph runs no host code: count its running-statistics updates here.
        self.net.bn_batches = bn_before + self.hyper.arch_step_bn_forwards();
        let stats = arch_out.read(&be, "validation")?;
        self.arch_opt
            .step(&be, &mut self.net.arch, arch_grads, self.hyper.arch_lr)?;
        Ok(stats)
    }

    fn weight_step_with(&mut self, steps: &mut StepBuffers<B>, lr: f64) -> Result<StepStats> {
        let be = self.backend.clone();
        let key = self.graph_key(steps, lr);
        let StepBuffers {
            train,
            weight_out,
            weight_graph,
            ..
        } = steps;
        let train = train
            .as_ref()
            .ok_or_else(|| Error::invalid("weight step", "no staged batch (call stage first)"))?;
        let (use_graphs, mut graph_error) = (self.use_graphs, self.graph_error.take());
        let bn_before = self.net.bn_batches;
        let ran = run_step(
            &be,
            weight_graph,
            key,
            use_graphs,
            &mut graph_error,
            &mut || self.queue_weight_step(train, lr, weight_out),
        );
        self.graph_error = graph_error;
        ran?;
        self.net.bn_batches = bn_before + 1;
        weight_out.read(&be, "training")
    }

    /// The key a graph of the staged steps is valid for: the learning rate and order it
    /// froze, every other hyper-parameter a captured kernel takes as an argument (weight
    /// decay, momentum, gradient clip, the Hessian-vector radius, the optimizers' own) or
    /// that changes what it records (`arch_step_updates_bn`), and
    /// the device address and length of every persistent buffer it touches (weights, BN
    /// statistics, alphas, optimizer state, staged batches, outputs): loading a checkpoint,
    /// re-staging, or changing a public hyper-parameter forces a new capture. Device
    /// addresses, not the host handles' (`Arc::as_ptr`): a handle can be reused for a new
    /// device buffer, and the graph bakes in the device pointer.
    fn graph_key(&self, steps: &StepBuffers<B>, lr: f64) -> GraphKey {
        use std::hash::{Hash, Hasher};
        let be = &self.backend;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let stores = [
            &self.net.weights,
            &self.net.arch,
            &self.net.buffers,
            &self.weight_opt.state,
        ];
        let buffer = |t: &Tensor<B>, h: &mut std::collections::hash_map::DefaultHasher| {
            be.storage_addr(&t.buf).hash(h);
            be.len(&t.buf).hash(h);
        };
        for store in stores {
            for t in store.tensors() {
                buffer(t, &mut h);
            }
        }
        for b in [&steps.train, &steps.val].into_iter().flatten() {
            buffer(&b.images, &mut h);
            b.images.shape.dims().hash(&mut h);
            be.labels_addr(&b.labels).hash(&mut h);
            be.labels_len(&b.labels).hash(&mut h);
        }
        for t in &steps.arch_grads {
            buffer(t, &mut h);
        }
        let hy = &self.hyper;
        let (sgd, adam) = (&self.weight_opt, &self.arch_opt);
        let mut hyper = std::collections::hash_map::DefaultHasher::new();
        for v in [
            hy.momentum,
            hy.weight_decay,
            hy.grad_clip,
            hy.hvp_radius,
            hy.arch_betas.0,
            hy.arch_betas.1,
            hy.arch_weight_decay,
            sgd.momentum,
            sgd.weight_decay,
            adam.beta1,
            adam.beta2,
            adam.eps,
            adam.weight_decay,
        ] {
            v.to_bits().hash(&mut hyper);
        }
        hy.arch_step_updates_bn.hash(&mut hyper);
        GraphKey {
            lr_bits: lr.to_bits(),
            order: self.hyper.order,
            activations: self.hyper.activations,
            buffers: h.finish(),
            hyper: hyper.finish(),
        }
    }

    /// Why capturing a staged step in a graph failed, if it did (the steps then run
    /// directly; results are the same).
    pub fn graph_error(&self) -> Option<&str> {
        self.graph_error.as_deref()
    }

    /// Whether the staged steps run as graph replays (a device with graphs, `use_graphs`,
    /// and at least one staged step done).
    pub fn graphs_in_use(&self) -> bool {
        self.steps
            .as_ref()
            .is_some_and(|s| s.weight_graph.is_some() || s.arch_graph.is_some())
    }

    fn take_steps(&mut self) -> Result<StepBuffers<B>> {
        self.steps
            .take()
            .ok_or_else(|| Error::invalid("DARTS step", "a previous staged step failed midway"))
    }

    fn steps_mut(&mut self) -> Result<&mut StepBuffers<B>> {
        self.steps
            .as_mut()
            .ok_or_else(|| Error::invalid("DARTS step", "a previous staged step failed midway"))
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

/// Both staged batches, or an error saying `stage` was not called.
fn staged<'a, B: Backend>(
    train: Option<&'a DeviceBatch<B>>,
    val: Option<&'a DeviceBatch<B>>,
) -> Result<(&'a DeviceBatch<B>, &'a DeviceBatch<B>)> {
    match (train, val) {
        (Some(t), Some(v)) => Ok((t, v)),
        _ => Err(Error::invalid(
            "arch step",
            "no staged batches (call stage first)",
        )),
    }
}
