//! Multi-trial search: strategies that propose one architecture at a time, each scored on
//! its own (a table look-up here; training runs and supernet scores plug in the same way),
//! over any [`SearchSpace`], seeded and deterministic.
//!
//! A strategy is ask-and-tell ([`Strategy`]: `propose`, then `observe` its score), so that a
//! driver owns the loop, the budget and the constraint: [`search`] runs one to a budget of
//! queries and returns the whole history. Every proposal is a query, a repeat included (as
//! NB201's baselines count them: a re-proposed architecture is evaluated again), except for
//! random search, which never repeats itself.
//!
//! Files: `random.rs` (random search), `evolution.rs` (regularized / aging evolution),
//! `policy.rs` and `adam.rs` (a per-decision categorical policy and the Adam that trains it),
//! `reinforce.rs` (REINFORCE on that policy), `lstm.rs` and `reinforce_lstm.rs` (an LSTM
//! controller on the tape, and REINFORCE on it), `snapshot.rs` (a strategy's state as JSON),
//! `table.rs` (a tabular benchmark read from CSV),
//! `evaluator.rs` (a table as the score: metric, report and size limits), `run.rs` (a search
//! on a table as a run folder), `study.rs` (every strategy over many seeds, summarized);
//! the training evaluator: `trial.rs` (one training trial, spec in, result out),
//! `executor.rs` (trials as local processes), `slurm.rs` (trials as Slurm jobs),
//! `train_search.rs` (a search of training trials as a run folder with a crash-safe journal,
//! `journal.rs` its events and their reading on `--resume`, `latency_terms.rs` its latency
//! objective and Pareto front);
//! early stopping with epochs as the budget: `fidelity.rs` (rungs, brackets, the scheduler,
//! successive halving and Hyperband), `asha.rs` (ASHA), `curve_fit.rs` (pow3 learning-curve
//! fit) and `curve_stop.rs` (the learning-curve stopping rule).

pub mod adam;
pub mod asha;
pub mod curve_fit;
pub mod curve_stop;
pub mod evaluator;
pub mod evolution;
pub mod executor;
pub mod fidelity;
pub mod journal;
pub mod latency_terms;
pub mod lstm;
pub mod policy;
pub mod random;
pub mod reinforce;
pub mod reinforce_lstm;
pub mod run;
pub mod slurm;
pub mod snapshot;
pub mod study;
pub mod table;
pub mod train_search;
pub mod trial;

pub use evaluator::{default_table, SizePenalty, TableEvaluator, TableSpec, MNAS_WEIGHT};
pub use evolution::{AgingConfig, AgingEvolution};
pub use random::RandomSearch;
pub use reinforce::{Reinforce, ReinforceConfig};
pub use reinforce_lstm::{LstmReinforceConfig, ReinforceLstm};
pub use table::Table;

use crate::backend::cpu::Cpu;
use crate::error::{Error, Result};
use crate::nas::history::Scored;
use crate::nas::space::SearchSpace;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Room reserved up front for a budget or a population given by a flag: a huge one grows as
/// it fills instead of failing to allocate before the first query.
pub(crate) const RESERVE_MAX: usize = 1 << 16;

/// Draws a strategy tries before deciding that no architecture satisfies the constraint.
pub const MAX_TRIES: usize = 10_000;

/// A search strategy, asked for one architecture at a time and told its score.
pub trait Strategy<S: SearchSpace> {
    /// The next architecture to query, inside `accept`; None when the strategy has nothing
    /// left to propose (random search over an exhausted space).
    fn propose(
        &mut self,
        space: &S,
        rng: &mut Rng,
        accept: &dyn Fn(&S::Arch) -> bool,
    ) -> Result<Option<S::Arch>>;

    /// The score of the architecture `propose` returned last; under the training search's
    /// driver with several trials in flight (`train_search.rs`; REINFORCE up to its batch),
    /// the score of the oldest proposal not yet observed: scores come in
    /// proposal order, after later proposals were made. With early stopping (`fidelity.rs`)
    /// it is the score at the architecture's first (smallest) budget.
    fn observe(&mut self, space: &S, arch: &S::Arch, score: f64) -> Result<()>;

    /// The strategy's whole state as JSON: what it learned and holds (the architectures it
    /// has seen, its population, its controller's weights and optimizer moments), not its
    /// settings and not the generator it is handed. The training search journals it after
    /// every score (`train_search.rs`), so that `--resume` continues from it.
    fn snapshot(&self, space: &S) -> Result<serde_json::Value>;

    /// Sets the state [`Strategy::snapshot`] returned, on a strategy built with the same
    /// settings for the same space. A state that does not fit (another strategy's, another
    /// space's) is an error naming what differs, after which the strategy is not to be used.
    fn restore(&mut self, space: &S, state: &serde_json::Value) -> Result<()>;
}

