//! The learning-curve stopping rule as a [`Scheduler`] (`--early-stop curve`): each
//! configuration trains to a checkpoint budget (`--min-epochs`); a pow3 curve fitted to its
//! validation curve (`curve_fit.rs`) predicts its accuracy at the full budget, and only a
//! configuration whose prediction plus the margin beats the incumbent (the best full-budget
//! score so far) is re-run to the full budget. The first one always is.

use super::curve_fit::predict;
use super::fidelity::{Job, Next, Scheduler};
use std::collections::VecDeque;

pub struct CurveStop {
    checkpoint: usize,
    max: usize,
    margin: f64,
    budget: usize,
    started: usize,
    exhausted: bool,
    pending: usize,
    /// Configurations to extend to the full budget.
    extend: VecDeque<usize>,
    incumbent: Option<f64>,
}

impl CurveStop {
    pub fn new(checkpoint: usize, max: usize, margin: f64, budget: usize) -> Self {
        CurveStop {
            checkpoint,
            max,
            margin,
            budget,
            started: 0,
            exhausted: false,
            pending: 0,
            extend: VecDeque::new(),
            incumbent: None,
        }
    }

    /// Whether a checkpoint curve earns the full budget against `incumbent`.
    pub fn promising(curve: &[f64], max: usize, margin: f64, incumbent: Option<f64>) -> bool {
        let Some(best) = incumbent else { return true };
        // A curve that cannot be fitted is not evidence against the configuration.
        predict(curve, max).is_none_or(|p| p + margin > best)
    }
}

impl Scheduler for CurveStop {
    fn next(&mut self) -> Next {
        if let Some(config) = self.extend.pop_front() {
            self.pending += 1;
            return Next::Run(Job {
                config,
                epochs: self.max,
            });
        }
        if self.started < self.budget && !self.exhausted {
            self.started += 1;
            self.pending += 1;
            return Next::Run(Job {
                config: self.started - 1,
                epochs: self.checkpoint,
            });
        }
        if self.pending > 0 {
            Next::Wait
        } else {
            Next::Done
        }
    }

    fn report(&mut self, job: Job, score: f64, curve: &[f64]) {
        self.pending = self.pending.saturating_sub(1);
        if job.epochs == self.max {
            self.incumbent = Some(self.incumbent.map_or(score, |b| b.max(score)));
        } else if !curve.is_empty() && Self::promising(curve, self.max, self.margin, self.incumbent)
        {
            self.extend.push_back(job.config);
        }
    }

    fn exhausted(&mut self, job: Job) {
        self.pending = self.pending.saturating_sub(1);
        self.exhausted = true;
        self.started = job.config;
    }
}
