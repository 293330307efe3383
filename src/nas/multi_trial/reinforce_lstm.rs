//! REINFORCE with an LSTM controller (Zoph and Le 2017, ENAS): the controller (`lstm.rs`)
//! samples an architecture decision by decision, reward = its score, and Adam (`optim::Adam`
//! over the controller's `ParamStore`, PyTorch's rule) descends
//! `-(reward - baseline) * log p(arch) - entropy_coef * H`, one update per query. The
//! baseline, its decay, the learning rate and the entropy coefficient are REINFORCE's
//! (`ReinforceConfig`, the per-decision policy's settings); only the controller differs.
//!
//! Under a constraint, draws outside it are redrawn (not queried, no update), as `reinforce.rs`.

use super::lstm::LstmController;
use super::reinforce::{check_pending, MovingAverage, Pending, ReinforceConfig};
use super::snapshot::{parse, restore_store, save_store, to_value, SavedStore};
use super::{Strategy, MAX_TRIES};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nas::space::SearchSpace;
use crate::optim::Adam;
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// REINFORCE-LSTM's settings: REINFORCE's, and the controller's size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LstmReinforceConfig {
    #[serde(flatten)]
    pub reinforce: ReinforceConfig,
    /// The LSTM's hidden size, also its embeddings' (ENAS: 64; 32 keeps a query, sampling
    /// and update, near 1.4 ms on the CPU for NB201's 6 decisions: BENCHMARKS.md).
    pub hidden: usize,
}

impl Default for LstmReinforceConfig {
    fn default() -> Self {
        LstmReinforceConfig {
            reinforce: ReinforceConfig::default(),
            hidden: 32,
        }
    }
}

impl LstmReinforceConfig {
    pub fn validate(&self) -> Result<()> {
        self.reinforce.validate()?;
        if !(1..=4096).contains(&self.hidden) {
            return Err(Error::invalid(
                "--lstm-hidden",
                format!("{} is not in 1..=4096", self.hidden),
            ));
        }
        Ok(())
    }
}

/// REINFORCE on an LSTM controller, ask-and-tell.
pub struct ReinforceLstm<B: Backend> {
    config: LstmReinforceConfig,
    controller: LstmController<B>,
    adam: Adam<B>,
    baseline: MovingAverage,
    pending: Pending,
}

impl<B: Backend> ReinforceLstm<B> {
    /// A controller for `space` on `backend`, its weights drawn from `rng`.
    pub fn new<S: SearchSpace>(
        space: &S,
        config: LstmReinforceConfig,
        backend: B,
        rng: &mut Rng,
    ) -> Result<Self> {
        config.validate()?;
        let controller = LstmController::new(backend, space.choices(), config.hidden, rng)?;
        // PyTorch's Adam defaults (betas 0.9, 0.999; eps 1e-8), as the host Adam of
        // `reinforce.rs`, no weight decay.
        let adam = Adam::new(
            controller.backend(),
            controller.store(),
            (0.9, 0.999),
            1e-8,
            0.0,
        )?;
        Ok(ReinforceLstm {
            baseline: MovingAverage::new(config.reinforce.baseline_decay),
            pending: Vec::new(),
            config,
            controller,
            adam,
        })
    }

    pub fn controller(&self) -> &LstmController<B> {
        &self.controller
    }

    /// The baseline's current value (None before the first reward).
    pub fn baseline(&self) -> Option<f64> {
        self.baseline.value()
    }
}

impl<S: SearchSpace, B: Backend> Strategy<S> for ReinforceLstm<B> {
    fn propose(
        &mut self,
        space: &S,
        rng: &mut Rng,
        accept: &dyn Fn(&S::Arch) -> bool,
    ) -> Result<Option<S::Arch>> {
        for _ in 0..MAX_TRIES {
            let arch = space.decode(&self.controller.sample(rng)?)?;
            if accept(&arch) {
                return Ok(Some(arch));
            }
        }
        Err(Error::invalid(
            "constraint",
            "the LSTM controller drew no architecture that satisfies it",
        ))
    }

    fn observe(&mut self, space: &S, arch: &S::Arch, reward: f64) -> Result<()> {
        self.baseline.update(reward);
        let advantage = reward - self.baseline.value().unwrap_or(reward);
        self.pending.push((space.encode(arch), advantage));
        let r = &self.config.reinforce;
        if self.pending.len() < r.batch {
            return Ok(());
        }
        // The batch's mean loss: its gradient is the mean of the draws' gradients.
        let backend = self.controller.backend().clone();
        let scale = 1.0 / self.pending.len() as f64;
        let mut mean: Option<Vec<Tensor<B>>> = None;
        for (decisions, advantage) in self.pending.drain(..) {
            let (_, grads) = self
                .controller
                .loss_and_gradient(&decisions, advantage, r.entropy)?;
            match &mut mean {
                None if r.batch == 1 => mean = Some(grads),
                None => {
                    let mut m = Vec::with_capacity(grads.len());
                    for g in &grads {
                        m.push(Tensor::new(backend.scale(&g.buf, scale)?, g.shape.clone()));
                    }
                    mean = Some(m);
                }
                Some(m) => {
                    for (acc, g) in m.iter_mut().zip(&grads) {
                        backend.axpy(acc.buf_mut("a controller gradient")?, scale, &g.buf)?;
                    }
                }
            }
        }
        let grads = mean.ok_or_else(|| Error::invalid("--controller-batch", "an empty batch"))?;
        self.adam
            .step(&backend, self.controller.store_mut(), &grads, r.lr)
    }

    fn snapshot(&self, _space: &S) -> Result<serde_json::Value> {
        let b = self.controller.backend();
        to_value(&LstmState {
            weights: save_store(b, self.controller.store())?,
            adam_step: self.adam.step,
            exp_avg: save_store(b, &self.adam.exp_avg)?,
            exp_avg_sq: save_store(b, &self.adam.exp_avg_sq)?,
            baseline: self.baseline.clone(),
            pending: self.pending.clone(),
        })
    }

    fn restore(&mut self, space: &S, state: &serde_json::Value) -> Result<()> {
        let saved: LstmState = parse(state, "REINFORCE-LSTM")?;
        check_pending(space, &saved.pending, self.config.reinforce.batch)?;
        let b = self.controller.backend().clone();
        restore_store(&b, self.controller.store_mut(), &saved.weights, "weights")?;
        restore_store(&b, &mut self.adam.exp_avg, &saved.exp_avg, "exp_avg")?;
        restore_store(
            &b,
            &mut self.adam.exp_avg_sq,
            &saved.exp_avg_sq,
            "exp_avg_sq",
        )?;
        self.adam.step = saved.adam_step;
        self.baseline = saved.baseline;
        self.pending = saved.pending;
        Ok(())
    }
}

/// REINFORCE-LSTM's snapshot: the controller's weights, Adam's moments and step (its
/// settings are the run's), the baseline, the scores of the batch not yet applied.
#[derive(Serialize, Deserialize)]
struct LstmState {
    weights: SavedStore,
    adam_step: u64,
    exp_avg: SavedStore,
    exp_avg_sq: SavedStore,
    baseline: MovingAverage,
    pending: Pending,
}
