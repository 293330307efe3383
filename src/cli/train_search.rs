//! `nasrs search random|evolution|reinforce --evaluator train`: each query a training trial
//! (`nasrs trial`, this binary) run by an executor: local child processes (`--executor local
//! --workers N`) or Slurm jobs (`--executor slurm`), into a run folder with a crash-safe
//! journal (`nas::multi_trial::train_search`); `--early-stop` trains most of them for fewer
//! epochs (`nas::multi_trial::fidelity`).

use super::args::RunFolderArgs;
use super::trial_args::TrialRunArgs;
use clap::Args;
use nasrs::nas::latency::{LatencyObjective, LatencyReward, MNAS_SOFT_WEIGHT};
use nasrs::nas::multi_trial::executor::{Executor, ExecutorConfig};
use nasrs::nas::multi_trial::fidelity::EarlyStop;
use nasrs::nas::multi_trial::latency_terms::LatencyTerms;
use nasrs::nas::multi_trial::train_search::{
    run_train_search, TrainSearchConfig, BEST, JOURNAL, PARETO_JSON,
};
use nasrs::nas::multi_trial::trial::TrialSpec;
use nasrs::nas::multi_trial::StrategyConfig;
use nasrs::nas::run_dir::Start;
use nasrs::nas::space::darts::DartsSpace;
use nasrs::nas::space::mbconv::MbConvSpace;
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use nasrs::{Error, Result};
use std::path::{Path, PathBuf};

/// The training evaluator's flags (`--evaluator train`).
#[derive(Args)]
pub(crate) struct TrainEvalArgs {
    /// Epochs each trial trains (with --early-stop: the full budget R).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// none | sh (successive halving) | hyperband | asha | curve (learning-curve rule);
    /// with sh, hyperband, asha and curve --budget counts architectures, not trials.
    #[arg(long, default_value = "none")]
    early_stop: String,
    /// --early-stop: the smallest budget r (sh, hyperband, asha), or the checkpoint where
    /// curve fits the learning curve.
    #[arg(long, default_value_t = 1)]
    min_epochs: usize,
    /// --early-stop sh|hyperband|asha: keep the top 1/eta at each rung.
    #[arg(long, default_value_t = 3)]
    eta: usize,
    /// --early-stop curve: extend a trial when its predicted accuracy plus this beats the
    /// incumbent's.
    #[arg(long, default_value_t = 0.0)]
    curve_margin: f64,
    /// Initial channels C of each trial's network (default: 8 for nb201, 4 for darts).
    #[arg(long)]
    channels: Option<usize>,
    /// darts: cells L (default 5); nb201: cells per stage N (default 1).
    #[arg(long)]
    layers: Option<usize>,
    /// mbconv: each trial's width multiplier (default 0.25).
    #[arg(long)]
    width_mult: Option<f64>,
    /// mbconv: each trial's depth multiplier (default 1).
    #[arg(long)]
    depth_mult: Option<f64>,
    #[command(flatten)]
    pub(crate) trials: TrialRunArgs,
    /// mbconv: a table of `nasrs latency build`; the strategy is told the latency reward
    /// of --latency-reward, and the run writes the accuracy-latency Pareto front
    /// (pareto.json, pareto.svg).
    #[arg(long, requires = "latency_target")]
    latency_table: Option<PathBuf>,
    /// --latency-table: the target latency T in milliseconds (at the table's device, batch
    /// and image size).
    #[arg(long, requires = "latency_table", allow_hyphen_values = true)]
    latency_target: Option<f64>,
    /// soft (MnasNet: accuracy * (latency/T)^w) | hard (w = 0 at or under T, -1 over it) |
    /// limit (architectures over T are never proposed; the reward is the accuracy).
    #[arg(long, default_value = "soft", requires = "latency_table")]
    latency_reward: String,
    /// --latency-reward soft: the exponent w (MnasNet's -0.07).
    #[arg(long, default_value_t = MNAS_SOFT_WEIGHT, allow_hyphen_values = true,
          requires = "latency_table")]
    latency_weight: f64,
}

