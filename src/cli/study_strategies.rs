//! `nasrs study strategies`: random search, aging evolution and REINFORCE (and, when named,
//! REINFORCE with an LSTM controller: `reinforce-lstm`) on a table, each
//! for many seeds with one budget; prints per strategy the mean and standard deviation of the
//! report value of the architecture each run returns, and writes `study.json` (every figure,
//! the per-seed results and the mean anytime curves) and `anytime.svg` into `--out`.

use super::multi_trial::{EvolutionOptions, ReinforceOptions, TableArgs};
use clap::Args;
use nasrs::io::{atomic_write, atomic_write_json, check_output};
use nasrs::nas::multi_trial::study::{run_study, study_svg, StudyConfig, StudySummary};
use nasrs::nas::multi_trial::{StrategyConfig, TableEvaluator};
use nasrs::nas::space::darts::DartsSpace;
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use nasrs::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub(crate) struct StudyStrategiesArgs {
    #[command(flatten)]
    table: TableArgs,
    /// Queries per run.
    #[arg(long, default_value_t = 100)]
    budget: usize,
    /// Runs per strategy, with seeds 0 to N-1.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The strategies compared, comma-separated: random, evolution, reinforce,
    /// reinforce-lstm.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,evolution,reinforce"
    )]
    strategies: Vec<String>,
    #[command(flatten)]
    evolution: EvolutionOptions,
    #[command(flatten)]
    reinforce: ReinforceOptions,
    /// Folder for study.json and anytime.svg (default: runs/study-strategies-<space>-b<budget>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the study.json and anytime.svg of an earlier study there.
    #[arg(long)]
    force: bool,
}

pub(crate) fn study_strategies(a: StudyStrategiesArgs) -> Result<()> {
    let mut strategies = Vec::new();
    for name in &a.strategies {
        let s = match name.trim() {
            "random" => StrategyConfig::Random,
            "evolution" => StrategyConfig::Evolution(a.evolution.config()?),
            "reinforce" => StrategyConfig::Reinforce(a.reinforce.config()?),
            "reinforce-lstm" => StrategyConfig::ReinforceLstm(a.reinforce.lstm_config()?),
            other => {
                return Err(Error::invalid(
                    "--strategies",
                    format!("'{other}' (expected random, evolution, reinforce or reinforce-lstm)"),
                ))
            }
        };
        strategies.push(s);
    }
    let config = StudyConfig {
        space: a.table.space.clone(),
        table: a.table.spec()?,
        strategies,
        budget: a.budget,
        seeds: a.seeds,
    };
    if a.budget == 0 {
        return Err(Error::invalid("--budget", "must be at least 1 query"));
    }
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/study-strategies-{}-b{}",
            config.space, config.budget
        ))
    });
    if out.is_file() {
        return Err(Error::invalid(
            "--out",
            format!("{} is a file, not a folder", out.display()),
        ));
    }
    let (json, svg) = (out.join("study.json"), out.join("anytime.svg"));
    for file in [&json, &svg] {
        check_output(file, "--out", &[&config.table.path], a.force)?;
    }
    let summary = match config.space.as_str() {
        "nb201" => study_in(Nb201Space, &config)?,
        "darts" => study_in(DartsSpace::default(), &config)?,
        other => {
            return Err(Error::invalid(
                "--space",
                format!("'{other}' (expected nb201 or darts)"),
            ))
        }
    };
    atomic_write_json(&json, &summary)?;
    atomic_write(&svg, study_svg(&summary).as_bytes())?;
    print_summary(&summary);
    eprintln!("written to {} and {}", json.display(), svg.display());
    Ok(())
}

fn study_in<S: SearchSpace + Sync>(space: S, config: &StudyConfig) -> Result<StudySummary> {
    let eval = TableEvaluator::open(space, config.table.clone())?;
    let started = Instant::now();
    let summary = run_study(&eval, config)?;
    eprintln!(
        "nasrs study strategies: {} strategies x {} seeds x {} queries on {} in {:.2} s",
        config.strategies.len(),
        config.seeds,
        config.budget,
        config.table.path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}

fn print_summary(s: &StudySummary) {
    let c = &s.config;
    out!(
        "{} of the architecture returned (best {}), {} seeds, budget {}:",
        c.table.report,
        c.table.metric,
        c.seeds,
        c.budget
    );
    // The name column fits the longest name (`reinforce-lstm`).
    let w = s
        .strategies
        .iter()
        .map(|r| r.strategy.len())
        .fold(10, usize::max);
    out!(
        "{:<w$} {:>8} {:>7} {:>8} {:>8} {:>12} {:>11}",
        "strategy",
        "mean",
        "std",
        "min",
        "max",
        "metric mean",
        "found best"
    );
    for r in &s.strategies {
        out!(
            "{:<w$} {:>8.2} {:>7.2} {:>8.2} {:>8.2} {:>12.2} {:>7}/{}",
            r.strategy,
            r.report.mean,
            r.report.std,
            r.report.min,
            r.report.max,
            r.metric.mean,
            r.found_best,
            c.seeds
        );
    }
    let t = &s.reference;
    out!(
        "table ({} architectures): median {:.2}, best {:.2}; the best {} ({:.2}) has {:.2}",
        t.architectures,
        t.report_median,
        t.report_best,
        c.table.metric,
        t.metric_best,
        t.report_of_best_metric
    );
}
