//! Asynchronous successive halving (ASHA, Li et al. 2020) as a [`Scheduler`]: whenever a
//! worker is free, promote a configuration that is among the top 1/eta of its rung and not
//! promoted yet (the highest rung first), else start a new configuration at the bottom rung.
//! No rung waits to be complete, so a pool of workers stays busy.
//!
//! Under the training driver results are reported in the order the trials were started (see
//! `train_search.rs`), so the promotions depend on the seed and the scores only.

use super::fidelity::{top_k, Job, Next, Scheduler};
use std::collections::BTreeSet;

pub struct Asha {
    /// The rungs' epoch budgets, smallest first.
    epochs: Vec<usize>,
    eta: usize,
    budget: usize,
    started: usize,
    exhausted: bool,
    pending: usize,
    /// (configuration, score) of every finished trial, per rung.
    results: Vec<Vec<(usize, f64)>>,
    /// The configurations each rung has promoted.
    promoted: Vec<BTreeSet<usize>>,
}

impl Asha {
    /// ASHA over the rungs `epochs` for `budget` configurations.
    pub fn new(epochs: Vec<usize>, eta: usize, budget: usize) -> Self {
        let n = epochs.len();
        Asha {
            epochs,
            eta: eta.max(2),
            budget,
            started: 0,
            exhausted: false,
            pending: 0,
            results: vec![Vec::new(); n],
            promoted: vec![BTreeSet::new(); n],
        }
    }

    /// The configuration rung `k` promotes now, if any: the best of its top
    /// `finished / eta` not promoted yet.
    pub fn promotable(&self, k: usize) -> Option<usize> {
        let done = &self.results[k];
        top_k(done, done.len() / self.eta)
            .into_iter()
            .find(|c| !self.promoted[k].contains(c))
    }
}

impl Scheduler for Asha {
    fn next(&mut self) -> Next {
        for k in (0..self.epochs.len().saturating_sub(1)).rev() {
            if let Some(config) = self.promotable(k) {
                self.promoted[k].insert(config);
                self.pending += 1;
                let epochs = self.epochs[k + 1];
                return Next::Run(Job { config, epochs });
            }
        }
        if self.started < self.budget && !self.exhausted {
            self.started += 1;
            self.pending += 1;
            return Next::Run(Job {
                config: self.started - 1,
                epochs: self.epochs[0],
            });
        }
        if self.pending > 0 {
            Next::Wait
        } else {
            Next::Done
        }
    }

    fn report(&mut self, job: Job, score: f64, _curve: &[f64]) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(k) = self.epochs.iter().position(|&e| e == job.epochs) {
            self.results[k].push((job.config, score));
        }
    }

    fn exhausted(&mut self, job: Job) {
        self.pending = self.pending.saturating_sub(1);
        self.exhausted = true;
        self.started = job.config;
    }
}
