//! A study of strategies on a table (`nasrs study strategies`): each strategy run once per
//! seed with the same budget; per strategy the mean and standard deviation of the report
//! value of the architecture each run returns (the best by metric, NB201's protocol), and the
//! mean anytime curve (the report value of the best-by-metric so far, per query); for
//! reference the table's median and best report value (over the architectures inside the
//! limits). Seed `s` of a study is exactly `nasrs search <strategy> --seed s`.

use super::{incumbents, search_rng, StrategyConfig, TableEvaluator, TableSpec};
use crate::error::{Error, Result};
use crate::nas::report::anytime_svg;
use crate::nas::space::SearchSpace;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What a study runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyConfig {
    pub space: String,
    pub table: TableSpec,
    pub strategies: Vec<StrategyConfig>,
    pub budget: usize,
    /// Seeds 0 to `seeds - 1`.
    pub seeds: u64,
}

/// Mean, standard deviation (with n - 1), minimum and maximum of a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Stats {
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// One strategy's results over the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub config: StrategyConfig,
    /// The report value of each run's returned architecture, over the seeds.
    pub report: Stats,
    /// The metric value of each run's returned architecture.
    pub metric: Stats,
    /// Runs whose returned architecture is the table's best by metric.
    pub found_best: usize,
    /// Per query, the mean over the seeds of the best-by-metric-so-far's report value.
    pub curve: Vec<f64>,
    /// Each seed's returned report value, seed 0 first.
    pub reports: Vec<f64>,
}

/// The table's own figures, over the architectures inside the limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub architectures: usize,
    pub report_median: f64,
    pub report_best: f64,
    /// The report value of the architecture with the best metric: what a search that found
    /// the best metric returns.
    pub report_of_best_metric: f64,
    pub metric_best: f64,
}

/// `study.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudySummary {
    pub config: StudyConfig,
    pub reference: Reference,
    pub strategies: Vec<StrategyResult>,
}

/// The median of `v` (the mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// The reference figures of `eval`'s table.
pub fn reference<S: SearchSpace>(eval: &TableEvaluator<S>) -> Result<Reference> {
    let mut reports = Vec::new();
    let mut top: Option<(f64, f64)> = None;
    for a in eval.feasible() {
        let (m, r) = (eval.objective(a)?, eval.report(a)?);
        reports.push(r);
        // The first in file order on a tie of the metric.
        if top.is_none_or(|(tm, _)| m > tm) {
            top = Some((m, r));
        }
    }
    let (metric_best, report_of_best_metric) =
        top.ok_or_else(|| Error::invalid("table", "no architecture inside the limits"))?;
    Ok(Reference {
        architectures: reports.len(),
        report_median: median(&reports),
        report_best: reports.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        report_of_best_metric,
        metric_best,
    })
}

/// Runs every strategy of `config` for every seed (seeds in parallel; the result does not
/// depend on the order they finish in).
pub fn run_study<S: SearchSpace + Sync>(
    eval: &TableEvaluator<S>,
    config: &StudyConfig,
) -> Result<StudySummary> {
    if config.seeds == 0 {
        return Err(Error::invalid("--seeds", "must be at least 1"));
    }
    if config.strategies.is_empty() {
        return Err(Error::invalid("--strategies", "name at least one strategy"));
    }
    for s in &config.strategies {
        s.validate()?;
    }
    let reference = reference(eval)?;
    let mut strategies = Vec::new();
    for strategy in &config.strategies {
        // Each seed: (returned metric, returned report, report of the incumbent per query).
        let runs: Vec<(f64, f64, Vec<f64>)> = (0..config.seeds)
            .into_par_iter()
            .map(|seed| {
                let mut rng = search_rng(seed);
                let accept = |a: &S::Arch| eval.accepts(a);
                let mut score = |a: &S::Arch| eval.objective(a);
                let history =
                    strategy.search(&eval.space, config.budget, &mut rng, &accept, &mut score)?;
                let mut curve = Vec::with_capacity(history.len());
                for i in incumbents(&history) {
                    curve.push(eval.report(&history[i].arch)?);
                }
                let last = *incumbents(&history)
                    .last()
                    .ok_or_else(|| Error::invalid("search", "no query was made"))?;
                let returned = &history[last];
                Ok((returned.score, eval.report(&returned.arch)?, curve))
            })
            .collect::<Result<_>>()?;
        let reports: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let metrics: Vec<f64> = runs.iter().map(|r| r.0).collect();
        // As long as the longest run (the budget, unless random search ran out of space).
        let longest = runs.iter().map(|r| r.2.len()).max().unwrap_or(0);
        let mut curve = vec![0.0; longest];
        for (_, _, c) in &runs {
            for (q, sum) in curve.iter_mut().enumerate() {
                // A run that stopped early (random search of a small space) keeps its result.
                *sum += c.get(q).or(c.last()).copied().unwrap_or(f64::NAN);
            }
        }
        curve.iter_mut().for_each(|v| *v /= runs.len() as f64);
        strategies.push(StrategyResult {
            strategy: strategy.name().to_string(),
            config: strategy.clone(),
            report: Stats::of(&reports),
            metric: Stats::of(&metrics),
            found_best: metrics
                .iter()
                .filter(|&&m| m >= reference.metric_best)
                .count(),
            curve,
            reports,
        });
    }
    Ok(StudySummary {
        config: config.clone(),
        reference,
        strategies,
    })
}

/// The study's anytime curves: one line per strategy, the table's median and best report.
pub fn study_svg(summary: &StudySummary) -> String {
    let c = &summary.config;
    let r = &summary.reference;
    anytime_svg(
        &format!(
            "{} table, mean over {} seeds: {} of the best {} so far",
            c.space, c.seeds, c.table.report, c.table.metric
        ),
        &format!("mean {} of the incumbent", c.table.report),
        &summary
            .strategies
            .iter()
            .map(|s| (s.strategy.clone(), s.curve.clone()))
            .collect::<Vec<_>>(),
        &[
            ("table median".to_string(), r.report_median),
            ("table best".to_string(), r.report_best),
        ],
    )
}
