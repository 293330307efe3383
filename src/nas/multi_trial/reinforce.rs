//! REINFORCE (Williams, 1992) on a per-decision categorical policy, as NAS-Bench-201's
//! baseline runs it: sample an architecture, reward = its score, and ascend
//! `(reward - baseline) * grad log p(arch) + entropy_coef * grad H` with Adam, one update per
//! query. The baseline is NB201's exponential moving average (bias-corrected, updated with
//! the reward before the advantage is taken). Defaults: Adam lr 0.01 (NATS-Bench's
//! REINFORCE), baseline decay 0.9 (NB201's momentum), no entropy bonus (NB201 has none).
//!
//! Under a constraint, draws outside it are redrawn (not queried, no update); the update then
//! uses the unconstrained policy's log-probability of the accepted draw.
//!
//! `batch` m > 1 is Zoph and Le's controller batch: m architectures are drawn from the same
//! policy and one update ascends the mean of their m directions, so that m trials can train
//! at once ([`ReinforceConfig::may_propose`] tells a driver when the batch is full). Each
//! reward still updates the baseline in turn and its advantage is taken then; m = 1 is the
//! update per query above.

use super::policy::CategoricalPolicy;
use super::snapshot::{mismatch, parse, to_value};
use super::{adam::Adam, Strategy, MAX_TRIES};
use crate::error::{Error, Result};
use crate::nas::space::SearchSpace;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// REINFORCE's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReinforceConfig {
    /// Adam's learning rate on the logits.
    pub lr: f64,
    /// The moving-average baseline's decay (NB201's momentum).
    pub baseline_decay: f64,
    /// The entropy bonus's coefficient.
    pub entropy: f64,
    /// Architectures drawn from one policy per update (Zoph and Le's m).
    #[serde(default = "one")]
    pub batch: usize,
}

fn one() -> usize {
    1
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        ReinforceConfig {
            lr: 0.01,
            baseline_decay: 0.9,
            entropy: 0.0,
            batch: 1,
        }
    }
}

impl ReinforceConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(
                "--lr",
                format!("{} is not a positive rate", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.baseline_decay) {
            return Err(Error::invalid(
                "--baseline-decay",
                format!("{} is not in [0, 1)", self.baseline_decay),
            ));
        }
        if !(self.entropy.is_finite() && self.entropy >= 0.0) {
            return Err(Error::invalid(
                "--entropy",
                format!("{} is not a coefficient >= 0", self.entropy),
            ));
        }
        if !(1..=4096).contains(&self.batch) {
            return Err(Error::invalid(
                "--controller-batch",
                format!("{} is not in 1..=4096", self.batch),
            ));
        }
        Ok(())
    }

    /// Whether the strategy may draw its next architecture after `proposed` draws and
    /// `observed` scores: not while a full batch waits for its scores (the next draw must
    /// come from the updated policy). A function of the counts alone, so that a driver
    /// replaying a journal knows it without running the strategy.
    pub fn may_propose(&self, proposed: usize, observed: usize) -> bool {
        proposed < (observed / self.batch + 1) * self.batch
    }
}

/// The scores of a batch not yet applied: each draw's decisions and advantage.
pub type Pending = Vec<(Vec<usize>, f64)>;

/// An exponential moving average with bias correction (NB201's `ExponentialMovingAverage`):
/// `sum_k d^(n-k) (1-d) x_k / sum_k d^(n-k) (1-d)`, so the first value is the first reward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovingAverage {
    decay: f64,
    numerator: f64,
    denominator: f64,
}

impl MovingAverage {
    pub fn new(decay: f64) -> Self {
        MovingAverage {
            decay,
            numerator: 0.0,
            denominator: 0.0,
        }
    }

    pub fn update(&mut self, x: f64) {
        self.numerator = self.decay * self.numerator + (1.0 - self.decay) * x;
        self.denominator = self.decay * self.denominator + (1.0 - self.decay);
    }

    /// The average so far (None before the first update).
    pub fn value(&self) -> Option<f64> {
        (self.denominator > 0.0).then(|| self.numerator / self.denominator)
    }
}

/// The ascent direction of one sample, flat as [`CategoricalPolicy::flat`]:
/// `advantage * grad log p(decisions) + entropy_coef * grad H`. Its expectation over the
/// policy is the gradient of `E[reward] + entropy_coef * H` for any baseline.
pub fn sample_gradient(
    policy: &CategoricalPolicy,
    decisions: &[usize],
    advantage: f64,
    entropy_coef: f64,
) -> Vec<f64> {
    let lp = policy.log_prob_grad(decisions);
    let mut g: Vec<f64> = lp.iter().flatten().map(|&x| advantage * x).collect();
    if entropy_coef != 0.0 {
        for (gi, h) in g.iter_mut().zip(policy.entropy_grad().iter().flatten()) {
            *gi += entropy_coef * h;
        }
    }
    g
}

