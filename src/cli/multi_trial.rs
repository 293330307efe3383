//! `nasrs search random|evolution|reinforce`: a multi-trial search scored by a tabular
//! benchmark into a run folder (`--evaluator train` hands over to `train_search.rs`); and the flags these commands share with `nasrs study
//! strategies` (the table and its columns, each strategy's settings).

use super::args::RunFolderArgs;
use clap::Args;
use nasrs::nas::multi_trial::run::{run_table_search, TableRunConfig, BEST, JOURNAL};
use nasrs::nas::multi_trial::{
    default_table, AgingConfig, LstmReinforceConfig, ReinforceConfig, SizePenalty, StrategyConfig,
    TableEvaluator, TableSpec, MNAS_WEIGHT,
};
use nasrs::nas::run_dir::Start;
use nasrs::nas::space::darts::DartsSpace;
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use nasrs::{Error, Result};
use std::path::PathBuf;

/// The table an architecture is scored by.
#[derive(Args)]
pub(crate) struct TableArgs {
    /// The search space: nb201 | darts (darts has no bundled table: give --table) | mbconv
    /// (--evaluator train only).
    #[arg(long, default_value = "nb201")]
    pub space: String,
    /// CSV file with an `arch` column and numeric columns (default for nb201: the bundled
    /// data/nb201-12ep/nb201_12ep.csv).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// The column searched on.
    #[arg(long, default_value = "cifar10_valid_acc")]
    pub metric: String,
    /// The column reported for the architecture the search returns.
    #[arg(long, default_value = "cifar10_test_acc")]
    pub report: String,
    /// Search only architectures with at most this many million parameters (the table's
    /// params_m column).
    #[arg(long)]
    pub params_max_m: Option<f64>,
    /// Search only architectures with at most this many million FLOPs (flops_m).
    #[arg(long)]
    pub flops_max_m: Option<f64>,
    /// Search on MnasNet's soft reward: the metric times (params_m / this)^w.
    #[arg(long, allow_negative_numbers = true)]
    pub params_target_m: Option<f64>,
    /// Search on MnasNet's soft reward: the metric times (flops_m / this)^w.
    #[arg(long, allow_negative_numbers = true)]
    pub flops_target_m: Option<f64>,
    /// The reward's exponent w (MnasNet's -0.07), with a target.
    #[arg(long, default_value_t = MNAS_WEIGHT, allow_negative_numbers = true)]
    pub penalty_weight: f64,
}

impl TableArgs {
    /// The table's path and columns; a space without a bundled table needs `--table`.
    pub fn spec(&self) -> Result<TableSpec> {
        let path = match (&self.table, default_table(&self.space)) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => {
                return Err(Error::invalid(
                    "--table",
                    format!(
                        "the {} space has no bundled table; give --table FILE (a CSV whose \
                         arch column holds {} architectures), or search --space nb201",
                        self.space, self.space
                    ),
                ))
            }
        };
        // Recorded absolute, so that --resume from another folder finds the same table.
        let path = std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
        Ok(TableSpec {
            path,
            metric: self.metric.clone(),
            report: self.report.clone(),
            params_max_m: self.params_max_m,
            flops_max_m: self.flops_max_m,
            penalty: (self.params_target_m.is_some() || self.flops_target_m.is_some()).then_some(
                SizePenalty {
                    params_target_m: self.params_target_m,
                    flops_target_m: self.flops_target_m,
                    weight: self.penalty_weight,
                },
            ),
        })
    }
}

/// Aging evolution's settings.
#[derive(Args)]
pub(crate) struct EvolutionOptions {
    /// nb201 (P=10, S=3, the NAS-Bench-201 baseline) | paper (P=100, S=25, Real et al.)
    #[arg(long, default_value = "nb201")]
    pub preset: String,
    /// The population size P (replaces the preset's).
    #[arg(long)]
    pub population: Option<usize>,
    /// The tournament size S (replaces the preset's).
    #[arg(long)]
    pub sample_size: Option<usize>,
}

impl EvolutionOptions {
    pub fn config(&self) -> Result<AgingConfig> {
        let mut c = AgingConfig::preset(&self.preset)?;
        c.population = self.population.unwrap_or(c.population);
        c.sample_size = self.sample_size.unwrap_or(c.sample_size);
        c.validate()?;
        Ok(c)
    }
}

/// REINFORCE's settings.
#[derive(Args)]
pub(crate) struct ReinforceOptions {
    /// Adam's learning rate on the policy's logits.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Decay of the moving-average reward baseline.
    #[arg(long, default_value_t = 0.9)]
    pub baseline_decay: f64,
    /// Coefficient of the entropy bonus.
    #[arg(long, default_value_t = 0.0)]
    pub entropy: f64,
    /// Architectures drawn from one policy per update (Zoph and Le's controller batch m):
    /// the update ascends their mean direction, and with --evaluator train up to m trials
    /// train at once (--workers).
    #[arg(long, default_value_t = 1)]
    pub controller_batch: usize,
    /// Hidden (and embedding) size of the LSTM controller (`--controller lstm`,
    /// `reinforce-lstm`).
    #[arg(long, default_value_t = 32)]
    pub lstm_hidden: usize,
}

impl ReinforceOptions {
    pub fn config(&self) -> Result<ReinforceConfig> {
        let c = ReinforceConfig {
            lr: self.lr,
            baseline_decay: self.baseline_decay,
            entropy: self.entropy,
            batch: self.controller_batch,
        };
        c.validate()?;
        Ok(c)
    }

    /// The settings of REINFORCE on the LSTM controller.
    pub fn lstm_config(&self) -> Result<LstmReinforceConfig> {
        let c = LstmReinforceConfig {
            reinforce: self.config()?,
            hidden: self.lstm_hidden,
        };
        c.validate()?;
        Ok(c)
    }

