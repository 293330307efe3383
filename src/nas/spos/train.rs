//! SPOS training: which path each batch trains ([`PathSampler`]) and the step that trains it
//! ([`SposTrainer`]): forward of the path, cross-entropy, backward, gradient clipping and an
//! SGD update of the path's weights only (the others have no gradient and are left as they
//! are, PyTorch's rule for a `.grad` of None).

use super::Supernet;
use crate::autograd::{ParamId, Tape};
use crate::backend::{norm_scalars, Backend, Element, ScalarRef};
use crate::error::{Error, Result};
use crate::nas::darts::{DeviceBatch, StepStats};
use crate::nas::space::SearchSpace;
use crate::nas::Mode;
use crate::optim::{grad_norm_scalars, Sgd};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// How paths are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sampling {
    /// Every decision uniform and independent (SPOS).
    Uniform,
    /// Every value of every decision trained equally often: each decision walks through a
    /// fresh random permutation of its values (FairNAS's strict fairness, per decision).
    Fair,
}

impl Sampling {
    pub fn parse(s: &str) -> Result<Sampling> {
        match s {
            "uniform" => Ok(Sampling::Uniform),
            "fair" => Ok(Sampling::Fair),
            other => Err(Error::invalid(
                "--sampling",
                format!("'{other}' (expected uniform or fair)"),
            )),
        }
    }
}

/// Draws the path of each training batch, seeded. Its whole state is `rng` and the fair
/// queues, so a checkpoint that keeps it resumes the same sequence.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PathSampler {
    pub sampling: Sampling,
    pub rng: Rng,
    /// Per decision, the values still to be used in the current permutation (fair only).
    queues: Vec<Vec<usize>>,
}

/// Draws at most this many paths to find one a constraint accepts.
const MAX_REJECTIONS: usize = 10_000;

impl PathSampler {
    pub fn new(sampling: Sampling, seed: u64) -> PathSampler {
        PathSampler {
            sampling,
            rng: Rng::fork(seed, "spos paths"),
            queues: Vec::new(),
        }
    }

    fn draw<S: SearchSpace>(&mut self, space: &S) -> Result<S::Arch> {
        match self.sampling {
            Sampling::Uniform => Ok(space.sample(&mut self.rng)),
            Sampling::Fair => {
                let choices = space.choices();
                if self.queues.len() != choices.len() {
                    self.queues = vec![Vec::new(); choices.len()];
                }
                let mut d = Vec::with_capacity(choices.len());
                for (q, &c) in self.queues.iter_mut().zip(choices) {
                    if q.is_empty() {
                        *q = (0..c).collect();
                        self.rng.shuffle(q);
                    }
                    d.push(q.pop().unwrap_or(0));
                }
                space.decode(&d)
            }
        }
    }

    /// The next path that `accept` accepts (all, when no constraint is set).
    pub fn next<S: SearchSpace>(
        &mut self,
        space: &S,
        accept: &dyn Fn(&S::Arch) -> bool,
    ) -> Result<S::Arch> {
        for _ in 0..MAX_REJECTIONS {
            let a = self.draw(space)?;
            if accept(&a) {
                return Ok(a);
            }
        }
        Err(Error::invalid(
            "path limits (--params-min/-max, --flops-min/-max)",
            format!("no path of {MAX_REJECTIONS} drawn lies in them"),
        ))
    }
}

/// Hyper-parameters of SPOS training (SGD with momentum, cosine schedule per epoch).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SposHyper {
    pub lr_max: f64,
    pub lr_min: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
}

impl Default for SposHyper {
    /// DARTS' weight-training settings (the supernet is DARTS' own network).
    fn default() -> Self {
        SposHyper {
            lr_max: 0.025,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
        }
    }
}

/// A supernet and its optimizer.
pub struct SposTrainer<B: Backend, N: Supernet<B>> {
    pub backend: B,
    pub net: N,
    pub opt: Sgd<B>,
    pub hyper: SposHyper,
}

impl<B: Backend, N: Supernet<B>> SposTrainer<B, N> {
    pub fn new(backend: B, net: N, hyper: SposHyper) -> Result<Self> {
        let opt = Sgd::new(&backend, net.weights(), hyper.momentum, hyper.weight_decay)?;
        Ok(SposTrainer {
            backend,
            net,
            opt,
            hyper,
        })
    }

    /// Trains `path` on `batch` at learning rate `lr`: one forward, backward and update.
    pub fn step(
        &mut self,
        batch: &DeviceBatch<B>,
        path: &<N::Space as SearchSpace>::Arch,
        lr: f64,
    ) -> Result<StepStats> {
        let mut tape = Tape::new(self.backend.clone());
        let x = tape.constant(batch.images.clone());
        let logits = self.net.run_path(&mut tape, x, Mode::WEIGHT_STEP, path)?;
        let loss = tape.softmax_cross_entropy(logits, &batch.labels)?;
        let loss_value = tape.scalar(loss, "loss")?;
        if !loss_value.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss_value}")));
        }
        let correct = tape.count_correct(logits, &batch.labels)?;
        let correct = correct.to_f64(&self.backend)?[0].round() as usize;
        let grads = tape.backward(loss)?;
        let weights = self.net.weights();
        let gw: Vec<(ParamId, Tensor<B>)> = weights
            .ids()
            .filter_map(|id| grads.param(weights, id).map(|g| (id, g.clone())))
            .collect();
        drop(grads);
        tape.clear();
        let only: Vec<Tensor<B>> = gw.iter().map(|(_, g)| g.clone()).collect();
        let norms = grad_norm_scalars(&self.backend, &only, self.hyper.grad_clip)?;
        drop(only);
        let norm = self.backend.download(&norms)?[norm_scalars::NORM].to_f64();
        if !norm.is_finite() {
            return Err(Error::NonFinite(format!("gradient norm is {norm}")));
        }
        let clip = ScalarRef {
            buf: &norms,
            index: norm_scalars::CLIP_COEF,
        };
        self.opt
            .step_some(&self.backend, self.net.weights_mut(), &gw, lr, Some(clip))?;
        Ok(StepStats {
            loss: loss_value,
            correct,
            count: batch.len(),
        })
    }
}