/// REINFORCE, ask-and-tell.
#[derive(Clone, Debug)]
pub struct Reinforce {
    config: ReinforceConfig,
    policy: CategoricalPolicy,
    adam: Adam,
    baseline: MovingAverage,
    pending: Pending,
}

impl Reinforce {
    /// The uniform policy over `space`'s decisions.
    pub fn new<S: SearchSpace>(space: &S, config: ReinforceConfig) -> Result<Self> {
        config.validate()?;
        let policy = CategoricalPolicy::uniform(space.choices());
        Ok(Reinforce {
            adam: Adam::new(policy.flat().len(), config.lr),
            baseline: MovingAverage::new(config.baseline_decay),
            pending: Vec::new(),
            policy,
            config,
        })
    }

    pub fn policy(&self) -> &CategoricalPolicy {
        &self.policy
    }

    /// The baseline's current value (None before the first reward).
    pub fn baseline(&self) -> Option<f64> {
        self.baseline.value()
    }
}

impl<S: SearchSpace> Strategy<S> for Reinforce {
    fn propose(
        &mut self,
        space: &S,
        rng: &mut Rng,
        accept: &dyn Fn(&S::Arch) -> bool,
    ) -> Result<Option<S::Arch>> {
        for _ in 0..MAX_TRIES {
            let arch = space.decode(&self.policy.sample(rng))?;
            if accept(&arch) {
                return Ok(Some(arch));
            }
        }
        Err(Error::invalid(
            "constraint",
            "the policy drew no architecture that satisfies it",
        ))
    }

    fn observe(&mut self, space: &S, arch: &S::Arch, reward: f64) -> Result<()> {
        self.baseline.update(reward);
        let advantage = reward - self.baseline.value().unwrap_or(reward);
        self.pending.push((space.encode(arch), advantage));
        if self.pending.len() < self.config.batch {
            return Ok(());
        }
        let m = self.pending.len() as f64;
        let mut descent = vec![0.0; self.policy.flat().len()];
        for (decisions, advantage) in self.pending.drain(..) {
            let ascent = sample_gradient(&self.policy, &decisions, advantage, self.config.entropy);
            // Adam minimizes: the loss is the negated objective, averaged over the batch.
            for (d, g) in descent.iter_mut().zip(ascent) {
                *d -= g / m;
            }
        }
        let mut flat = self.policy.flat();
        self.adam.step(&mut flat, &descent);
        self.policy.set_flat(&flat);
        Ok(())
    }

    fn snapshot(&self, _space: &S) -> Result<serde_json::Value> {
        to_value(&ReinforceState {
            policy: self.policy.clone(),
            adam: self.adam.clone(),
            baseline: self.baseline.clone(),
            pending: self.pending.clone(),
        })
    }

    fn restore(&mut self, space: &S, state: &serde_json::Value) -> Result<()> {
        let saved: ReinforceState = parse(state, "REINFORCE")?;
        let shape = |p: &CategoricalPolicy| p.logits.iter().map(Vec::len).collect::<Vec<_>>();
        if shape(&saved.policy) != space.choices() {
            return Err(mismatch(format!(
                "a policy over {:?} values where the {} space has {:?}",
                shape(&saved.policy),
                space.name(),
                space.choices()
            )));
        }
        if !saved.adam.fits(saved.policy.flat().len()) {
            return Err(mismatch("Adam's moments do not match the policy's logits"));
        }
        check_pending(space, &saved.pending, self.config.batch)?;
        self.policy = saved.policy;
        self.adam = saved.adam;
        // The settings are the run's (its config), the moments the snapshot's.
        self.adam.lr = self.config.lr;
        self.baseline = saved.baseline;
        self.pending = saved.pending;
        Ok(())
    }
}

/// Refuses a restored batch that could not have been pending: a full one, or decisions
/// outside the space.
pub(crate) fn check_pending<S: SearchSpace>(
    space: &S,
    pending: &Pending,
    batch: usize,
) -> Result<()> {
    if pending.len() >= batch {
        return Err(mismatch(format!(
            "{} scores pending in a batch of {batch}",
            pending.len()
        )));
    }
    for (decisions, _) in pending {
        space.decode(decisions)?;
    }
    Ok(())
}

/// REINFORCE's snapshot: the logits, Adam's moments and step, the baseline, the scores of
/// the batch not yet applied.
#[derive(Serialize, Deserialize)]
struct ReinforceState {
    policy: CategoricalPolicy,
    adam: Adam,
    baseline: MovingAverage,
    pending: Pending,
}
