//! The staged step API: host batches copied into fixed device buffers ([`Darts::stage`]),
//! then [`Darts::iteration`] / [`Darts::iteration_staged`] and the two staged steps. On a
//! device with graphs each step body is captured once and replayed (`run_step`), captured
//! again when what the graph froze changes (`GraphKey`, `Darts::graph_key`).

use super::step_io::{DeviceBatch, StepOutputs, StepStats};
use super::Darts;
use crate::autograd::Precision;
use crate::backend::Backend;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::nas::search_model::SearchNetwork;
use crate::tensor::Tensor;

/// The buffers a captured step reads and writes besides the network's own: the staged
/// batches, the statistics, the architecture gradient, and the graphs themselves.
pub(super) struct StepBuffers<B: Backend> {
    train: Option<DeviceBatch<B>>,
    val: Option<DeviceBatch<B>>,
    weight_out: StepOutputs<B>,
    arch_out: StepOutputs<B>,
    arch_grads: Vec<Tensor<B>>,
    weight_graph: Option<(GraphKey, B::Graph)>,
    arch_graph: Option<(GraphKey, B::Graph)>,
}

impl<B: Backend> StepBuffers<B> {
    /// No staged batches or graphs yet; outputs and an alpha gradient for `net`.
    pub(super) fn new(backend: &B, net: &SearchNetwork<B>) -> Result<Self> {
        Ok(StepBuffers {
            train: None,
            val: None,
            weight_out: StepOutputs::new(backend, Some("gradient norm"))?,
            arch_out: StepOutputs::new(backend, Some("unrolled validation gradient norm"))?,
            arch_grads: net
                .arch
                .ids()
                .map(|id| Tensor::zeros(backend, net.arch.get(id).shape.clone()))
                .collect::<Result<_>>()?,
            weight_graph: None,
            arch_graph: None,
        })
    }
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

impl<B: Backend> Darts<B> {
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
    /// learning rate `lr` (the current epoch's: [`DartsHyper::lr_at`](super::DartsHyper::lr_at)). On a device with
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