/// Runs `strategy` for `budget` queries (fewer only when it runs out of proposals), each
/// scored by `score`; returns every query in order. A non-finite score stops the search
/// with an error naming the architecture.
pub fn search<S: SearchSpace>(
    space: &S,
    strategy: &mut dyn Strategy<S>,
    budget: usize,
    rng: &mut Rng,
    accept: &dyn Fn(&S::Arch) -> bool,
    score: &mut dyn FnMut(&S::Arch) -> Result<f64>,
) -> Result<Vec<Scored<S::Arch>>> {
    if budget == 0 {
        return Err(Error::invalid("--budget", "must be at least 1 query"));
    }
    let mut history = Vec::with_capacity(budget.min(RESERVE_MAX));
    while history.len() < budget {
        let Some(arch) = strategy.propose(space, rng, accept)? else {
            break;
        };
        if !accept(&arch) {
            // A strategy's own fault, reported rather than queried.
            return Err(Error::invalid(
                "strategy",
                format!(
                    "proposed '{}', outside the constraint",
                    space.to_string(&arch)
                ),
            ));
        }
        let s = score(&arch)?;
        if !s.is_finite() {
            return Err(Error::NonFinite(format!(
                "the score of '{}' (query {}) is {s}",
                space.to_string(&arch),
                history.len() + 1
            )));
        }
        strategy.observe(space, &arch, s)?;
        history.push(Scored {
            arch,
            score: s,
            generation: 0,
            query: history.len() + 1,
        });
    }
    if history.is_empty() {
        return Err(Error::invalid(
            "constraint",
            "no architecture drawn satisfies it",
        ));
    }
    Ok(history)
}

/// The generator a search with seed `seed` draws from: the same in a run and in a study, so
/// that a study's run of seed 7 is `nasrs search ... --seed 7`.
pub fn search_rng(seed: u64) -> Rng {
    Rng::fork(seed, "multi-trial search")
}

/// A strategy and its settings: what a run's `config.json` records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyConfig {
    Random,
    Evolution(AgingConfig),
    Reinforce(ReinforceConfig),
    /// REINFORCE with an LSTM controller (`reinforce-lstm`).
    ReinforceLstm(LstmReinforceConfig),
}

impl StrategyConfig {
    /// The strategy's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            StrategyConfig::Random => "random",
            StrategyConfig::Evolution(_) => "evolution",
            StrategyConfig::Reinforce(_) => "reinforce",
            StrategyConfig::ReinforceLstm(_) => "reinforce-lstm",
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            StrategyConfig::Random => Ok(()),
            StrategyConfig::Evolution(c) => c.validate(),
            StrategyConfig::Reinforce(c) => c.validate(),
            StrategyConfig::ReinforceLstm(c) => c.validate(),
        }
    }

    /// Whether the strategy may be asked for its next architecture after `proposed`
    /// proposals and `observed` scores (a driver with several trials in flight asks): always,
    /// but for REINFORCE while its batch waits for scores
    /// ([`ReinforceConfig::may_propose`]).
    pub fn may_propose(&self, proposed: usize, observed: usize) -> bool {
        match self {
            StrategyConfig::Random | StrategyConfig::Evolution(_) => true,
            StrategyConfig::Reinforce(c) => c.may_propose(proposed, observed),
            StrategyConfig::ReinforceLstm(c) => c.reinforce.may_propose(proposed, observed),
        }
    }

    /// The most trials a driver can keep in flight with this strategy (REINFORCE: its batch).
    pub fn max_in_flight(&self) -> usize {
        match self {
            StrategyConfig::Random | StrategyConfig::Evolution(_) => usize::MAX,
            StrategyConfig::Reinforce(c) => c.batch,
            StrategyConfig::ReinforceLstm(c) => c.reinforce.batch,
        }
    }

    /// This strategy, new, for `space`. The LSTM controller's weights are drawn from `rng`
    /// (the search's own stream, before its first proposal), so a seed fixes the whole search.
    pub fn build<'s, S: SearchSpace + 's>(
        &self,
        space: &S,
        rng: &mut Rng,
    ) -> Result<Box<dyn Strategy<S> + 's>> {
        Ok(match self {
            StrategyConfig::Random => Box::new(RandomSearch::<S::Arch>::new()),
            StrategyConfig::Evolution(c) => Box::new(AgingEvolution::<S::Arch>::new(c.clone())?),
            StrategyConfig::Reinforce(c) => Box::new(Reinforce::new(space, c.clone())?),
            // The controller on the CPU in f32 (the product's element type): a few thousand
            // weights, one update per query.
            StrategyConfig::ReinforceLstm(c) => {
                Box::new(ReinforceLstm::new(space, c.clone(), Cpu::new(), rng)?)
            }
        })
    }

    /// Runs this strategy from scratch with `rng` (see [`search`]).
    pub fn search<S: SearchSpace>(
        &self,
        space: &S,
        budget: usize,
        rng: &mut Rng,
        accept: &dyn Fn(&S::Arch) -> bool,
        score: &mut dyn FnMut(&S::Arch) -> Result<f64>,
    ) -> Result<Vec<Scored<S::Arch>>> {
        let mut strategy = self.build(space, rng)?;
        search(space, strategy.as_mut(), budget, rng, accept, score)
    }
}

/// The incumbent after each query: `out[q]` is the index in `history` of the best score among
/// the first `q + 1` queries (the earliest on a tie, as [`crate::nas::history::best`]): what
/// the search would return if stopped there, the x axis of an anytime curve.
pub fn incumbents<A>(history: &[Scored<A>]) -> Vec<usize> {
    let mut out = Vec::with_capacity(history.len());
    for (i, s) in history.iter().enumerate() {
        let keep = out
            .last()
            .filter(|&&b: &&usize| history[b].score >= s.score);
        out.push(keep.copied().unwrap_or(i));
    }
    out
}

/// Draws uniformly until `accept` takes a draw that `fresh` also takes, at most
/// [`MAX_TRIES`] times.
pub(crate) fn draw_accepted<S: SearchSpace>(
    space: &S,
    rng: &mut Rng,
    accept: &dyn Fn(&S::Arch) -> bool,
    fresh: &dyn Fn(&S::Arch) -> bool,
) -> Option<S::Arch> {
    (0..MAX_TRIES)
        .map(|_| space.sample(rng))
        .find(|a| fresh(a) && accept(a))
}