impl TrainEvalArgs {
    /// Whether `--latency-table` was given.
    pub(crate) fn has_latency(&self) -> bool {
        self.latency_table.is_some()
    }
}

/// The latency objective of the flags, if `--latency-table` is given.
fn latency_objective(a: &TrainEvalArgs, space_name: &str) -> Result<Option<LatencyObjective>> {
    let (Some(table), Some(target_ms)) = (&a.latency_table, a.latency_target) else {
        return Ok(None);
    };
    let reward = match a.latency_reward.as_str() {
        "soft" => LatencyReward::Soft {
            weight: a.latency_weight,
        },
        "hard" => LatencyReward::Hard,
        "limit" => LatencyReward::Limit,
        other => {
            return Err(Error::invalid(
                "--latency-reward",
                format!("'{other}' (expected soft, hard or limit)"),
            ))
        }
    };
    // Absolute, so that config.json names the same file from any working directory.
    let table = std::fs::canonicalize(table).map_err(|e| Error::io(table, e))?;
    let objective = LatencyObjective {
        table,
        target_ms,
        reward,
    };
    // Loaded here to refuse a bad table before the run starts; the search loads it again.
    LatencyTerms::open(&objective, space_name)?;
    Ok(Some(objective))
}

/// Runs the training search `strategy` on `space_name` as the flags ask.
pub(crate) fn run(
    space_name: &str,
    a: &TrainEvalArgs,
    strategy: StrategyConfig,
    budget: usize,
    seed: u64,
    run: &RunFolderArgs,
) -> Result<()> {
    let start = Start::from_flags(run.resume, run.force)?;
    let t = &a.trials;
    let mut workers = t.workers;
    let most = strategy.max_in_flight();
    if workers > most {
        eprintln!(
            "note: {} draws {most} architecture(s) per policy update (--controller-batch): \
             running it with --workers {most}",
            strategy.name()
        );
        workers = most;
    }
    let (executor, threads) = t.executor_config(workers)?;
    let mbconv = space_name == "mbconv";
    for (flag, given) in [
        ("--channels", mbconv && a.channels.is_some()),
        ("--layers", mbconv && a.layers.is_some()),
        ("--width-mult", !mbconv && a.width_mult.is_some()),
        ("--depth-mult", !mbconv && a.depth_mult.is_some()),
    ] {
        if given {
            return Err(Error::invalid(
                flag,
                format!(
                    "does not apply to --space {space_name} (mbconv takes --width-mult and \
                     --depth-mult, the cell spaces --channels and --layers)"
                ),
            ));
        }
    }
    let (channels, layers) = match space_name {
        "nb201" => (a.channels.unwrap_or(8), a.layers.unwrap_or(1)),
        // Unused by mbconv trials (the arch and the multipliers give the network).
        "mbconv" => (1, 1),
        _ => (a.channels.unwrap_or(4), a.layers.unwrap_or(5)),
    };
    let trial = TrialSpec {
        width_mult: a.width_mult.filter(|_| mbconv),
        depth_mult: a.depth_mult.filter(|_| mbconv),
        ..t.trial_template(space_name, (channels, layers), a.epochs, seed, threads)?
    };
    let (min_epochs, eta) = (a.min_epochs, a.eta);
    let early_stop = match a.early_stop.as_str() {
        "none" => EarlyStop::None,
        "sh" => EarlyStop::Sh { min_epochs, eta },
        "hyperband" => EarlyStop::Hyperband { min_epochs, eta },
        "asha" => EarlyStop::Asha { min_epochs, eta },
        "curve" => EarlyStop::Curve {
            min_epochs,
            margin: a.curve_margin,
        },
        other => {
            return Err(Error::invalid(
                "--early-stop",
                format!("'{other}' (expected none, sh, hyperband, asha or curve)"),
            ))
        }
    };
    early_stop.validate(a.epochs)?;
    let latency = latency_objective(a, space_name)?;
    let config = TrainSearchConfig {
        space: space_name.to_string(),
        strategy,
        trial,
        budget,
        seed,
        workers,
        executor,
        retries: t.retries,
        early_stop,
        latency,
    };
    let out = run.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/{}-train-{}-s{}",
            config.strategy.name(),
            config.space,
            config.seed
        ))
    });
    let exe = std::env::current_exe().map_err(|e| Error::io("the nasrs binary", e))?;
    let mut executor = t.open_executor(&config.executor)?;
    match space_name {
        "nb201" => search_in(&Nb201Space, &config, executor.as_mut(), &exe, &out, start),
        "darts" => search_in(
            &DartsSpace::default(),
            &config,
            executor.as_mut(),
            &exe,
            &out,
            start,
        ),
        "mbconv" => search_in(
            &MbConvSpace::default(),
            &config,
            executor.as_mut(),
            &exe,
            &out,
            start,
        ),
        other => Err(Error::invalid(
            "--space",
            format!("'{other}' (expected nb201, darts or mbconv)"),
        )),
    }
}

