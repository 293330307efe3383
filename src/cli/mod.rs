//! The `nasrs` command line: the schema of every command and the dispatch to one file per
//! command (`search`, `spos`, `multi_trial`, `train`, `eval`, `export`, `model`, `bench`,
//! `latency`, `scale`, `selftest`, `study_strategies`, `trial`; `train_search` holds `--evaluator train`,
//! `trial_args` the trial-running flags it shares with `scale search`), plus
//! what they share: device opening, the worker pool, output that tolerates a closed pipe,
//! run-folder notices.
//! Every error ends the program with a one-line message (exit code 2 for usage and input
//! errors, 1 for failures during a run), never a panic.

use clap::{Parser, Subcommand};
use nasrs::device::{resolve, DeviceChoice, Resolved};
use nasrs::nas::run_dir::Start;
use nasrs::nas::sizing;
use nasrs::{Error, Result};
use std::process::ExitCode;

/// `println!` that tolerates a closed stdout (`nasrs ... | head`): a broken pipe ends the
/// output quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Runs `$body` with `$be` bound to the resolved backend, whatever the device.
macro_rules! with_backend {
    ($resolved:expr, |$be:ident| $body:expr) => {
        match $resolved {
            nasrs::device::Resolved::Cpu($be) => $body,
            #[cfg(any(feature = "cuda", feature = "cuda-sim"))]
            nasrs::device::Resolved::Cuda($be) => $body,
        }
    };
}

mod args;
mod bench;
mod eval;
mod export;
mod latency;
mod model;
mod multi_trial;
mod progress;
mod scale;
mod search;
mod selftest;
mod spos;
mod study_ranking;
mod study_strategies;
mod train;
mod train_search;
mod trial;
mod trial_args;

#[derive(Parser)]
#[command(
    name = "nasrs",
    version,
    about = "Neural architecture search (DARTS, SPOS, multi-trial) on CPU and CUDA"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process and matched at once: boxing the large variants saves nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Run an architecture search.
    #[command(subcommand)]
    Search(SearchCommand),
    /// Train a cell's network from scratch: a DARTS genotype's or a NAS-Bench-201 cell's.
    ///
    /// --space darts (the default) trains the DARTS evaluation network of --genotype with the
    /// DARTS paper's recipe: SGD lr 0.025 cosine to 0, momentum 0.9, weight decay 3e-4,
    /// gradient clip 5, drop-path 0.2, 600 epochs, batch 96, C=36, L=20, cutout 16 on
    /// CIFAR-10, optional auxiliary head (--auxiliary, weight 0.4).
    ///
    /// --space nb201 trains the NAS-Bench-201 network of the --arch cell (C=16, N=5 cells per
    /// stage) with NB201's recipe: SGD lr 0.1 cosine to 0, Nesterov momentum 0.9, weight
    /// decay 5e-4, no gradient clipping, 200 epochs (12 for the bundled table's schedule),
    /// batch 256, crop and flip on CIFAR-10, no cutout, no drop-path, no auxiliary head.
    ///
    /// A flag given replaces the space's default.
    Train(train::TrainArgs),
    /// Run one training trial: train the architecture of a JSON spec from scratch and write
    /// its validation accuracy (per epoch and final) to a JSON result (what `--evaluator
    /// train` launches, locally or as a Slurm job).
    Trial(trial::TrialArgs),
    /// Evaluate a trained network: test accuracy, per-class accuracy, confusion matrix.
    Eval(eval::EvalArgs),
    /// Export a trained network for deployment (ONNX).
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Print a network's parameter count and per-module summary.
    Model(model::ModelArgs),
    /// Time search and training steps.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Latency lookup tables for hardware-aware search: build one, check its predictions.
    #[command(subcommand)]
    Latency(latency::LatencyCommand),
    /// EfficientNet's compound scaling of an MBConv network: search the coefficients,
    /// apply them at a phi.
    #[command(subcommand)]
    Scale(scale::ScaleCommand),
    /// Measure search quality: strategies over many seeds, supernet ranking quality.
    #[command(subcommand)]
    Study(StudyCommand),
    /// Check every kernel of a device against the CPU backend.
    Selftest {
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
pub enum SearchCommand {
    /// DARTS: differentiable search over a one-shot supernet.
    Darts(search::SearchArgs),
    /// Single Path One-Shot: train the supernet one sampled path per batch, then search it by
    /// evolution with inherited weights.
    Spos(spos::SposArgs),
    /// Random search: architectures drawn uniformly, each scored by a table (NAS-Bench-201's
    /// bundled one by default), never the same one twice.
    Random(multi_trial::TrialSearchArgs),
    /// Regularized (aging) evolution (Real et al. 2019): tournament of S from a population
    /// of P, the winner mutated in one decision, the oldest member removed.
    Evolution(multi_trial::EvolutionArgs),
    /// REINFORCE with a per-decision categorical policy (NAS-Bench-201's baseline): moving
    /// average baseline, entropy bonus, Adam.
    Reinforce(multi_trial::ReinforceArgs),
}

/// Studies: many runs of one or more methods, summarized.
#[derive(Subcommand)]
pub enum StudyCommand {
    /// Random search, aging evolution and REINFORCE on a table, each for --seeds seeds:
    /// mean and standard deviation of the reported accuracy of what each run returns, and
    /// the mean anytime curves.
    Strategies(study_strategies::StudyStrategiesArgs),
    /// How well a SPOS supernet ranks architectures: Kendall tau and Spearman rho between
    /// its scores (inherited weights, with and without BN recalibration; uniform or fair
    /// path sampling) and stand-alone training, over seeds.
    Ranking(study_ranking::RankingArgs),
}

/// Runs the command `cli` asks for.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Search(SearchCommand::Darts(a)) => search::search(a),
        Command::Search(SearchCommand::Spos(a)) => spos::spos(a),
        Command::Search(SearchCommand::Random(a)) => multi_trial::random(a),
        Command::Search(SearchCommand::Evolution(a)) => multi_trial::evolution(a),
        Command::Search(SearchCommand::Reinforce(a)) => multi_trial::reinforce(a),
        Command::Study(StudyCommand::Strategies(a)) => study_strategies::study_strategies(a),
        Command::Train(a) => train::train(a),
        Command::Trial(a) => trial::trial(a),
        Command::Eval(a) => eval::eval(a),
        Command::Export(c) => export::export(c),
        Command::Model(a) => model::model(a),
        Command::Bench(b) => bench::bench(b),
        Command::Latency(c) => latency::latency(c),
        Command::Scale(c) => scale::scale(c),
        Command::Study(StudyCommand::Ranking(a)) => study_ranking::ranking(a),
        Command::Selftest { device, seed } => selftest::selftest(&device, seed),
    }
}

