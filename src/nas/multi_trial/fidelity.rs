//! Multi-fidelity training search with epochs as the budget (`--early-stop`): the rung and
//! bracket arithmetic of successive halving and Hyperband (Li et al. 2017), the [`Scheduler`]
//! the training driver (`train_search.rs`) asks for the next trial, and the synchronous
//! schedulers (full budget, successive halving, Hyperband). ASHA is in `asha.rs`, the
//! learning-curve rule in `curve_stop.rs`.
//!
//! A configuration promoted to a larger budget is re-run as a fresh trial with more epochs
//! (its cosine schedule then spans the new budget); a trial's `curve` holds its accuracy after
//! every epoch up to its budget. Rungs are anchored at the maximum `R` as in Hyperband: the
//! budgets are `R / eta^k` (rounded down) for every k that keeps them at least `r`.

use super::asha::Asha;
use super::curve_stop::CurveStop;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::ops::Range;

/// Which early-stopping rule a training search uses, with its settings (`config.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EarlyStop {
    /// Every configuration trained to the full budget.
    #[default]
    None,
    /// One successive-halving bracket of `--budget` configurations.
    Sh { min_epochs: usize, eta: usize },
    /// Hyperband's brackets, cycled until `--budget` configurations started.
    Hyperband { min_epochs: usize, eta: usize },
    /// Asynchronous successive halving over `--budget` configurations.
    Asha { min_epochs: usize, eta: usize },
    /// Each configuration trained to `min_epochs`, extended to the full budget only when its
    /// fitted learning curve predicts it can beat the incumbent by more than `-margin`.
    Curve { min_epochs: usize, margin: f64 },
}

impl EarlyStop {
    /// The rule's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            EarlyStop::None => "none",
            EarlyStop::Sh { .. } => "sh",
            EarlyStop::Hyperband { .. } => "hyperband",
            EarlyStop::Asha { .. } => "asha",
            EarlyStop::Curve { .. } => "curve",
        }
    }

    /// Checks the settings against the maximum budget `max_epochs` (`--epochs`).
    pub fn validate(&self, max_epochs: usize) -> Result<()> {
        let (min, eta) = match *self {
            EarlyStop::None => return Ok(()),
            EarlyStop::Sh { min_epochs, eta }
            | EarlyStop::Hyperband { min_epochs, eta }
            | EarlyStop::Asha { min_epochs, eta } => (min_epochs, Some(eta)),
            EarlyStop::Curve { min_epochs, margin } => {
                if !margin.is_finite() {
                    return Err(Error::invalid("--curve-margin", "must be a finite number"));
                }
                // A three-parameter curve needs three points to be fitted at all.
                if min_epochs < 3 {
                    return Err(Error::invalid(
                        "--min-epochs",
                        "must be at least 3 for --early-stop curve (the curve has 3 parameters)",
                    ));
                }
                (min_epochs, None)
            }
        };
        if min == 0 {
            return Err(Error::invalid("--min-epochs", "must be at least 1"));
        }
        if min >= max_epochs {
            return Err(Error::invalid(
                "--min-epochs",
                format!("{min} must be below --epochs ({max_epochs}), the full budget"),
            ));
        }
        if eta.is_some_and(|e| e < 2) {
            return Err(Error::invalid("--eta", "must be at least 2"));
        }
        Ok(())
    }

    /// The scheduler of a search of `budget` configurations (trials for `None`) with the
    /// full budget `max_epochs`.
    pub fn scheduler(&self, max_epochs: usize, budget: usize) -> Result<Box<dyn Scheduler>> {
        self.validate(max_epochs)?;
        Ok(match *self {
            EarlyStop::None => Box::new(Brackets::new(
                vec![Bracket {
                    n: budget,
                    epochs: vec![max_epochs],
                }],
                2,
                budget,
            )),
            EarlyStop::Sh { min_epochs, eta } => Box::new(Brackets::new(
                vec![Bracket {
                    n: budget,
                    epochs: rungs(min_epochs, max_epochs, eta),
                }],
                eta,
                budget,
            )),
            EarlyStop::Hyperband { min_epochs, eta } => Box::new(Brackets::new(
                hyperband_brackets(min_epochs, max_epochs, eta),
                eta,
                budget,
            )),
            EarlyStop::Asha { min_epochs, eta } => {
                Box::new(Asha::new(rungs(min_epochs, max_epochs, eta), eta, budget))
            }
            EarlyStop::Curve { min_epochs, margin } => {
                Box::new(CurveStop::new(min_epochs, max_epochs, margin, budget))
            }
        })
    }
}

/// The epoch budgets of the rungs, smallest first: `max / eta^k` for k = s_max..=0, s_max
/// the largest k that keeps the budget at least `min` (1, 3, 9, 27, 81 for 1, 81, 3).
pub fn rungs(min: usize, max: usize, eta: usize) -> Vec<usize> {
    let mut out = vec![max];
    let mut div = eta.max(2);
    while max / div >= min.max(1) {
        out.push(max / div);
        div = div.saturating_mul(eta.max(2));
    }
    out.reverse();
    out
}

/// How many configurations rung `i` of a bracket of `n` keeps: `n / eta^i`, at least one.
pub fn rung_size(n: usize, eta: usize, i: usize) -> usize {
    let div = (0..i).fold(1usize, |d, _| d.saturating_mul(eta));
    (n / div).max(1)
}