fn search_in<S: SearchSpace>(
    space: &S,
    config: &TrainSearchConfig,
    executor: &mut dyn Executor,
    exe: &Path,
    out: &Path,
    start: Start,
) -> Result<()> {
    let executor_name = match &config.executor {
        ExecutorConfig::Local => "local",
        ExecutorConfig::Slurm(_) => "slurm",
    };
    eprintln!(
        "nasrs search {}: {} space, training trials ({} epochs, C={}, layers {}, {} images of {}), \
         {} {}, early stop {}, {} workers on {executor_name}, seed {}, run folder {}",
        config.strategy.name(),
        config.space,
        config.trial.epochs,
        config.trial.channels,
        config.trial.layers,
        config.trial.train_limit,
        config.trial.dataset,
        config.budget,
        if config.early_stop == EarlyStop::None {
            "trials"
        } else {
            "architectures"
        },
        config.early_stop.name(),
        config.workers,
        config.seed,
        out.display()
    );
    let outcome = run_train_search(space, config, executor, exe, out, start)?;
    if outcome.replayed > 0 {
        let from = match outcome.restored_at {
            Some(n) => format!("from its state after {n} scores"),
            None => "from the start (no state journaled yet)".to_string(),
        };
        eprintln!(
            "resumed: {} of {} trials answered from {}, the strategy continued {from}",
            outcome.replayed,
            outcome.trials,
            out.join(JOURNAL).display()
        );
    }
    if outcome.failed > 0 {
        eprintln!(
            "{} of {} trials failed (see {})",
            outcome.failed,
            outcome.trials,
            out.join(JOURNAL).display()
        );
    }
    let best = outcome.best.ok_or_else(|| {
        Error::invalid(
            "search",
            format!(
                "every trial failed; their messages are in {}",
                out.join(JOURNAL).display()
            ),
        )
    })?;
    out!("{}", super::to_json(&best)?);
    eprintln!(
        "trained {} epochs in {} trials of {} architectures",
        outcome.epochs_trained, outcome.trials, outcome.configs
    );
    eprintln!(
        "best: valid_acc {} at trial {} of {} ({} epochs): {}",
        best.valid_acc, best.trial, outcome.trials, best.epochs, best.arch
    );
    if let (Some(ms), Some(objective)) = (best.latency_ms, best.objective) {
        eprintln!(
            "best by the latency reward: predicted {ms:.3} ms, reward {objective:.4}; the \
             accuracy-latency Pareto front is in {}",
            out.join(PARETO_JSON).display()
        );
    }
    eprintln!("written to {}", out.join(BEST).display());
    Ok(())
}