/// The exit code of a failed command: 2 when nothing ran (a bad flag, file, size or
/// device), 1 for a failure during a run.
pub fn exit_code(e: &Error) -> ExitCode {
    match e {
        Error::Invalid { .. }
        | Error::Shape { .. }
        | Error::Io { .. }
        | Error::BadFile { .. }
        | Error::Device(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// Says what `--resume` will do with the run folder `out` (`RunDir::open` refuses what it
/// cannot do).
pub(crate) fn resume_notice(start: Start, out: &std::path::Path) {
    if start == Start::Resume {
        let checkpoint = out.join(nasrs::nas::search_run::CHECKPOINT);
        if checkpoint.exists() {
            eprintln!("resuming from {}", checkpoint.display());
        } else {
            eprintln!(
                "note: --resume: no checkpoint in {}, starting a new run",
                out.display()
            );
        }
    }
}

/// Refuses a run whose estimated peak memory (`need`) passes what `device` has.
pub(crate) fn check_memory(
    request: &str,
    device: &Resolved,
    need: impl FnOnce(Option<u64>) -> Result<u64>,
) -> Result<()> {
    let available = device.available_memory()?;
    let need = need(available)?;
    sizing::check_fits(request, need, available, &device.name())
}

pub(crate) fn open_device(flag: &str) -> Result<Resolved> {
    let choice: DeviceChoice = flag.parse()?;
    let (dev, notice) = resolve(choice)?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    Ok(dev)
}

/// Runs `f` on a worker of a rayon pool of `threads` threads (default: one per core). The CPU
/// backend's ops then split work from inside the pool, instead of each op handing its work
/// to the pool and putting the calling thread to sleep (a futex round trip per op).
pub(crate) fn in_pool<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::invalid("--threads", "must be at least 1"));
        }
        builder = builder.num_threads(n);
    }
    let pool = builder
        .build()
        .map_err(|e| Error::invalid("--threads", e.to_string()))?;
    pool.install(f)
}

pub(crate) fn to_json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::invalid("json", e.to_string()))
}
