//! The DARTS search's hyper-parameters ([`DartsHyper`]): the paper's CIFAR-10 defaults, the
//! weights' cosine learning-rate schedule, and how many forwards of an architecture step
//! update the BN running statistics.

use crate::autograd::Precision;
use serde::{Deserialize, Serialize};

/// The DARTS paper's search hyper-parameters (defaults from its CIFAR-10 search).
///
/// Which learning rate a step uses: the weight steps (and the unrolled step's `xi`) use the
/// `lr` passed to each step ([`Darts::iteration`](super::Darts::iteration),
/// [`Darts::weight_step`](super::Darts::weight_step), ...), which a search run sets per epoch
/// to [`DartsHyper::lr_at`]: the cosine schedule from `lr_max` (epoch 0) down towards
/// `lr_min`. No step reads `lr_max` or `lr_min` itself. The alphas'
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
    /// the `darts` module docs. Weights, alphas and losses are the same either way.
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