/// One successive-halving bracket: `n` configurations at `epochs[0]`, the best
/// [`rung_size`] of them at each later rung.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bracket {
    pub n: usize,
    pub epochs: Vec<usize>,
}

impl Bracket {
    /// (configurations, epochs) at each rung.
    pub fn schedule(&self, eta: usize) -> Vec<(usize, usize)> {
        (0..self.epochs.len())
            .map(|i| (rung_size(self.n, eta, i), self.epochs[i]))
            .collect()
    }
}

/// Hyperband's brackets, the most exploratory first: for s = s_max..=0, `n = ceil((s_max +
/// 1) eta^s / (s + 1))` configurations at the budget `R eta^-s`.
pub fn hyperband_brackets(min: usize, max: usize, eta: usize) -> Vec<Bracket> {
    let all = rungs(min, max, eta);
    let s_max = all.len() - 1;
    (0..=s_max)
        .rev()
        .map(|s| {
            let pow = (0..s).fold(1usize, |p, _| p.saturating_mul(eta));
            let n = ((s_max + 1) * pow).div_ceil(s + 1);
            Bracket {
                n,
                epochs: all[s_max - s..].to_vec(),
            }
        })
        .collect()
}

/// One trial to run: configuration `config` (numbered from 0 in the order they were first
/// asked for) trained for `epochs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    pub config: usize,
    pub epochs: usize,
}

/// What a scheduler wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run this trial; a `config` one past the last seen asks the strategy for a new one.
    Run(Job),
    /// Nothing until a running trial reports.
    Wait,
    /// Nothing more, ever.
    Done,
}

/// Decides which configuration trains for how long; told each trial's result in the order
/// the trials were asked for, so that its decisions depend on the results only.
pub trait Scheduler {
    fn next(&mut self) -> Next;
    /// The result of `job`: its final score (0 for a failed trial) and its curve.
    fn report(&mut self, job: Job, score: f64, curve: &[f64]);
    /// The strategy had no architecture for the new configuration of `job`: forget it and
    /// start no more.
    fn exhausted(&mut self, job: Job);
}

/// Successive halving over a cycle of brackets (one for SH and the full budget, Hyperband's
/// for Hyperband), each rung finished before the next starts.
pub struct Brackets {
    cycle: Vec<Bracket>,
    eta: usize,
    budget: usize,
    started: usize,
    exhausted: bool,
    bracket: usize,
    /// The current bracket's n (cut to the budget) and rung, None before the first.
    current: Option<(usize, usize)>,
    /// The current bracket's first configuration.
    first: usize,
    /// New configurations of the bottom rung not started yet (a range, not a list: a huge
    /// --budget must not be allocated up front).
    fresh: Range<usize>,
    /// Promoted configurations not started yet.
    queue: VecDeque<usize>,
    results: Vec<(usize, f64)>,
    pending: usize,
}

impl Brackets {
    pub fn new(cycle: Vec<Bracket>, eta: usize, budget: usize) -> Self {
        Brackets {
            cycle,
            eta,
            budget,
            started: 0,
            exhausted: false,
            bracket: 0,
            current: None,
            first: 0,
            fresh: 0..0,
            queue: VecDeque::new(),
            results: Vec::new(),
            pending: 0,
        }
    }

    fn epochs(&self) -> &[usize] {
        &self.cycle[(self.bracket - 1) % self.cycle.len()].epochs
    }
}

/// The `k` best of `results` (the earlier configuration on a tie), best first.
pub fn top_k(results: &[(usize, f64)], k: usize) -> Vec<usize> {
    let mut sorted = results.to_vec();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    sorted.into_iter().take(k).map(|(c, _)| c).collect()
}

impl Scheduler for Brackets {
    fn next(&mut self) -> Next {
        loop {
            if let Some((n, rung)) = self.current {
                if let Some(config) = self.queue.pop_front().or_else(|| self.fresh.next()) {
                    self.pending += 1;
                    let epochs = self.epochs()[rung];
                    return Next::Run(Job { config, epochs });
                }
                // The last rung's results decide nothing: the next bracket starts at once.
                if rung + 1 < self.epochs().len() {
                    if self.pending > 0 {
                        return Next::Wait;
                    }
                    if !self.results.is_empty() {
                        let keep = rung_size(n, self.eta, rung + 1).min(self.results.len());
                        self.queue = top_k(&self.results, keep).into();
                        self.results.clear();
                        self.current = Some((n, rung + 1));
                        continue;
                    }
                }
            }
            let left = self.budget - self.started;
            if left == 0 || self.exhausted || self.cycle.is_empty() {
                return Next::Done;
            }
            let n = self.cycle[self.bracket % self.cycle.len()].n.min(left);
            self.bracket += 1;
            self.first = self.started;
            self.fresh = self.started..self.started + n;
            self.queue.clear();
            self.started += n;
            self.results.clear();
            self.pending = 0;
            self.current = Some((n, 0));
        }
    }

    fn report(&mut self, job: Job, score: f64, _curve: &[f64]) {
        // A result of an earlier bracket's last rung: nothing waits for it.
        if job.config < self.first {
            return;
        }
        self.pending = self.pending.saturating_sub(1);
        self.results.push((job.config, score));
    }

    fn exhausted(&mut self, job: Job) {
        self.pending = self.pending.saturating_sub(1);
        self.exhausted = true;
        self.fresh = 0..0;
        self.started = job.config;
    }
}