    /// The strategy `--controller` names: `policy` (per-decision logits) or `lstm`.
    pub fn strategy(&self, controller: &str) -> Result<StrategyConfig> {
        match controller {
            "policy" => Ok(StrategyConfig::Reinforce(self.config()?)),
            "lstm" => Ok(StrategyConfig::ReinforceLstm(self.lstm_config()?)),
            other => Err(Error::invalid(
                "--controller",
                format!("'{other}' (expected policy or lstm)"),
            )),
        }
    }
}

/// What every multi-trial search takes.
#[derive(Args)]
pub(crate) struct TrialSearchArgs {
    #[command(flatten)]
    table: TableArgs,
    /// How an architecture is scored: table (a look-up) | train (a training trial per
    /// query) | supernet (inherited weights of the SPOS supernet in --supernet, BN
    /// recalibrated).
    #[arg(long, default_value = "table")]
    evaluator: String,
    /// With --evaluator supernet: the run folder of a finished `nasrs search spos --phase
    /// train` (its search files are written there).
    #[arg(long)]
    supernet: Option<PathBuf>,
    #[command(flatten)]
    train: super::train_search::TrainEvalArgs,
    /// Queries (architectures scored).
    #[arg(long, default_value_t = 100)]
    budget: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    run: RunFolderArgs,
}

#[derive(Args)]
pub(crate) struct EvolutionArgs {
    #[command(flatten)]
    common: TrialSearchArgs,
    #[command(flatten)]
    options: EvolutionOptions,
}

#[derive(Args)]
pub(crate) struct ReinforceArgs {
    #[command(flatten)]
    common: TrialSearchArgs,
    #[command(flatten)]
    options: ReinforceOptions,
    /// What samples the architectures: policy (independent logits per decision, NB201's
    /// baseline) or lstm (an LSTM emitting the decisions in order, Zoph and Le 2017).
    #[arg(long, default_value = "policy")]
    controller: String,
}

pub(crate) fn random(a: TrialSearchArgs) -> Result<()> {
    trial_search(a, StrategyConfig::Random)
}

pub(crate) fn evolution(a: EvolutionArgs) -> Result<()> {
    let strategy = StrategyConfig::Evolution(a.options.config()?);
    trial_search(a.common, strategy)
}

pub(crate) fn reinforce(a: ReinforceArgs) -> Result<()> {
    let strategy = a.options.strategy(&a.controller)?;
    trial_search(a.common, strategy)
}

fn trial_search(a: TrialSearchArgs, strategy: StrategyConfig) -> Result<()> {
    if a.evaluator != "train" && a.train.has_latency() {
        return Err(Error::invalid(
            "--latency-table",
            format!(
                "applies to --evaluator train (the MBConv space), not {}",
                a.evaluator
            ),
        ));
    }
    match a.evaluator.as_str() {
        "table" if a.table.space == "mbconv" => {
            return Err(Error::invalid(
                "--evaluator",
                "table does not apply to --space mbconv (no table holds MBConv networks): use \
                 --evaluator train",
            ))
        }
        "table" => {}
        "train" => {
            return super::train_search::run(
                &a.table.space,
                &a.train,
                strategy,
                a.budget,
                a.seed,
                &a.run,
            )
        }
        "supernet" => {
            let dir = a.supernet.as_deref().ok_or_else(|| {
                Error::invalid(
                    "--supernet",
                    "is required with --evaluator supernet (a SPOS run folder)",
                )
            })?;
            return super::spos::search_supernet(dir, &a.train, strategy, a.budget, a.seed);
        }
        other => {
            return Err(Error::invalid(
                "--evaluator",
                format!("'{other}' (expected table, train or supernet)"),
            ))
        }
    }
    let start = Start::from_flags(a.run.resume, a.run.force)?;
    if a.budget == 0 {
        return Err(Error::invalid("--budget", "must be at least 1 query"));
    }
    let spec = a.table.spec()?;
    let config = TableRunConfig {
        space: a.table.space.clone(),
        strategy,
        table: spec,
        budget: a.budget,
        seed: a.seed,
    };
    let out = a.run.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/{}-{}-s{}",
            config.strategy.name(),
            config.space,
            config.seed
        ))
    });
    match a.table.space.as_str() {
        "nb201" => search_in(Nb201Space, &config, out, start),
        "darts" => search_in(DartsSpace::default(), &config, out, start),
        other => Err(Error::invalid(
            "--space",
            format!("'{other}' (expected nb201, darts or mbconv)"),
        )),
    }
}

fn search_in<S: SearchSpace>(
    space: S,
    config: &TableRunConfig,
    out: PathBuf,
    start: Start,
) -> Result<()> {
    let eval = TableEvaluator::open(space, config.table.clone())?;
    eprintln!(
        "nasrs search {}: {} space, table {} ({} architectures), {} queries, seed {}, run folder {}",
        config.strategy.name(),
        config.space,
        config.table.path.display(),
        eval.table.len(),
        config.budget,
        config.seed,
        out.display()
    );
    let outcome = run_table_search(&eval, config, &out, start)?;
    if outcome.replayed > 0 {
        eprintln!(
            "resumed: {} of {} queries replayed from {}",
            outcome.replayed,
            outcome.queries,
            out.join(JOURNAL).display()
        );
    }
    let b = &outcome.best;
    out!("{}", super::to_json(b)?);
    eprintln!(
        "best: {} {} ({} {}) at query {} of {}: {}",
        b.metric, b.metric_value, b.report, b.report_value, b.query, outcome.queries, b.arch
    );
    eprintln!("written to {}", out.join(BEST).display());
    Ok(())
}
